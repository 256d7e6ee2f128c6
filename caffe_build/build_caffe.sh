#!/usr/bin/env bash
# Fetch, verify, patch and build BVLC Caffe; print the cache dir of the finished build.
# usage: build_caffe.sh VENV_PYTHON      (stdout: the cache dir; everything else on stderr)
# CAFFE_GPU=1: the CUDA build. CAFFE_BUNDLE=1: the portable runtime's flavour (make gpu-bundle):
# no OpenCV, LevelDB or HDF5, and the BLAS of VENV_PYTHON's numpy (caffe_build/bundle/blas/cblas.h).
#
# Cache entry: $CACHE_ROOT/caffe-<key>, key = sha256 of (source hashes, our patches, this
# script, build options, the venv's Python). The build runs in a temp dir beside it,
# caffe-<key>.tmp-XXXXXX, and is published when complete by renaming a symlink to it onto
# caffe-<key> (rename(2) is atomic), so caffe-<key> exists only for finished builds. The
# temp dir itself is never moved: CMake build trees and Caffe's test binary embed absolute
# paths. Temp dirs of interrupted builds are deleted by setup.sh (lock-aware, any key).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/config.sh"
VPY="$1"
log() { echo "[caffe] $*" >&2; }
fail() { echo "[caffe] FAILED in step '$1': $2" >&2; echo "[caffe] fix: $3" >&2; exit 1; }

mkdir -p "$CACHE_ROOT/downloads"
DL="$CACHE_ROOT/downloads"
ORIG="caffe_${CAFFE_DEB_VERSION%-*}.orig.tar.gz"
DEBTAR="caffe_${CAFFE_DEB_VERSION}.debian.tar.xz"
DSC="caffe_${CAFFE_DEB_VERSION}.dsc"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# ------------------------------------------------------------------ source identity
if [ -n "${CAFFE_SOURCE_DIR:-}" ]; then
  [ -f "$CAFFE_SOURCE_DIR/src/caffe/net.cpp" ] || fail "source" \
    "CAFFE_SOURCE_DIR=$CAFFE_SOURCE_DIR is not a BVLC Caffe tree (no src/caffe/net.cpp)" \
    "point CAFFE_SOURCE_DIR at a BVLC Caffe checkout, or unset it to use the pinned Debian source"
  src_id="dir:$(cd "$CAFFE_SOURCE_DIR" && (git rev-parse HEAD 2>/dev/null || find src include python cmake CMakeLists.txt -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-40))"
else
  src_id="deb:$CAFFE_ORIG_SHA256:$CAFFE_DEBIAN_SHA256"
fi
pyver="$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cu=""
if [ "$CAFFE_GPU" = 1 ]; then
  # cuBLAS/cuRAND from the nvidia-* wheels in the venv (caffe_build/requirements-gpu.txt); their
  # folder is part of the key because the GPU build's RPATH points at it
  nv="$("$VPY" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)"
  cu="$(ls -d "$nv"/cu1* 2>/dev/null | tail -1 || true)"
  [ -n "$nv" ] && [ -f "$cu/include/cublas_v2.h" ] && [ -f "$cu/include/curand.h" ] || fail "cmake" \
    "CAFFE_GPU=1 but the cuBLAS/cuRAND wheels are not in the venv (looked in '${nv:-no nvidia package}')" \
    "run CAFFE_GPU=1 make setup (it installs caffe_build/requirements-gpu.txt)"
fi
bundle="${CAFFE_BUNDLE:-0}"
blaslib=""
if [ "$bundle" = 1 ]; then
  # numpy's own OpenBLAS (ILP64, prefixed names): the runtime carries it for numpy anyway. Its
  # path is part of the key, like cuBLAS's: the build's RUNPATH points at it.
  blaslib="$("$VPY" -c 'import glob, os, numpy; print(*sorted(glob.glob(os.path.dirname(numpy.__file__) + ".libs/libscipy_openblas64_*.so"))[:1])' 2>/dev/null || true)"
  [ -f "$blaslib" ] || fail "cmake" \
    "CAFFE_BUNDLE=1 but $VPY's numpy has no numpy.libs/libscipy_openblas64_*.so (a numpy wheel from PyPI has it)" \
    "run make gpu-bundle, which makes the venv this flavour needs (caffe_build/bundle/build_bundle.sh)"
fi
key="$( { echo "$src_id"; cat "$HERE"/patches/*.diff "$HERE/build_caffe.sh" "$HERE/config.sh";
          [ "$bundle" = 1 ] && cat "$HERE/bundle/blas/cblas.h";
          echo "gpu=$CAFFE_GPU cu=$cu bundle=$bundle blas=${blaslib:-system} py=$("$VPY" -c 'import sys; print(sys.base_prefix, sys.version)')"; } | sha256sum | cut -c1-16)"
OUT="$CACHE_ROOT/caffe-$key"
if [ -f "$OUT/BUILD_OK" ]; then
  log "cached build: $OUT"
  echo "$OUT"; exit 0
fi

exec 9>"$CACHE_ROOT/caffe-$key.lock"
flock 9
if [ -f "$OUT/BUILD_OK" ]; then echo "$OUT"; exit 0; fi   # built by a concurrent setup
# An unpublishable leftover (a dir or link at the final name without BUILD_OK): remove it.
{ [ -e "$OUT" ] || [ -L "$OUT" ]; } && rm -rf "$OUT"
FINAL="$OUT"
OUT="$(mktemp -d "$FINAL.tmp-XXXXXX")"; chmod 755 "$OUT"

# ------------------------------------------------------------------ fetch
if [ -z "${CAFFE_SOURCE_DIR:-}" ]; then
  if ! { sha_ok "$DL/$ORIG" "$CAFFE_ORIG_SHA256" && sha_ok "$DL/$DEBTAR" "$CAFFE_DEBIAN_SHA256" && sha_ok "$DL/$DSC" "$CAFFE_DSC_SHA256"; }; then
    # A private apt configuration: its own sources list (deb-src for bullseye), lists and
    # cache; the mirror is the one the system already uses for its own release.
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
              | awk -v c="$codename" '$2 == c {print $1; exit}')"
    [ -n "$mirror" ] || fail "fetch" "no Debian mirror found in the system's apt sources for '$codename'" \
      "configure a Debian mirror in /etc/apt/sources.list(.d) and run apt-get update, or set CAFFE_SOURCE_DIR to a BVLC checkout"
    A="$CACHE_ROOT/apt"
    rm -rf "$A"; mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts" "$A/prefs"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $CAFFE_DEB_SUITE main" > "$A/sources.list"
    aptopts=(-o "Dir::Etc::SourceList=$A/sources.list" -o "Dir::Etc::SourceParts=$A/parts"
             -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache"
             -o "Dir::Etc::Preferences=$A/prefs/none" -o "Dir::Etc::PreferencesParts=$A/prefs"
             -o "APT::Sandbox::User=root")
    log "fetching Debian source package caffe=$CAFFE_DEB_VERSION ($CAFFE_DEB_SUITE) through a private apt configuration"
    apt-get "${aptopts[@]}" -qq update >&2 || fail "fetch" "apt-get update of the private deb-src list failed" \
      "check network access to the system's Debian mirror ($mirror)"
    (cd "$DL" && apt-get "${aptopts[@]}" -qq source --download-only "caffe=$CAFFE_DEB_VERSION" >&2) \
      || fail "fetch" "apt-get source caffe=$CAFFE_DEB_VERSION failed" "is the $CAFFE_DEB_SUITE suite still served by $mirror? else set CAFFE_SOURCE_DIR"
  fi
  for pair in "$ORIG:$CAFFE_ORIG_SHA256" "$DEBTAR:$CAFFE_DEBIAN_SHA256" "$DSC:$CAFFE_DSC_SHA256"; do
    f="${pair%%:*}"; want="${pair#*:}"
    sha_ok "$DL/$f" "$want" || { rm -f "$DL/$f"; fail "verify" "sha256 mismatch (or missing) for $f, expected $want" \
      "the download was corrupted or the package changed upstream; run make setup again, or set CAFFE_SOURCE_DIR"; }
  done
  log "extracting (dpkg-source applies Debian's debian/patches)"
  dpkg-source --no-check -x "$DL/$DSC" "$OUT/src" >&2 || fail "extract" "dpkg-source -x failed" "install dpkg-dev"
else
  log "copying CAFFE_SOURCE_DIR=$CAFFE_SOURCE_DIR"
  cp -a "$CAFFE_SOURCE_DIR" "$OUT/src"; rm -rf "$OUT/src/build" "$OUT/src/.build_release"
fi

# ------------------------------------------------------------------ our patches
for p in "$HERE"/patches/*.diff; do
  log "applying $(basename "$p")"
  patch -d "$OUT/src" -p1 --forward --quiet < "$p" >&2 || fail "patch" "$(basename "$p") does not apply" \
    "the source differs from BVLC 99bd997; update the patch or use the pinned source"
done

# ------------------------------------------------------------------ cmake
pyinc="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
pylib="$("$VPY" -c 'import sysconfig,os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))')"
npinc="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
opts=(-DCMAKE_BUILD_TYPE=Release -DBLAS=Open -Dpython_version="$pyver"
      -DPYTHON_EXECUTABLE="$VPY" -DPYTHON_INCLUDE_DIR="$pyinc" -DPYTHON_LIBRARY="$pylib"
      -DNUMPY_INCLUDE_DIR="$npinc" -DBUILD_python=ON -DBUILD_python_layer=ON
      -DBUILD_matlab=OFF -DBUILD_docs=OFF -DUSE_LMDB=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON)
targets=(caffe pycaffe caffe.bin)
if [ "$bundle" = 1 ]; then
  # Data layers read our raw Datums without OpenCV; HDF5 serves only HDF5 layers/snapshots
  opts+=(-DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_HDF5=OFF
         -DOpenBLAS_INCLUDE_DIR="$HERE/bundle/blas" -DOpenBLAS_LIB="$blaslib")
else
  opts+=(-DUSE_OPENCV=ON -DUSE_LEVELDB=ON -DUSE_HDF5=ON)
  targets+=(convert_imageset compute_image_mean)   # both need OpenCV
fi
if [ "$CAFFE_GPU" = 1 ]; then
  # The toolkit root: CUDA_HOME, else where nvcc really lives (an nvcc on PATH may be a
  # wrapper script, as /usr/local/bin/nvcc is here), else /usr/local/cuda.
  cuda_root=""
  for c in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")" /usr/local/cuda; do
    [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ] && { cuda_root="$c"; break; }
  done
  [ -n "$cuda_root" ] || fail "cmake" "CAFFE_GPU=1 but no CUDA toolkit (bin/nvcc + include/cuda_runtime.h) was found" \
    "install the CUDA toolkit, set CUDA_HOME to its folder, or build without CAFFE_GPU"
  nvcc="$cuda_root/bin/nvcc"
  # the present GPU's compute capability; sm_90 when there is none (or no driver)
  arch="$( (nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true) | head -1 | tr -d '. ')"
  arch="${arch:-90}"
  cudnn=OFF; [ -f /usr/include/cudnn.h ] && cudnn=ON
  # FindCUDA resets CUDA_cublas_LIBRARY/CUDA_curand_LIBRARY given on the command line and
  # searches for the unversioned names, which the wheels lack: offer them as links.
  mkdir -p "$OUT/cuda-libs"
  ln -sf "$cu/lib/libcublas.so.13" "$OUT/cuda-libs/libcublas.so"
  ln -sf "$cu/lib/libcurand.so.10" "$OUT/cuda-libs/libcurand.so"
  opts+=(-DCPU_ONLY=OFF -DUSE_CUDNN=$cudnn -DCUDA_TOOLKIT_ROOT_DIR="$cuda_root"
         -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="$arch" -DCUDA_ARCH_PTX=""
         -DCMAKE_LIBRARY_PATH="$OUT/cuda-libs"
         -DCMAKE_CXX_FLAGS="-I$cu/include" -DCUDA_NVCC_FLAGS="-I$cu/include" -DCUDA_NVCC_EXECUTABLE="$nvcc"
         -DCMAKE_BUILD_RPATH="$cu/lib")
  log "CUDA build: nvcc $nvcc, sm_$arch, cuDNN $cudnn, cuBLAS/cuRAND from $cu"
else
  opts+=(-DCPU_ONLY=ON -DUSE_CUDNN=OFF)
fi
mkdir -p "$OUT/src/build"
log "cmake (log: $OUT/build.log)"
(cd "$OUT/src/build" && cmake .. "${opts[@]}") > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log" >&2; fail "cmake" "configure failed (log above, full log $OUT/build.log)" "install the missing dependency it names (make setup installs the apt list in caffe_build/config.sh)"; }
if [ "$CAFFE_GPU" = 1 ] && ! grep -q "CUDA detected" "$OUT/build.log"; then
  grep -i -B2 -A3 "cuda" "$OUT/build.log" | head -20 >&2
  fail "cmake" "CAFFE_GPU=1 but Caffe's CMake did not detect CUDA (full log $OUT/build.log)" \
    "check CUDA_HOME ($cuda_root) and the cuBLAS/cuRAND wheels ($cu)"
fi

# ------------------------------------------------------------------ compile
jobs="${CAFFE_JOBS:-$(nproc)}"
took="about 5 minutes"; [ "$CAFFE_GPU" = 1 ] && took="about 18 minutes"
log "compiling with $jobs jobs (a cold build takes $took on 2 cores)"
start=$(date +%s)
(cd "$OUT/src/build" && make -j"$jobs" "${targets[@]}") >> "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/build.log" | head -20 >&2; fail "compile" "make failed (full log $OUT/build.log)" "read the first error above"; }
if [ "$bundle" = 1 ]; then
  # the shim header must have won over any system cblas.h, and nothing dropped may be linked
  lib="$OUT/src/build/lib/libcaffe.so.1.0.0"
  nm -D "$lib" | grep -q " U scipy_cblas_sgemm64_$" && ! nm -D "$lib" | grep -q " U cblas_sgemm$" \
    || fail "compile" "libcaffe does not call numpy's OpenBLAS (scipy_cblas_*64_)" "check the include order in $OUT/build.log"
  ! readelf -d "$lib" | grep -Eiq "opencv|hdf5|leveldb" \
    || fail "compile" "libcaffe still links OpenCV, HDF5 or LevelDB: $(readelf -d "$lib" | grep -Eio "lib(opencv|hdf5|leveldb)[^]]*" | tr '\n' ' ')" \
      "check patch 0006 and the CMake options in $OUT/build.log"
fi
# The post-build step links python/caffe/_caffe.so with an absolute path; keep it relative.
# $ORIGIN of a library loaded through a symlink is the symlink's folder, so libcaffe gets
# a relative link beside it too (the entry stays relocatable, no absolute RPATH needed).
ln -sfn ../../build/lib/_caffe.so "$OUT/src/python/caffe/_caffe.so"
ln -sfn ../../build/lib/libcaffe.so.1.0.0 "$OUT/src/python/caffe/libcaffe.so.1.0.0"
cat > "$OUT/build-info.json" <<EOF
{"commit": "$CAFFE_COMMIT", "source": "$src_id", "debian_version": "$CAFFE_DEB_VERSION",
 "gpu": $([ "$CAFFE_GPU" = 1 ] && echo true || echo false),
 "blas": "$([ "$bundle" = 1 ] && echo "OpenBLAS of numpy ($(basename "$blaslib"))" || echo OpenBLAS)",
 "flavor": "$([ "$bundle" = 1 ] && echo bundle || echo full)", "opencv": $([ "$bundle" = 1 ] && echo false || echo true),
 "python": "$pyver", "patches": [$(for p in "$HERE"/patches/*.diff; do printf '"%s",' "$(basename "$p")"; done | sed 's/,$//')],
 "build_seconds": $(( $(date +%s) - start )), "key": "$key"}
EOF
touch "$OUT/BUILD_OK"
# Publish: a symlink under a temp name, renamed onto the final name in one step.
ln -sfn "$(basename "$OUT")" "$FINAL.link-$$"
mv -T "$FINAL.link-$$" "$FINAL"
log "built in $(( $(date +%s) - start )) s: $FINAL -> $(basename "$OUT")"
echo "$FINAL"
