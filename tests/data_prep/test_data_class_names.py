"""Class names reach stats.json (and from there net_meta.json, reports, pictures, TensorBoard):
given, from the palette file, or from a dataset.json beside the raw data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dp_helpers import coded_pairs, write_pairs

from common.errors import UserError
from data_prep.build import build_dataset, build_split

OPTS: dict[str, Any] = dict(num_classes=5, ignore_label=255, quiet=True)
NAMES = ["sky", "road", "car", "tree", "sign"]


def test_names_from_dataset_json_beside_the_list(tmp_path: Path) -> None:
    lst = write_pairs(tmp_path / "d", *coded_pairs(4))
    assert build_dataset(tmp_path / "none", list_file=lst, **OPTS)["class_names"] is None
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"num_classes": 5, "class_names": NAMES}))
    stats = build_dataset(tmp_path / "out", list_file=lst, **OPTS)
    assert stats["class_names"] == NAMES
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["class_names"] == NAMES
    split = build_split(tmp_path / "split", list_file=lst, val_fraction=0.5, **OPTS)
    assert split["train"]["class_names"] == split["val"]["class_names"] == NAMES
    # given names win; names that do not fit num_classes are not used
    assert build_dataset(tmp_path / "o2", list_file=lst, class_names=list("abcde"), **OPTS)["class_names"] == list(
        "abcde"
    )
    (tmp_path / "d" / "dataset.json").write_text(json.dumps({"class_names": NAMES[:3]}))
    assert build_dataset(tmp_path / "o3", list_file=lst, **OPTS)["class_names"] is None
    with pytest.raises(UserError, match="not 5 non-empty strings"):
        build_dataset(tmp_path / "o4", list_file=lst, class_names=["a", "b"], **OPTS)
    assert not (tmp_path / "o4").exists()


def test_names_from_the_palette_file(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    images, labels = coded_pairs(2)
    lst = write_pairs(tmp_path / "d", images, labels)
    colours = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128)}
    pal = tmp_path / "palette.txt"
    pal.write_text("".join(f"{NAMES[c]} {c} {r} {g} {b}\n" for c, (r, g, b) in colours.items()) + "void 255 #e0e0c0\n")
    lut = np.array([colours[c] for c in range(5)], np.uint8)
    for i, lab in enumerate(labels):
        cv2.imwrite(str(tmp_path / "d" / "lab" / f"{i:03d}.png"), lut[lab][..., ::-1])
    assert build_dataset(tmp_path / "out", list_file=lst, palette=pal, **OPTS)["class_names"] == NAMES


def test_data_synth_then_build_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from data_prep.synth import CLASS_NAMES
    from orchestrator.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "raw"), "--train", "4", "--val", "2"]) == 0
    raw = tmp_path / "raw"
    assert main(["data", "build", "--list", str(raw / "train.txt"), "--out", str(tmp_path / "train"), "--quiet"]) == 0
    assert json.loads((tmp_path / "train" / "stats.json").read_text())["class_names"] == CLASS_NAMES
