#!/usr/bin/env bash
# The one command for a lent GPU machine (bench/RESULTS.md, "GPU check"): unpacks the runtime
# bundle (make gpu-bundle) and, on GPU 0, checks and measures what GPU mode must do:
#   1. the bundle: orchestrate --version, doctor-env       2. nvidia-smi, caffe device_query
#   3. numerics: compact FCN + BatchNorm and FCN-8s (Deconvolution, Crop), CPU vs GPU
#   4. the demo on the GPU (val mIoU, time)                5. kill -9 mid-run, resume on the GPU
#   6. FCN-8s 500x500 batch 1: orchestrate run vs caffe train (default checks; stats every
#      iteration), images/s, TFLOP/s against the FP32 peak   7. bench_stats.py --gpu
# Every step has a time limit and the whole a budget (GPU_CHECK_BUDGET_S, default 420 s), so
# it ends well inside a 10-minute slot; a step that fails does not stop the next.
# Writes under $OUT (at most 5 files): gpu_check.log, summary.md (draft of bench/RESULTS-gpu.md),
# results.json, artifacts.tar.gz (run summaries, logs, JSON of every step).
#
# usage: OUT=DIR bash bench/gpu_check.sh [--dry | --quick]
#   --dry (or GPU_CHECK_DRY=1): every step but the GPU ones, on the CPU, small where the GPU
#     would be big (no nvidia-smi/device_query; numerics CPU vs CPU; FCN-8s on the demo's 64x64
#     data); minutes on 2 cores.   --quick (GPU_CHECK_DRY=quick): the same, smaller still (the
#     test suite's run): short demo and resume, the compact net in the overhead step, no stats.
# GPU_CHECK_BUNDLE=path.tar.gz picks the bundle (default build/segorch-gpu-bundle.tar.gz; the
# dry modes take build/segorch-cpu-bundle.tar.gz when it exists).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
case "${1:-${GPU_CHECK_DRY:-0}}" in
  --dry|dry|1) MODE=dry ;; --quick|quick) MODE=quick ;; 0|"") ;;
  *) echo "usage: OUT=DIR bash bench/gpu_check.sh [--dry|--quick]" >&2; exit 2 ;;
esac
OUT="${OUT:-$REPO/build/gpu-check-$MODE}"
mkdir -p "$OUT" || exit 2
# Dry runs share a CPU with whatever else runs there: one BLAS thread each (OpenBLAS threads
# spin and stall when the cores are oversubscribed) and 4x the time limits.
SCALE=1
[ "$MODE" != gpu ] && { SCALE=4; export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"; }
BUDGET="${GPU_CHECK_BUDGET_S:-$(( 420 * SCALE ))}"
TARBALL="${GPU_CHECK_BUNDLE:-}"
if [ -z "$TARBALL" ]; then
  TARBALL="$REPO/build/segorch-gpu-bundle.tar.gz"
  [ "$MODE" != gpu ] && [ -f "$REPO/build/segorch-cpu-bundle.tar.gz" ] && TARBALL="$REPO/build/segorch-cpu-bundle.tar.gz"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/segorch-gpu-check.XXXXXX")"
START=$(date +%s)
exec > >(tee "$OUT/gpu_check.log") 2>&1

finish() {
  # keep what comes back small (16 MiB a file): the last 2 MB of each Caffe log
  find "$WORK" -name caffe.log -size +2M -exec sh -c 'tail -c 2000000 "$1" > "$1.t" && mv "$1.t" "$1"' _ {} \;
  cd "$WORK" && tar czf "$OUT/artifacts.tar.gz" --exclude='snapshots' --exclude='*.caffemodel' \
    --exclude='*.solverstate' --exclude='bundle' --exclude='home' . 2>/dev/null
  [ -n "${B:-}" ] && "$B/bin/python" "$B/bench/gpu_report.py" "$WORK" "$OUT" >/dev/null 2>&1
  echo "== done in $(( $(date +%s) - START )) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  cd / && rm -rf "$WORK"
}
trap finish EXIT

# step NAME LIMIT_S CMD...: run CMD under a time limit (never past the budget); record
# PASS / FAIL (exit N) / TIMEOUT / SKIP with its seconds in steps.txt
step() {
  local name=$1 limit=$(( $2 * SCALE )) left t0 rc st
  shift 2
  left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then
    echo "== $name: SKIP (the ${BUDGET} s budget is spent)"; echo "$name SKIP budget spent" >> "$WORK/steps.txt"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s, $(( $(date +%s) - START )) s elapsed)"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" &
  local pid=$!
  wait "$pid"
  rc=$?
  kill -KILL -- "-$pid" 2>/dev/null   # stragglers: timeout leads the step's process group
  case $rc in 0) st=PASS ;; 124|137) st=TIMEOUT ;; *) st="FAIL" ;; esac
  echo "== $name: $st (exit $rc) in $(( $(date +%s) - t0 )) s"
  echo "$name $st exit $rc, $(( $(date +%s) - t0 )) s" >> "$WORK/steps.txt"
}
skip() { echo "== $1: SKIP ($2)"; echo "$1 SKIP $2" >> "$WORK/steps.txt"; }

echo "== segorch GPU check, mode $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle $TARBALL"
[ -f "$TARBALL" ] || { echo "no bundle at $TARBALL: run make gpu-bundle (and carry it)"; exit 2; }
mkdir -p "$WORK/bundle" && tar xzf "$TARBALL" -C "$WORK/bundle" || { echo "cannot unpack $TARBALL"; exit 2; }
B="$(ls -d "$WORK"/bundle/*/ | head -1)"; B="${B%/}"
cd "$B" || exit 2
export GLOG_minloglevel="${GLOG_minloglevel:-2}" HOME="$WORK/home"
mkdir -p "$HOME"
if [ "$MODE" = gpu ]; then DEV=gpu:0; else DEV=cpu; fi
dq="$WORK/device_query.txt"

# doctor-env is shown, not judged: the bundle has no convert_imageset (it needs OpenCV)
step bundle 60 sh -c 'cat BUNDLE.json && bin/orchestrate --version && { bin/orchestrate doctor-env || true; }'
if [ "$MODE" = gpu ]; then
  step nvidia-smi 30 nvidia-smi
  step device-query 60 bash -c "set -o pipefail; GLOG_logtostderr=1 GLOG_minloglevel=0 bin/caffe device_query -gpu 0 2>&1 | tee '$dq'"
else
  skip nvidia-smi "dry run: no GPU"; skip device-query "dry run: no GPU"
fi
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
bin/python -c 'import json, sys; print(json.dumps(dict(zip(["date", "mode", "bundle", "driver", "gpu", "host", "command"], sys.argv[1:]))))' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MODE" "$(basename "$TARBALL")" "${driver:-none}" "${gpu:-no GPU (dry run)}" \
  "$(uname -srm), $(nproc) cores" "OUT=\$OUT bash bench/gpu_check.sh${1:+ $1}" > "$WORK/env.json"

case $MODE in
  gpu)   num=(); demo=(); res=(); ovh=(--data data/fcn500 --n1 5 --n2 45 --rounds 2 --device-query "$dq") ;;
  dry)   num=(--dry); demo=(--set solver.max_iter=100); res=(--max-iter 60 --kill-at 35 --snapshot 25)
         ovh=(--data data/synth/lmdb --n1 1 --n2 3 --rounds 1) ;;
  quick) num=(--dry --nets compact-bn); demo=(--set solver.max_iter=30 --set validation.interval=15)
         res=(--max-iter 30 --kill-at 18 --snapshot 10); ovh=(--data data/synth/lmdb --arch compact --n1 2 --n2 12 --rounds 1 --configs default) ;;
esac
step numerics 150 bin/python bench/gpu_numerics.py ${num[@]+"${num[@]}"} --out "$WORK/numerics.json"
step demo 180 bin/python bench/gpu_runs.py demo --device "$DEV" --work "$WORK/runs" ${demo[@]+"${demo[@]}"} --out "$WORK/demo.json"
step resume 180 bin/python bench/gpu_runs.py resume --device "$DEV" --work "$WORK/runs" ${res[@]+"${res[@]}"} --out "$WORK/resume.json"
left=$(( BUDGET - ($(date +%s) - START) - 60 * SCALE ))
step overhead 300 bin/python bench/bench_gpu.py --device "$DEV" "${ovh[@]}" --budget $(( left > 60 ? left - 30 : 30 )) \
  --out "$WORK/overhead.json"
case $MODE in
  gpu) step stats 90 bash -c "set -o pipefail; bin/python bench/bench_stats.py --gpu | tee '$WORK/stats.txt'" ;;
  dry) step stats 120 bash -c "set -o pipefail; bin/python bench/bench_stats.py | tee '$WORK/stats.txt'" ;;
  quick) skip stats "quick dry run: FCN-8s 500x500 blobs on the CPU take minutes" ;;
esac
