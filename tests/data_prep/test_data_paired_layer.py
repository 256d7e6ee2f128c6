"""PairedDataLayer: the same augmentation on image and label, seeded epochs, exact resume; in a
real Caffe net and through its pure core (PairedBatcher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_helpers import PAIRED_MEAN as MEAN
from dp_helpers import coded_pairs, paired_params, write_pairs

from data_prep.build import build_dataset
from data_prep.paired import PairedBatcher, parse_params

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def coded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 records, 24x32, whose blue channel is 40 x the label (in 8-pixel squares)."""
    root = tmp_path_factory.mktemp("paired")
    images, labels = coded_pairs(10, seed=4, block=8)
    lst = write_pairs(root / "data", images, labels)
    build_dataset(root / "db", list_file=lst, num_classes=5, ignore_label=255, quiet=True, workers=1)
    return root / "db"


def batcher(db: Path, train: bool = True, **kw: object) -> PairedBatcher:
    return PairedBatcher(parse_params(json.dumps(paired_params(db, **kw)), train=train))


def take(b: PairedBatcher, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        data, label, state = b.next_batch()
        b.delivered(state)
        out.append((data, label))
    return out


def label_from_image(data: np.ndarray) -> np.ndarray:
    return np.round((data[:, 0] + MEAN[0]) / 40.0)


def test_mirror_and_crop_keep_pairs_aligned(coded_db: Path) -> None:
    b = batcher(coded_db, mirror=True, crop=[16, 20])
    try:
        batches = take(b, 8)
    finally:
        b.close()
    for data, label in batches:
        assert data.shape == (3, 3, 16, 20) and label.shape == (3, 1, 16, 20)
        assert data.dtype == np.float32 and label.dtype == np.float32
        np.testing.assert_array_equal(label_from_image(data), label[:, 0])
    # the augmentation really varies: some crops are mirrored / shifted relative to others
    firsts = {batch[0][0].tobytes() for batch in batches}
    assert len(firsts) == 8


def test_scale_keeps_pairs_aligned_and_labels_unblended(coded_db: Path) -> None:
    b = batcher(coded_db, mirror=True, scale=[0.6, 1.7], crop=[20, 28])
    try:
        batches = take(b, 8)
    finally:
        b.close()
    agree, flipped, total, padded = 0, 0, 0, 0
    for data, label in batches:
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 255}  # nearest only, pad = ignore
        valid = label[:, 0] != 255
        padded += (~valid).sum()
        agree += (label_from_image(data)[valid] == label[:, 0][valid]).sum()
        flipped += (label_from_image(data[..., ::-1])[valid] == label[:, 0][valid]).sum()
        total += valid.sum()
    assert padded > 0  # some scales were below the crop: padded with the ignore label
    assert agree / total > 0.85  # only interpolated borders differ (0.92 measured)
    assert flipped / total < 0.5  # what a label mirrored differently from its image would score


def test_test_phase_centre_crop_no_augmentation(coded_db: Path) -> None:
    a, b = (
        batcher(coded_db, train=False, mirror=True, scale=[0.5, 2], crop=[16, 20], shuffle=False),
        batcher(coded_db, train=False, crop=[16, 20], shuffle=False, seed=9),
    )
    try:
        ((da, la),) = take(a, 1)
        ((db_, lb),) = take(b, 1)
    finally:
        a.close()
        b.close()
    np.testing.assert_array_equal(da, db_)
    np.testing.assert_array_equal(la, lb)
    images, labels = coded_pairs(10, seed=4, block=8)
    np.testing.assert_array_equal(lb[0, 0], labels[0][4:20, 6:26])


def test_epochs_are_seeded_permutations(coded_db: Path) -> None:
    images, _ = coded_pairs(10, seed=4, block=8)
    signatures = [im[..., 1].tobytes() for im in images]

    def order(b: PairedBatcher, n_batches: int) -> list[int]:
        out = []
        for data, _ in take(b, n_batches):
            for d in data:
                out.append(signatures.index((d[1] + MEAN[1]).astype(np.uint8).tobytes()))
        return out

    b1, b2, b3, b4 = (
        batcher(coded_db, batch_size=5),
        batcher(coded_db, batch_size=5),
        batcher(coded_db, batch_size=5, seed=2),
        batcher(coded_db, batch_size=5, shuffle=False),
    )
    try:
        o1, o2, o3, o4 = order(b1, 4), order(b2, 4), order(b3, 4), order(b4, 2)
    finally:
        for b in (b1, b2, b3, b4):
            b.close()
    assert sorted(o1[:10]) == sorted(o1[10:]) == list(range(10))  # each epoch sees every record once
    assert o1[:10] != o1[10:]  # and a new order each epoch
    assert o1 == o2 and o1 != o3
    assert o4 == list(range(10))
    assert b1.get_state()["epoch"] == 2 and b1.get_state()["position"] == 0


def test_state_resumes_the_same_sequence(coded_db: Path) -> None:
    kw: dict[str, Any] = dict(mirror=True, crop=[16, 20], scale=[0.8, 1.3], batch_size=4)
    a = batcher(coded_db, **kw)
    b = batcher(coded_db, **kw)
    try:
        take(a, 2)
        state = json.loads(json.dumps(a.get_state()))  # survives a JSON round trip (hooks_state.json)
        assert (state["epoch"], state["position"]) == (0, 8)
        rest = take(a, 4)  # crosses an epoch boundary
        take(b, 1)
        b.set_state(state)
        again = take(b, 4)
    finally:
        a.close()
        b.close()
    for (d1, l1), (d2, l2) in zip(rest, again, strict=True):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    with pytest.raises(ValueError, match="for 99 records"):
        a.set_state(dict(state, num_records=99))


def test_params_checked_and_defaults_from_stats(coded_db: Path, tmp_path: Path) -> None:
    p = parse_params(json.dumps({"images": str(coded_db / "images"), "labels": str(coded_db / "labels")}))
    stats = json.loads((coded_db / "stats.json").read_text())
    assert list(p.mean_bgr) == stats["mean_bgr"] and p.ignore_label == 255
    with pytest.raises(ValueError, match="unknown keys \\['batchsize'\\]"):
        parse_params(json.dumps({"images": "a", "labels": "b", "batchsize": 2}))
    with pytest.raises(ValueError, match="needs 'labels'"):
        parse_params(json.dumps({"images": "a"}))
    with pytest.raises(ValueError, match="not JSON"):
        parse_params("{images: a}")
    with pytest.raises(ValueError, match="scale must be"):
        parse_params(json.dumps({"images": "a", "labels": "b", "scale": [2, 1]}))
    with pytest.raises(ValueError, match="not an LMDB folder"):
        batcher(tmp_path)


def test_lmdbs_with_different_keys_are_refused(coded_db: Path, tmp_path: Path) -> None:
    images, labels = coded_pairs(4, seed=1)
    lst = write_pairs(tmp_path / "d", images, labels)
    build_dataset(tmp_path / "other", list_file=lst, num_classes=5, ignore_label=255, quiet=True, workers=1)
    params = {"images": str(coded_db / "images"), "labels": str(tmp_path / "other" / "labels")}
    with pytest.raises(ValueError, match="do not hold the same keys"):
        PairedBatcher(parse_params(json.dumps(params)))


def test_sizes_must_match_without_crop(tmp_path: Path) -> None:
    images, labels = coded_pairs(2)
    images.append(np.zeros((8, 8, 3), np.uint8))
    labels.append(np.zeros((8, 8), np.uint8))
    lst = write_pairs(tmp_path / "d", images, labels)
    build_dataset(tmp_path / "db", list_file=lst, num_classes=5, ignore_label=255, quiet=True, workers=1)
    b = batcher(tmp_path / "db", shuffle=False)
    try:
        with pytest.raises(ValueError, match="differ in size.*set 'crop'"):
            take(b, 1)
    finally:
        b.close()


NET = """
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "data_prep.layers" layer: "PairedDataLayer" param_str: '{params}' }} }}
layer {{ name: "silence" type: "Silence" bottom: "data" bottom: "label" }}
"""


def test_in_a_real_caffe_net_with_resume(coded_db: Path, tmp_path: Path) -> None:
    import caffe

    params = {
        "images": str(coded_db / "images"),
        "labels": str(coded_db / "labels"),
        "batch_size": 4,
        "mean_bgr": MEAN,
        "mirror": True,
        "crop": [16, 20],
        "scale": [0.9, 1.2],
        "seed": 5,
        "shuffle": True,
    }
    proto = tmp_path / "paired.prototxt"
    proto.write_text(NET.format(params=json.dumps(params)))
    net = caffe.Net(str(proto), caffe.TRAIN)
    layer = net.layers[0]
    assert layer.get_state()["position"] == 0  # net setup fetched a batch but did not deliver it
    net.forward()
    assert net.blobs["data"].data.shape == (4, 3, 16, 20) and net.blobs["label"].data.shape == (4, 1, 16, 20)
    state = layer.get_state()
    assert state["position"] == 4
    seen = []
    for _ in range(3):
        net.forward()
        seen.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    for data, label in seen:
        valid = label[:, 0] != 255
        assert (label_from_image(data)[valid] == label[:, 0][valid]).mean() > 0.9
    resumed = caffe.Net(str(proto), caffe.TRAIN)  # a new run, e.g. after a restart
    resumed.layers[0].set_state(json.loads(json.dumps(state)))
    for data, label in seen:
        resumed.forward()
        np.testing.assert_array_equal(resumed.blobs["data"].data, data)
        np.testing.assert_array_equal(resumed.blobs["label"].data, label)
    for n in (net, resumed):
        n.layers[0].batcher.close()


def test_rescale_never_blends_class_ids() -> None:
    from data_prep.paired import _rescale

    lab = np.kron(np.random.default_rng(0).choice([0, 4, 255], (6, 8)), np.ones((3, 3))).astype(np.uint8)[None]
    img = np.repeat(lab, 3, axis=0)
    for s in (0.55, 1.0, 1.37, 2.0):
        out_img, out_lab = _rescale(img, lab, s)
        assert out_lab.shape[1:] == out_img.shape[1:] == (round(18 * s), round(24 * s))
        assert set(np.unique(out_lab)) <= {0, 4, 255}
    assert set(np.unique(_rescale(img, lab, 1.37)[0])) - {0, 4, 255}  # while the image does blend
