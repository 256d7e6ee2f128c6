#!/usr/bin/env bash
# Build (once, cached with the Caffe build) and run BVLC's C++ test suite, CPU tests only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="$(cat "$ROOT/.venv/caffe-dir")"
if [ ! -f "$D/TESTBIN_OK" ]; then
  echo "[caffe-check] compiling test.testbin (about 3 minutes on 2 cores; log $D/testbin.log)"
  (cd "$D/src/build" && make -j"$(nproc)" test.testbin) > "$D/testbin.log" 2>&1 \
    || { grep -E "error" "$D/testbin.log" | head -20 >&2; echo "[caffe-check] FAILED: compiling the test binary (log $D/testbin.log)" >&2; exit 1; }
  touch "$D/TESTBIN_OK"
fi
filter='-*GPU*'
grep -q '"gpu": true' "$D/build-info.json" && command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1 && filter='*'
cd "$D/src"
GLOG_minloglevel=2 "$D/src/build/test/test.testbin" --gtest_filter="$filter" 2>&1 | tail -4
