"""Caffe nets for semantic segmentation: NetSpec generators (compact FCN, FCN-32s/16s/8s on
VGG16) and the doctor that finds the classic Caffe mistakes (`nets.doctor.diagnose`).

Nothing here imports Caffe at module load.
"""

from nets.spec import ARCHS, DataSource, GeneratedNet, generate

__all__ = ["ARCHS", "DataSource", "GeneratedNet", "generate"]
