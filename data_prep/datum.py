"""Caffe `Datum` and `BlobProto` wire format, written and read by hand.

Why by hand: building a `caffe_pb2.Datum` per record costs a protobuf object and an extra
copy of the pixel bytes, and importing `caffe_pb2` loads all of Caffe. The two messages are
tiny (a few varints and one bytes field), so the bytes are put together directly. The tests
parse what we write with Caffe's own `caffe_pb2` to prove the format.

caffe.proto:  Datum { channels=1; height=2; width=3; bytes data=4; label=5;
                      repeated float float_data=6; bool encoded=7 }
              BlobProto { repeated float data=5 [packed]; BlobShape shape=7 }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint starting at `pos`."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def datum_header(channels: int, height: int, width: int, data_len: int) -> bytes:
    """Everything of a Datum before the pixel bytes (fields 1-3 and the tag/length of 4)."""
    return (
        b"\x08" + _varint(channels) + b"\x10" + _varint(height) + b"\x18" + _varint(width) + b"\x22" + _varint(data_len)
    )


def raw_datum(chw: np.ndarray) -> bytes:
    """Serialized raw Datum of a uint8 C x H x W array (the layout Caffe's Data layer expects)."""
    if chw.dtype != np.uint8 or chw.ndim != 3:
        raise ValueError(f"raw_datum needs a uint8 C x H x W array, got {chw.dtype} {chw.shape}")
    c, h, w = chw.shape
    data = np.ascontiguousarray(chw).tobytes()
    return datum_header(c, h, w, len(data)) + data


def raw_datum_hwc(img: np.ndarray) -> bytes:
    """Serialized raw Datum of an H x W (x C) uint8 image, planes split straight into the buffer
    (cv2.split into views is ten times faster than numpy's transpose copy)."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"raw_datum_hwc needs a uint8 H x W (x C) array, got {img.dtype} {img.shape}")
    if img.ndim == 2:
        return raw_datum(img[None])
    import cv2

    h, w, c = img.shape
    head = datum_header(c, h, w, img.size)
    buf = np.empty(len(head) + img.size, np.uint8)
    buf[: len(head)] = np.frombuffer(head, np.uint8)
    planes = buf[len(head) :].reshape(c, h, w)
    cv2.split(np.ascontiguousarray(img), list(planes))
    return buf.tobytes()


def encoded_datum(png: bytes, channels: int, height: int, width: int) -> bytes:
    """Serialized Datum holding compressed image bytes with `encoded = true`."""
    return datum_header(channels, height, width, len(png)) + png + b"\x38\x01"


@dataclass(frozen=True)
class Datum:
    """The fields of a parsed Datum that this project uses."""

    channels: int
    height: int
    width: int
    data: bytes | memoryview
    encoded: bool
    label: int = 0


def parse_datum(raw: bytes | memoryview) -> Datum:
    """Parse a serialized Datum (ours or Caffe's); float_data is skipped. Given a memoryview
    (e.g. an LMDB buffer), `data` is a view into it, valid as long as that buffer is."""
    buf = memoryview(raw)
    pos = 0
    fields: dict[str, Any] = {"channels": 0, "height": 0, "width": 0, "data": b"", "encoded": False, "label": 0}
    names = {1: "channels", 2: "height", 3: "width", 5: "label", 7: "encoded"}
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if num in names:
                fields[names[num]] = bool(value) if num == 7 else value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if num == 4:
                fields["data"] = (
                    buf[pos : pos + length] if isinstance(raw, memoryview) else bytes(buf[pos : pos + length])
                )
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in Datum")
    return Datum(**fields)


def datum_to_array(d: Datum) -> np.ndarray:
    """uint8 C x H x W pixels of a Datum, decoding PNG/JPEG bytes when `encoded`."""
    if not d.encoded:
        return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
    import cv2

    img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("encoded Datum does not decode as an image")
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


def blobproto_bytes(array: np.ndarray) -> bytes:
    """Serialized float BlobProto with `shape`, the same message as caffe.io.array_to_blobproto."""
    dims = b"".join(_varint(int(n)) for n in array.shape)
    shape = b"\x0a" + _varint(len(dims)) + dims  # BlobShape { repeated int64 dim = 1 [packed] }
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return b"\x2a" + _varint(len(data)) + data + b"\x3a" + _varint(len(shape)) + shape
