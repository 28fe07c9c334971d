"""The EfficientDet nn.Modules: ``FeatureExtractor`` (backbone + BiFPN, the paper's h), the
``DetectionHead`` over one or more extractors' features, and what freezes, widens and syncs them."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from effdet.config import set_config_readonly, set_config_writeable
from effdet.efficientdet import BiFpn, HeadNet, _init_weight, get_feature_info
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

from lightning_modules.effdet_parts.architecture import input_channels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
