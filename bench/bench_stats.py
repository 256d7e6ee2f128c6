"""Blob statistics of every blob and parameter of FCN-8s at 500x500: the Blob.asum_*/sumsq_*
bindings against the same numbers computed in numpy from blob.data / blob.diff.

Prints `stats-bindings-vs-numpy ratio=X.XX` (numpy time / bindings time; target >= 2 on CPU).
`--gpu` measures GPU mode (target >= 10): a forward/backward pass before each timed call leaves
the blobs on the device, as training does, so numpy's blob.data pays the device-to-host copy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from bench.common import best_of, result_line
from orchestrator.train.stats import BlobStat, collect, layer_of_top


def collect_numpy(net: Any) -> list[BlobStat]:
    """What orchestrator.train.stats.collect computes, in numpy from blob.data / blob.diff (the baseline)."""
    owner = layer_of_top(net)

    def one(name: str, kind: str, layer: str, b: Any) -> BlobStat:
        d, g = b.data, b.diff
        return BlobStat(
            name,
            kind,
            layer,
            b.count,
            float(np.abs(d).sum()),
            float(np.abs(g).sum()),
            float(np.dot(d.ravel(), d.ravel())),
            float(np.dot(g.ravel(), g.ravel())),
        )

    out = [one(n, "top", owner.get(n, n), b) for n, b in net.blobs.items()]
    for layer, blobs in net.params.items():
        out.extend(one(f"{layer}/{i}", "param", layer, b) for i, b in enumerate(blobs))
    return out


def timed_on_device(net: Any, fn: Callable[[], object], repeats: int = 5) -> float:
    """Median time of fn() right after a forward/backward pass (blobs dirty on the GPU)."""
    times = []
    for _ in range(repeats + 1):
        net.forward()
        net.backward()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="GPU mode (needs a CUDA build and a GPU)")
    gpu = ap.parse_args().gpu
    import caffe

    import nets

    if gpu:
        caffe.set_device(0)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    g = nets.generate(
        "fcn8s",
        num_classes=21,
        train_data=nets.DataSource("unused", "unused", 1),
        val_data=None,
        deploy_shape=(500, 500),
    )
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "deploy.prototxt"
        p.write_text(g.deploy)
        net = caffe.Net(str(p), caffe.TEST)
    rng = np.random.default_rng(0)
    for b in list(net.blobs.values()) + [b for bl in net.params.values() for b in bl]:
        b.data[...] = rng.standard_normal(b.data.shape, dtype=np.float32)
        b.diff[...] = rng.standard_normal(b.diff.shape, dtype=np.float32)
    a, n = collect(net), collect_numpy(net)
    worst = max(abs(x.asum_data - y.asum_data) / max(1.0, y.asum_data) for x, y in zip(a, n, strict=True))
    print(f"largest relative difference bindings vs numpy: {worst:.2e}")
    if gpu:
        t_bind = timed_on_device(net, lambda: collect(net))
        t_np = timed_on_device(net, lambda: collect_numpy(net))
    else:
        t_bind = best_of(lambda: collect(net))
        t_np = best_of(lambda: collect_numpy(net))
    elems = sum(s.count for s in a)
    print(
        f"{'GPU' if gpu else 'CPU'} mode, FCN-8s 500x500: {len(a)} blobs, {elems / 1e6:.1f} M values; "
        f"bindings {t_bind * 1e3:.1f} ms, numpy {t_np * 1e3:.1f} ms"
    )
    print(result_line("stats-bindings-vs-numpy" + ("-gpu" if gpu else ""), t_np / t_bind))


if __name__ == "__main__":
    main()
