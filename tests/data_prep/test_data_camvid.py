"""The data stage on the real CamVid subset: records, alignment, pixel equality, weights, and
Caffe's own Data layers reading the result."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dp_helpers import caffe_datum_array, read_lmdb

pytestmark = pytest.mark.caffe

CAMVID_CLASSES, VOID = 11, 11


def _list(camvid: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in (camvid / "train.txt").read_text().splitlines() if line.strip()]


def test_records_and_keys_aligned(camvid: Path, camvid_db: Path) -> None:
    imgs, labs = read_lmdb(camvid_db / "images"), read_lmdb(camvid_db / "labels")
    stats = json.loads((camvid_db / "stats.json").read_text())
    assert len(imgs) == len(labs) == stats["num_records"] == 92
    assert [k for k, _ in imgs] == [k for k, _ in labs]
    names = [Path(i).name for i, _ in _list(camvid)]
    assert [k.decode() for k, _ in imgs] == [f"{i:08d}_{n}" for i, n in enumerate(names)]
    assert (stats["height"], stats["width"]) == (360, 480)


def test_records_equal_their_pngs(camvid: Path, camvid_db: Path) -> None:
    imgs, labs = dict(read_lmdb(camvid_db / "images")), dict(read_lmdb(camvid_db / "labels"))
    pairs = _list(camvid)
    for i in (0, 45, 91):
        key = f"{i:08d}_{Path(pairs[i][0]).name}".encode()
        label = caffe_datum_array(labs[key])
        png = cv2.imread(str(camvid / pairs[i][1]), cv2.IMREAD_UNCHANGED)
        assert label.shape == (1, 360, 480) and label.dtype == np.uint8
        assert np.array_equal(label[0], png)
        image = caffe_datum_array(imgs[key])
        assert np.array_equal(image, cv2.imread(str(camvid / pairs[i][0])).transpose(2, 0, 1))  # BGR, CxHxW


def _independent_weights(camvid: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median-frequency weights straight from the PNGs, written without data_prep's code."""
    pixels = np.zeros(CAMVID_CLASSES)
    image_pixels = np.zeros(CAMVID_CLASSES)
    bgr = np.zeros(3)
    for img_rel, lab_rel in _list(camvid):
        lab = cv2.imread(str(camvid / lab_rel), cv2.IMREAD_UNCHANGED)
        valid = lab[lab != VOID]
        for c in np.unique(valid):
            pixels[c] += (valid == c).sum()
            image_pixels[c] += valid.size
        bgr += cv2.imread(str(camvid / img_rel)).reshape(-1, 3).sum(0)
    freq = pixels / image_pixels
    return freq, np.median(freq) / freq, bgr / (92 * 360 * 480)


def test_weights_match_numpy(camvid: Path, camvid_db: Path) -> None:
    stats = json.loads((camvid_db / "stats.json").read_text())
    freq, weights, mean = _independent_weights(camvid)
    np.testing.assert_allclose(stats["class_frequencies"], freq, rtol=1e-12)
    np.testing.assert_allclose(stats["class_weights"]["median_frequency"], weights, rtol=1e-12)
    np.testing.assert_allclose(stats["mean_bgr"], mean, atol=1e-3)
    # the README's measured counts for the kept 92 images
    assert stats["class_pixel_counts"][3] == 5041362 and stats["class_image_counts"][7] == 43
    inv = np.array(stats["class_weights"]["inverse_frequency"])
    counts = np.array(stats["class_pixel_counts"], float)
    np.testing.assert_allclose(inv, counts.sum() / (11 * counts))
    assert stats["absent_classes"] == [] and stats["skipped"] == []
    assert stats["ignore_label"] == VOID and stats["num_classes"] == CAMVID_CLASSES


def test_infogain_matrix_is_diag_weights(camvid_db: Path) -> None:
    import caffe
    from caffe.proto import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.ParseFromString((camvid_db / "infogain_H.binaryproto").read_bytes())
    H = caffe.io.blobproto_to_array(blob)
    w = json.loads((camvid_db / "stats.json").read_text())["class_weights"]["median_frequency"]
    assert H.shape == (1, 1, 11, 11)
    np.testing.assert_allclose(H[0, 0], np.diag(w), rtol=1e-6)


NATIVE = """
layer {{ name: "data" type: "Data" top: "data"
  data_param {{ source: "{db}/images" backend: LMDB batch_size: {bs} }} }}
layer {{ name: "label" type: "Data" top: "label"
  data_param {{ source: "{db}/labels" backend: LMDB batch_size: {bs} }} }}
"""


def test_native_data_layers_deliver_aligned_pairs(camvid: Path, camvid_db: Path, tmp_path: Path) -> None:
    """Two of Caffe's own Data layers in one real net: batch after batch, the label blob is the
    label PNG of the image in the data blob."""
    import caffe

    caffe.set_mode_cpu()
    proto = tmp_path / "native.prototxt"
    proto.write_text(NATIVE.format(db=camvid_db, bs=4))
    net = caffe.Net(str(proto), caffe.TEST)
    pairs = _list(camvid)
    for batch in range(3):
        net.forward()
        assert net.blobs["data"].data.shape == (4, 3, 360, 480)
        assert net.blobs["label"].data.shape == (4, 1, 360, 480)
        for j in range(4):
            img_rel, lab_rel = pairs[batch * 4 + j]
            img = cv2.imread(str(camvid / img_rel)).transpose(2, 0, 1)
            lab = cv2.imread(str(camvid / lab_rel), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(net.blobs["data"].data[j], img)
            assert np.array_equal(net.blobs["label"].data[j, 0], lab)


INFOGAIN = """
layer {{ name: "score" type: "Input" top: "score" input_param {{ shape {{ dim: 2 dim: 11 dim: 3 dim: 5 }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 2 dim: 1 dim: 3 dim: 5 }} }} }}
layer {{ name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" top: "loss"
  infogain_loss_param {{ source: "{h}" }} }}
"""


def test_infogain_loss_layer_uses_the_weights(camvid_db: Path, tmp_path: Path) -> None:
    """Caffe's InfogainLoss reads our H and weighs each pixel's log-loss by its class weight
    (this BVLC version applies the softmax itself, so it takes raw scores)."""
    import caffe

    proto = tmp_path / "infogain.prototxt"
    proto.write_text(INFOGAIN.format(h=camvid_db / "infogain_H.binaryproto"))
    net = caffe.Net(str(proto), caffe.TEST)
    rng = np.random.default_rng(0)
    score = rng.normal(size=(2, 11, 3, 5)).astype(np.float32)
    label = rng.integers(0, 11, (2, 1, 3, 5)).astype(np.float32)
    net.blobs["score"].data[...] = score
    net.blobs["label"].data[...] = label
    loss = float(net.forward()["loss"])
    w = np.array(json.loads((camvid_db / "stats.json").read_text())["class_weights"]["median_frequency"])
    p = np.exp(score) / np.exp(score).sum(1, keepdims=True)
    lab = label[:, 0].astype(int)
    picked = np.take_along_axis(p, lab[:, None], 1)[:, 0]
    assert loss == pytest.approx(float(-(w[lab] * np.log(picked)).sum() / lab.size), rel=1e-4)


# sha256 over every (key, value) of the images and labels LMDBs, as the data stage of 2026-12-01
# (commit 565203f, before label maps, layouts and the data checks) built CamVid's train.txt
CAMVID_DIGESTS = {
    None: (
        "1c5d0ce041c1f9e2987c8f03953973c3e2da222f68bcd951b1a88fdb18589ed2",
        "fc66f04039a2d24b07b60bb04e118ab0ae7831cd5d30f1cba6946a3214ce6509",
    ),
    (240, 180): (
        "e3f96e19a4ce2d2c8c148af159744b2c36bbff90ae0f8639c2b761841a2f4c71",
        "3fcc212d345438ec1ae017444dce7156dbbcb2bf5e0152b9702ff60c2a314890",
    ),
}


def _digest(db: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in read_lmdb(db):
        h.update(k)
        h.update(v)
    return h.hexdigest()


@pytest.mark.parametrize("resize", [None, (240, 180)], ids=["full", "240x180"])
def test_camvid_builds_byte_identical_to_before(
    camvid: Path, camvid_db: Path, tmp_path: Path, resize: tuple[int, int] | None
) -> None:
    from data_prep.build import build_dataset

    db = camvid_db
    if resize is not None:
        db = tmp_path / "db"
        build_dataset(db, num_classes=11, ignore_label=11, list_file=camvid / "train.txt", resize=resize, quiet=True)
    assert (_digest(db / "images"), _digest(db / "labels")) == CAMVID_DIGESTS[resize]
