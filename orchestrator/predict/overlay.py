"""Pictures of predictions (pure numpy, then PIL/matplotlib to write them): the class palette,
a colour overlay of a prediction on its image, an error map, and the normalised confusion
matrix. Used by `orchestrate predict` and by validation's best-iteration overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IGNORE_GREY = np.array([200, 200, 200], np.uint8)  # lighter than any pixel of the dimmed grey image
# magenta: no class colour of the VOC map for the first 64 ids (reds are: 128,0,0 and 192,0,0)
WRONG = np.array([255, 0, 255], np.uint8)


def default_palette(n: int = 256) -> np.ndarray:
    """n x 3 RGB: the PASCAL VOC colour map (bits of the class id spread over R, G, B), so
    neighbouring ids get distinct colours; id 0 is black."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def palette_from_file(colours: dict[tuple[int, int, int], int]) -> np.ndarray:
    """The data stage's palette (colour -> class id) as a 256 x 3 RGB table; ids it does not
    name keep the default colours."""
    pal = default_palette()
    for rgb, cid in colours.items():
        pal[cid] = rgb
    return pal


def write_index_png(path: Path, classes: np.ndarray, palette: np.ndarray) -> None:
    """A paletted PNG whose pixel values are the class ids (readable as labels again)."""
    from PIL import Image

    im = Image.fromarray(classes.astype(np.uint8), mode="P")
    im.putpalette(palette[:256].astype(np.uint8).ravel().tolist())
    im.save(path)


def grey(image_bgr: np.ndarray) -> np.ndarray:
    """H x W x 3 float32: the image's luminance in all three channels."""
    img = image_bgr.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    lum = 0.114 * img[..., 0] + 0.587 * img[..., 1] + 0.299 * img[..., 2]
    return np.repeat(lum[..., None], 3, axis=2)


def overlay(image_bgr: np.ndarray, classes: np.ndarray, palette: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """H x W x 3 RGB: the class colours on a grey copy of the image (the image's own colours
    would read as classes: a red object as the class drawn red)."""
    colours = palette[classes.astype(np.int64) % len(palette)].astype(np.float32)
    return np.clip((1 - alpha) * grey(image_bgr) + alpha * colours, 0, 255).astype(np.uint8)


def error_map(image_bgr: np.ndarray, classes: np.ndarray, label: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """H x W x 3 RGB: the image in dark grey (its own colours never read as an error), wrong
    pixels magenta (no class colour), ignored pixels light grey."""
    out = (grey(image_bgr) * 0.4).astype(np.uint8)
    ignored = label == ignore_label if ignore_label is not None else np.zeros(label.shape, bool)
    out[(classes != label) & ~ignored] = WRONG
    out[ignored] = IGNORE_GREY
    return out


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb, mode="RGB").save(path)


def normalised(conf: np.ndarray) -> np.ndarray:
    """Rows (true classes) scaled to sum 1; a class without pixels stays 0."""
    conf = np.asarray(conf, np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, conf / rows, 0.0)


def plot_confusion(conf: np.ndarray, names: list[str], path: Path, title: str = "") -> None:
    """confusion.png: the row-normalised confusion matrix (each true class's pixels in %, so
    rare classes show as clearly as common ones), class names on both axes, a colour bar;
    cell digits and names shrink with the class count and stay readable up to ~30 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = 100 * normalised(conf)
    n = len(names)
    empty = np.asarray(conf).sum(axis=1) == 0
    names = [f"{name} (no pixels)" if e else name for name, e in zip(names, empty, strict=True)]
    cell = 0.5 if n <= 12 else 0.42
    fig, ax = plt.subplots(figsize=(max(5.0, cell * n + 3.2), max(4.2, cell * n + 2.4)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    label_size = 10 if n <= 12 else 8 if n <= 24 else 7
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=label_size)
    ax.set_yticks(range(n), names, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    digits = 9 if n <= 12 else 7 if n <= 20 else 6
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.5:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=digits,
                    color="white" if norm[i, j] > 50 else "black",
                )
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("% of the true class's pixels")
    ax.set_title((title + "\n" if title else "") + "confusion, row-normalised % (each row sums to 100)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def class_table(scores: dict[str, Any], names: list[str]) -> str:
    """The console's per-class table and the summary line."""
    rows = [f"{'class':<16} {'IU':>7}"]
    for name, iu in zip(names, scores["per_class_iu"], strict=True):
        rows.append(f"{name:<16} {'n/a' if iu is None else f'{iu:.4f}':>7}")
    rows.append(
        f"mIoU {scores['mean_iu']:.4f}  pixel acc {scores['pixel_accuracy']:.4f}  "
        f"mean acc {scores['mean_accuracy']:.4f}  fwIoU {scores['fw_iu']:.4f}"
    )
    return "\n".join(rows)
