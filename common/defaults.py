"""The defaults that more than one part of the package states: one value each, here.

Every function that takes one of these as a default names the constant, so that a data
module, a model, the metric and the tools agree without repeating the number.
"""

from __future__ import annotations

# The images a pair holds, in this order: the synthetic mammogram and the full-field digital
# mammogram it was reconstructed with.
MODALITIES: tuple[str, ...] = ("sm", "ffdm")

# The FROC hit rule's floor: a detection hits a lesion when its centre lies within
# max(half the lesion box's diagonal, this) of the lesion's centre, in the original image's
# pixels (the paper's 100 px, at full size).
HIT_MIN_DISTANCE: float = 100.0

# The full-size detectors' input (H, W).
IMAGE_SIZE: tuple[int, int] = (1280, 1024)

# The train/val/test fractions of the patients a manifest gives no split.
SPLIT_FRACTIONS: tuple[float, float, float] = (0.6, 0.1, 0.3)
