"""Photometric jitter in the paired layer (`jitter`): the image changes, the label and every
geometric draw stay as they were, and a saved state resumes the same jittered sequence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_helpers import PAIRED_MEAN as MEAN
from dp_helpers import paired_params, write_pairs

from data_prep.build import build_dataset
from data_prep.paired import PairedBatcher, jitter_image, parse_params

LEVEL = 40  # grey level per class: 20 + 40 * class


@pytest.fixture(scope="module")
def grey_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 grey records, 24x32, grey level 20 + 40 x label (in 4-pixel squares): saturation leaves
    them as they are, and contrast and brightness keep the order of the levels."""
    root = tmp_path_factory.mktemp("jitter")
    rng = np.random.default_rng(5)
    labels = [rng.integers(0, 5, (6, 8)).repeat(4, 0).repeat(4, 1).astype(np.uint8) for _ in range(10)]
    images = [np.repeat((20 + LEVEL * lab)[..., None], 3, axis=2).astype(np.uint8) for lab in labels]
    lst = write_pairs(root / "data", images, labels)
    build_dataset(root / "db", list_file=lst, num_classes=5, ignore_label=255, quiet=True, workers=1)
    return root / "db"


def take(db: Path, n: int, train: bool = True, state: dict | None = None, **kw: object) -> tuple[list, dict]:
    b = PairedBatcher(parse_params(json.dumps(paired_params(db, **kw)), train=train))
    try:
        if state is not None:
            b.set_state(state)
        out = []
        for _ in range(n):
            data, label, after = b.next_batch()
            b.delivered(after)
            out.append((data, label))
        return out, json.loads(json.dumps(b.get_state()))
    finally:
        b.close()


def test_jitter_changes_the_image_and_keeps_it_aligned_with_its_label(grey_db: Path) -> None:
    geometry: dict[str, Any] = dict(mirror=True, crop=[16, 20])
    plain, _ = take(grey_db, 6, **geometry)
    jittered, _ = take(grey_db, 6, jitter=0.3, **geometry)
    changed = 0
    for (d0, l0), (d1, l1) in zip(plain, jittered, strict=True):
        np.testing.assert_array_equal(l0, l1)  # the same mirror and crop: jitter has its own stream
        np.testing.assert_array_equal(np.round((d0[:, 0] + MEAN[0] - 20) / LEVEL), l0[:, 0])
        grey = d1[:, 0] + MEAN[0]
        for img, lab in zip(grey, l1[:, 0], strict=True):
            # every class's pixels stay darker than the next class's: the image still matches its label
            levels = [(img[lab == c].min(), img[lab == c].max()) for c in range(5) if (lab == c).any()]
            assert all(hi < lo for (_, hi), (lo, _) in zip(levels, levels[1:], strict=False))
            assert 0 <= img.min() and img.max() <= 255
        changed += int(not np.allclose(d0, d1, atol=0.5))
    assert changed == len(plain)
    # with scale too, the labels are those of the run without jitter
    scaled, _ = take(grey_db, 4, scale=[0.8, 1.3], **geometry)
    scaled_j, _ = take(grey_db, 4, scale=[0.8, 1.3], jitter=0.3, **geometry)
    for (_, l0), (_, l1) in zip(scaled, scaled_j, strict=True):
        np.testing.assert_array_equal(l0, l1)


def test_jitter_resumes_exactly_from_a_saved_state(grey_db: Path) -> None:
    kw: dict[str, Any] = dict(mirror=True, crop=[16, 20], scale=[0.8, 1.3], jitter=0.2, batch_size=4)
    first, _ = take(grey_db, 2, **kw)
    _, state = take(grey_db, 2, **kw)
    assert (state["epoch"], state["position"]) == (0, 8) and "jitter_rng" in state
    whole, _ = take(grey_db, 6, **kw)  # crosses an epoch boundary
    resumed, _ = take(grey_db, 4, state=state, **kw)
    for (d1, l1), (d2, l2) in zip(whole[2:], resumed, strict=True):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(first[0][0], whole[0][0])  # the same seed, the same numbers


def test_no_jitter_in_the_test_phase_and_bad_values_refused(grey_db: Path) -> None:
    plain, _ = take(grey_db, 2, train=False)
    jittered, _ = take(grey_db, 2, train=False, jitter=0.3)
    for (d0, _), (d1, _) in zip(plain, jittered, strict=True):
        np.testing.assert_array_equal(d0, d1)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="jitter must be in"):
            parse_params(json.dumps({"images": "a", "labels": "b", "jitter": bad}))


def test_jitter_factors_act_as_documented() -> None:
    img = np.zeros((3, 2, 2), np.uint8)
    img[:, 0, 0] = (100, 100, 100)
    img[:, 1, 1] = (200, 50, 10)
    same = jitter_image(img, np.ones(3))
    np.testing.assert_allclose(same, img, atol=1e-4)
    brighter = jitter_image(img, np.array([1.2, 1.0, 1.0]))
    np.testing.assert_allclose(brighter, np.clip(img * 1.2, 0, 255), atol=1e-3)
    grey = jitter_image(img, np.array([1.0, 1.0, 0.0]))  # saturation 0: every channel is the luma
    assert np.allclose(grey[0], grey[1]) and np.allclose(grey[1], grey[2])
