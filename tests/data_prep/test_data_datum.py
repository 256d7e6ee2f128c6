"""Our hand-written Datum/BlobProto bytes, read back by Caffe's generated protobuf classes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep.datum import blobproto_bytes, datum_to_array, encoded_datum, parse_datum, raw_datum, raw_datum_hwc

pytestmark = pytest.mark.caffe


def test_raw_datum_is_caffe_datum() -> None:
    from caffe.proto import caffe_pb2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # sizes whose varints take 2 bytes
    raw = raw_datum_hwc(img)
    d = caffe_pb2.Datum()
    d.ParseFromString(raw)
    assert (d.channels, d.height, d.width, d.encoded) == (3, 300, 200, False)
    assert np.array_equal(np.frombuffer(d.data, np.uint8).reshape(3, 300, 200), img.transpose(2, 0, 1))
    assert raw == raw_datum(np.ascontiguousarray(img.transpose(2, 0, 1)))
    # and ours parses what Caffe serializes (incl. a label field we do not write)
    d.label = 7
    ours = parse_datum(d.SerializeToString())
    assert ours.label == 7 and np.array_equal(datum_to_array(ours), img.transpose(2, 0, 1))


def test_encoded_datum_is_caffe_datum() -> None:
    from caffe.proto import caffe_pb2

    lab = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9) % 5
    ok, png = cv2.imencode(".png", lab)
    d = caffe_pb2.Datum()
    d.ParseFromString(encoded_datum(png.tobytes(), 1, 12, 9))
    assert d.encoded and d.channels == 1 and bytes(d.data) == png.tobytes()
    assert np.array_equal(datum_to_array(parse_datum(d.SerializeToString()))[0], lab)


def test_blobproto_reads_back_with_caffe_io() -> None:
    import caffe
    from caffe.proto import caffe_pb2

    arr = np.random.default_rng(1).normal(size=(1, 1, 4, 4)).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(blobproto_bytes(arr))
    assert list(blob.shape.dim) == [1, 1, 4, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), arr)
    assert blob == caffe.io.array_to_blobproto(arr)  # same message as pycaffe's own writer
