"""Class statistics and weights on made-up numbers (pure functions, no files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.stats import (
    ClassCounter,
    absent_classes,
    class_stats,
    frequencies,
    infogain_matrix,
    inverse_frequency_weights,
    median_frequency_weights,
)


def test_median_frequency_by_hand() -> None:
    # class 0: 30 px in image A (100 px) and 10 px in B (50 px) -> 40/150
    # class 1: 70 px in A -> 70/100; class 2: 40 px in B -> 40/50; class 3 absent
    counter = ClassCounter(num_classes=4, ignore_label=255)
    counter.add(np.bincount([0] * 30 + [1] * 70, minlength=256))
    counter.add(np.bincount([0] * 10 + [2] * 40, minlength=256))
    freq = frequencies(counter.pixel_counts, counter.appear_pixels)
    np.testing.assert_allclose(freq, [40 / 150, 0.7, 0.8, 0.0])
    w = median_frequency_weights(counter.pixel_counts, counter.appear_pixels)
    np.testing.assert_allclose(w, [0.7 / (40 / 150), 1.0, 0.7 / 0.8, 0.0])
    assert counter.image_counts.tolist() == [2, 1, 1, 0]


def test_ignore_label_counts_nowhere() -> None:
    a = ClassCounter(num_classes=3, ignore_label=255)
    a.add(np.bincount([0] * 5 + [1] * 5 + [255] * 90, minlength=256))
    b = ClassCounter(num_classes=3, ignore_label=255)
    b.add(np.bincount([0] * 5 + [1] * 5, minlength=256))
    assert a.pixel_counts.tolist() == b.pixel_counts.tolist() == [5, 5, 0]
    assert a.appear_pixels.tolist() == [10, 10, 0]
    # an ignore label inside the class range (CamVid void = 11 with 12 values) is dropped too
    c = ClassCounter(num_classes=3, ignore_label=2)
    c.add(np.bincount([0] * 5 + [2] * 95, minlength=256))
    assert c.pixel_counts.tolist() == [5, 0, 0] and c.appear_pixels.tolist() == [5, 0, 0]
    assert absent_classes(c.pixel_counts, 2) == [1]


def test_absent_class_gets_zero_and_is_listed() -> None:
    counter = ClassCounter(num_classes=3, ignore_label=255)
    counter.add(np.bincount([0] * 8 + [1] * 2, minlength=256))
    s = class_stats(counter)
    assert s["absent_classes"] == [2]
    assert s["class_weights"]["median_frequency"][2] == 0.0
    assert s["class_weights"]["inverse_frequency"][2] == 0.0
    assert s["class_weights"]["median_frequency"][0] == pytest.approx(0.5 / 0.8)


def test_inverse_frequency_is_balanced() -> None:
    w = inverse_frequency_weights(np.array([75, 25, 0]))
    np.testing.assert_allclose(w, [100 / (2 * 75), 100 / (2 * 25), 0.0])
    # a pixel weighs 1 on average when classes are equally frequent
    np.testing.assert_allclose(inverse_frequency_weights(np.array([10, 10])), [1.0, 1.0])


def test_no_pixels_at_all() -> None:
    assert median_frequency_weights(np.zeros(3), np.zeros(3)).tolist() == [0, 0, 0]
    assert inverse_frequency_weights(np.zeros(3)).tolist() == [0, 0, 0]


def test_infogain_matrix_shape() -> None:
    H = infogain_matrix(np.array([0.5, 2.0, 0.0]))
    assert H.shape == (1, 1, 3, 3) and H.dtype == np.float32
    np.testing.assert_array_equal(H[0, 0], np.diag([0.5, 2.0, 0.0]))


def test_read_stats_is_one_clear_reader(tmp_path: Path) -> None:
    """common.datastats.read_stats: the dir or the file; missing is an error only when required;
    a damaged file is always a UserError naming the key and the file."""
    from common.datastats import read_stats
    from common.errors import UserError

    (tmp_path / "stats.json").write_text('{"num_classes": 5}')
    assert read_stats(tmp_path) == read_stats(tmp_path / "stats.json") == {"num_classes": 5}
    assert read_stats(tmp_path / "none", required=False) == {} and read_stats(None) == {}
    with pytest.raises(UserError, match="data.val: .* has no stats.json"):
        read_stats(tmp_path / "none", key="data.val")
    for text in ('{"num_classes": 5', "[5]"):
        (tmp_path / "stats.json").write_text(text)
        with pytest.raises(
            UserError, match=f"data.train: {tmp_path / 'stats.json'} (is not readable JSON|must hold a JSON object)"
        ):
            read_stats(tmp_path, key="data.train", required=False)
