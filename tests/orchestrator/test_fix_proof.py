"""The proof of `orchestrate fix` at a small size (README, "orchestrate fix"): the seed user's
net shape on the synthetic data, the same number of iterations before and after the fix. Before,
the doctor's errors and, trained anyway (`run --force`), a loss that does not fall; after, a
clean check, a falling loss and a far higher val mIoU. bench/fix_proof/proof.py is the same
proof at full size on CamVid."""

from __future__ import annotations

import statistics

import pytest

from bench.fix_proof.proof import prove

pytestmark = pytest.mark.caffe
ITERS = 200


def test_seed_net_trains_only_after_fix(synth_lmdb, tmp_path):
    r = prove(synth_lmdb, ITERS, tmp_path, val_every=100)
    assert r["check_rc"] == 1 and r["check_errors"] >= 3  # zero-init x2, bn-phase-duplicate x2
    assert r["fix_rc"] == 0 and "ERROR" not in r["fix_stdout"] and "WARNING" not in r["fix_stdout"]
    before, after = r["before"], r["after"]
    assert before["iterations"] == after["iterations"] == ITERS, (before["stderr"], after["stderr"])
    b, a = [x for _, x in before["loss"]], [x for _, x in after["loss"]]
    # before: the weights never move (zero weights, a step of 1e-8 per pixel): the loss stays put
    assert statistics.mean(b[-10:]) > 0.95 * statistics.mean(b[:5])
    assert statistics.mean(a[-10:]) < 0.5 * statistics.mean(a[:5])
    best_before = max(m for _, m in before["val"])
    best_after = max(m for _, m in after["val"])
    assert best_after > best_before + 0.3, (best_before, best_after)
