"""Stage II's parts: the linear projection z'_SM = P(h'_SM) and the similarity of Eq. 2.

The paper projects the student's features with "a single convolution filter of size 3x3 along
with padding to preserve the dimensionality" and minimises the negative cosine similarity
L_sim(z'_SM, h_FFDM) = z'.h / max(||z'|| ||h||, eps). On BiFPN features the vectors compared
are the channel vectors at each position of each level; the loss averages over positions and
weights the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PROJECTIONS = ("conv3x3", "shared")


class FeatureProjection(nn.Module):
    """A 3x3 convolution (padding 1, channels kept) per BiFPN level, or one shared by all."""

    def __init__(self, channels: int, num_levels: int, kind: str = "conv3x3"):
        super().__init__()
        if kind not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
        self.kind = kind
        self.num_levels = num_levels
        count = 1 if kind == "shared" else num_levels
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1) for _ in range(count)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.num_levels:
            raise ValueError(
                f"got {len(features)} feature levels, the projection has {self.num_levels}"
            )
        return [
            self.convs[0 if self.kind == "shared" else level](feature)
            for level, feature in enumerate(features)
        ]


def cosine_similarity_map(z: torch.Tensor, h: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2 at every position: [B, C, H, W] x [B, C, H, W] -> [B, H, W].

    ``z.h / max(||z|| * ||h||, eps)`` over channels, exactly as the paper writes it (torch's
    ``cosine_similarity`` clamps each norm separately instead).
    """
    if z.shape != h.shape:
        raise ValueError(f"feature shapes differ: {tuple(z.shape)} vs {tuple(h.shape)}")
    # At least float32, autocast off: bfloat16 sums would keep 8 significant bits of the loss.
    with torch.autocast(z.device.type, enabled=False):
        dtype = torch.promote_types(torch.promote_types(z.dtype, h.dtype), torch.float32)
        z, h = z.to(dtype), h.to(dtype)
        dot = (z * h).sum(dim=1)
        norms = z.norm(dim=1) * h.norm(dim=1)
        return dot / norms.clamp_min(eps)


def level_similarities(
    z: Sequence[torch.Tensor], h: Sequence[torch.Tensor], eps: float = 1e-8
) -> torch.Tensor:
    """Mean Eq. 2 similarity over the positions of each level: a [levels] tensor."""
    if len(z) != len(h):
        raise ValueError(f"{len(z)} student levels vs {len(h)} teacher levels")
    return torch.stack([cosine_similarity_map(zl, hl, eps).mean() for zl, hl in zip(z, h)])


def weighted_similarity(similarities: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The levels' similarities averaged with ``weights`` (normalised to sum to one)."""
    weights = weights.to(similarities)
    return (similarities * weights).sum() / weights.sum()
