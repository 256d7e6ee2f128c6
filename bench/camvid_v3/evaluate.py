"""Score a run's snapshots on a list through `orchestrate predict --eval` (the README's numbers for
recipe v3 and SegNet-Basic): for each snapshot kept at a validation's iteration, or only those
named, the list's mIoU and per-class IU, merged into a results file beside the run's own val
curve and minutes (bench/camvid_v2/curve.py's clock: step seconds plus validation seconds).

    .venv/bin/python bench/camvid_v3/evaluate.py runs/v3-a --split test \\
        [--iters 375 750] [--tta flip,scales=0.75,1,1.25] [--ensemble runs/v3-a1:best ...]
        [--results bench/camvid_v3/results/v3-a.json]

The test split (../shared/datasets/camvid/test.txt) is only measured, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.camvid_v2.curve import validation_times  # noqa: E402
from orchestrator.jsonio import read_json, read_jsonl  # noqa: E402
from orchestrator.rundir import RunDir  # noqa: E402

CAMVID = REPO.parent / "shared" / "datasets" / "camvid"


def predict_eval(run: Path, it: int, split: str, tta: str | None, ensemble: list[str]) -> dict[str, Any]:
    """predict --eval of snapshot iter_`it` (averaged with the `ensemble` members, predict's
    RUN[:SNAPSHOT]) on CAMVID/<split>.txt: its eval.json plus the seconds it took."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "orchestrator.cli", "predict", str(run), "--snapshot", f"iter_{it}"]
        cmd += ["--list", str(CAMVID / f"{split}.txt"), "--root", str(CAMVID), "--eval", "--quiet"]
        cmd += ["--out", str(Path(tmp) / "out")] + (["--tta", tta] if tta else [])
        cmd += [x for member in ensemble for x in ("--ensemble", member)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"predict failed for iter_{it}: {r.stderr[-2000:]}")
        result = json.loads((Path(tmp) / "out" / "eval.json").read_text())
    result["predict_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def portable(member: str) -> str:
    """A member snapshot as RUN/snapshots/iter_N (eval.json names it by its absolute path, which
    is this machine's, not the results file's reader's)."""
    p = Path(member)
    return str(Path(p.parent.parent.name) / p.parent.name / p.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--split", default="test", help="CAMVID/<split>.txt (test or val)")
    ap.add_argument("--iters", type=int, nargs="*", help="only these snapshots (default: every one kept)")
    ap.add_argument("--tta", default=None, help="predict --tta SPEC")
    ap.add_argument("--ensemble", action="append", default=[], help="predict --ensemble RUN[:SNAPSHOT] (repeatable)")
    ap.add_argument("--results", type=Path, default=None, help="default bench/camvid_v3/results/RUN.json")
    a = ap.parse_args()
    results = a.results or REPO / "bench" / "camvid_v3" / "results" / f"{a.run_dir.name}.json"
    data: dict[str, Any] = json.loads(results.read_text()) if results.is_file() else {}
    run = RunDir(a.run_dir)
    summary = read_json(run.summary, {})
    data.update(name=summary.get("name"), train_seconds=summary.get("train_seconds"), max_iter=summary.get("max_iter"))
    data["val_curve"] = [
        {"iter": it, "minutes": round(t / 60, 2), "val_miou": m} for it, t, m in validation_times(a.run_dir)
    ]
    data["val_per_class_iu"] = {str(v["iter"]): v["per_class_iu"] for v in read_jsonl(run.val)}
    kept = [it for it, _ in run.snapshot_dirs()]
    scored = data.setdefault("scores", [])
    for it in a.iters or kept:
        r = predict_eval(a.run_dir, it, a.split, a.tta, a.ensemble)
        r["ensemble"] = [portable(m) for m in r["ensemble"]]
        key = (it, a.split, a.tta, r["ensemble"])
        scored[:] = [s for s in scored if (s["iter"], s["split"], s["tta"], s.get("ensemble", [])) != key]
        row = {"iter": it, "split": a.split, "tta": a.tta, "miou": r["mean_iu"], "per_class_iu": r["per_class_iu"]}
        row |= {"ensemble": r["ensemble"]} if r["ensemble"] else {}
        scored.append({**row, "pixel_accuracy": r["pixel_accuracy"], "seconds": r["predict_seconds"]})
        with_ = f" + {', '.join(r['ensemble'])}" if r["ensemble"] else ""
        score = f"mIoU {r['mean_iu']:.4f} ({r['predict_seconds']} s)"
        print(f"{a.run_dir.name} iter {it}{with_} {a.split} tta={a.tta}: {score}")
    scored.sort(key=lambda s: (s["split"], str(s["tta"]), s["iter"], s.get("ensemble", [])))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
