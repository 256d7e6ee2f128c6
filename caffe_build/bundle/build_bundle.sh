#!/usr/bin/env bash
# make gpu-bundle: the portable runtime (README, "GPU runtime bundle"), as build/segorch-<variant>-bundle.tar.gz.
# usage: build_bundle.sh gpu|cpu
#   gpu: Caffe built with CUDA (sm_90, no cuDNN); cuBLAS/cuRAND are found on the target.
#   cpu: the same packaging around a CPU-only build (what CI checks: minutes instead of 20).
# Steps: 1. a venv of the runtime's Python packages (cached)  2. Caffe's bundle flavour
# (build_caffe.sh with CAFFE_BUNDLE=1, cached)  3. make_bundle.py stages, relinks and packs it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$HERE/../config.sh"
VARIANT="${1:-gpu}"
log() { echo "[bundle] $*" >&2; }
fail() { echo "[bundle] FAILED: $1" >&2; echo "[bundle] fix: $2" >&2; exit 1; }
case "$VARIANT" in gpu) gpu=1 ;; cpu) gpu=0 ;; *) fail "unknown variant '$VARIANT'" "use BUNDLE_VARIANT=gpu or BUNDLE_VARIANT=cpu" ;; esac
[ -x "$ROOT/.venv/bin/python" ] || fail "no .venv (the data stage makes the bundle's demo data with it)" "run make setup first"
command -v patchelf >/dev/null || fail "patchelf is missing" "run make setup (it installs caffe_build/apt-packages.txt)"

# ------------------------------------------------------------------ 1. venv
# The interpreter the bundle carries is the project venv's base CPython; the runtime's packages
# come from a venv of their own at requirements.lock's versions, so the project venv never
# changes. Its path is part of Caffe's cache key (the build links its numpy's OpenBLAS), so it
# is named after what the build depends on (interpreter, numpy, the CUDA wheels); the other
# packages are brought to the lock's versions in place.
BASE_PY="$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
PKGS=(numpy lmdb PyYAML protobuf six pillow matplotlib tensorboardX)
numpy_pin="$(grep -i '^numpy==' "$ROOT/requirements.lock" || true)"
[ -n "$numpy_pin" ] || fail "requirements.lock pins no numpy" "pin numpy==X.Y.Z in requirements.lock"
vkey="$( { "$BASE_PY" -c 'import sys; print(sys.prefix, sys.version)'; echo "$numpy_pin";
           cat "$HERE/../requirements-gpu.txt"; } | sha256sum | cut -c1-16)"
BVENV="$CACHE_ROOT/bundle-venv-$vkey"
exec 7>"$BVENV.lock"
flock 7
if [ ! -x "$BVENV/bin/python" ]; then
  log "making the runtime's venv $BVENV"
  "$BASE_PY" -m venv "$BVENV" || fail "cannot make a venv with $BASE_PY" "check the project venv's base interpreter"
fi
pkgs_sum="$( { cat "$ROOT/requirements.lock"; echo "${PKGS[*]}"; } | sha256sum | cut -c1-16)"
if [ "$(cat "$BVENV/.pkgs-stamp" 2>/dev/null)" != "$pkgs_sum" ]; then
  "$BVENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/requirements.lock" "${PKGS[@]}" \
    || fail "pip install of the runtime's packages failed" "read pip's message above (pins: requirements.lock)"
  echo "$pkgs_sum" > "$BVENV/.pkgs-stamp"
fi
if [ "$gpu" = 1 ] && [ ! -f "$BVENV/.gpu-stamp" ]; then
  # headers and link-time libraries for the CUDA build only; the bundle never carries them
  "$BVENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/../requirements-gpu.txt" \
    || fail "pip install of cuBLAS/cuRAND failed" "see caffe_build/requirements-gpu.txt"
  touch "$BVENV/.gpu-stamp"
fi
flock -u 7

# ------------------------------------------------------------------ 2. Caffe
CAFFE_DIR="$(CAFFE_GPU=$gpu CAFFE_BUNDLE=1 "$HERE/../build_caffe.sh" "$BVENV/bin/python")" || exit 1

# ------------------------------------------------------------------ 3. stage and pack
mkdir -p "$ROOT/build"
OUT="$ROOT/build/segorch-$VARIANT-bundle.tar.gz"
exec 6>"${OUT%.tar.gz}.lock"
flock 6   # one packaging of a variant at a time (they share the staging folder)
"$BVENV/bin/python" "$HERE/make_bundle.py" --variant "$VARIANT" --caffe-dir "$CAFFE_DIR" \
  --project "$ROOT" --data-python "$ROOT/.venv/bin/python" --out "$OUT"
# what it was made from; check_bundle.py takes cuBLAS/cuRAND for a GPU bundle from here
cuda_libs=""
[ "$gpu" = 1 ] && cuda_libs="$(ls -d "$BVENV"/lib/python3*/site-packages/nvidia/cu13/lib | head -1)"
printf '{"caffe_dir": "%s", "venv": "%s", "cuda_libs": "%s"}\n' "$CAFFE_DIR" "$BVENV" "$cuda_libs" \
  > "${OUT%.tar.gz}.build.json"
