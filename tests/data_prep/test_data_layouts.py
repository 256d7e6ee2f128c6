"""Bring your own data: the public datasets' layouts (tiny trees made here), label maps, class names
and the checks before training, each read back from the LMDBs with Caffe's own Datum."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_helpers import caffe_datum_array, read_lmdb
from PIL import Image

from common.errors import UserError
from data_prep.build import build_dataset, build_split
from data_prep.build_layout import build_layout
from data_prep.checks import data_findings
from data_prep.labelmap import load_label_map
from tests.conftest import build_splits

pytestmark = pytest.mark.caffe
RNG = np.random.default_rng(0)


def _img(path: Path, h: int = 16, w: int = 24, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt, quality=95) if fmt == "JPEG" else Image.fromarray(arr).save(path)
    return arr


def _lab(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), "L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


def _labels(db: Path) -> dict[str, np.ndarray]:
    return {k.decode(): caffe_datum_array(v)[0] for k, v in read_lmdb(db / "labels")}


def _cityscapes(root: Path) -> dict[str, np.ndarray]:
    """Two cities in train, one in val; labelIds plus the _color/_instanceIds files the real set has."""
    stored = {}
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("lindau",))):
        for city in cities:
            stem = f"{city}_000000_000019"
            _img(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            ids = RNG.choice([0, 1, 7, 8, 11, 24, 26, 33], size=(16, 24))
            _lab(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
            _lab(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", ids)
            stored[stem] = ids
    return stored


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    stored = _cityscapes(tmp_path / "cs")
    res = build_layout(tmp_path / "out", layout="cityscapes", root=tmp_path / "cs", val_split="val", quiet=True)
    train = res["train"]
    assert (train["num_classes"], train["ignore_label"], train["num_records"]) == (19, 255, 2)
    assert train["class_names"][:3] == ["road", "sidewalk", "building"] and len(train["class_names"]) == 19
    assert "cityscapes" in train["label_map"]
    want = {0: 255, 1: 255, 7: 0, 8: 1, 11: 2, 24: 11, 26: 13, 33: 18}
    for key, lab in _labels(tmp_path / "out" / "train").items():
        ids = stored[key.split("_", 1)[1].removesuffix("_leftImg8bit.png")]
        assert np.array_equal(lab, np.vectorize(want.get)(ids))
    assert res["val"]["num_records"] == 1 and res["val"]["source"]["split"] == "val"


def test_ade20k_layout_shifts_ids_and_reads_object_info(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    for i in range(2):
        _img(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", fmt="JPEG")
        _lab(root / "annotations" / "training" / f"ADE_train_{i:08d}.png", RNG.choice([0, 1, 2, 150], size=(16, 24)))
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{k}\t0.1\t10\t1\tname{k}, synonym" for k in range(1, 151)]
    (root / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    stats = build_layout(tmp_path / "out", layout="ade20k", root=root, split="train", quiet=True)
    assert (stats["num_classes"], stats["ignore_label"]) == (150, 255)
    assert stats["class_names"][0] == "name1" and stats["class_names"][149] == "name150"
    values = set(np.unique(np.concatenate([v.ravel() for v in _labels(tmp_path / "out").values()])).tolist())
    assert values <= {255, 0, 1, 149} and 255 in values and 149 in values


def test_voc_layout_reads_the_split_list_and_palette_indices(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    names = ["2007_000032", "2007_000039", "2007_000063"]
    for n in names:
        _img(root / "JPEGImages" / f"{n}.jpg", fmt="JPEG")
        lab = RNG.choice([0, 1, 15], size=(16, 24))
        lab[0] = 255  # the border VOC draws around objects
        _lab(root / "SegmentationClass" / f"{n}.png", lab, palette=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(names[2] + "\n")
    res = build_layout(tmp_path / "out", layout="voc", root=root, split="train", val_split="val", quiet=True)
    assert res["train"]["num_records"] == 2 and res["val"]["num_records"] == 1
    assert res["train"]["class_names"][15] == "person" and res["train"]["num_classes"] == 21
    assert res["train"]["label_map"] is None
    labels = _labels(tmp_path / "out" / "train")
    assert all((lab[0] == 255).all() and set(np.unique(lab)) <= {0, 1, 15, 255} for lab in labels.values())


def test_suffix_rule_pairs_recursively_and_names_what_is_missing(tmp_path: Path) -> None:
    stored = _cityscapes(tmp_path / "cs")
    kw: dict[str, Any] = dict(num_classes=19, ignore_label=255, label_map="cityscapes", quiet=True)
    suffixes = ("_leftImg8bit.png", "_gtFine_labelIds.png")
    imgs, labs = tmp_path / "cs" / "leftImg8bit" / "train", tmp_path / "cs" / "gtFine" / "train"
    stats = build_dataset(tmp_path / "o1", images=imgs, labels=labs, suffixes=suffixes, **kw)
    assert stats["num_records"] == 2 and len(stored) == 3
    (labs / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="1 of 2 images .* have no label.*aachen_000000_000019_gtFine_labelIds"):
        build_dataset(tmp_path / "o2", images=imgs, labels=labs, suffixes=suffixes, **kw)
    assert not (tmp_path / "o2").exists()


def test_label_map_file_json_and_uncovered_values(tmp_path: Path) -> None:
    (tmp_path / "map.txt").write_text("# stored -> class\n10 0\n20 1  # road\n30 255\n")
    (tmp_path / "map.json").write_text('{"10": 0, "20": 1, "30": 255}')
    assert (
        load_label_map(tmp_path / "map.txt").table
        == load_label_map(tmp_path / "map.json").table
        == {
            10: 0,
            20: 1,
            30: 255,
        }
    )
    images, labels = [], []
    for i in range(3):
        images.append(_img(tmp_path / "img" / f"{i}.png"))
        ids = RNG.choice([10, 20, 30], size=(16, 24))
        if i > 0:
            ids[0, 0] = 40 + i  # values the map does not cover, in two files
        labels.append(ids)
        _lab(tmp_path / "lab" / f"{i}.png", ids)
    kw: dict[str, Any] = dict(
        num_classes=2, ignore_label=255, quiet=True, images=tmp_path / "img", labels=tmp_path / "lab"
    )
    with pytest.raises(UserError, match=r"label values \[41, 42\] are not covered.* in 2 label file\(s\)"):
        build_dataset(tmp_path / "bad", label_map=str(tmp_path / "map.txt"), **kw)
    assert not (tmp_path / "bad").exists()
    (tmp_path / "map.txt").write_text("10 0\n20 1\n30 255\n41 1\n42 1\n")
    stats = build_dataset(tmp_path / "ok", label_map=str(tmp_path / "map.txt"), **kw)
    assert stats["class_pixel_counts"][1] == sum(int(((ids == 20) | (ids > 40)).sum()) for ids in labels)
    with pytest.raises(UserError, match="line 2: value 10 is mapped twice"):
        (tmp_path / "dup.txt").write_text("10 0\n10 1\n")
        load_label_map(tmp_path / "dup.txt")


def test_checks_before_training(tmp_path: Path) -> None:
    """All-ignore images, a class absent from val, a weight span over 1000x, a train image copied
    into val under another name, a crop larger than the images, a resize that changes the aspect."""
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(6):
        _img(tmp_path / "img" / f"t{i}.png", 40, 80)
        ids = np.zeros((40, 80), np.uint8)
        ids[:, : 2 if i else 80] = 1  # class 1 everywhere in t0, two columns elsewhere
        if i == 5:
            ids[:] = 255  # all ignore
        if i == 4:
            ids[0, 1] = 2  # one pixel of class 2 (a column the resize keeps): a weight > 1000x the others'
        _lab(tmp_path / "lab" / f"t{i}.png", ids)
        lines["train"].append(f"img/t{i}.png lab/t{i}.png")
    (tmp_path / "img" / "v0.png").write_bytes((tmp_path / "img" / "t1.png").read_bytes())
    _lab(tmp_path / "lab" / "v0.png", np.zeros((40, 80)))
    lines["val"].append("img/v0.png lab/v0.png")
    for name, rows in lines.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(rows) + "\n")
    res = build_split(
        tmp_path / "out",
        num_classes=3,
        ignore_label=255,
        list_file=tmp_path / "train.txt",
        val_list=tmp_path / "val.txt",
        resize=(40, 40),
        quiet=True,
    )
    assert res["train"]["checks"]["all_ignore_images"] == ["00000005_t5.png"]
    assert len(res["train"]["checks"]["aspect_changed_images"]) == 6
    found = data_findings(
        res["train"], res["val"], crop=(48, 48), train_dir=tmp_path / "out" / "train", val_dir=tmp_path / "out" / "val"
    )
    by_code = {f.code: f for f in found}
    assert set(by_code) == {
        "data-all-ignore",
        "data-class-absent",
        "data-weight-span",
        "data-smaller-than-crop",
        "data-aspect",
        "data-duplicate",
    }
    assert by_code["data-smaller-than-crop"].severity == "error"
    assert "00000000_v0.png = 00000001_t1.png" in by_code["data-duplicate"].message
    assert by_code["data-class-absent"].data["split"] == "val" and by_code["data-class-absent"].data["classes"] == [
        1,
        2,
    ]


def test_check_experiment_shows_the_data_checks(tmp_path: Path, synth_dir: Path) -> None:
    """`orchestrate check EXP` lists the data findings with the doctor's (here a crop too big)."""
    from orchestrator.cli import main

    build_splits(tmp_path, synth_dir)
    exp = {
        "name": "chk",
        "data": {
            "train": str(tmp_path / "train"),
            "val": str(tmp_path / "val"),
            "layer": "paired",
            "augment": {"crop": [96, 96]},
            "batch_size": 2,
        },
        "net": {"arch": "compact", "width": 8, "depth": 2},
        "solver": {"max_iter": 2},
    }
    (tmp_path / "exp.yaml").write_text(json.dumps(exp))
    out = tmp_path / "findings.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["check", str(tmp_path / "exp.yaml"), "--json"])
    out.write_text(buf.getvalue())
    codes = {f["code"]: f["severity"] for f in json.loads(buf.getvalue())}
    assert codes.get("data-smaller-than-crop") == "error" and rc == 1


def test_a_runs_report_lists_the_data_checks(tmp_path: Path, synth_dir: Path) -> None:
    """A train image copied into val: the run trains (a warning) and report.md names the duplicate."""
    from orchestrator.cli import main

    val_list = tmp_path / "val.txt"
    first_train = (synth_dir / "train.txt").read_text().splitlines()[0]
    val_list.write_text((synth_dir / "val.txt").read_text() + first_train + "\n")
    build_dataset(tmp_path / "train", num_classes=5, ignore_label=255, list_file=synth_dir / "train.txt", quiet=True)
    build_dataset(tmp_path / "val", num_classes=5, ignore_label=255, list_file=val_list, root=synth_dir, quiet=True)
    exp = {
        "name": "dup",
        "data": {"train": str(tmp_path / "train"), "val": str(tmp_path / "val"), "batch_size": 2},
        "net": {"arch": "compact", "width": 8, "depth": 2},
        "solver": {"max_iter": 2},
        "validation": {"interval": 2},
        "progress": {"quiet": True},
    }
    (tmp_path / "exp.yaml").write_text(json.dumps(exp))
    assert main(["run", str(tmp_path / "exp.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "data-duplicate" in report and "00000010_" in report
