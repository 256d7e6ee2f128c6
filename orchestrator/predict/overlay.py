"""Pictures of predictions (pure numpy, then PIL/matplotlib to write them): the class palette,
a colour overlay of a prediction on its image, an error map, and the normalised confusion
matrix. Used by `orchestrate predict` and by validation's best-iteration overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IGNORE_GREY = np.array([128, 128, 128], np.uint8)
WRONG_RED = np.array([230, 25, 25], np.uint8)


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


def overlay(image_bgr: np.ndarray, classes: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """H x W x 3 RGB: the image blended with the class colours."""
    rgb = image_bgr[..., ::-1].astype(np.float32)
    colours = palette[classes.astype(np.int64) % len(palette)].astype(np.float32)
    return np.clip((1 - alpha) * rgb + alpha * colours, 0, 255).astype(np.uint8)


def error_map(image_bgr: np.ndarray, classes: np.ndarray, label: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """H x W x 3 RGB: the image darkened, wrong pixels red, ignored pixels grey."""
    out = (image_bgr[..., ::-1].astype(np.float32) * 0.45).astype(np.uint8)
    ignored = label == ignore_label if ignore_label is not None else np.zeros(label.shape, bool)
    out[(classes != label) & ~ignored] = WRONG_RED
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
    """confusion.png: the row-normalised confusion matrix with class names and percentages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = normalised(conf)
    n = len(names)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{100 * norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
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
