"""The pictures a person opens: one panel per example (scaled up, titled, with a legend and
colours that cannot be mistaken for the image's own), the confusion matrix (names, colour bar,
row-normalised %), and curves.png (log loss axis, the stop line, no empty validation panel,
a constant lr as its value). Each is also opened by eye once (README, docs/)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from orchestrator.predict import overlay
from orchestrator.predict.panel import READABLE, _legend_items, class_colours, panel, scale_for
from orchestrator.report import loss_is_logscale, plot_curves, stop_mark

NAMES = ["background", "disk", "square"]


def example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 32x32 image with a pure red disk (BGR), its label and a prediction wrong on one block."""
    img = np.full((32, 32, 3), 120, np.uint8)
    yy, xx = np.mgrid[:32, :32]
    disk = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
    img[disk] = (0, 0, 255)  # red in BGR
    label = np.where(disk, 1, 0).astype(np.uint8)
    label[0, :] = 255  # one ignored row
    pred = label.copy()
    pred[0, :] = 0
    pred[28:32, 0:4] = 2  # wrong
    return img, label, pred


def test_panel_scales_up_titles_columns_and_keeps_image_colours_out_of_the_overlays():
    img, label, pred = example()
    pal = overlay.default_palette()
    pic = panel(img, pred, label, pal, NAMES, 255, "val_0000")
    k = scale_for(32, 32)
    assert k == READABLE // 32 == 8  # nearest, whole factor: a 32 px image becomes 256 px
    assert pic.shape[1] >= 4 * 32 * k and pic.shape[0] > 32 * k  # four columns plus titles and legend
    # the image column holds the image scaled up by pixel repetition
    rows = np.where((pic == img[16, 16, ::-1]).all(axis=2).any(axis=1))[0]
    assert len(rows) >= 8 * 10
    # the errors column: the red disk of the image is grey there; only wrong pixels are coloured
    err = overlay.error_map(img, pred, label, 255)
    assert (err[label == 1] == err[label == 1][:, :1]).all()  # grey: R == G == B
    wrong = (err == overlay.WRONG).all(axis=2)
    assert wrong.sum() == 16 and wrong[28:32, 0:4].all()
    assert (err[0] == overlay.IGNORE_GREY).all()
    # the overlay of `predict` puts class colours on a grey image: the disk's red is gone where
    # the class is background
    over = overlay.overlay(img, np.zeros((32, 32), np.uint8), pal)
    assert (over[16, 16] == over[16, 16, 0]).all()
    # ground truth and prediction are plain class colours; the ignore label is the ignored grey
    gt = class_colours(label, pal, 255)
    assert (gt[label == 1] == pal[1]).all() and (gt[0] == overlay.IGNORE_GREY).all()
    # the legend names the classes present, then the markers
    assert [t for _, t in _legend_items(pred, label, pal, NAMES, 255)] == NAMES + ["wrong", "ignored"]
    # without a label: image | prediction
    assert panel(img, pred, None, pal, NAMES, 255).shape[1] < pic.shape[1] * 0.6
    # a large image is shown at every 3rd pixel: four 640-pixel columns, not four of 1920
    big = np.zeros((1440, 1920), np.uint8)
    assert scale_for(1440, 1920) == -3 and scale_for(360, 480) == 1
    wide = panel(np.zeros((1440, 1920, 3), np.uint8), big, big, pal, NAMES, 255)
    assert 4 * 640 <= wide.shape[1] < 4 * 640 + 100


def test_confusion_matrix_readable_up_to_thirty_classes(tmp_path):
    rng = np.random.default_rng(0)
    for n in (5, 30):
        conf = rng.integers(0, 50, (n, n)) + np.diag(rng.integers(500, 3000, n))
        conf[1] = 0  # a class without pixels
        path = tmp_path / f"c{n}.png"
        overlay.plot_confusion(conf, [f"class name {i}" for i in range(n)], path, "t")
        assert Image.open(path).size[0] >= 500
    # the figure grows with the class count, so 30 names and their digits keep a readable size
    assert Image.open(tmp_path / "c30.png").size[0] > 1.8 * Image.open(tmp_path / "c5.png").size[0]


def test_curves_log_axis_stop_line_no_validation_and_constant_lr(tmp_path):
    assert loss_is_logscale([2.0, 0.5, 0.01]) and not loss_is_logscale([2.0, 0.5, 0.1])
    assert stop_mark({"status": "diverged", "iterations": 37}) == (37, "diverged at iteration 37")
    assert stop_mark({"status": "completed", "iterations": 600}) is None
    metrics = [{"iter": i, "loss": 2.0 * 0.9**i, "lr": 0.002} for i in range(1, 80)]
    drawn = plot_curves(metrics, [], tmp_path / "c.png", {"status": "interrupted", "iterations": 79})
    assert drawn["log_loss"] and drawn["no_val"] and drawn["stop"] == (79, "interrupted at iteration 79")
    assert drawn["titles"][0] == "training loss (log scale, interrupted at iteration 79)"
    assert drawn["titles"][1] == "learning rate: constant 0.002"
    assert (tmp_path / "c.png").stat().st_size > 0
    val = [{"iter": 40, "mean_iu": 0.5}, {"iter": 80, "mean_iu": 0.6}]
    steps = [dict(m, lr=0.002 if m["iter"] < 40 else 0.0002) for m in metrics]
    drawn = plot_curves(steps, val, tmp_path / "d.png", {"status": "completed", "iterations": 80})
    assert drawn["titles"][1] == "learning rate" and not drawn["no_val"] and drawn["stop"] is None
