"""Build options: label formats, folders, resize, encoded, shuffle, splits, warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from dp_helpers import caffe_datum_array, coded_pairs, read_lmdb, write_pairs
from PIL import Image

from common.errors import UserError
from data_prep.build import build_dataset, build_split

pytestmark = pytest.mark.caffe

OPTS: dict[str, Any] = dict(num_classes=5, ignore_label=255, quiet=True, workers=2)


@pytest.fixture()
def coded(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    images, labels = coded_pairs(8)
    return write_pairs(tmp_path / "data", images, labels), images, labels


def _records(db: Path) -> list[np.ndarray]:
    return [caffe_datum_array(v) for _, v in read_lmdb(db)]


def test_paletted_labels_read_indices_not_colours(tmp_path: Path) -> None:
    """PASCAL VOC style: a 'P' PNG whose palette maps index 1 to red; we must store 1, not 128."""
    images, labels = coded_pairs(2)
    lst = write_pairs(tmp_path / "d", images, labels)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [224, 224, 192] * 251
    for i, lab in enumerate(labels):
        im = Image.fromarray(lab, mode="P")
        im.putpalette(palette)
        im.save(tmp_path / "d" / "lab" / f"{i:03d}.png")
    assert Image.open(tmp_path / "d" / "lab" / "000.png").mode == "P"
    build_dataset(tmp_path / "out", list_file=lst, **OPTS)
    got = _records(tmp_path / "out" / "labels")
    assert all(np.array_equal(g[0], lab) for g, lab in zip(got, labels, strict=True))


def test_rgb_labels_through_palette_file(tmp_path: Path) -> None:
    images, labels = coded_pairs(2)
    lst = write_pairs(tmp_path / "d", images, labels)
    colours = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128)}
    pal = tmp_path / "palette.txt"
    pal.write_text(
        "# name id R G B\n"
        + "".join(f"c{c}, {c}, {r}, {g}, {b}\n" for c, (r, g, b) in colours.items())
        + "void 255 #e0e0c0\n"
    )
    lut = np.array([colours[c] for c in range(5)], np.uint8)
    for i, lab in enumerate(labels):
        rgb = lut[lab]
        rgb[0, 0] = (224, 224, 192)  # void
        cv2.imwrite(str(tmp_path / "d" / "lab" / f"{i:03d}.png"), rgb[..., ::-1])
    stats = build_dataset(tmp_path / "out", list_file=lst, palette=pal, **OPTS)
    got = _records(tmp_path / "out" / "labels")
    want = [lab.copy() for lab in labels]
    for w in want:
        w[0, 0] = 255
    assert all(np.array_equal(g[0], w) for g, w in zip(got, want, strict=True))
    assert stats["palette"] == str(pal)
    # an unknown colour is an error naming file and pixel
    bad = cv2.imread(str(tmp_path / "d" / "lab" / "001.png"))
    bad[3, 9] = (1, 2, 3)
    cv2.imwrite(str(tmp_path / "d" / "lab" / "001.png"), bad)
    with pytest.raises(
        UserError, match=r"list.txt line 2: .*lab/001.png: pixel \(x=9, y=3\) has colour RGB\(3, 2, 1\)"
    ):
        build_dataset(tmp_path / "out2", list_file=lst, palette=pal, **OPTS)
    with pytest.raises(UserError, match="colour-coded RGB; pass --palette"):
        build_dataset(tmp_path / "out3", list_file=lst, **OPTS)


def test_palette_file_errors(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    pal = tmp_path / "p.txt"
    pal.write_text("sky 0 128 128 128\nroad 9 1 2 3\n")
    with pytest.raises(UserError, match=r"p.txt line 2: class id 9"):
        build_dataset(tmp_path / "o", list_file=coded[0], palette=pal, **OPTS)
    pal.write_text("sky 0 128 128\n")
    with pytest.raises(UserError, match=r"p.txt line 1: cannot read"):
        build_dataset(tmp_path / "o", list_file=coded[0], palette=pal, **OPTS)


def test_folders_matched_by_stem(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    d = coded[0].parent
    cv2.imwrite(str(d / "img" / "003.jpg"), cv2.imread(str(d / "img" / "003.png")))
    (d / "img" / "003.png").unlink()
    stats = build_dataset(tmp_path / "out", images=d / "img", labels=d / "lab", **OPTS)
    assert stats["num_records"] == 8 and stats["source"]["images"].endswith("img")
    assert [k for k, _ in read_lmdb(tmp_path / "out" / "labels")][3] == b"00000003_003.jpg"
    (d / "lab" / "005.png").unlink()
    with pytest.raises(UserError, match=r"no label in .*lab for image .*005.png"):
        build_dataset(tmp_path / "out2", images=d / "img", labels=d / "lab", **OPTS)


def test_resize_never_blends_labels(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    stats = build_dataset(tmp_path / "out", list_file=coded[0], resize=(45, 17), **OPTS)
    assert (stats["width"], stats["height"], stats["resize"]) == (45, 17, [45, 17])
    labs, imgs = _records(tmp_path / "out" / "labels"), _records(tmp_path / "out" / "images")
    assert labs[0].shape == (1, 17, 45) and imgs[0].shape == (3, 17, 45)
    for got, lab in zip(labs, coded[2], strict=True):
        assert np.array_equal(got[0], cv2.resize(lab, (45, 17), interpolation=cv2.INTER_NEAREST_EXACT))
    # linear interpolation of the image does blend: values that are not multiples of 40 appear
    assert any((im[0] % 40 != 0).any() for im in imgs)
    assert sum(stats["class_pixel_counts"]) == 8 * 17 * 45


def test_encoded_read_by_native_data_layer(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    import caffe

    build_dataset(tmp_path / "enc", list_file=coded[0], encoded=True, **OPTS)
    assert json.loads((tmp_path / "enc" / "stats.json").read_text())["encoded"] is True
    proto = tmp_path / "n.prototxt"
    proto.write_text(f"""
layer {{ name: "d" type: "Data" top: "data"
  data_param {{ source: "{tmp_path}/enc/images" backend: LMDB batch_size: 8 }} }}
layer {{ name: "l" type: "Data" top: "label"
  data_param {{ source: "{tmp_path}/enc/labels" backend: LMDB batch_size: 8 }} }}
""")
    net = caffe.Net(str(proto), caffe.TEST)
    net.forward()
    assert net.blobs["label"].data.shape == (8, 1, 24, 32)
    for i in range(8):
        assert np.array_equal(net.blobs["data"].data[i], coded[1][i].transpose(2, 0, 1))
        assert np.array_equal(net.blobs["label"].data[i, 0], coded[2][i])


def test_shuffle_is_one_permutation_for_both(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    stats = build_dataset(tmp_path / "s", list_file=coded[0], shuffle_seed=7, **OPTS)
    assert stats["shuffle_seed"] == 7
    imgs, labs = read_lmdb(tmp_path / "s" / "images"), read_lmdb(tmp_path / "s" / "labels")
    names = [k.decode().split("_", 1)[1] for k, _ in imgs]
    assert sorted(names) == [f"{i:03d}.png" for i in range(8)] and names != sorted(names)
    for (ki, vi), (kl, vl) in zip(imgs, labs, strict=True):
        assert ki == kl
        i = int(ki.decode().split("_", 1)[1][:3])
        assert np.array_equal(caffe_datum_array(vi), coded[1][i].transpose(2, 0, 1))
        assert np.array_equal(caffe_datum_array(vl)[0], coded[2][i])
    index = (tmp_path / "s" / "index.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in index] == [k.decode() for k, _ in imgs]
    again = build_dataset(tmp_path / "s2", list_file=coded[0], shuffle_seed=7, **OPTS)
    assert [k for k, _ in read_lmdb(tmp_path / "s2" / "images")] == [k for k, _ in imgs]
    assert again["class_pixel_counts"] == stats["class_pixel_counts"]


def test_split_by_fraction(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    res = build_split(tmp_path / "sp", list_file=coded[0], val_fraction=0.25, split_seed=3, **OPTS)
    assert (res["train"]["num_records"], res["val"]["num_records"]) == (6, 2)
    for name in ("train", "val"):
        assert (tmp_path / "sp" / name / "stats.json").exists()
        assert (tmp_path / "sp" / name / "infogain_H.binaryproto").exists()
    train = {k.decode().split("_", 1)[1] for k, _ in read_lmdb(tmp_path / "sp" / "train" / "images")}
    val = {k.decode().split("_", 1)[1] for k, _ in read_lmdb(tmp_path / "sp" / "val" / "images")}
    assert not train & val and len(train | val) == 8
    assert res["val"]["source"]["split"] == "val" and res["val"]["source"]["split_seed"] == 3
    again = build_split(tmp_path / "sp2", list_file=coded[0], val_fraction=0.25, split_seed=3, **OPTS)
    assert again["val"]["class_pixel_counts"] == res["val"]["class_pixel_counts"]
    with pytest.raises(UserError, match="--val-fraction 1.5"):
        build_split(tmp_path / "sp3", list_file=coded[0], val_fraction=1.5, **OPTS)


def test_separate_val_list_and_overlap(tmp_path: Path, coded: tuple[Path, list, list]) -> None:
    lines = coded[0].read_text().splitlines(keepends=True)
    (coded[0].parent / "a.txt").write_text("".join(lines[:5]))
    (coded[0].parent / "b.txt").write_text("".join(lines[5:]))
    res = build_split(tmp_path / "sp", list_file=coded[0].parent / "a.txt", val_list=coded[0].parent / "b.txt", **OPTS)
    assert (res["train"]["num_records"], res["val"]["num_records"]) == (5, 3)
    (coded[0].parent / "b.txt").write_text("".join(lines[4:]))
    with pytest.raises(UserError, match="in both train and val"):
        build_split(tmp_path / "sp2", list_file=coded[0].parent / "a.txt", val_list=coded[0].parent / "b.txt", **OPTS)
    assert not (tmp_path / "sp2").exists()


def test_absent_class_and_mixed_sizes_warn(tmp_path: Path) -> None:
    images, labels = coded_pairs(3)
    labels = [np.minimum(lab, 3) for lab in labels]  # class 4 never appears
    images.append(np.zeros((10, 12, 3), np.uint8))
    labels.append(np.zeros((10, 12), np.uint8))
    lst = write_pairs(tmp_path / "d", images, labels)
    stats = build_dataset(tmp_path / "o", list_file=lst, **OPTS)
    assert stats["absent_classes"] == [4]
    assert stats["class_weights"]["median_frequency"][4] == 0.0
    assert any("class 4 never appears" in w for w in stats["warnings"])
    assert stats["height"] is None and stats["sizes"] == [[10, 12], [24, 32]]
    assert any("--resize" in w for w in stats["warnings"])
    px = 3 * 24 * 32 + 10 * 12
    want = sum(im.reshape(-1, 3).sum(0).astype(float) for im in images) / px
    np.testing.assert_allclose(stats["mean_bgr"], want, atol=1e-3)
