"""Models of the paper's benchmarks, built from torchvision parts, and local pretrained-weight loading.

See :mod:`libmtl_repmtl.models.resnet` (encoders, DeepLabV3 heads, Office MLP encoder) and
:mod:`libmtl_repmtl.models.pretrained` (``--pretrained imagenet|none|PATH``).
"""

from libmtl_repmtl.models.pretrained import (
    IMAGENET_FILES,
    PretrainedWeightsError,
    apply_pretrained,
    find_imagenet_file,
    hub_checkpoint_dir,
)
from libmtl_repmtl.models.resnet import (
    DENSE_VARIANTS,
    OFFICE_VARIANTS,
    DilatedResNetEncoder,
    OfficeEncoder,
    aspp_head,
    deeplab_heads,
    dense_encoder_factory,
    linear_heads,
    office_encoder_factory,
)

__all__ = ["DENSE_VARIANTS", "IMAGENET_FILES", "OFFICE_VARIANTS", "DilatedResNetEncoder", "OfficeEncoder",
           "PretrainedWeightsError", "apply_pretrained", "aspp_head", "deeplab_heads", "dense_encoder_factory",
           "find_imagenet_file", "hub_checkpoint_dir", "linear_heads", "office_encoder_factory"]
