"""Blob statistics of every blob and parameter of FCN-8s at 500x500: the Blob.asum_*/sumsq_*
bindings against the same numbers computed in numpy from blob.data / blob.diff.

Prints `stats-bindings-vs-numpy ratio=X.XX` (numpy time / bindings time; target >= 2 on CPU).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

from bench.common import best_of, result_line  # noqa: E402


def main() -> None:
    import caffe

    import nets
    from orchestrator import stats
    caffe.set_mode_cpu()
    g = nets.generate("fcn8s", num_classes=21, train_data=nets.DataSource("unused", "unused", 1), val_data=None,
                      deploy_shape=(500, 500))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "deploy.prototxt"
        p.write_text(g.deploy)
        net = caffe.Net(str(p), caffe.TEST)
    rng = np.random.default_rng(0)
    for b in list(net.blobs.values()) + [b for bl in net.params.values() for b in bl]:
        b.data[...] = rng.standard_normal(b.data.shape, dtype=np.float32)
        b.diff[...] = rng.standard_normal(b.diff.shape, dtype=np.float32)
    a, n = stats.collect(net), stats.collect_numpy(net)
    worst = max(abs(x.asum_data - y.asum_data) / max(1.0, y.asum_data) for x, y in zip(a, n))
    print(f"largest relative difference bindings vs numpy: {worst:.2e}")
    t_bind = best_of(lambda: stats.collect(net))
    t_np = best_of(lambda: stats.collect_numpy(net))
    elems = sum(s.count for s in a)
    print(f"FCN-8s 500x500: {len(a)} blobs, {elems / 1e6:.1f} M values; bindings {t_bind * 1e3:.1f} ms, "
          f"numpy {t_np * 1e3:.1f} ms")
    print(result_line("stats-bindings-vs-numpy", t_np / t_bind))


if __name__ == "__main__":
    main()
