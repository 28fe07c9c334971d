"""Lesions and the SM's look-alike artefacts: shapes drawn once per pair, in millimetres, and
rendered on any grid, so a lesion has the same shape and place in the SM and the FFDM.

* Round mass (benign): a smooth ellipsoid. Spiculated mass (malignant): an irregular body
  with thin lines radiating from it.
* Punctate cluster (benign): round specks of one size. Pleomorphic cluster (malignant):
  specks of varied size, some linear.
* Pseudo-distortion (SM artefact): radiating lines with no body. Pseudo-calcification (SM
  artefact): a small cluster of specks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from data_tools.phantom.anatomy import breast_radius, pectoral_muscle
from data_tools.phantom.cohort import BreastPlan, LesionPlan, PairPlan, PhantomSettings


@dataclass(frozen=True)
class MassShape:
    """A mass: an irregular ellipsoid body, optionally with spicules (with no body: a
    pseudo-distortion)."""

    centre: tuple[float, float]  # (u, v) mm
    radius: float  # mm; 0 for a body-less star
    aspect: float
    angle: float
    harmonics: tuple[tuple[float, float], ...] = ()  # (amplitude, phase) of orders 2, 3, ...
    spicule_angles: tuple[float, ...] = ()
    spicule_lengths: tuple[float, ...] = ()  # mm beyond the body
    spicule_widths: tuple[float, ...] = ()  # mm at the root

    def body_radius(self, theta: np.ndarray) -> np.ndarray:
        wobble = np.zeros_like(theta, dtype=np.float64)
        for order, (amplitude, phase) in enumerate(self.harmonics):
            wobble = wobble + amplitude * np.cos((order + 2) * theta + phase)
        return self.radius * (1 + wobble)

    def _to_scene(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return a * cos - b * self.aspect * sin, a * sin + b * self.aspect * cos

    def extent(self) -> tuple[float, float, float, float]:
        """(u0, u1, v0, v1) mm: a rectangle holding everything the mass draws."""
        theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        reach = [self.body_radius(theta)]
        angles = [theta]
        if self.spicule_angles:
            spicules = np.asarray(self.spicule_angles)
            reach.append(self.body_radius(spicules) + np.asarray(self.spicule_lengths))
            angles.append(spicules)
        reach_all, angle_all = np.concatenate(reach), np.concatenate(angles)
        du, dv = self._to_scene(reach_all * np.cos(angle_all), reach_all * np.sin(angle_all))
        pad = 0.5 * max(self.spicule_widths, default=0.0) + 0.05
        u, v = self.centre
        return u + du.min() - pad, u + du.max() + pad, v + dv.min() - pad, v + dv.max() + pad

    def render(
        self, u: np.ndarray, v: np.ndarray, pixel_mm: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(body 0..1: an ellipsoid's thickness; spicules 0..1, anti-aliased over one pixel)
        at the given points."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        du, dv = u - self.centre[0], v - self.centre[1]
        a = du * cos + dv * sin
        b = (-du * sin + dv * cos) / self.aspect
        body = np.zeros_like(u)
        if self.radius > 0:
            rho = np.hypot(a, b) / self.body_radius(np.arctan2(b, a))
            body = np.sqrt(np.clip(1 - rho**2, 0, 1))
        spicules = np.zeros_like(u)
        for angle, length, width in zip(
            self.spicule_angles, self.spicule_lengths, self.spicule_widths
        ):
            root = float(self.body_radius(np.asarray(angle)))
            start, end = 0.7 * root, root + length
            along = a * math.cos(angle) + b * math.sin(angle)
            across = -a * math.sin(angle) + b * math.cos(angle)
            t = np.clip((along - start) / (end - start), 0, 1)
            half_width = 0.5 * width * (1 - 0.7 * t)
            line = np.clip((half_width - np.abs(across)) / pixel_mm + 0.5, 0, 1) * (1 - 0.6 * t)
            spicules = np.maximum(spicules, line * ((along >= start) & (along <= end)))
        return body.astype(np.float32), spicules.astype(np.float32)


@dataclass(frozen=True)
class ClusterShape:
    """A cluster of calcification specks (or of the SM's pseudo-calcifications)."""

    centre: tuple[float, float]
    offsets: np.ndarray  # [n, 2] mm from the centre
    radii: np.ndarray  # [n] mm (half the speck's width)
    aspects: np.ndarray  # [n] length / width
    angles: np.ndarray  # [n]
    strengths: np.ndarray  # [n] peak signal of each speck

    def extent(self) -> tuple[float, float, float, float]:
        reach = self.radii * self.aspects + 0.05
        u = self.centre[0] + self.offsets[:, 0]
        v = self.centre[1] + self.offsets[:, 1]
        return (
            float((u - reach).min()),
            float((u + reach).max()),
            float((v - reach).min()),
            float((v + reach).max()),
        )

    def render(self, u: np.ndarray, v: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Speck signal of each pixel, anti-aliased over one pixel's width."""
        signal = np.zeros_like(u)
        for (du, dv), radius, aspect, angle, strength in zip(
            self.offsets, self.radii, self.aspects, self.angles, self.strengths
        ):
            x = u - (self.centre[0] + du)
            y = v - (self.centre[1] + dv)
            along = x * math.cos(angle) + y * math.sin(angle)
            across = -x * math.sin(angle) + y * math.cos(angle)
            rho = np.hypot(along / aspect, across)
            speck = np.clip((radius - rho) / pixel_mm + 0.5, 0, 1) * strength
            signal = np.maximum(signal, speck)
        return signal.astype(np.float32)


Shape = MassShape | ClusterShape


def draw_mass(rng: np.random.Generator, subtype: str, centre, size_mm: float) -> MassShape:
    """A round (benign) or spiculated (malignant) mass of the given overall diameter."""
    if subtype == "round":
        return MassShape(
            centre=centre,
            radius=size_mm / 2,
            aspect=rng.uniform(0.75, 1.0),
            angle=rng.uniform(0, np.pi),
            harmonics=((rng.uniform(0, 0.05), rng.uniform(0, 6.3)),),
        )
    radius = size_mm / 2 / 1.6  # spicules reach out to the rest of the size
    count = int(rng.integers(9, 17))
    return MassShape(
        centre=centre,
        radius=radius,
        aspect=rng.uniform(0.8, 1.0),
        angle=rng.uniform(0, np.pi),
        harmonics=tuple((rng.uniform(0.04, 0.12), rng.uniform(0, 6.3)) for _ in range(4)),
        spicule_angles=tuple(np.sort(rng.uniform(0, 2 * np.pi, count))),
        spicule_lengths=tuple(rng.uniform(0.4, 0.8, count) * radius),
        spicule_widths=tuple(rng.uniform(0.8, 1.4, count)),
    )


def draw_cluster(rng: np.random.Generator, subtype: str, centre, size_mm: float) -> ClusterShape:
    """A punctate (benign) or pleomorphic (malignant) cluster of the given diameter."""
    count = int(rng.integers(6, 13) if subtype == "punctate" else rng.integers(8, 19))
    distance = size_mm / 2 * np.sqrt(rng.uniform(0, 1, count))
    theta = rng.uniform(0, 2 * np.pi, count)
    offsets = np.stack([distance * np.cos(theta), distance * np.sin(theta)], axis=1)
    if subtype == "punctate":
        radii = rng.uniform(0.5, 0.7) * rng.uniform(0.9, 1.1, count)
        aspects = np.ones(count)
    else:
        radii = rng.uniform(0.45, 0.85, count)
        aspects = np.where(rng.random(count) < 0.4, rng.uniform(2.0, 3.5, count), 1.0)
    return ClusterShape(
        centre=centre,
        offsets=offsets,
        radii=radii,
        aspects=aspects,
        angles=rng.uniform(0, np.pi, count),
        strengths=rng.uniform(0.75, 1.0, count),
    )


def draw_pseudo_distortion(rng: np.random.Generator, centre) -> MassShape:
    """An SM pseudo-distortion: lines radiating from a point, with no mass at their centre."""
    count = int(rng.integers(7, 14))
    return MassShape(
        centre=centre,
        radius=0.0,
        aspect=1.0,
        angle=0.0,
        spicule_angles=tuple(np.sort(rng.uniform(0, 2 * np.pi, count))),
        spicule_lengths=tuple(rng.uniform(4.0, 9.0, count)),
        spicule_widths=tuple(rng.uniform(0.8, 1.4, count)),
    )


def draw_pseudo_calcification(rng: np.random.Generator, centre) -> ClusterShape:
    """An SM pseudo-calcification: a small punctate-like cluster, as bright as the SM's real
    calcifications or brighter (synthesis makes such findings look more ominous)."""
    cluster = draw_cluster(rng, "punctate", centre, rng.uniform(4.0, 10.0))
    keep = max(3, int(rng.integers(3, len(cluster.radii) + 1)))
    return ClusterShape(
        centre=centre,
        offsets=cluster.offsets[:keep],
        radii=cluster.radii[:keep],
        aspects=cluster.aspects[:keep],
        angles=cluster.angles[:keep],
        strengths=cluster.strengths[:keep] * rng.uniform(1.1, 1.7),
    )


# ---------------------------------------------------------------------------------------------
# Placing findings in the breast


@dataclass(frozen=True)
class Finding:
    """A lesion (with its plan) or an SM artefact (``artefact`` names its kind)."""

    shape: Shape
    plan: LesionPlan | None = None
    artefact: str = ""  # "" | pseudo_calcification | pseudo_distortion

    @property
    def reach(self) -> float:
        """mm from the shape's centre to the farthest corner of its extent."""
        u0, u1, v0, v1 = self.shape.extent()
        u, v = self.shape.centre
        return math.hypot(max(u - u0, u1 - u), max(v - v0, v1 - v))


def breast_point(breast: BreastPlan, depth: float, across: float) -> tuple[float, float]:
    """(u, v) of a point given as a fraction of the depth and of the local half-height."""
    half = breast.half_height_bottom if across > 0 else breast.half_height_top
    local = half * max(0.0, 1 - depth**breast.exponent) ** 0.5
    return depth * breast.depth, breast.centre + across * local


def fits(breast: BreastPlan, centre: tuple[float, float], reach: float) -> bool:
    """True when a disc of the given reach (plus 3 mm) lies inside the breast, clear of the
    skin and of the pectoral muscle."""
    theta = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    u = (centre[0] + (reach + 3.0) * np.cos(theta)).astype(np.float32)
    v = (centre[1] + (reach + 3.0) * np.sin(theta)).astype(np.float32)
    return bool(
        breast_radius(breast, u, v).max() < 0.93
        and u.min() > 3.0
        and pectoral_muscle(breast, u, v).max() == 0
    )


def place(
    rng: np.random.Generator,
    breast: BreastPlan,
    depth: float,
    across: float,
    reach: float,
    taken: list[Finding],
) -> tuple[float, float] | None:
    """A centre near (depth, across) where a finding of this reach fits and overlaps no
    finding placed before; None when 60 tries fail."""
    for attempt in range(60):
        if attempt:
            depth = float(np.clip(depth + rng.normal(0, 0.06), 0.15, 0.8))
            across = float(np.clip(across + rng.normal(0, 0.12), -0.9, 0.9) * 0.97)
        centre = breast_point(breast, depth, across)
        clear = all(
            math.dist(centre, other.shape.centre) > reach + other.reach + 3.0 for other in taken
        )
        if clear and fits(breast, centre, reach):
            return centre
    return None


def draw_findings(
    rng: np.random.Generator, pair: PairPlan, settings: PhantomSettings
) -> list[Finding]:
    """The pair's lesions (from its plan) and the SM artefacts (Poisson, ``artefact_rate``)."""
    findings: list[Finding] = []
    for lesion in pair.lesions:
        draw = draw_mass if lesion.lesion_type == "mass" else draw_cluster
        # Draw at the origin to learn the reach, then move the same shape into place.
        shape = draw(rng, lesion.subtype, (0.0, 0.0), lesion.size_mm)
        reach = Finding(shape).reach
        centre = place(rng, pair.breast, lesion.depth, lesion.across, reach, findings)
        if centre is None:  # a small breast: accept a tighter fit, near the middle
            centre = place(rng, pair.breast, 0.4, 0.0, 0.5 * reach, findings)
        centre = centre or breast_point(pair.breast, 0.4, 0.0)
        findings.append(Finding(moved(shape, centre), lesion))
    for _ in range(rng.poisson(settings.artefact_rate)):
        kind = "pseudo_calcification" if rng.random() < 0.5 else "pseudo_distortion"
        if kind == "pseudo_calcification":
            shape = draw_pseudo_calcification(rng, (0.0, 0.0))
        else:
            shape = draw_pseudo_distortion(rng, (0.0, 0.0))
        centre = place(
            rng,
            pair.breast,
            rng.uniform(0.2, 0.75),
            rng.uniform(-0.8, 0.8),
            Finding(shape).reach,
            findings,
        )
        if centre is not None:
            findings.append(Finding(moved(shape, centre), artefact=kind))
    return findings


def moved(shape: Shape, centre: tuple[float, float]) -> Shape:
    """The same shape at another centre."""
    return replace(shape, centre=(float(centre[0]), float(centre[1])))
