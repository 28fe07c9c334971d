"""The phantom's knobs and its cohort: patients, exams, views, densities and lesions.

The cohort is drawn once, sequentially, from ``(seed, PLAN_STREAM)``; every pair is then
rendered from its own ``(seed, PAIR_STREAM, pair index)`` stream, so the output does not
depend on how many worker processes render it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.defaults import HIT_MIN_DISTANCE

DENSITIES = ("A", "B", "C", "D")  # BI-RADS a (fatty) .. d (extremely dense)
MASS_SUBTYPES = {"round": "benign", "spiculated": "malignant"}
CALCIFICATION_SUBTYPES = {"punctate": "benign", "pleomorphic": "malignant"}
PLAN_STREAM, PAIR_STREAM = 0, 1  # numpy SeedSequence spawn keys


@dataclass(frozen=True)
class PhantomSettings:
    """The generator's knobs. The defaults make the demo set of ``make demo``."""

    pairs: int = 1000
    seed: int = 0
    positive_share: float = 0.5  # share of breasts (so of pairs) holding a malignant lesion
    benign_share: float = 0.4  # share of breasts holding a benign lesion (as well)
    density_mix: tuple[float, float, float, float] = (0.1, 0.4, 0.4, 0.1)  # BI-RADS A..D
    sm_calc_visibility: float = 0.4  # share of the calcification signal left in the SM
    artefact_rate: float = 1.0  # mean SM-only artefacts (pseudo-calcs, -distortions) per image
    monochrome1_share: float = 0.25  # share of exams whose FFDM is stored MONOCHROME1
    scale: float = 0.125  # image size relative to the full-size detectors

    def __post_init__(self) -> None:
        problems = []
        if self.pairs < 1:
            problems.append(f"pairs must be >= 1, got {self.pairs}")
        for name in ("positive_share", "benign_share", "sm_calc_visibility", "monochrome1_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        mix = self.density_mix
        if len(mix) != 4 or min(mix) < 0 or sum(mix) <= 0:
            problems.append(f"density_mix needs 4 non-negative weights (A,B,C,D), got {mix}")
        if self.artefact_rate < 0:
            problems.append(f"artefact_rate must be >= 0, got {self.artefact_rate}")
        if not 0.05 <= self.scale <= 1.0:
            problems.append(f"scale must lie in [0.05, 1], got {self.scale}")
        if problems:
            raise ValueError("invalid phantom settings: " + "; ".join(problems))

    @property
    def hit_min_distance(self) -> float:
        """The hit rule's 100 px floor in this phantom's pixels (12.5 at scale 1/8)."""
        return HIT_MIN_DISTANCE * self.scale


@dataclass(frozen=True)
class LesionPlan:
    """A lesion as the cohort knows it: its kind and where in the breast (normalised)."""

    lesion_id: str
    lesion_type: str  # mass | calcification
    subtype: str  # round | spiculated | punctate | pleomorphic
    pathology: str  # benign | malignant
    depth: float  # fraction of the breast's depth, from the chest wall
    across: float  # -1 (top of the image) .. 1 (bottom), fraction of the local half-height
    size_mm: float  # diameter of the mass (with spicules) or of the cluster


@dataclass(frozen=True)
class BreastPlan:
    """One view's breast outline, in mm: ``u`` from the chest wall, ``v`` down from the
    detector's centre line."""

    depth: float  # chest wall to nipple
    half_height_top: float
    half_height_bottom: float
    centre: float  # v of the nipple
    exponent: float  # superellipse exponent of the outline along u
    pectoral_width: float  # at the top of the image; 0 for CC
    pectoral_height: float


@dataclass(frozen=True)
class PairPlan:
    """One FFDM-SM pair: who, which view, the breast and its lesions."""

    index: int
    pair_id: str
    patient_id: str
    exam_id: str
    laterality: str
    view: str
    density: str
    ffdm_monochrome1: bool
    breast: BreastPlan
    lesions: tuple[LesionPlan, ...]

    @property
    def label(self) -> int:
        """1 when the pair holds a malignant lesion."""
        return int(any(lesion.pathology == "malignant" for lesion in self.lesions))


def views_per_patient(rng: np.random.Generator, remaining: int) -> int:
    """2-4 views per exam, never leaving a single view for the last patient."""
    views = min(int(rng.choice([2, 3, 4], p=[0.25, 0.15, 0.6])), remaining)
    if remaining - views == 1:
        views = views + 1 if views < 4 else views - 1
    return views


def draw_breast_lesions(rng: np.random.Generator, settings: PhantomSettings) -> list[dict]:
    """The lesions of one breast, positioned in 3D (depth, lateral, superior) so that each
    view projects them to its own place."""
    pathologies = []
    if rng.random() < settings.positive_share:
        pathologies.append("malignant")
    if rng.random() < settings.benign_share:
        pathologies.append("benign")
    lesions = []
    for pathology in pathologies:
        lesion_type = "mass" if rng.random() < 0.5 else "calcification"
        subtypes = MASS_SUBTYPES if lesion_type == "mass" else CALCIFICATION_SUBTYPES
        subtype = next(name for name, kind in subtypes.items() if kind == pathology)
        # 8-21 mm masses and 6-15 mm clusters: about 15-40 px and 12-30 px in a 1/8 FFDM.
        size = rng.uniform(8.0, 21.0) if lesion_type == "mass" else rng.uniform(6.0, 15.0)
        lesions.append(
            dict(
                lesion_type=lesion_type,
                subtype=subtype,
                pathology=pathology,
                size_mm=size,
                depth=rng.uniform(0.25, 0.7),
                lateral=rng.uniform(-0.75, 0.75),
                superior=rng.uniform(-0.75, 0.75),
            )
        )
    return lesions


def draw_breast_outline(rng: np.random.Generator, view: str, size: float) -> BreastPlan:
    """A CC or MLO outline of a breast of the given size (0 small .. 1 large)."""
    depth = 70.0 + 60.0 * size + rng.uniform(-5, 5)
    half_height = 55.0 + 40.0 * size + rng.uniform(-5, 5)
    if view == "CC":
        return BreastPlan(
            depth=depth,
            half_height_top=half_height * rng.uniform(0.9, 1.1),
            half_height_bottom=half_height * rng.uniform(0.9, 1.1),
            centre=rng.uniform(-10, 10),
            exponent=rng.uniform(1.7, 2.5),
            pectoral_width=0.0,
            pectoral_height=0.0,
        )
    # MLO: taller towards the axilla, the nipple a little lower, the pectoral muscle on top.
    return BreastPlan(
        depth=depth * 1.05,
        half_height_top=min(half_height * rng.uniform(1.3, 1.5), 112.0),
        half_height_bottom=half_height * rng.uniform(0.85, 1.0),
        centre=rng.uniform(0, 10),
        exponent=rng.uniform(1.6, 2.2),
        pectoral_width=rng.uniform(0.3, 0.5) * depth,
        pectoral_height=rng.uniform(1.0, 1.4) * half_height,
    )


def plan_pairs(settings: PhantomSettings) -> list[PairPlan]:
    """The cohort: one exam per patient with 2-4 views, a density per patient, lesions per
    breast. A breast's lesions show in each of its views, so splits must be patient-level."""
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(PLAN_STREAM,)))
    mix = np.asarray(settings.density_mix, dtype=float)
    pairs: list[PairPlan] = []
    patient = 0
    while len(pairs) < settings.pairs:
        n_views = views_per_patient(rng, settings.pairs - len(pairs))
        patient_id = f"PH{patient:05d}"
        density = DENSITIES[int(rng.choice(4, p=mix / mix.sum()))]
        monochrome1 = bool(rng.random() < settings.monochrome1_share)
        first, other = ("L", "R") if rng.random() < 0.5 else ("R", "L")
        views = [(first, "CC"), (first, "MLO"), (other, "CC"), (other, "MLO")][:n_views]
        size = {side: rng.uniform(0.0, 1.0) for side in "LR"}
        breast_lesions = {side: draw_breast_lesions(rng, settings) for side in "LR"}
        for laterality, view in views:
            pair_id = f"{patient_id}-{laterality}{view}"
            lesions = tuple(
                LesionPlan(
                    lesion_id=f"{pair_id}-{number}",
                    lesion_type=lesion["lesion_type"],
                    subtype=lesion["subtype"],
                    pathology=lesion["pathology"],
                    depth=lesion["depth"],
                    size_mm=lesion["size_mm"],
                    across=lesion["lateral"]
                    if view == "CC"
                    else float(np.clip(0.7 * lesion["superior"] + 0.5 * lesion["lateral"], -1, 1)),
                )
                for number, lesion in enumerate(breast_lesions[laterality])
            )
            pairs.append(
                PairPlan(
                    index=len(pairs),
                    pair_id=pair_id,
                    patient_id=patient_id,
                    exam_id=f"{patient_id}-E1",
                    laterality=laterality,
                    view=view,
                    density=density,
                    ffdm_monochrome1=monochrome1,
                    breast=draw_breast_outline(rng, view, size[laterality]),
                    lesions=lesions,
                )
            )
        patient += 1
    return pairs
