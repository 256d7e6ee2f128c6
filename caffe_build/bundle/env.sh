# The environment of a segorch runtime bundle, sourced by bin/python, bin/orchestrate and
# bin/caffe (POSIX sh). Nothing outside the bundle is read but glibc and, in the GPU variant,
# the NVIDIA driver and cuBLAS/cuRAND, which are too large to carry (see lib/cuda-from-target.txt).
#   SEGORCH_CUDA_LIBS=DIR[:DIR]   where cuBLAS/cuRAND are, when the search below misses them
SEGORCH_HOME="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd -P)"
export SEGORCH_HOME
py="$SEGORCH_HOME/python/lib/$(ls "$SEGORCH_HOME/python/lib" | grep '^python3' | head -1)"
export PYTHONHOME="$SEGORCH_HOME/python"
export PYTHONPATH="$SEGORCH_HOME:$SEGORCH_HOME/caffe/src/python:$py/site-packages"
export PYTHONNOUSERSITE=1
unset PYTHONSTARTUP PYTHONUSERBASE PYTHONEXECUTABLE
export MPLBACKEND="${MPLBACKEND:-Agg}"
# matplotlib's font cache: inside the bundle unless the caller chose a place
export MPLCONFIGDIR="${MPLCONFIGDIR:-$SEGORCH_HOME/.mplconfig}"

# cuBLAS/cuRAND: SEGORCH_CUDA_LIBS, the NVIDIA wheels of any Python on PATH (pip's
# nvidia-cublas / nvidia-curand), the usual site-packages and CUDA toolkit folders, the
# loader's cache. Searched once per process tree (SEGORCH_CUDA_DIRS is inherited).
segorch_cuda_candidates() {
  printf '%s\n' "${SEGORCH_CUDA_LIBS:-}" | tr ':' '\n'
  for p in python3 python; do
    command -v "$p" >/dev/null 2>&1 || continue
    env -u PYTHONHOME -u PYTHONPATH "$p" -c 'import site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]: print(d)' 2>/dev/null
  done | while read -r sp; do
    for sub in cu13/lib cublas/lib curand/lib; do echo "$sp/nvidia/$sub"; done
  done
  for sp in /usr/local/lib/python3*/*-packages /usr/lib/python3*/*-packages /opt/conda/lib/python3*/site-packages \
            "$HOME"/.local/lib/python3*/site-packages; do
    for sub in cu13/lib cublas/lib curand/lib; do echo "$sp/nvidia/$sub"; done
  done
  echo /usr/local/cuda/lib64; echo /usr/local/cuda/targets/x86_64-linux/lib
  ls -d /usr/local/cuda-13*/lib64 2>/dev/null
}
if [ -f "$SEGORCH_HOME/lib/cuda-from-target.txt" ] && [ -z "${SEGORCH_CUDA_DIRS+set}" ]; then
  SEGORCH_CUDA_DIRS=""
  for so in $(cat "$SEGORCH_HOME/lib/cuda-from-target.txt"); do
    found=""
    for d in $(segorch_cuda_candidates); do
      if [ -e "$d/$so" ]; then found="$d"; break; fi
    done
    if [ -z "$found" ] && ldconfig -p 2>/dev/null | grep -q "$so "; then found="(system)"; fi
    if [ -z "$found" ]; then
      echo "segorch bundle: $so not found (GPU build: Caffe cannot load without it). Install it for any" \
           "Python on PATH (pip install nvidia-cublas==13.* nvidia-curand==10.*) or set SEGORCH_CUDA_LIBS=DIR" >&2
    elif [ "$found" != "(system)" ]; then
      case ":$SEGORCH_CUDA_DIRS:" in *":$found:"*) ;; *) SEGORCH_CUDA_DIRS="${SEGORCH_CUDA_DIRS:+$SEGORCH_CUDA_DIRS:}$found" ;; esac
    fi
  done
  export SEGORCH_CUDA_DIRS
  if [ -n "$SEGORCH_CUDA_DIRS" ]; then
    export LD_LIBRARY_PATH="$SEGORCH_CUDA_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
unset py
