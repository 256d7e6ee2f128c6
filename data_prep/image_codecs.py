"""What the image decoders say besides the pixels.

libjpeg reports damaged data (garbage mid-stream, a bad Huffman code) as a *warning* on the
process's stderr, fills the damaged part with grey and succeeds: OpenCV hands back the grey image
and the warning never reaches Python. So the decode runs with file descriptor 2 pointed at a
temporary file, and the caller judges the text. Transparency is invisible to OpenCV's colour
decode, so Pillow reads the alpha channel of the (rare) images that have one.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import threading
from typing import Any

import numpy as np

# libjpeg's warnings that mean the pixels are not what was encoded (jerror.h: JWRN_HIT_MARKER,
# JWRN_EXTRANEOUS_DATA, JWRN_HUFF_BAD_CODE, JWRN_ARITH_BAD_CODE, JWRN_JPEG_EOF, JWRN_MUST_RESYNC,
# JWRN_NOT_SEQUENTIAL, JWRN_TOO_MUCH_DATA); its other warnings (an unknown JFIF revision) are harmless.
CORRUPT_JPEG = re.compile(
    r"Corrupt JPEG data|Premature end of JPEG file|must resync|Invalid SOS parameters|too many scanlines",
    re.IGNORECASE,
)
_MAX_SAID = 2000  # characters of decoder text kept: a message quotes it, it never floods one
_LOCK = threading.Lock()  # fd 2 is per process: one capture at a time
_SINKS: dict[int, Any] = {}  # one unlinked temporary file per process (a forked worker makes its own)


def _sink() -> Any:
    pid = os.getpid()
    if pid not in _SINKS:
        _SINKS[pid] = tempfile.TemporaryFile()
    sink = _SINKS[pid]
    sink.seek(0)
    sink.truncate()
    return sink


def decode_reporting(buf: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode(buf, IMREAD_COLOR) and what the decoder wrote to stderr meanwhile (stripped)."""
    import cv2

    with _LOCK:
        sink = _sink()
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to capture
            return cv2.imdecode(buf, cv2.IMREAD_COLOR), ""
        os.dup2(sink.fileno(), 2)
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        said = sink.read(_MAX_SAID).decode(errors="replace")
    return img, " ".join(said.split())


def pass_on(said: str) -> None:
    """Harmless decoder remarks (a libpng iCCP note) still reach the user's stderr, as before."""
    if said:
        print(said, file=sys.stderr)


def transparent_pixels(data: bytes) -> int:
    """How many pixels an image's alpha channel (or palette/colour-key transparency) makes not
    fully opaque; 0 for images without one or that Pillow cannot read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in im.info:
                return 0
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
    except (OSError, SyntaxError, ValueError):
        return 0
    return int((alpha < 255).sum())
