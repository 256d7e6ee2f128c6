"""Segmentation metrics from a confusion matrix (FCN's definitions), as plain return values."""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.contract import class_labels


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_label: int | None) -> np.ndarray:
    """num_classes x num_classes counts, rows = true class, columns = predicted; ignored pixels dropped."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    label = np.asarray(label).astype(np.int64).ravel()
    keep = (label >= 0) & (label < num_classes)
    if ignore_label is not None:
        keep &= label != ignore_label
    idx = label[keep] * num_classes + pred[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(conf: np.ndarray) -> dict[str, object]:
    """pixel_accuracy, mean_accuracy, mean_iu, fw_iu (contract.METRIC_NAMES) and per_class_iu
    (None for a class neither labelled nor predicted)."""
    conf = np.asarray(conf, dtype=np.float64)
    total = conf.sum()
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    pr = conf.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_c = tp / gt
        union = gt + pr - tp
        iu = tp / union
    present = gt > 0  # mean accuracy: classes in the ground truth
    seen = union > 0  # mean IU: classes in the ground truth or the prediction (FCN's nanmean)
    freq = gt / total if total else np.zeros_like(gt)
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(acc_c[present].mean()) if present.any() else 0.0,
        "mean_iu": float(iu[seen].mean()) if seen.any() else 0.0,
        "fw_iu": float((freq[present] * iu[present]).sum()),
        "per_class_iu": [float(v) if s else None for v, s in zip(iu, seen, strict=True)],
    }


def validation_line(val: dict[str, Any], names: list[str] | None, worst: int = 2) -> str:
    """One persistent console line per validation: mIoU, pixel accuracy, the worst classes."""
    line = f"val @ {val['iter']}: mIoU {val['mean_iu']:.3f}  pixel acc {val['pixel_accuracy']:.3f}"
    per = [(iu, i) for i, iu in enumerate(val.get("per_class_iu") or []) if iu is not None]
    if len(per) > 1:
        labels = class_labels(names, len(val["per_class_iu"]))
        low = sorted(per)[:worst]
        line += "  worst: " + ", ".join(f"{labels[i]} {iu:.2f}" for iu, i in low)
    return line
