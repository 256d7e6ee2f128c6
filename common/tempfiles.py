"""Hand bytes to a Caffe function that only reads from a path (copy_from, restore)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def through_temp_file(data: bytes, suffix: str, use: Callable[[str], object]) -> None:
    """Write `data` to a private temp file, call `use(path)`, and delete the file again."""
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        use(tmp)
    finally:
        os.unlink(tmp)
