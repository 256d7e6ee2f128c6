"""Every kind of awkward image file, through both readers that use it (`data build` and
`predict`'s reader share data_prep.decode.read_image): each cell is either decoded to the pixels
an image viewer shows, or refused with an error naming the file; never a silently grey image.

Decisions the cells pin down: EXIF orientation is applied (as viewers and OpenCV do), 16-bit is
scaled to 8 bits (value >> 8), grey and palette images become colour, CMYK JPEGs are converted,
a file is read by its content (not its extension), and any transparent pixel is refused (its colour
is undefined; flatten it first)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from dp_helpers import assert_failed, read_lmdb
from dp_helpers import cli_build as build
from PIL import Image

from common.errors import UserError
from data_prep.datum import datum_to_array, parse_datum

H, W = 24, 32
RNG = np.random.default_rng(7)
# smooth, so JPEG keeps it
RGB = (RNG.integers(0, 256, (H // 4, W // 4, 3)).repeat(4, 0).repeat(4, 1) // 2 + 64).astype(np.uint8)


def _pil_bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    bio = io.BytesIO()
    im.save(bio, fmt, **kw)
    return bio.getvalue()


def _jpeg(rgb: np.ndarray = RGB, **kw: object) -> bytes:
    return _pil_bytes(Image.fromarray(rgb), "JPEG", quality=100, subsampling=0, **kw)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    return _pil_bytes(Image.fromarray(arr, mode) if mode else Image.fromarray(arr), "PNG")


def _garbage_mid_jpeg() -> bytes:
    """200 random bytes over the middle of the entropy-coded data; the end marker stays. (JPEG has
    no checksum: libjpeg notices ~98% of such damage, not all; seed 1 here happens to pass unseen.)"""
    jpg = _jpeg()
    mid = len(jpg) // 2
    return jpg[:mid] + np.random.default_rng(0).integers(0, 256, 200).astype(np.uint8).tobytes() + jpg[mid + 200 :]


def _garbage_mid_png() -> bytes:
    png = _png(RGB)
    start = 60  # inside IDAT's compressed data (the chunk starts at byte 33, its data at 41)
    assert len(png) > start + 120
    return png[:start] + bytes(range(100)) + png[start + 100 :]


def _palette(transparent: bool) -> tuple[bytes, np.ndarray]:
    im = Image.fromarray(RGB).quantize(16)
    shown = np.asarray(im.convert("RGB"))
    return _pil_bytes(im, "PNG", **({"transparency": 0} if transparent else {})), shown


def _rgba(alpha: int) -> bytes:
    rgba = np.dstack([RGB, np.full((H, W), 255, np.uint8)])
    rgba[:3, :5, 3] = alpha
    return _png(rgba, "RGBA")


def _exif_rotated() -> bytes:
    """Stored 32 x 24 (rotated), tagged 'rotate 90 CW to show' (orientation 6): a viewer shows RGB."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(np.ascontiguousarray(np.rot90(RGB, 1)), exif=exif.tobytes())


def _grey() -> tuple[bytes, np.ndarray]:
    g = RGB[..., 1]
    return _png(g), np.dstack([g, g, g])


def _sixteen_bit() -> tuple[bytes, np.ndarray]:
    v16 = np.random.default_rng(16).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    return cv2.imencode(".png", v16[..., ::-1])[1].tobytes(), (v16 >> 8).astype(np.uint8)


def _cmyk() -> bytes:
    return _pil_bytes(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=100)


# name -> (file name, bytes, then the RGB a viewer shows and the mean abs tolerance, or the words of the refusal)
Decoded = tuple[np.ndarray, float]
CELLS: dict[str, Callable[[], tuple[str, bytes, Decoded | list[str]]]] = {
    "truncated jpeg": lambda: ("x.jpg", _jpeg()[:-300], ["truncated"]),
    "truncated png": lambda: ("x.png", _png(RGB)[:-60], ["truncated"]),
    "garbage mid jpeg": lambda: ("x.jpg", _garbage_mid_jpeg(), ["JPEG data is corrupt", "Corrupt JPEG data"]),
    "garbage mid png": lambda: ("x.png", _garbage_mid_png(), ["not a readable image"]),
    "png named jpg": lambda: ("x.jpg", _png(RGB), (RGB, 0)),
    "16-bit png": lambda: ("x.png", _sixteen_bit()[0], (_sixteen_bit()[1], 0)),
    "cmyk jpeg": lambda: ("x.jpg", _cmyk(), (RGB, 2.0)),
    "palette": lambda: ("x.png", _palette(False)[0], (_palette(False)[1], 0)),
    "palette transparency": lambda: ("x.png", _palette(True)[0], ["transparent pixel"]),
    "exif rotated": lambda: ("x.jpg", _exif_rotated(), (RGB, 2.0)),
    "grayscale": lambda: ("x.png", _grey()[0], (_grey()[1], 0)),
    "rgba opaque": lambda: ("x.png", _rgba(255), (RGB, 0)),
    "rgba transparent": lambda: ("x.png", _rgba(0), ["15 transparent pixel"]),
    "rgba half": lambda: ("x.png", _rgba(128), ["transparent pixel"]),
}


def _place(data: Path, name: str, content: bytes) -> Path:
    """Put the cell's file in as pair 2 (list line 3) of the six-pair dataset."""
    path = data / "img" / f"002_{name}"
    path.write_bytes(content)
    lst = data / "list.txt"
    lst.write_text(lst.read_text().replace("img/002.png", f"img/{path.name}"))
    return path


def _record(value: bytes) -> np.ndarray:
    """C x H x W of a written Datum (the data stage's own parser; Caffe's reads the same bytes elsewhere)."""
    return datum_to_array(parse_datum(value))


def _assert_shows(bgr: np.ndarray, expect: Decoded) -> None:
    rgb, tol = expect
    assert bgr.shape == (H, W, 3)
    diff = np.abs(bgr[..., ::-1].astype(int) - rgb.astype(int)).mean()
    assert diff <= tol, f"mean abs difference {diff:.2f} from what a viewer shows"


@pytest.mark.parametrize("cell", CELLS)
def test_data_build(cell: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, content, expect = CELLS[cell]()
    path = _place(data, name, content)
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    if isinstance(expect, list):
        assert_failed(rc, err, out, "list.txt line 3", str(path), *expect)
        return
    assert rc == 0, err
    records = read_lmdb(out / "images")
    _assert_shows(_record(records[2][1]).transpose(1, 2, 0), expect)


@pytest.mark.parametrize("cell", CELLS)
def test_predict_reader(cell: str, tmp_path: Path) -> None:
    """predict's child reads each image through the same decoder (in-process here; the real
    child on Caffe: tests/orchestrator/test_predict.py::test_predict_refuses_a_corrupt_jpeg)."""
    from orchestrator.predict.worker import _read

    name, content, expect = CELLS[cell]()
    path = tmp_path / name
    path.write_bytes(content)
    if isinstance(expect, list):
        with pytest.raises(UserError) as e:
            _read([str(path), None, "--images"], None)
        for w in [str(path), *expect]:
            assert w in str(e.value)
        return
    img, _ = _read([str(path), None, "--images"], None)
    _assert_shows(img, expect)


def test_skip_bad_lists_a_corrupt_jpeg(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _place(data, "x.jpg", _garbage_mid_jpeg())
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys, "--skip-bad")
    assert rc == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_records"] == 5
    assert [s["file"] for s in stats["skipped"]] == [str(path)]
    assert "JPEG data is corrupt" in stats["skipped"][0]["reason"]


def test_exif_rotated_label_is_turned_like_its_image(data: Path, tmp_path: Path, capsys) -> None:
    """A label carrying an EXIF orientation is turned as its image is (both as a viewer shows them)."""
    lab = cv2.imread(str(data / "lab" / "002.png"), cv2.IMREAD_UNCHANGED)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(lab, 1))).save(data / "lab" / "002.png", exif=exif.tobytes())
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert rc == 0, err
    assert (_record(read_lmdb(out / "labels")[2][1])[0] == lab).all()
