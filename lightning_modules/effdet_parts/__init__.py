"""EfficientDet split into the two parts the paper's stages recombine.

``FeatureExtractor`` (backbone + BiFPN) gives the BiFPN levels, the paper's ``h``;
``DetectionHead`` (effdet's class and box nets) predicts from ``k * fpn_channels`` channels,
so Stage III can feed it two extractors' features concatenated. ``DetectionCriterion`` holds
the anchors, the anchor labeller, the focal loss and the decoding to detections.

Under mixed precision (``bf16-mixed``) the backbone, BiFPN and head repeats run in bfloat16,
while the head's last convolution, the loss, the anchors and the decoding stay in float32 with
autocast off: bfloat16 keeps 8 significant bits, so scores computed in it tie and coarsen the
FROC curve. ``TimmSyncBatchNorm`` is Lightning's ``sync_batchnorm`` with timm's converter.

State-dict keys are effdet's own (``backbone.*``, ``fpn.*``, ``class_net.*``, ``box_net.*``)
so an effdet checkpoint loads with ``pretrained.load_pretrained``. Boxes outside this package
are ``xyxy`` pixels with 0-based classes; effdet's ``yxyx`` boxes and 1-based classes stay in
here, in ``criterion.py`` (``to_effdet_targets`` and ``DetectionCriterion.decode``).

Every public name is importable from here. Read in this order: ``architecture`` (the effdet
config, its checks and the architecture spec an artifact records), ``networks`` (the
nn.Modules: extractor, head, ``widen_head``, ``freeze``, ``TimmSyncBatchNorm``), ``criterion``
(the focal loss, anchors, labelling and decoding).
"""

from lightning_modules.effdet_parts.architecture import (
    ARCHITECTURE_SPEC_KEYS,
    architecture_spec,
    architectures,
    build_config,
    check_architecture,
    check_focal,
    config_from_spec,
    input_channels,
)
from lightning_modules.effdet_parts.criterion import (
    DetectionCriterion,
    focal_loss,
    to_effdet_targets,
)
from lightning_modules.effdet_parts.networks import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectionHead,
    FeatureExtractor,
    TimmSyncBatchNorm,
    concat_features,
    freeze,
    use_channels_last,
    widen_head,
)

__all__ = [
    "ARCHITECTURE_SPEC_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DetectionCriterion",
    "DetectionHead",
    "FeatureExtractor",
    "TimmSyncBatchNorm",
    "architecture_spec",
    "architectures",
    "build_config",
    "check_architecture",
    "check_focal",
    "concat_features",
    "config_from_spec",
    "focal_loss",
    "freeze",
    "input_channels",
    "to_effdet_targets",
    "use_channels_last",
    "widen_head",
]
