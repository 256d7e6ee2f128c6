"""The one parser of an image size written `AxB` (`data build --resize 480x360` is width x
height, `data synth --size 64x64` height x width, data.build.resize in an experiment like
--resize): two positive integers, in the order written."""

from __future__ import annotations


def parse_size(text: str, order: str = "WxH") -> tuple[int, int]:
    """'480x360' -> (480, 360), the numbers in the order written; `order` ("WxH" or "HxW") names
    them in the error. ValueError saying what is wrong otherwise."""
    first, second = ("width", "height") if order == "WxH" else ("height", "width")
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{text!r} is not " + ("like 480x360" if order == "WxH" else order)) from None
    if a < 1 or b < 1:
        raise ValueError(f"{text!r}: {first} and {second} must be positive")
    return a, b
