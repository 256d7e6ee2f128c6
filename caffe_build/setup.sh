#!/usr/bin/env bash
# make setup: everything this project needs on a fresh Debian 12 machine, idempotent.
#   1. apt build dependencies      2. .venv with pinned Python packages
#   3. BVLC Caffe source (Debian's source package, sha256-pinned, or CAFFE_SOURCE_DIR)
#   4. Debian's patches + ours     5. CMake build, cached outside the work tree
#   6. a .pth file so the venv imports the built pycaffe
# Each step that fails says which step and what to do, and exits non-zero.
# --dry-run (or SEGORCH_SETUP_DRY=1): check every step and print what it would install or
# write, changing nothing (a Caffe build missing from the cache is still built, into the cache).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
# shellcheck source=caffe_build/config.sh
source "$HERE/config.sh"

DRY="${SEGORCH_SETUP_DRY:-0}"; [ "${1:-}" = --dry-run ] && DRY=1
step() { CURRENT_STEP="$1"; echo "[setup] $1"; }
would() { echo "[setup] dry run: would $*"; }
fail() {
  echo "[setup] FAILED in step '${CURRENT_STEP:-?}': $1" >&2
  echo "[setup] fix: $2" >&2
  exit 1
}
trap 'rc=$?; [ $rc -ne 0 ] && echo "[setup] step \"${CURRENT_STEP:-?}\" exited with status $rc (see the output above)" >&2' EXIT

# ---------------------------------------------------------------- 1. apt
step "apt build dependencies"
missing=()
mapfile -t APT_PACKAGES < <(grep -v '^#' "$HERE/apt-packages.txt" | tr ' ' '\n' | grep -v '^$')
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "$DRY" = 1 ]; then
  would "apt-get install ${missing[*]}"
elif [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "missing apt packages: ${missing[*]}" \
    "run 'make setup' as root, or: sudo apt-get install ${missing[*]}"
  echo "[setup] installing ${#missing[@]} apt packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    || fail "apt-get update failed" "check the system's apt sources (/etc/apt/sources.list*)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install failed for: ${missing[*]}" "run the apt-get install by hand to see which package is unavailable"
fi

# ---------------------------------------------------------------- 2. venv
step "python venv"
# requirements.lock: every package at an exact version (--no-deps: nothing unpinned slips in);
# pyproject.toml: the direct dependencies' ranges, which `pip check` holds the lock to.
PY="${PYTHON:-python3}"
VPY="$ROOT/.venv/bin/python"
if [ ! -x "$VPY" ] && [ "$DRY" = 1 ]; then
  would "create .venv with $PY, pip install -r requirements.lock and -e ., then build or reuse Caffe for it"
  echo "[setup] dry run: nothing changed"; trap - EXIT; exit 0
elif [ ! -x "$VPY" ]; then
  "$PY" -m venv "$ROOT/.venv" || fail "cannot create .venv with $PY" "install python3-venv, or set PYTHON=/path/to/python3.11"
fi
req_sum="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" "$HERE/requirements-gpu.txt" | sha256sum | cut -c1-16)-gpu${CAFFE_GPU}"
if [ "$(cat "$ROOT/.venv/.deps-stamp" 2>/dev/null)" != "$req_sum" ] && [ "$DRY" = 1 ]; then
  would "pip install -r requirements.lock$([ "$CAFFE_GPU" = 1 ] && echo " -r caffe_build/requirements-gpu.txt") and -e . (.venv/.deps-stamp is not $req_sum)"
elif [ "$(cat "$ROOT/.venv/.deps-stamp" 2>/dev/null)" != "$req_sum" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps -r "$ROOT/requirements.lock" \
    || fail "pip install -r requirements.lock failed" "read pip's message above; every version is pinned in requirements.lock"
  if [ "$CAFFE_GPU" = 1 ]; then
    "$VPY" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-gpu.txt" \
      || fail "pip install of the CUDA libraries failed" "see caffe_build/requirements-gpu.txt"
  fi
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" \
    || fail "pip install -e . failed" "check pyproject.toml"
  broken="$("$VPY" -m pip check --disable-pip-version-check 2>&1)" \
    || fail "requirements.lock does not satisfy pyproject.toml: $broken" \
      "pin a version inside pyproject.toml's range, or add the missing package, in requirements.lock"
  echo "$req_sum" > "$ROOT/.venv/.deps-stamp"
fi

# ---------------------------------------------------------------- 3-5. Caffe
step "caffe source and build"
# Temp dirs of interrupted builds (any key) go, unless a build of that key is running now
# (it holds caffe-<key>.lock) or the dir is a finished build published under caffe-<key>.
for stale in "$CACHE_ROOT"/caffe-*.tmp-*; do
  [ -d "$stale" ] || continue
  k="${stale%.tmp-*}"
  [ "$(readlink "$k" 2>/dev/null)" = "$(basename "$stale")" ] && continue
  if [ "$DRY" = 1 ]; then ( flock -n 8 ) 8>"$k.lock" && would "remove the interrupted build $stale"; continue; fi
  ( flock -n 8 && echo "[setup] removing the interrupted build $stale" && rm -rf "$stale" ) 8>"$k.lock" || true
done
CAFFE_DIR="$("$HERE/build_caffe.sh" "$VPY")" || exit 1

# ---------------------------------------------------------------- 6. .pth
step "pycaffe in the venv"
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$DRY" = 1 ]; then
  [ "$(cat "$site/bvlc_caffe.pth" 2>/dev/null)" = "$CAFFE_DIR/src/python" ] || would "write $site/bvlc_caffe.pth"
  [ "$(cat "$ROOT/.venv/caffe-dir" 2>/dev/null)" = "$CAFFE_DIR" ] || would "write .venv/caffe-dir"
else
  echo "$CAFFE_DIR/src/python" > "$site/bvlc_caffe.pth"
  echo "$CAFFE_DIR" > "$ROOT/.venv/caffe-dir"
fi
PYTHONPATH="$CAFFE_DIR/src/python${PYTHONPATH:+:$PYTHONPATH}" "$VPY" -c "import caffe, caffe._caffe; b=caffe._caffe.Blob; assert hasattr(b, 'asum_data')" 2>/dev/null \
  || fail "the built pycaffe does not import in .venv" "run: .venv/bin/python -c 'import caffe' to see why; delete $CAFFE_DIR to force a rebuild"
echo "[setup] ok: pycaffe from $CAFFE_DIR/src/python"
[ "$DRY" = 1 ] && echo "[setup] dry run: nothing changed"
trap - EXIT
