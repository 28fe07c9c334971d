"""How each modality shows the same scene: the design table (`LOOKS`) and the renderer.

Display intensities are in the MONOCHROME2 sense (bright = dense), about 0..1. The tissue
is split into three bands of the projected glandular fraction:

* broad (> 10 mm): the breast's overall density, shown by both modalities;
* mass-sized (1.5-10 mm): where overlapping slabs make lumps that look like masses. FFDM, a
  projection, shows all of it; SM, synthesised from tomosynthesis slices, little of it
  (``overlap_kept``);
* fine (< 1.5 mm): tissue detail, shown by both.

A mass's contrast falls with the glandular tissue around it (``masking``): in FFDM the
tissue above and below the mass adds up with it; the SM sees the mass's own slice.
Calcifications are sharp in FFDM, blurred and faint in SM (``sm_calc_visibility``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_tools.phantom.anatomy import (
    Grid,
    Parenchyma,
    blur,
    breast_radius,
    breast_region,
    breast_thickness,
    draw_parenchyma,
    glandular_projection,
    pectoral_muscle,
    skin_line,
)
from data_tools.phantom.cohort import PAIR_STREAM, PairPlan, PhantomSettings
from data_tools.phantom.lesions import ClusterShape, Finding, MassShape, Shape, draw_findings


@dataclass(frozen=True)
class Look:
    """How one modality shows the scene. These numbers are the design; the data card
    measures what they give."""

    fat: float  # fatty tissue at full thickness
    glandular: float  # added where the projected glandular fraction is 1
    overlap_kept: float  # share of the mass-sized band of overlapping tissue that shows
    detail_kept: float  # share of the fine band that shows
    strands: float  # fibrous strands (ligaments, ducts)
    round_mass: float  # contrast of a round mass with no glandular tissue around it
    spiculated_mass: float
    spicules: float
    masking: float  # share of a mass's contrast that fully glandular surroundings take
    calcification: float  # peak contrast of a speck (SM: times sm_calc_visibility)
    calcification_blur_mm: float  # Gaussian sigma
    edge_enhancement: float  # unsharp-mask gain of the vendor's processing
    noise: float
    bits_stored: int


LOOKS = {
    "ffdm": Look(
        fat=0.20,
        glandular=0.50,
        overlap_kept=1.0,
        detail_kept=1.0,
        strands=0.05,
        round_mass=0.26,
        spiculated_mass=0.26,
        spicules=0.13,
        masking=0.90,
        calcification=0.50,
        calcification_blur_mm=0.0,
        edge_enhancement=0.0,
        noise=0.012,
        bits_stored=14,
    ),
    "sm": Look(
        fat=0.20,
        glandular=0.50,
        overlap_kept=0.30,
        detail_kept=0.7,
        strands=0.06,
        round_mass=0.13,
        spiculated_mass=0.26,
        spicules=0.18,
        masking=0.20,
        calcification=0.50,
        calcification_blur_mm=0.7,
        edge_enhancement=0.4,
        noise=0.010,
        bits_stored=12,
    ),
}
PECTORAL_MUSCLE = 0.30  # added intensity of the pectoral muscle (MLO), both modalities
SKIN = 0.05
BROAD_MM, FINE_MM, EDGE_MM = 10.0, 1.5, 1.5
PSEUDO_DISTORTION_GAIN = 1.0  # SM pseudo-distortions: as bright as the spicules of masses
PSEUDO_CALCIFICATION_FLOOR = 0.25  # they stay visible even when real calcifications fade


@dataclass(frozen=True)
class Footprint:
    """What one modality shows of one finding, on a window of its grid."""

    window: tuple[slice, slice]
    signal: np.ndarray  # 0..1, before the finding's contrast
    core: np.ndarray  # bool: the lesion mask that the CNR averages over


def lesion_signal(shape: Shape, grid: Grid) -> Footprint:
    """A finding's own signal in one modality. Masses: body, and spicules at the look's
    weight; the core is the body's inner part (thickness >= 0.5). Clusters: the specks
    (blurred in SM); the core is the specks themselves, before any blur."""
    look = LOOKS[grid.modality]
    u0, u1, v0, v1 = shape.extent()
    margin = 3 * look.calcification_blur_mm + 2 * grid.spacing
    window = grid.window(u0 - margin, u1 + margin, v0 - margin, v1 + margin)
    u, v = grid.coordinates(*window)
    if isinstance(shape, MassShape):
        body, spicules = shape.render(u, v, grid.spacing)
        if shape.radius == 0:  # a pseudo-distortion: lines alone
            return Footprint(window, spicules, spicules >= 0.5)
        signal = np.maximum(body, look.spicules / look.spiculated_mass * spicules)
        return Footprint(window, signal, body >= 0.5)
    specks = shape.render(u, v, grid.spacing)
    core = specks >= 0.5 * specks.max()
    return Footprint(window, blur(specks, look.calcification_blur_mm, grid), core)


def lesion_box(shape: Shape, grid: Grid) -> tuple[float, float, float, float]:
    """xyxy box, in this grid's pixels, around all a finding shows in this modality."""
    u0, u1, v0, v1 = shape.extent()
    pad = 0.3 + 0.5 * grid.spacing
    if isinstance(shape, ClusterShape):
        pad += 2.5 * LOOKS[grid.modality].calcification_blur_mm
    return grid.box_in_pixels(u0 - pad, u1 + pad, v0 - pad, v1 + pad)


def finding_contrast(
    finding: Finding, modality: str, glandular: float, settings: PhantomSettings
) -> float:
    """The intensity a finding's signal is drawn at in this modality."""
    look = LOOKS[modality]
    shape = finding.shape
    if finding.artefact == "pseudo_distortion":
        return look.spicules * PSEUDO_DISTORTION_GAIN
    if finding.artefact == "pseudo_calcification":
        return look.calcification * max(settings.sm_calc_visibility, PSEUDO_CALCIFICATION_FLOOR)
    if isinstance(shape, MassShape):
        contrast = look.round_mass if finding.plan.subtype == "round" else look.spiculated_mass
        return contrast * (1 - look.masking * glandular)
    visibility = settings.sm_calc_visibility if modality == "sm" else 1.0
    return look.calcification * visibility


@dataclass
class Rendering:
    """One modality's image of a pair and, per finding, what it shows of it."""

    grid: Grid
    display: np.ndarray  # float32 display intensities, MONOCHROME2 sense
    inside: np.ndarray  # bool breast mask
    footprints: list[Footprint | None] = field(default_factory=list)  # None: not shown here
    boxes: list[tuple[float, float, float, float] | None] = field(default_factory=list)
    glandular: list[float] = field(default_factory=list)  # around each finding


def render_modality(
    grid: Grid,
    pair: PairPlan,
    parenchyma: Parenchyma,
    findings: list[Finding],
    settings: PhantomSettings,
    noise_rng: np.random.Generator,
    glandular: list[float] | None = None,
) -> Rendering:
    """Render the pair's scene as this modality shows it.

    ``glandular`` (per finding): the glandular fraction around each lesion, measured on the
    FFDM and handed to the SM so that both modalities mask a mass by one number.
    """
    look = LOOKS[grid.modality]
    region = breast_region(pair.breast, grid)
    u, v = grid.coordinates(*region)
    radius = breast_radius(pair.breast, u, v)
    inside = radius < 1
    projection, strands = glandular_projection(parenchyma, pair.breast, u, v, radius)
    broad = blur(projection, BROAD_MM, grid) / (
        blur(inside.astype(np.float32), BROAD_MM, grid) + 1e-6
    )
    fine = projection - blur(projection, FINE_MM, grid)
    tissue = broad + look.overlap_kept * (projection - fine - broad) + look.detail_kept * fine
    image = np.zeros((grid.rows, grid.cols), np.float32)
    image[region] = (
        look.fat
        + look.glandular * tissue
        + look.strands * strands
        + PECTORAL_MUSCLE * pectoral_muscle(pair.breast, u, v)
    )
    full_projection = np.zeros_like(image)
    full_projection[region] = projection

    rendering = Rendering(grid=grid, display=image, inside=np.zeros(image.shape, bool))
    for number, finding in enumerate(findings):
        if finding.artefact and grid.modality != "sm":
            rendering.footprints.append(None)
            rendering.boxes.append(None)
            rendering.glandular.append(0.0)
            continue
        footprint = lesion_signal(finding.shape, grid)
        around = float(
            full_projection[footprint.window][footprint.core].mean()
            if footprint.core.any()
            else 0.0
        )
        shared = glandular[number] if glandular is not None else around
        contrast = finding_contrast(finding, grid.modality, shared, settings)
        image[footprint.window] += contrast * footprint.signal
        rendering.footprints.append(footprint)
        rendering.boxes.append(lesion_box(finding.shape, grid))
        rendering.glandular.append(around)

    breast = image[region]
    if look.edge_enhancement > 0:
        breast = breast + look.edge_enhancement * (breast - blur(breast, EDGE_MM, grid))
    breast = breast * breast_thickness(radius) + SKIN * skin_line(radius)
    breast += look.noise * noise_rng.standard_normal(breast.shape, dtype=np.float32)
    rendering.display = np.zeros_like(image)
    rendering.display[region] = np.where(inside, breast, 0.0)
    rendering.inside[region] = inside
    return rendering


def render_pair(pair: PairPlan, settings: PhantomSettings) -> tuple[dict, list[Finding]]:
    """Render one pair, deterministically from (seed, pair index).

    Returns ``({"sm": Rendering, "ffdm": Rendering}, findings)``.
    """
    rng = np.random.default_rng(
        np.random.SeedSequence(settings.seed, spawn_key=(PAIR_STREAM, pair.index))
    )
    parenchyma = draw_parenchyma(rng, pair.density)
    findings = draw_findings(rng, pair, settings)
    ffdm_noise, sm_noise = rng.spawn(2)
    ffdm = render_modality(
        Grid.for_modality("ffdm", settings.scale, pair.laterality),
        pair,
        parenchyma,
        findings,
        settings,
        ffdm_noise,
    )
    sm = render_modality(
        Grid.for_modality("sm", settings.scale, pair.laterality),
        pair,
        parenchyma,
        findings,
        settings,
        sm_noise,
        glandular=ffdm.glandular,
    )
    return {"sm": sm, "ffdm": ffdm}, findings
