# Shared settings of the Caffe set-up (sourced by setup.sh and build_caffe.sh).
# The BVLC tree: Debian's source package of BVLC Caffe at commit 99bd997.
CAFFE_DEB_SUITE=bullseye
CAFFE_DEB_VERSION=1.0.0+git20180821.99bd997-8
CAFFE_COMMIT=99bd997
# sha256 pins of the three files `apt-get source --download-only` fetches
CAFFE_ORIG_SHA256=e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c
CAFFE_DEBIAN_SHA256=07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21
CAFFE_DSC_SHA256=c492f4893fc1ba1fb514b2d9b4763bc78dc93571ea24adc6e604eccbb93cdd64

CAFFE_GPU="${CAFFE_GPU:-0}"
CACHE_ROOT="${SEGORCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/segorch}"
