"""The breast in millimetres: pixel grids, outline and thickness, pectoral muscle, parenchyma.

Tissue texture lives in shared rasters (one set per pair) that each modality samples at its
own pixel centres, so the SM and the FFDM show the same glandular pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from data_tools.phantom.cohort import BreastPlan

# Full-size detectors (rows, columns, mm per pixel): a Hologic-like FFDM and its SM.
FULL_SIZE = {"ffdm": (4096, 3328, 0.07), "sm": (2457, 1996, 0.1)}


@dataclass(frozen=True)
class Grid:
    """One modality's pixel grid for one view. Pixel (row, col) covers [col, col+1) x
    [row, row+1); its centre sits at u (mm from the chest wall, which is the image's left
    edge for L and its right edge for R) and v (mm down from the image's centre line)."""

    modality: str
    rows: int
    cols: int
    spacing: float  # mm per pixel
    laterality: str

    @classmethod
    def for_modality(cls, modality: str, scale: float, laterality: str) -> Grid:
        rows, cols, spacing = FULL_SIZE[modality]
        return cls(modality, round(rows * scale), round(cols * scale), spacing / scale, laterality)

    @property
    def width_mm(self) -> float:
        return self.cols * self.spacing

    @property
    def height_mm(self) -> float:
        return self.rows * self.spacing

    def coordinates(
        self, rows: slice = slice(None), cols: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) in mm of the pixel centres of a window of the grid, float32 [h, w]."""
        x = (np.arange(self.cols, dtype=np.float32)[cols] + 0.5) * self.spacing
        y = (np.arange(self.rows, dtype=np.float32)[rows] + 0.5) * self.spacing
        u = x if self.laterality == "L" else self.width_mm - x
        u, v = np.meshgrid(u, y - self.height_mm / 2)
        return u.astype(np.float32), v.astype(np.float32)

    def box_in_pixels(self, u0: float, u1: float, v0: float, v1: float) -> tuple[float, ...]:
        """xyxy pixel edges, clipped to the image, that cover every pixel whose centre lies
        in the region u0..u1, v0..v1 (mm)."""
        x0, x1 = (u0, u1) if self.laterality == "L" else (self.width_mm - u1, self.width_mm - u0)
        y0, y1 = v0 + self.height_mm / 2, v1 + self.height_mm / 2
        return (
            float(min(max(0, math.floor(x0 / self.spacing)), self.cols)),
            float(min(max(0, math.floor(y0 / self.spacing)), self.rows)),
            float(max(min(self.cols, math.ceil(x1 / self.spacing)), 0)),
            float(max(min(self.rows, math.ceil(y1 / self.spacing)), 0)),
        )

    def window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """(rows, cols) slices of the pixels of a region (mm)."""
        x0, y0, x1, y1 = (int(value) for value in self.box_in_pixels(u0, u1, v0, v1))
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def blur(image: np.ndarray, sigma_mm: float, grid: Grid) -> np.ndarray:
    """Gaussian blur of a width given in mm, so both grids blur the same physical scale.
    Wide blurs run on a smaller copy: the same result for smooth fields, far cheaper."""
    sigma = sigma_mm / grid.spacing
    if sigma < 0.05:
        return image
    factor = int(sigma // 3)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    height, width = image.shape
    small = cv2.resize(
        image, (-(-width // factor), -(-height // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------
# Breast outline, thickness and pectoral muscle


def breast_radius(breast: BreastPlan, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normalised superellipse radius: 0 at the chest wall behind the nipple, 1 on the skin."""
    half_height = np.where(v < breast.centre, breast.half_height_top, breast.half_height_bottom)
    along = np.clip(u, 0, None) / breast.depth
    return np.sqrt(along**breast.exponent + ((v - breast.centre) / half_height) ** 2)


def breast_region(breast: BreastPlan, grid: Grid) -> tuple[slice, slice]:
    """The grid window that holds the breast (with a small margin)."""
    top = breast.centre - breast.half_height_top
    bottom = breast.centre + breast.half_height_bottom
    return grid.window(-1.0, breast.depth + 2.0, top - 2.0, bottom + 2.0)


def breast_thickness(radius: np.ndarray) -> np.ndarray:
    """Relative compressed thickness: full in the middle, falling off near the skin."""
    edge = np.clip((radius - 0.85) / 0.15, 0, 1)
    return np.where(radius < 1, 1.0 - 0.35 * edge**2, 0.0).astype(np.float32)


def skin_line(radius: np.ndarray) -> np.ndarray:
    """A thin brighter band along the skin."""
    return np.clip(1 - np.abs(radius - 0.985) / 0.015, 0, 1).astype(np.float32)


def pectoral_muscle(breast: BreastPlan, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The pectoral muscle of an MLO view (0..1): a soft-edged, slightly convex triangle at
    the top of the chest wall."""
    if breast.pectoral_width <= 0:
        return np.zeros_like(u)
    top = breast.centre - breast.half_height_top
    down = np.clip((v - top) / breast.pectoral_height, 0, 1)
    reach = breast.pectoral_width * (1 - down) ** 0.8
    return np.clip((reach - u) / 3.0, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Parenchyma: glandular tissue in overlapping slabs, fibrous strands, per density

GLANDULAR_SLABS = 3  # independent tissue slabs that overlap in a projection
DENSITY_BIAS = {"A": -1.9, "B": -1.0, "C": -0.3, "D": 0.2}  # threshold shift per BI-RADS density
TEXTURE_MM = 0.5  # pixel of the texture rasters
TEXTURE_SHAPE = (200, 480)  # (distance from the nipple, angle about it), texture pixels
RADIAL_STRETCH = 1.8  # tissue is elongated along the lines that converge on the nipple
STRAND_STRETCH = 6.0
ARC_MM = 70.0  # texture millimetres per radian about the nipple


def power_law_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float,
    smallest_px: float,
    largest_px: float = 1e9,
) -> np.ndarray:
    """Gaussian noise with a 1/f**beta power spectrum between ``smallest_px`` and
    ``largest_px``, with zero mean and unit standard deviation."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2) * np.exp(-((f * smallest_px) ** 2))
    amplitude *= 1 - np.exp(-((f * largest_px) ** 2))
    amplitude[0, 0] = 0.0
    noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * amplitude, s=shape)
    return ((noise - noise.mean()) / noise.std()).astype(np.float32)


@dataclass(frozen=True)
class Parenchyma:
    """One breast's texture rasters: glandular slabs and fibrous strands."""

    slabs: np.ndarray  # [GLANDULAR_SLABS, *TEXTURE_SHAPE], unit-variance lumpy noise
    strands: np.ndarray  # [*TEXTURE_SHAPE], thin ridges 0..1
    bias: float  # how much of each slab is glandular (from the density)


def draw_parenchyma(rng: np.random.Generator, density: str) -> Parenchyma:
    """Texture rasters of a breast of BI-RADS density A-D: lumps of 1-15 mm per slab."""
    slabs = np.stack(
        [
            power_law_noise(rng, TEXTURE_SHAPE, beta=2.5, smallest_px=2.0, largest_px=30.0)
            for _ in range(GLANDULAR_SLABS)
        ]
    )
    ridges = power_law_noise(rng, TEXTURE_SHAPE, beta=3.0, smallest_px=1.0)
    strands = np.exp(-((ridges / 0.08) ** 2)).astype(np.float32)
    return Parenchyma(slabs, strands, DENSITY_BIAS[density] + rng.uniform(-0.2, 0.2))


def glandular_envelope(breast: BreastPlan, radius: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where glandular tissue can be: behind the nipple, not in the subcutaneous fat."""
    half_height = np.where(v < breast.centre, breast.half_height_top, breast.half_height_bottom)
    central = np.exp(-0.5 * ((v - breast.centre) / (0.7 * half_height)) ** 2)
    return central * np.clip((0.95 - radius) / 0.15, 0, 1)


def glandular_projection(
    parenchyma: Parenchyma, breast: BreastPlan, u: np.ndarray, v: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(glandular fraction along the beam 0..1, fibrous strands 0..1) at the given points:
    the mean over the slabs of each slab's soft-thresholded tissue."""
    distance = np.hypot(breast.depth - u, v - breast.centre)
    map_x = np.arctan2(v - breast.centre, breast.depth - u) * (ARC_MM / TEXTURE_MM)
    map_x += TEXTURE_SHAPE[1] / 2
    envelope = glandular_envelope(breast, radius, v)
    projection = np.zeros_like(u)
    map_y = distance / (RADIAL_STRETCH * TEXTURE_MM)
    for slab in parenchyma.slabs:
        noise = cv2.remap(slab, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        logit = (noise + parenchyma.bias + (envelope - 0.5)) / 0.6
        projection += envelope / (1 + np.exp(-logit))
    projection /= len(parenchyma.slabs)
    strands = cv2.remap(
        parenchyma.strands,
        map_x,
        distance / (STRAND_STRETCH * TEXTURE_MM),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    return projection, strands * (radius < 0.97)
