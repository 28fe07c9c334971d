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
so an effdet checkpoint loads with ``pretrained.load_pretrained``. Boxes outside this module are
``xyxy`` pixels with 0-based classes; effdet's ``yxyx`` boxes and 1-based classes stay in here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from effdet import get_efficientdet_config
from effdet.anchors import AnchorLabeler, Anchors
from effdet.bench import _batch_detection, _post_process
from effdet.config import set_config_readonly, set_config_writeable
from effdet.efficientdet import BiFpn, HeadNet, _init_weight, get_feature_info
from effdet.loss import DetectionLoss, new_focal_loss
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_config(
    architecture: str = "tf_efficientdet_d0",
    image_size: Sequence[int] = (512, 512),
    num_classes: int = 1,
    overrides: Mapping[str, Any] | None = None,
    focal_alpha: float | None = None,
    focal_gamma: float | None = None,
):
    """An effdet model config for ``architecture`` with the given input size and classes.

    ``overrides`` sets any effdet config key (``backbone_name``, ``fpn_channels``,
    ``fpn_cell_repeats``, ``box_class_repeats``, ``min_level``, ``max_level``,
    ``anchor_scale``, ``aspect_ratios``, ``backbone_args``, ...), so a small CPU detector is a
    config entry, not code. The returned config is read-only, as effdet leaves it.
    """
    check_architecture(architecture)
    config = get_efficientdet_config(architecture)
    set_config_writeable(config)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
        raise ValueError(
            f"unknown effdet config keys in architecture overrides: {unknown}; "
            f"valid keys: {sorted(config.keys())}"
        )
    for key, value in overrides.items():
        config[key] = value
    if "num_levels" not in overrides:
        config.num_levels = config.max_level - config.min_level + 1
    # Backbone weights come from local files only (load_pretrained), never from a hub.
    config.backbone_args = dict(config.backbone_args or {})
    config.image_size = tuple(int(side) for side in image_size)
    config.num_classes = int(num_classes)
    check_focal(
        config.alpha if focal_alpha is None else focal_alpha,
        config.gamma if focal_gamma is None else focal_gamma,
    )
    if focal_alpha is not None:
        config.alpha = float(focal_alpha)
    if focal_gamma is not None:
        config.gamma = float(focal_gamma)

    stride = 2**config.max_level
    if len(config.image_size) != 2 or any(side % stride for side in config.image_size):
        raise ValueError(
            f"image_size {list(config.image_size)} must be two sides (H, W) divisible by "
            f"2**max_level = {stride} for {architecture!r}"
        )
    anchors_per_location = config.num_scales * len(config.aspect_ratios)
    locations = sum(
        (config.image_size[0] // 2**level) * (config.image_size[1] // 2**level)
        for level in range(config.min_level, config.max_level + 1)
    )
    # effdet's top-k fails when it asks for more points than anchors x classes exist.
    config.max_detection_points = min(
        config.max_detection_points, locations * anchors_per_location * config.num_classes
    )
    set_config_readonly(config)
    return config


def architectures() -> list[str]:
    """The effdet architecture names ``build_config`` accepts."""
    from effdet.config.model_config import efficientdet_model_param_dict

    return sorted(efficientdet_model_param_dict)


def check_architecture(architecture: str) -> None:
    """A ValueError naming the closest known architectures (effdet itself raises a bare
    KeyError)."""
    import difflib

    known = architectures()
    if architecture not in known:
        close = difflib.get_close_matches(str(architecture), known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise ValueError(f"unknown effdet architecture {architecture!r}{hint}")


def check_focal(alpha: float, gamma: float) -> None:
    """Eq. 1's alpha weighs positives against negatives (in [0, 1]); gamma >= 0 focuses."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"focal_alpha must lie in [0, 1], got {alpha}")
    if float(gamma) < 0:
        raise ValueError(f"focal_gamma must be >= 0, got {gamma}")


def input_channels(config) -> int:
    return int((config.backbone_args or {}).get("in_chans", 3))


class FeatureExtractor(nn.Module):
    """Backbone + BiFPN: an image batch to the BiFPN levels P_min..P_max (the paper's h)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(
            config.backbone_name,
            features_only=True,
            out_indices=config.backbone_indices or (2, 3, 4),
            pretrained=False,
            **config.backbone_args,
        )
        self.fpn = BiFpn(config, get_feature_info(self.backbone))
        for name, module in self.named_modules():
            if "backbone" not in name:
                _init_weight(module, name)
        channels = input_channels(config)
        mean = torch.tensor(IMAGENET_MEAN if channels == 3 else [sum(IMAGENET_MEAN) / 3] * channels)
        std = torch.tensor(IMAGENET_STD if channels == 3 else [sum(IMAGENET_STD) / 3] * channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        # Set by ``use_channels_last``: the normalised (3-channel) input goes in as NHWC.
        self.channels_last = False

    @property
    def out_channels(self) -> int:
        return int(self.config.fpn_channels)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 1|C, H, W] images in [0, 1] to the backbone's channels, ImageNet-normalised."""
        channels = self.mean.shape[1]
        if images.shape[1] == 1 and channels != 1:
            images = images.expand(-1, channels, -1, -1)
        if images.shape[1] != channels:
            raise ValueError(
                f"images have {images.shape[1]} channels; the backbone takes 1 or {channels}"
            )
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        expected = tuple(self.config.image_size)
        if tuple(images.shape[-2:]) != expected:
            raise ValueError(
                f"input images are {tuple(images.shape[-2:])} (H, W) but the model was built "
                f"for image_size {expected}"
            )
        images = self.normalize(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # BiFpn appends to the list it is given: the backbone returns a fresh one each call.
        return self.fpn(self.backbone(images))


def use_channels_last(module: nn.Module) -> None:
    """Convert ``module``'s 4-D weights to channels_last and have every ``FeatureExtractor`` in
    it feed its input that way (a GPU's tensor cores read NHWC without transposes)."""
    module.to(memory_format=torch.channels_last)
    for part in module.modules():
        if isinstance(part, FeatureExtractor):
            part.channels_last = True


class DetectionHead(nn.Module):
    """effdet's class and box nets over ``in_multiplier * fpn_channels`` input channels.

    ``in_multiplier=1`` is a plain detector's head; ``in_multiplier=2`` predicts from two
    extractors' features concatenated per level (Stage III, BASE_UB).
    """

    def __init__(self, config, in_multiplier: int = 1):
        super().__init__()
        if in_multiplier < 1:
            raise ValueError(f"in_multiplier must be >= 1, got {in_multiplier}")
        self.in_multiplier = in_multiplier
        self.config = _head_config(config, in_multiplier)
        self.class_net = HeadNet(self.config, num_outputs=self.config.num_classes)
        self.box_net = HeadNet(self.config, num_outputs=4)
        if self.class_net.bn_level_first or self.box_net.bn_level_first:
            raise ValueError("head_bn_level_first is not supported (a TorchScript layout)")
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return int(self.config.fpn_channels)

    def reset_parameters(self, class_net_only: bool = False) -> None:
        """effdet's initialisation, including the class-prior bias of ``class_net.predict``."""
        nets = (
            {"class_net": self.class_net}
            if class_net_only
            else {"class_net": self.class_net, "box_net": self.box_net}
        )
        for prefix, net in nets.items():
            for name, module in net.named_modules(prefix=prefix):
                _init_weight(module, name)

    def forward(self, features: Sequence[torch.Tensor]):
        for level, feature in enumerate(features):
            if feature.shape[1] != self.in_channels:
                raise ValueError(
                    f"feature level {level} has {feature.shape[1]} channels; this head takes "
                    f"{self.in_channels} (in_multiplier={self.in_multiplier})"
                )
        return _head_forward(self.class_net, features), _head_forward(self.box_net, features)


def _head_forward(net: HeadNet, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """effdet's ``HeadNet._forward`` with its last convolution (``predict``) in float32 and
    autocast off: bfloat16 logits would give scores with 8 significant bits (many detections
    tied), float32 ones cost one convolution per level. Without autocast it is effdet's own."""
    outputs = []
    for level in range(net.num_levels):
        x = features[level]
        for conv, norms in zip(net.conv_rep, net.bn_rep):
            x = net.act(norms[level](conv(x)))
        with torch.autocast(x.device.type, enabled=False):
            outputs.append(net.predict(x.float()))
    return outputs


def _head_config(config, in_multiplier: int):
    if in_multiplier == 1:
        return config
    head_config = config.copy()
    set_config_writeable(head_config)
    head_config.fpn_channels = config.fpn_channels * in_multiplier
    set_config_readonly(head_config)
    return head_config


def concat_features(*feature_lists: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-level channel concatenation: h_FUSED = h_SM (+) h'_SM."""
    levels = {len(features) for features in feature_lists}
    if len(levels) != 1:
        raise ValueError(f"feature lists have different numbers of levels: {sorted(levels)}")
    return [torch.cat(level, dim=1) for level in zip(*feature_lists)]


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """Per-element focal loss (paper Eq. 1 for positives), effdet's own implementation.

    For a positive target: ``-alpha * (1 - p)**gamma * log(p)``; for a negative:
    ``-(1 - alpha) * p**gamma * log(1 - p)``, with ``p = sigmoid(logits)``.
    """
    return new_focal_loss(
        logits, targets, alpha=alpha, gamma=gamma, normalizer=1.0, label_smoothing=0.0
    )


class DetectionCriterion(nn.Module):
    """Anchors, anchor labelling, focal + box loss, and decoding: effdet's training bench
    (``DetBenchTrain``/``DetBenchPredict``) without the model inside it."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.anchors = Anchors.from_config(config)
        # Anchors are derived from the config: keep them out of checkpoints and artifacts.
        self.anchors.register_buffer("boxes", self.anchors.boxes, persistent=False)
        self.labeler = AnchorLabeler(self.anchors, config.num_classes, match_threshold=0.5)
        self.loss_fn = DetectionLoss(config)

    @property
    def focal_alpha(self) -> float:
        return float(self.loss_fn.alpha)

    @property
    def focal_gamma(self) -> float:
        return float(self.loss_fn.gamma)

    def forward(
        self,
        class_out: list[torch.Tensor],
        box_out: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Loss of raw head outputs against xyxy boxes (input pixels) and 0-based labels, in
        float32 with autocast off."""
        device = class_out[0].device
        with torch.autocast(device.type, enabled=False):
            gt_boxes, gt_classes = to_effdet_targets(boxes, labels, device)
            cls_targets, box_targets, num_positives = self.labeler.batch_label_anchors(
                gt_boxes, gt_classes
            )
            loss, class_loss, box_loss = self.loss_fn(
                _float(class_out), _float(box_out), cls_targets, box_targets, num_positives
            )
        return {"loss": loss, "class_loss": class_loss, "box_loss": box_loss}

    @torch.no_grad()
    def decode(
        self, class_out: list[torch.Tensor], box_out: list[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image after effdet's top-k and NMS: ``boxes`` [n, 4] xyxy in input
        pixels, ``scores`` [n] in (0, 1), ``labels`` [n] 0-based; empty slots removed. All of
        it in float32 with autocast off, the anchors included, whatever the precision."""
        config = self.config
        with torch.autocast(class_out[0].device.type, enabled=False):
            class_top, box_top, indices, classes = _post_process(
                _float(class_out),
                _float(box_out),
                num_levels=config.num_levels,
                num_classes=config.num_classes,
                max_detection_points=config.max_detection_points,
            )
            detections = _batch_detection(
                class_out[0].shape[0],
                class_top,
                box_top,
                self.anchors.boxes.float(),
                indices,
                classes,
                None,
                None,
                max_det_per_image=config.max_det_per_image,
                soft_nms=config.soft_nms,
            )
        results = []
        for image_detections in detections:
            # effdet pads to max_det_per_image with all-zero rows (class 0 = no detection).
            keep = image_detections[:, 5] > 0
            image_detections = image_detections[keep]
            results.append(
                {
                    "boxes": image_detections[:, :4].float(),
                    "scores": image_detections[:, 4].float(),
                    "labels": image_detections[:, 5].long() - 1,
                }
            )
        return results


def _float(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [tensor.float() for tensor in tensors]


def to_effdet_targets(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """xyxy boxes and 0-based labels to effdet's yxyx boxes and 1-based classes."""
    gt_boxes, gt_classes = [], []
    for image_boxes, image_labels in zip(boxes, labels):
        image_boxes = torch.as_tensor(image_boxes, dtype=torch.float32, device=device)
        gt_boxes.append(image_boxes.reshape(-1, 4)[:, [1, 0, 3, 2]])
        gt_classes.append(torch.as_tensor(image_labels, device=device).reshape(-1).float() + 1)
    return gt_boxes, gt_classes


# The keys of ``architecture_spec``, in its order: what a later stage copies out of an earlier
# stage's artifact to rebuild that stage's part.
ARCHITECTURE_SPEC_KEYS = (
    "architecture",
    "architecture_overrides",
    "image_size",
    "num_classes",
    "backbone_name",
    "fpn_channels",
    "min_level",
    "max_level",
    "num_levels",
)


def architecture_spec(architecture: str, overrides: Mapping[str, Any] | None, config) -> dict:
    """What a stage artifact records of a part's architecture (the ``ARCHITECTURE_SPEC_KEYS``):
    enough to rebuild it with ``build_config`` and to check that two parts' features line up
    level by level."""
    return {
        "architecture": architecture,
        "architecture_overrides": _plain(dict(overrides or {})),
        "image_size": [int(side) for side in config.image_size],
        "num_classes": int(config.num_classes),
        "backbone_name": str(config.backbone_name),
        "fpn_channels": int(config.fpn_channels),
        "min_level": int(config.min_level),
        "max_level": int(config.max_level),
        "num_levels": int(config.num_levels),
    }


def config_from_spec(
    spec: Mapping[str, Any],
    image_size: Sequence[int] | None = None,
    focal_alpha: float | None = None,
    focal_gamma: float | None = None,
):
    """The effdet config of a part recorded with ``architecture_spec``."""
    return build_config(
        spec["architecture"],
        image_size or spec["image_size"],
        spec["num_classes"],
        spec.get("architecture_overrides"),
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
    )


def _plain(value):
    """Config values as JSON types (tuples to lists), so a spec survives a JSON round trip."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` and eval mode (BatchNorm statistics never move). Do it before
    DDP wraps the model: DDP then neither reduces nor waits for these parameters."""
    module.requires_grad_(False)
    module.eval()
    return module


@torch.no_grad()
def widen_head(wide: DetectionHead, narrow: DetectionHead) -> None:
    """Start a head over ``k * C`` concatenated channels exactly where a ``C``-channel head is.

    Each of ``narrow``'s tensors is copied into the leading block of ``wide``'s (the first
    ``C`` channels are the narrow head's own input, h_SM); the weights from the other input
    channels into those outputs are zeroed, so ``wide`` predicts what ``narrow`` predicts
    whatever the other channels hold. The other channels' own weights keep their fresh
    initialisation: their path is live, and only its last connection (into the prediction)
    starts at zero, so training can open it from the first step.
    """
    if narrow.in_multiplier != 1:
        raise ValueError("widen_head copies from a single detector's head (in_multiplier=1)")
    narrow_state = narrow.state_dict()
    wide_state = wide.state_dict()
    if set(narrow_state) != set(wide_state):
        raise ValueError("the heads differ in structure (repeats, levels or anchors)")
    channels = narrow.in_channels
    for key, source in narrow_state.items():
        target = wide_state[key]
        if target.ndim != source.ndim or any(t < s for t, s in zip(target.shape, source.shape)):
            raise ValueError(
                f"head tensor {key}: {tuple(source.shape)} does not fit {tuple(target.shape)}"
            )
        target[tuple(slice(0, side) for side in source.shape)] = source
        # Dense (not depthwise) weights: zero the other channels' way into the copied outputs.
        if target.ndim == 4 and target.shape[1] > channels and source.shape[1] == channels:
            target[: source.shape[0], channels:] = 0
    wide.load_state_dict(wide_state)


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` through timm's converter: a ``BatchNormAct2d`` (BatchNorm
    with its activation, as timm's backbones build it) becomes a ``SyncBatchNormAct`` that
    keeps the activation, where ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (Lightning's
    default) makes it a plain SyncBatchNorm and silently drops it. ``revert`` gives back the
    original classes. ``StageModule`` puts it in place of Lightning's default plugin."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        if isinstance(model, nn.SyncBatchNorm):
            plain = BatchNormAct2d if isinstance(model, SyncBatchNormAct) else nn.BatchNorm2d
            converted = plain(
                model.num_features,
                model.eps,
                model.momentum,
                model.affine,
                model.track_running_stats,
            )
            if isinstance(model, SyncBatchNormAct):
                converted.act, converted.drop = model.act, model.drop
            if model.affine:
                converted.weight, converted.bias = model.weight, model.bias
            converted.running_mean = model.running_mean
            converted.running_var = model.running_var
            converted.num_batches_tracked = model.num_batches_tracked
            converted.training = model.training
            return converted
        for name, child in model.named_children():
            model.add_module(name, self.revert(child))
        return model
