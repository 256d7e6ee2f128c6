"""One picture per example: image | ground truth | prediction | errors, each column titled, a
legend of the class names and colours below, small images scaled up (nearest) to a readable
size. Ground truth and prediction are drawn in plain class colours and the errors on a grey
copy of the image, so nothing in the picture can be mistaken for the image's own colours.
Pure numpy + PIL (no matplotlib): `predict` draws one per image."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from orchestrator.contract import class_labels
from orchestrator.predict.overlay import IGNORE_GREY, WRONG, error_map

READABLE = 256  # images are scaled up by whole factors until their longer side reaches this
LARGEST = 640  # and larger ones down (every k-th pixel) until it fits this: four columns stay on a screen
GAP, PAD, SWATCH = 8, 6, 14
INK, PAPER = (20, 20, 20), (255, 255, 255)


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def scale_for(h: int, w: int) -> int:
    """The whole factor that brings the longer side to about READABLE pixels (1: large enough;
    negative -k: shrink by k, an image longer than LARGEST)."""
    side = max(h, w, 1)
    return -((side + LARGEST - 1) // LARGEST) if side > LARGEST else max(1, READABLE // side)


def upscale(rgb: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour scaling by a whole factor: every pixel a crisp k x k block (k > 1), or
    every -k-th pixel (k < 0)."""
    if k < 0:
        return rgb[::-k, ::-k]
    return rgb if k == 1 else np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


def class_colours(classes: np.ndarray, palette: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """H x W x 3 RGB of plain class colours; the ignore label in the ignored grey."""
    out = palette[classes.astype(np.int64) % len(palette)].copy()
    if ignore_label is not None:
        out[classes == ignore_label] = IGNORE_GREY
    return out


def _legend_items(
    classes: np.ndarray, label: np.ndarray | None, palette: np.ndarray, names: list[str], ignore: int | None
) -> list[tuple[tuple[int, int, int], str]]:
    """(colour, text) of each class present in the prediction or the label, then the markers."""
    present = set(np.unique(classes).tolist()) | (set(np.unique(label).tolist()) if label is not None else set())
    labels = class_labels(names, max(present, default=0) + 1)
    items = [
        (tuple(int(v) for v in palette[c % len(palette)]), labels[c]) for c in sorted(present) if c != ignore and 0 <= c
    ]
    if label is not None:
        items += [(tuple(int(v) for v in WRONG), "wrong"), (tuple(int(v) for v in IGNORE_GREY), "ignored")]
    return items  # type: ignore[return-value]


def _layout_legend(draw: Any, items: list[tuple[Any, str]], width: int, font: Any) -> list[list[tuple[Any, str, int]]]:
    """Legend entries wrapped into rows that fit `width`: [[(colour, text, x), ...], ...]."""
    rows: list[list[tuple[Any, str, int]]] = [[]]
    x = PAD
    for colour, text in items:
        w = SWATCH + 4 + int(draw.textlength(text, font=font)) + 14
        if rows[-1] and x + w > width - PAD:
            rows.append([])
            x = PAD
        rows[-1].append((colour, text, x))
        x += w
    return rows


def panel(
    image_bgr: np.ndarray,
    classes: np.ndarray,
    label: np.ndarray | None,
    palette: np.ndarray,
    names: list[str],
    ignore_label: int | None,
    title: str = "",
) -> np.ndarray:
    """The picture of one example as RGB: image | ground truth | prediction | errors (the
    label's two columns only when there is a label), titled columns and a class legend."""
    from PIL import Image, ImageDraw

    k = scale_for(*classes.shape[:2])
    tiles = [("image", image_bgr[..., ::-1])]
    if label is not None:
        tiles.append(("ground truth", class_colours(label, palette, ignore_label)))
    tiles.append(("prediction", class_colours(classes, palette, None)))
    if label is not None:
        scored = label != ignore_label if ignore_label is not None else np.ones(label.shape, bool)
        wrong = float(((classes != label) & scored).sum()) / max(1, int(scored.sum()))
        tiles.append((f"errors: {100 * wrong:.1f}% wrong", error_map(image_bgr, classes, label, ignore_label)))
    h, w = upscale(classes, k).shape[:2]
    font, big = _font(13), _font(15)
    width = len(tiles) * w + (len(tiles) + 1) * GAP
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = _layout_legend(probe, _legend_items(classes, label, palette, names, ignore_label), width, font)
    head = 24 + (22 if title else 0)
    canvas = Image.new("RGB", (width, head + h + GAP + len(rows) * (SWATCH + 8) + PAD), PAPER)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GAP, 4), title, fill=INK, font=big)
    for i, (name, rgb) in enumerate(tiles):
        x = GAP + i * (w + GAP)
        draw.text((x, head - 20), name, fill=INK, font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(upscale(rgb, k)), "RGB"), (x, head))
    y = head + h + GAP
    for row in rows:
        for colour, text, x in row:
            draw.rectangle((x, y, x + SWATCH, y + SWATCH), fill=colour, outline=INK)
            draw.text((x + SWATCH + 4, y), text, fill=INK, font=font)
        y += SWATCH + 8
    return np.asarray(canvas)
