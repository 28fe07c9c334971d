"""One pair to files: stored pixel values, DICOM files, the contrast-to-noise ratio of each
lesion measured on the final pixel data, and the pair's table rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from data_tools.phantom.anatomy import Grid
from data_tools.phantom.cohort import PairPlan, PhantomSettings
from data_tools.phantom.lesions import Shape
from data_tools.phantom.render import LOOKS, Rendering, render_pair

IMAGE_FOLDER = "images"
RING_GAP_MM, RING_WIDTH_MM = 1.5, 5.0
# (row direction, column direction) of each view, as the DICOM standard's examples give them.
PATIENT_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}


def to_stored(display: np.ndarray, bits_stored: int, monochrome1: bool) -> np.ndarray:
    """Display intensities (0..1, bright = dense) to stored values, inverted for
    MONOCHROME1 as vendors store it."""
    top = 2**bits_stored - 1
    stored = np.clip(np.rint(display * top), 0, top).astype(np.uint16)
    return top - stored if monochrome1 else stored


def in_monochrome2_sense(stored: np.ndarray, bits_stored: int, photometric: str) -> np.ndarray:
    """Stored values as float64 with bright = dense, whatever the photometric interpretation."""
    values = stored.astype(np.float64)
    return (2**bits_stored - 1) - values if photometric == "MONOCHROME1" else values


# ---------------------------------------------------------------------------------------------
# Contrast-to-noise ratio


def ring_mask(shape: Shape, grid: Grid) -> tuple[tuple[slice, slice], np.ndarray]:
    """(window, mask) of the surround: pixels between RING_GAP_MM and RING_GAP_MM +
    RING_WIDTH_MM outside the rectangle that holds the shape."""
    u0, u1, v0, v1 = shape.extent()
    outer = RING_GAP_MM + RING_WIDTH_MM
    window = grid.window(u0 - outer, u1 + outer, v0 - outer, v1 + outer)
    u, v = grid.coordinates(*window)
    distance = np.hypot(
        np.maximum(np.maximum(u0 - u, u - u1), 0), np.maximum(np.maximum(v0 - v, v - v1), 0)
    )
    return window, (distance > RING_GAP_MM) & (distance <= outer)


def contrast_to_noise(values: np.ndarray, lesion: np.ndarray, ring: np.ndarray) -> float:
    """(mean over the lesion mask - mean over the ring) / standard deviation over the ring;
    NaN when either mask is (nearly) empty."""
    surround = values[ring]
    if not lesion.any() or surround.size < 8:
        return float("nan")
    return float((values[lesion].mean() - surround.mean()) / max(surround.std(), 1e-9))


def lesion_cnr(values: np.ndarray, rendering: Rendering, shapes: list[Shape], number: int) -> float:
    """CNR of finding ``number`` on a modality's final pixel values (MONOCHROME2 sense). The
    ring keeps to the breast and off every other finding's signal."""
    footprint = rendering.footprints[number]
    lesion = np.zeros(values.shape, bool)
    lesion[footprint.window] = footprint.core
    window, ring_part = ring_mask(shapes[number], rendering.grid)
    ring = np.zeros(values.shape, bool)
    ring[window] = ring_part
    ring &= rendering.inside
    for other, print_ in enumerate(rendering.footprints):
        if other != number and print_ is not None:
            ring[print_.window] &= print_.signal < 0.05
    return contrast_to_noise(values, lesion, ring)


# ---------------------------------------------------------------------------------------------
# DICOM


def dicom_uid(settings: PhantomSettings, *parts: str) -> str:
    """A UID derived from the seed and the parts: the same run writes the same bytes."""
    return generate_uid(entropy_srcs=["mammofuse-phantom", str(settings.seed), *parts])


def display_window(values: np.ndarray, inside: np.ndarray, bits_stored: int, photometric: str):
    """(WindowCenter, WindowWidth) in stored values: from air (0) to the brightest tissue
    (99.95th percentile of the breast), so the whole breast stays above the background."""
    high = float(np.percentile(values[inside], 99.95)) if inside.any() else 1.0
    centre, width = high / 2, max(high, 2.0)
    if photometric == "MONOCHROME1":
        centre = (2**bits_stored - 1) - centre
    return centre, width


def write_dicom(
    path: Path,
    stored: np.ndarray,
    grid: Grid,
    pair: PairPlan,
    settings: PhantomSettings,
    photometric: str,
    window: tuple[float, float],
) -> None:
    """A Digital Mammography X-Ray Image (For Presentation) file with synthetic ids only."""
    look = LOOKS[grid.modality]
    synthetic = grid.modality == "sm"
    sop_uid = dicom_uid(settings, pair.pair_id, grid.modality, "image")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = dicom_uid(settings, pair.exam_id)
    ds.SeriesInstanceUID = dicom_uid(settings, pair.pair_id, grid.modality)
    ds.PatientID = pair.patient_id
    ds.PatientName = pair.patient_id
    ds.StudyID = pair.exam_id[-8:]
    ds.Modality = "MG"
    ds.Manufacturer = "mammofuse phantom"
    ds.SeriesDescription = f"{pair.laterality} {pair.view}" + (
        " synthesized 2D" if synthetic else ""
    )
    ds.ImageType = ["DERIVED", "PRIMARY", "GENERATED_2D"] if synthetic else ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = pair.laterality
    ds.ViewPosition = pair.view
    ds.PatientOrientation = PATIENT_ORIENTATION[(pair.laterality, pair.view)]
    ds.BurnedInAnnotation = "NO"
    spacing = f"{grid.spacing:.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = look.bits_stored
    ds.HighBit = look.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{window[0]:.1f}"
    ds.WindowWidth = f"{window[1]:.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.astype("<u2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


# ---------------------------------------------------------------------------------------------
# One pair


def generate_pair(job: tuple[PairPlan, PhantomSettings, str]) -> dict[str, list[dict]]:
    """Render one pair, write its two DICOM files under ``out_dir/images``, and return its
    rows: ``{"manifest": [...], "lesions": [...], "artefacts": [...]}``."""
    pair, settings, out_dir = job
    renderings, findings = render_pair(pair, settings)
    shapes = [finding.shape for finding in findings]
    rows: dict[str, list[dict]] = {"manifest": [], "lesions": [], "artefacts": []}
    paths = {}
    for modality, rendering in renderings.items():
        bits = LOOKS[modality].bits_stored
        photometric = (
            "MONOCHROME1" if modality == "ffdm" and pair.ffdm_monochrome1 else ("MONOCHROME2")
        )
        stored = to_stored(rendering.display, bits, photometric == "MONOCHROME1")
        values = in_monochrome2_sense(stored, bits, photometric)
        paths[modality] = f"{IMAGE_FOLDER}/{pair.pair_id}_{modality}.dcm"
        window = display_window(values, rendering.inside, bits, photometric)
        write_dicom(
            Path(out_dir) / paths[modality],
            stored,
            rendering.grid,
            pair,
            settings,
            photometric,
            window,
        )
        for number, (finding, box) in enumerate(zip(findings, rendering.boxes)):
            if box is None:
                continue
            corners = dict(zip(("x1", "y1", "x2", "y2"), box))
            if finding.artefact:
                rows["artefacts"].append(
                    {
                        "pair_id": pair.pair_id,
                        "modality": modality,
                        **corners,
                        "kind": finding.artefact,
                    }
                )
                continue
            lesion = finding.plan
            rows["lesions"].append(
                {
                    "pair_id": pair.pair_id,
                    "modality": modality,
                    **corners,
                    "pathology": lesion.pathology,
                    "lesion_type": lesion.lesion_type,
                    "subtype": lesion.subtype,
                    "lesion_id": lesion.lesion_id,
                    "density": pair.density,
                    "cnr": round(lesion_cnr(values, rendering, shapes, number), 4),
                }
            )
    rows["manifest"].append(
        {
            "pair_id": pair.pair_id,
            "patient_id": pair.patient_id,
            "exam_id": pair.exam_id,
            "laterality": pair.laterality,
            "view": pair.view,
            "sm_path": paths["sm"],
            "ffdm_path": paths["ffdm"],
            "label": pair.label,
            "annotated": True,
            "density": pair.density,
            "ffdm_photometric": "MONOCHROME1" if pair.ffdm_monochrome1 else "MONOCHROME2",
            "lesions": len(pair.lesions),
        }
    )
    return rows
