"""Turn one (image, label) pair into Datum bytes and the numbers the statistics need.

Runs in worker processes, so it returns problems as `Bad` values (the parent decides whether
to stop or skip) and sends back only bytes and small arrays.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import image_codecs, labelmap
from data_prep.datum import encoded_datum, raw_datum_hwc
from data_prep.sources import Pair


@dataclass(frozen=True)
class DecodeOptions:
    """What every worker needs to know; picklable."""

    num_classes: int = 0
    ignore_label: int = 255
    resize: tuple[int, int] | None = None  # (width, height)
    encoded: bool = False
    palette: tuple[np.ndarray, np.ndarray] | None = None  # from sources.palette_lut
    allow_lossy_labels: bool = False
    label_lut: np.ndarray | None = None  # from labelmap.LabelMap.lut(): stored value -> class id, -1 unmapped


@dataclass(frozen=True)
class Record:
    """A decoded pair, ready to write."""

    image_datum: bytes
    label_datum: bytes | None
    bincount: np.ndarray | None  # int64[256]: label pixel values after resize
    bgr_sum: tuple[float, float, float]
    height: int
    width: int
    lossy_label: str | None = None  # the label file's lossy format, when --allow-lossy-labels let it in
    source_hw: tuple[int, int] = (0, 0)  # the image's size before --resize
    digest: str = ""  # sha1 of the decoded pixels: the same picture under two names or formats


@dataclass(frozen=True)
class Bad:
    """Why a pair cannot be used; `file` is the offending file; `fix` when the generic one is wrong."""

    where: str
    file: str
    reason: str
    fix: str = ""
    unmapped: tuple[int, ...] = ()  # label values --label-map does not cover (collected over all pairs)

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "file": self.file, "reason": self.reason}


class _Problem(Exception):
    """Internal: carries (file, reason) out of the nested readers."""

    def __init__(self, file: Path, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.file, self.reason, self.fix = str(file), reason, fix


def _read_bytes(path: Path) -> np.ndarray:
    try:
        buf = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise _Problem(path, "file does not exist") from None
    except OSError as e:
        raise _Problem(path, f"cannot read file ({e.strerror or e})") from None
    if buf.size == 0:
        raise _Problem(path, "file is empty")
    return buf


def _check_complete(path: Path, buf: np.ndarray) -> None:
    """Decoders fill a cut-off JPEG with grey instead of failing, so look for the end marker."""
    head, tail = buf[:8].tobytes(), buf[-32:].tobytes()
    if head.startswith(b"\x89PNG") and b"IEND" not in tail:
        raise _Problem(path, "PNG is truncated (no IEND chunk at the end)")
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise _Problem(path, "JPEG is truncated (no end-of-image marker)")


def read_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 BGR (OpenCV's order, which is Caffe's), as an image viewer shows it: EXIF
    orientation applied, 16-bit scaled to 8, grey/palette/CMYK as colour. Refused: anything the
    decoder calls corrupt (it would fill the damage with grey) and transparent pixels (no colour).
    `data build` and `predict` both read images here."""
    buf = _read_bytes(path)
    _check_complete(path, buf)
    img, said = image_codecs.decode_reporting(buf)
    if img is None:
        detail = f": {said}" if said else ""
        raise _Problem(path, f"not a readable image (unknown format or corrupt data{detail})")
    if said and buf[:2].tobytes() == b"\xff\xd8" and image_codecs.CORRUPT_JPEG.search(said):
        raise _Problem(
            path,
            f"JPEG data is corrupt (the decoder says: {said}); "
            "decoding it anyway would fill the damaged part with grey",
        )
    image_codecs.pass_on(said)
    clear = image_codecs.transparent_pixels(buf.tobytes())
    if clear:
        raise _Problem(
            path,
            f"image has {clear} transparent pixel(s) (alpha < 255): their colour is undefined",
            "flatten the image onto a background (e.g. save it as RGB without alpha), or leave the pair out "
            "with --skip-bad",
        )
    return img


def _webp_is_lossy(data: bytes) -> bool:
    """A WebP with a 'VP8 ' chunk (not 'VP8L') is lossy; walk the RIFF chunks to find out."""
    pos = 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if fourcc == b"VP8 ":
            return True
        pos += 8 + size + (size & 1)
    return False


def lossy_format(pil_format: str | None, data: bytes) -> str | None:
    """'JPEG' or 'WebP (lossy)' when the file's content (not its name) is lossily compressed."""
    if pil_format in ("JPEG", "MPO"):
        return "JPEG"
    if pil_format == "WEBP" and _webp_is_lossy(data):
        return "WebP (lossy)"
    return None


LOSSY_FIX = (
    "use the lossless originals (PNG), or pass --allow-lossy-labels if these labels are what you "
    "want to train on (stats.json then says how many files were lossy)"
)


def read_label(
    path: Path, palette: tuple[np.ndarray, np.ndarray] | None, allow_lossy: bool = False
) -> tuple[np.ndarray, str | None]:
    """H x W class ids: index PNGs as stored, paletted PNGs by palette index (not colour),
    colour-coded labels through the palette file; and the lossy format if the file has one.

    Lossy files are refused unless `allow_lossy`: JPEG blurs the edges between classes into ids
    that no annotator drew (a road/sky edge grows a rim of the classes numbered in between)."""
    from PIL import Image, ImageOps

    buf = _read_bytes(path)
    _check_complete(path, buf)
    data = buf.tobytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            lossy = lossy_format(im.format, data)
            if lossy and not allow_lossy:
                raise _Problem(
                    path,
                    f"label file is {lossy}: lossy compression changes class ids along edges "
                    "and invents classes that are not in the annotation",
                    LOSSY_FIX,
                )
            im.load()
            shown = ImageOps.exif_transpose(im)  # oriented as a viewer shows it, like read_image's image
            mode = shown.mode
            arr = np.asarray(shown)
    except (OSError, SyntaxError, ValueError) as e:
        raise _Problem(path, f"not a readable label image ({e})") from None
    return _label_ids(path, mode, arr, palette), lossy


def _label_ids(path: Path, mode: str, arr: np.ndarray, palette: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if mode in ("P", "L", "1") or mode.startswith("I"):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise _Problem(path, f"label values {arr.min()}..{arr.max()} do not fit 0..255")
        return arr.astype(np.uint8, copy=False)
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if palette is None:
            if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                return np.ascontiguousarray(rgb[..., 0])  # grey ids saved as RGB
            raise _Problem(path, "label is colour-coded RGB; pass --palette FILE (name id R G B per line)")
        return _map_colours(path, rgb, palette)
    raise _Problem(path, f"unsupported label image mode {mode!r}; use index, paletted or RGB PNGs")


def _map_colours(path: Path, rgb: np.ndarray, palette: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    colours, ids = palette
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.searchsorted(colours, packed).clip(0, len(colours) - 1)
    ok = colours[pos] == packed
    if not ok.all():
        y, x = map(int, np.argwhere(~ok)[0])
        raise _Problem(
            path,
            f"pixel (x={x}, y={y}) has colour RGB{tuple(int(v) for v in rgb[y, x])} "
            f"that is not in the palette ({int((~ok).sum())} such pixels)",
        )
    return ids[pos]


def _check_values(path: Path, label: np.ndarray, counts: np.ndarray, opts: DecodeOptions) -> None:
    bad = [v for v in np.flatnonzero(counts) if v >= opts.num_classes and v != opts.ignore_label]
    if bad:
        y, x = map(int, np.argwhere(np.isin(label, bad))[0])
        raise _Problem(
            path,
            f"label value {int(label[y, x])} at pixel (x={x}, y={y}) is not a class id "
            f"(< {opts.num_classes}) nor the ignore label {opts.ignore_label}; "
            f"values found outside: {[int(v) for v in bad]}",
        )


def _resize(img: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    if (img.shape[1], img.shape[0]) == size:
        return img
    if nearest:
        interp = cv2.INTER_NEAREST_EXACT  # never blend class ids; centre-aligned like the image resize
    else:
        shrink = size[0] <= img.shape[1] and size[1] <= img.shape[0]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def resize(img: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """The data stage's resize to (width, height): area when shrinking images, linear when
    growing, nearest-exact for labels; `predict` uses it to see what training saw."""
    return _resize(img, size, nearest)


def _to_datum(arr: np.ndarray, encoded: bool) -> bytes:
    """Datum bytes of an H x W (x 3) uint8 array."""
    if encoded:
        import cv2

        ok, png = cv2.imencode(".png", arr)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return encoded_datum(png.tobytes(), 1 if arr.ndim == 2 else arr.shape[2], arr.shape[0], arr.shape[1])
    return raw_datum_hwc(arr)


def decode_pair(pair: Pair, opts: DecodeOptions) -> Record | Bad:
    """Read, check, resize and serialize one pair. Never raises for bad data: returns Bad."""
    try:
        img = read_image(pair.image)
        source_hw = (img.shape[0], img.shape[1])
        digest = hashlib.sha1(np.ascontiguousarray(img).data).hexdigest()  # no copy: ~3 ms for 2048x1024
        label = counts = lossy = None
        if pair.label is not None:
            label, lossy = read_label(pair.label, opts.palette, opts.allow_lossy_labels)
            if opts.label_lut is not None:
                label, unmapped = labelmap.apply(label, opts.label_lut)
                if unmapped:
                    return Bad(
                        pair.where,
                        str(pair.label),
                        f"label values {unmapped} are not in the label map",
                        unmapped=tuple(unmapped),
                    )
            if label.shape != img.shape[:2]:
                raise _Problem(
                    pair.label,
                    f"label is {label.shape[1]}x{label.shape[0]} but image "
                    f"{pair.image} is {img.shape[1]}x{img.shape[0]} (WxH)",
                )
            counts = np.bincount(label.ravel(), minlength=256)
            _check_values(pair.label, label, counts, opts)
        if opts.resize is not None:
            img = _resize(img, opts.resize, nearest=False)
            if label is not None:
                label = _resize(label, opts.resize, nearest=True)
                counts = np.bincount(label.ravel(), minlength=256)
    except _Problem as p:
        return Bad(pair.where, p.file, p.reason, p.fix)
    import cv2

    bgr = cv2.sumElems(img)  # 15x faster than numpy's sum over H x W x 3 uint8
    return Record(
        _to_datum(img, opts.encoded),
        None if label is None else _to_datum(label, opts.encoded),
        counts,
        (float(bgr[0]), float(bgr[1]), float(bgr[2])),
        img.shape[0],
        img.shape[1],
        lossy,
        source_hw,
        digest,
    )


def init_worker() -> None:
    """One OpenCV thread per worker process: the processes are the parallelism."""
    import cv2

    cv2.setNumThreads(1)
