"""A small synthetic, deliberately imbalanced segmentation dataset: the demo's and tests' data.

Coloured shapes on noisy, textured grey backgrounds; 5 classes (0 background, 1 disk,
2 square, 3 triangle, 4 diamond: the rare one, under 2 % of pixels). Classes differ by hue,
so a small FCN learns them in minutes on a CPU; a 1-pixel ring of ignore (255) around each
shape takes the ambiguous boundary pixels out of the loss and the metric. Deterministic
from the seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from data_prep.fsutil import atomic_dir
from data_prep.sizes import parse_size

CLASS_NAMES = ["background", "disk", "square", "triangle", "diamond"]
IGNORE_LABEL = 255
# Mean BGR colour of each shape class (saturated hues; the background is near-grey).
_COLOURS_BGR = {1: (40, 40, 210), 2: (50, 190, 40), 3: (210, 80, 30), 4: (30, 210, 220)}
_PRESENCE = {1: 0.7, 2: 0.7, 3: 0.7, 4: 0.3}  # chance that an image has the shape


def _shape_mask(cls: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one shape of class `cls`, placed at random inside an H x W image."""
    import cv2

    h, w = size
    unit = min(h, w) / 64.0  # sizes are tuned for 64 x 64 and scale with the image
    r = int(round(rng.uniform(6, 11) * unit)) if cls != 4 else int(round(rng.uniform(5, 7) * unit))
    cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
    mask = np.zeros((h, w), np.uint8)
    if cls == 1:
        cv2.circle(mask, (cx, cy), r, (1,), -1)
    elif cls == 2:
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), (1,), -1)
    elif cls == 3:
        pts = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(mask, [pts], (1,))
    else:
        pts = np.array([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], np.int32)
        cv2.fillPoly(mask, [pts], (1,))
    return mask.astype(bool)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Near-grey float image with a gradient and a random stripe texture."""
    h, w = size
    grey = rng.uniform(70, 160)
    base = grey + rng.uniform(-12, 12, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.5)
    stripes = 12 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
    gradient = rng.uniform(-20, 20) * (xx / w - 0.5) + rng.uniform(-20, 20) * (yy / h - 0.5)
    return base[None, None, :] + (stripes + gradient)[..., None]


def make_sample(
    size: tuple[int, int], rng: np.random.Generator, ignore_ring: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One (BGR uint8 image, uint8 label) pair."""
    import cv2

    img = _background(size, rng)
    label = np.zeros(size, np.uint8)
    ring = np.zeros(size, bool)
    for cls in rng.permutation([1, 2, 3, 4]):
        if rng.random() >= _PRESENCE[int(cls)]:
            continue
        mask = _shape_mask(int(cls), size, rng)
        colour = np.array(_COLOURS_BGR[int(cls)], np.float32) + rng.uniform(-25, 25, 3)
        img[mask] = colour + rng.normal(0, 6, (int(mask.sum()), 3))
        label[mask] = cls
        ring &= ~mask
        if ignore_ring:
            ring |= cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    img += rng.normal(0, 8, img.shape)
    if ignore_ring:
        label[ring] = IGNORE_LABEL
    return np.clip(img, 0, 255).astype(np.uint8), label


def _parse_size(size: tuple[int, int] | str) -> tuple[int, int]:
    if isinstance(size, str):
        try:
            size = parse_size(size, "HxW")
        except ValueError as e:
            raise UserError(f"--size {e}", "write e.g. --size 64x64") from None
    if min(size) < 32:
        raise UserError(f"--size {size[0]}x{size[1]} is too small", "use at least 32x32")
    return size


def _write_png(path: Path, arr: np.ndarray) -> None:
    """cv2.imwrite only returns False on a full disk; writing the bytes ourselves raises ENOSPC."""
    import cv2

    ok, png = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for {path}")
    path.write_bytes(png.tobytes())


def make_synthetic(
    out_dir: Path,
    *,
    seed: int = 0,
    train: int = 200,
    val: int = 50,
    size: tuple[int, int] | str = (64, 64),
    ignore_ring: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write images/, labels/ (index PNGs), train.txt, val.txt (CamVid list format) and
    dataset.json into `out_dir`; return dataset.json's content."""
    size = _parse_size(size)
    if train < 1 or val < 1:
        raise UserError(f"--train {train} / --val {val} must be >= 1", "ask for at least one image each")
    counts = np.zeros(256, np.int64)
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for split, n in (("train", train), ("val", val)):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1])
            lines = []
            for i in range(n):
                img, label = make_sample(size, rng, ignore_ring)
                name = f"{split}_{i:04d}.png"
                _write_png(tmp / "images" / name, img)
                _write_png(tmp / "labels" / name, label)
                lines.append(f"images/{name} labels/{name}\n")
                if split == "train":
                    counts += np.bincount(label.ravel(), minlength=256)
            (tmp / f"{split}.txt").write_text("".join(lines))
        valid = counts[: len(CLASS_NAMES)]
        meta = {
            "name": "synthetic-shapes",
            "num_classes": len(CLASS_NAMES),
            "ignore_label": IGNORE_LABEL,
            "class_names": CLASS_NAMES,
            "seed": seed,
            "size": list(size),
            "train": train,
            "val": val,
            "ignore_ring": ignore_ring,
            "lists": {"train": "train.txt", "val": "val.txt"},
            "train_class_pixel_share": (valid / max(1, valid.sum())).round(5).tolist(),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
