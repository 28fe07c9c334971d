"""Stage II's loss as configuration: a list of terms, each a kind, a weight, the BiFPN levels it
reads and its own settings (torchdistill's and mmrazor's "distillation as data").

Every term compares the student's projected SM features z'_SM with the teacher's features h
(C's of the paired FFDM, or A's of the same SM for the self-distillation control), level by
level, and returns one number per level; the levels are averaged with ``level_weights``.

========================  ======================================================================
kind                      what it minimises at one level
========================  ======================================================================
``cosine``                the paper's Eq. 2: minus the cosine similarity of z' and h, averaged
                          over every position (the default, bit for bit as before)
``masked_cosine``         foreground and background decoupled (FGD, DeFeat):
                          ``fg_weight * sum_p m(p) (1 - cos p) / sum_p m(p)
                          + bg_weight * mean over background positions of (1 - cos p)``, where
                          m(p) is the largest 1/(h*w) of the lesion boxes covering p (h x w: a
                          box's size in cells at that level, after ``dilation``), so each lesion
                          counts once whatever its size
``roi_cosine``            z' and h pooled by ``roi_align`` inside each lesion box into
                          ``output_size`` x ``output_size`` bins; 1 - cosine in each bin, averaged
                          over bins and lesions, every lesion weighing equally (CoMoTo's
                          lesion-specific distillation)
``cwd``                   channel-wise distillation (Shu et al., ICCV 2021): per channel, a
                          softmax over positions at temperature ``tau``; KL(teacher || student)
                          summed over positions, times tau^2, averaged over channels and images
``pkd``                   PKD (Cao et al., NeurIPS 2022): each channel standardised over the
                          batch and positions, then half the mean squared error, which is
                          1 - Pearson r averaged over channels
========================  ======================================================================

Lesion boxes come from the batch (``sm_boxes`` and ``ffdm_boxes``, xyxy in input pixels: see
``datamodules.batch``); ``boxes`` says whose. A batch without a lesion gives the lesion terms 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from common.defaults import MODALITIES
from lightning_modules.distillation import cosine_similarity_map, weighted_similarity

KINDS = ("cosine", "masked_cosine", "roi_cosine", "cwd", "pkd")
BOX_SOURCES = (*MODALITIES, "both")
# Settings each kind takes besides kind, weight, levels and level_weights, with defaults.
SETTINGS: dict[str, dict[str, Any]] = {
    "cosine": {"eps": 1e-8},
    "masked_cosine": {
        "eps": 1e-8,
        "fg_weight": 1.0,
        "bg_weight": 1.0,
        "dilation": 0,
        "boxes": "both",
    },
    "roi_cosine": {"eps": 1e-8, "output_size": 3, "dilation": 0, "boxes": "both"},
    "cwd": {"tau": 1.0},
    "pkd": {"eps": 1e-6},
}


def cell_ranges(
    boxes: torch.Tensor, stride: int, height: int, width: int, dilation: int = 0
) -> torch.Tensor:
    """The cells a level's feature map gives each box: ``[n, 4]`` int64 (row0, col0, row1,
    col1), inclusive. A cell (i, j) covers input pixels [j*stride, (j+1)*stride) x
    [i*stride, (i+1)*stride); a box gets every cell it overlaps, at least the cell of its
    centre, then ``dilation`` more cells on each side, clipped to the map."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    centre_col = torch.floor((x1 + x2) / 2 / stride)
    centre_row = torch.floor((y1 + y2) / 2 / stride)
    col0 = torch.minimum(torch.floor(x1 / stride), centre_col)
    row0 = torch.minimum(torch.floor(y1 / stride), centre_row)
    col1 = torch.maximum(torch.ceil(x2 / stride) - 1, centre_col)
    row1 = torch.maximum(torch.ceil(y2 / stride) - 1, centre_row)
    cells = torch.stack([row0 - dilation, col0 - dilation, row1 + dilation, col1 + dilation], -1)
    limits = torch.tensor([height - 1, width - 1, height - 1, width - 1], device=boxes.device)
    return torch.minimum(cells.clamp_min(0), limits.to(cells)).long()


def foreground_weights(
    boxes: Sequence[torch.Tensor], stride: int, height: int, width: int, dilation: int = 0
) -> torch.Tensor:
    """``[B, H, W]``: at each cell the largest 1/(h*w) of the boxes covering it (0 outside
    every box), h x w being each box's size in cells (``cell_ranges``)."""
    weights = torch.zeros(len(boxes), height, width)
    for index, image_boxes in enumerate(boxes):
        if len(image_boxes) == 0:
            continue
        for row0, col0, row1, col1 in cell_ranges(
            image_boxes.detach().float().cpu(), stride, height, width, dilation
        ).tolist():
            area = (row1 - row0 + 1) * (col1 - col0 + 1)
            region = weights[index, row0 : row1 + 1, col0 : col1 + 1]
            region.clamp_(min=1.0 / area)
    return weights


def lesion_boxes(batch: Mapping[str, Any], source: str) -> list[torch.Tensor]:
    """Each image's lesion boxes (xyxy, input pixels) from the batch: the SM's, the FFDM's or
    both modalities' together."""
    if source not in BOX_SOURCES:
        raise ValueError(f"boxes must be one of {BOX_SOURCES}, got {source!r}")
    modalities = MODALITIES if source == "both" else (source,)
    present = [f"{m}_boxes" for m in modalities if f"{m}_boxes" in batch]
    if not present:
        raise ValueError(
            f"a lesion-aware Stage II term reads the batch's {source} boxes; the "
            f"batch has none of {[f'{m}_boxes' for m in modalities]}"
        )
    return [
        torch.cat([batch[key][index].reshape(-1, 4) for key in present])
        for index in range(len(batch[present[0]]))
    ]


def _one_minus_cosine_masked(
    z: torch.Tensor, h: torch.Tensor, weights: torch.Tensor, eps: float
) -> torch.Tensor:
    """sum(w * (1 - cos)) / sum(w) over the batch's positions; 0 where every weight is 0."""
    total = weights.sum()
    if total <= 0:
        return z.new_zeros(())
    return ((1 - cosine_similarity_map(z, h, eps)) * weights).sum() / total


class LossTerm:
    """One configured term: ``kind``, ``weight``, ``levels`` (BiFPN level numbers, default
    all), ``level_weights`` (default equal) and the kind's own settings (``SETTINGS``)."""

    def __init__(self, spec: Mapping[str, Any], level_numbers: Sequence[int], where: str = "loss"):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in KINDS:
            raise ValueError(f"{where}.kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.weight = float(spec.pop("weight", 1.0))
        if not self.weight > 0:
            raise ValueError(f"{where}.weight must be > 0, got {self.weight}")
        levels = spec.pop("levels", None)
        self.levels = list(level_numbers if levels is None else levels)
        unknown = [level for level in self.levels if level not in level_numbers]
        if unknown or not self.levels:
            raise ValueError(
                f"{where}.levels {self.levels}: this model's BiFPN levels are {list(level_numbers)}"
            )
        self.positions = [list(level_numbers).index(level) for level in self.levels]
        level_weights = spec.pop("level_weights", None)
        level_weights = [1.0] * len(self.levels) if level_weights is None else list(level_weights)
        if (
            len(level_weights) != len(self.levels)
            or min(level_weights) < 0
            or sum(level_weights) <= 0
        ):
            raise ValueError(
                f"{where}.level_weights {level_weights} must give one non-negative "
                f"weight per level in {self.levels}, not all zero"
            )
        self.level_weights = torch.tensor(level_weights)
        unexpected = sorted(set(spec) - set(SETTINGS[kind]))
        if unexpected:
            raise ValueError(
                f"{where}: {kind} takes {sorted(SETTINGS[kind])} besides kind, "
                f"weight, levels and level_weights; unknown {unexpected}"
            )
        self.settings = {**SETTINGS[kind], **spec}
        checks = {
            "tau": lambda v: v > 0,
            "fg_weight": lambda v: v >= 0,
            "bg_weight": lambda v: v >= 0,
            "dilation": lambda v: int(v) == v and v >= 0,
            "output_size": lambda v: int(v) == v and v >= 1,
            "eps": lambda v: v > 0,
            "boxes": lambda v: v in BOX_SOURCES,
        }
        for key, value in self.settings.items():
            if not checks[key](value):
                raise ValueError(f"{where}.{key}: {value!r} is not allowed")
        if kind == "masked_cosine" and self.settings["fg_weight"] + self.settings["bg_weight"] <= 0:
            raise ValueError(f"{where}: fg_weight and bg_weight are both 0")

    @property
    def needs_boxes(self) -> bool:
        return self.kind in ("masked_cosine", "roi_cosine")

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weight": self.weight,
            "levels": list(self.levels),
            "level_weights": self.level_weights.tolist(),
            **self.settings,
        }

    def per_level(
        self,
        z: Sequence[torch.Tensor],
        h: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor] | None,
        strides: Sequence[int],
        similarities: torch.Tensor,
    ) -> torch.Tensor:
        """The term's value at each of its levels: ``[len(levels)]``. ``similarities`` are
        Eq. 2's mean similarities of every level, which ``cosine`` reads."""
        if self.kind == "cosine":
            return -similarities[torch.tensor(self.positions, device=similarities.device)]
        # At least float32 with autocast off, as Eq. 2's similarity: softmaxes over positions
        # and standardisations in bfloat16 would keep 8 significant bits.
        with torch.autocast(z[0].device.type, enabled=False):
            return torch.stack(
                [
                    self._level(_float32(z[p]), _float32(h[p]), boxes, strides[p])
                    for p in self.positions
                ]
            )

    def __call__(self, z, h, boxes, strides, similarities) -> torch.Tensor:
        """The term, its levels averaged with ``level_weights`` (not yet times ``weight``)."""
        if self.kind == "cosine":  # the negative of Eq. 2, computed as before terms existed
            chosen = torch.tensor(self.positions, device=similarities.device)
            return -weighted_similarity(similarities[chosen], self.level_weights)
        values = self.per_level(z, h, boxes, strides, similarities)
        weights = self.level_weights.to(values)
        return (values * weights).sum() / weights.sum()

    def _level(self, z: torch.Tensor, h: torch.Tensor, boxes, stride: int) -> torch.Tensor:
        s = self.settings
        if self.kind == "masked_cosine":
            height, width = z.shape[-2:]
            fg = foreground_weights(boxes, stride, height, width, int(s["dilation"])).to(z)
            bg = (fg == 0).to(z)
            loss = z.new_zeros(())
            if s["fg_weight"] > 0:
                loss = loss + s["fg_weight"] * _one_minus_cosine_masked(z, h, fg, s["eps"])
            if s["bg_weight"] > 0:
                loss = loss + s["bg_weight"] * _one_minus_cosine_masked(z, h, bg, s["eps"])
            return loss
        if self.kind == "roi_cosine":
            rois = [b.to(z).reshape(-1, 4) for b in boxes]
            if sum(len(r) for r in rois) == 0:
                return z.new_zeros(())
            margin = float(s["dilation"]) * stride
            rois = [r + torch.tensor([-margin, -margin, margin, margin]).to(z) for r in rois]
            size = int(s["output_size"])
            pooled_z = roi_align(
                z, rois, size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True
            )
            pooled_h = roi_align(
                h, rois, size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True
            )
            # Eq. 2 in each bin of each lesion; every lesion has the same bins, so the mean
            # over everything weighs the lesions equally.
            return (1 - cosine_similarity_map(pooled_z, pooled_h, s["eps"])).mean()
        if self.kind == "cwd":
            tau = float(s["tau"])
            batch, channels = z.shape[:2]
            student = (z / tau).flatten(2)
            teacher = (h / tau).flatten(2)
            p_teacher = F.softmax(teacher, dim=-1)
            kl = p_teacher * (F.log_softmax(teacher, dim=-1) - F.log_softmax(student, dim=-1))
            return kl.sum() * tau**2 / (batch * channels)
        # pkd
        return F.mse_loss(_standardise(z, s["eps"]), _standardise(h, s["eps"])) / 2


def _float32(features: torch.Tensor) -> torch.Tensor:
    return features.to(torch.promote_types(features.dtype, torch.float32))


def _standardise(features: torch.Tensor, eps: float) -> torch.Tensor:
    """PKD's normalisation: each channel to zero mean and unit std over images and positions
    (the population std, so that half the mean squared error is exactly 1 - Pearson r, and a
    single value standardises to 0 rather than NaN)."""
    batch, channels, height, width = features.shape
    flat = features.transpose(0, 1).reshape(channels, -1)
    spread = flat.std(dim=-1, correction=0, keepdim=True)
    flat = (flat - flat.mean(dim=-1, keepdim=True)) / (spread + eps)
    return flat.reshape(channels, batch, height, width).transpose(0, 1)


def build_terms(specs: Sequence[Mapping[str, Any]], level_numbers: Sequence[int]) -> list[LossTerm]:
    """The configured terms, each checked, with errors naming ``losses[i].key``."""
    if not specs:
        raise ValueError("losses: give at least one term (e.g. [{kind: cosine}])")
    terms = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(f"losses[{index}] must be a mapping with a 'kind', got {spec!r}")
        terms.append(LossTerm(spec, level_numbers, f"losses[{index}]"))
    return terms
