"""Write small, real mammography DICOM files for tests (pydicom; no test data to download).

    image = breast_image(240, 180, laterality="R", markers=[(150, 120, 6)])
    path = write_mammogram(tmp_path / "a.dcm", image, laterality="R", view="MLO",
                           photometric="MONOCHROME1", bits_stored=12, compression="jpeg2000")

`breast_image` draws a display image (float32 in [0, 1], dense tissue bright) laid out as the
DICOM mammography convention stores it: a left breast's chest wall on the left of the image, a
right breast's on the right. `write_mammogram` encodes it as the stored pixel values of the
photometric interpretation and bit depth asked for, and compresses it when asked:
"jpeg2000" (lossless, pydicom's `Dataset.compress` with pylibjpeg-openjpeg), "rle" (pydicom's
own encoder) or "jpeg-lossless" (JPEG Lossless SV1, process 14 with predictor 1, encoded
here since no installed package encodes it; decoded by pylibjpeg-libjpeg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

COMPRESSIONS = (None, "jpeg2000", "rle", "jpeg-lossless")
MARKER_VALUE = 1.0
BREAST_VALUE = 0.45


def marker_box(x: float, y: float, size: int) -> tuple[float, float, float, float]:
    """The xyxy pixel box of a square marker of side ``size`` centred on (x, y) in pixels."""
    half = size // 2
    x0, y0 = int(round(x)) - half, int(round(y)) - half
    return float(x0), float(y0), float(x0 + size), float(y0 + size)


def breast_image(
    height: int,
    width: int,
    laterality: str = "L",
    markers: Sequence[tuple[float, float, int]] = (),
    burned_in_label: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """A float32 [height, width] display image in [0, 1]: a half-ellipse breast against the
    chest wall (left edge for "L", right edge for "R"), reaching 70% of the width, with mild
    texture; square markers (x, y, size) of value 1.0; optionally a bright burned-in label
    block in the top corner away from the chest wall, not touching the breast."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = columns if laterality == "L" else (width - 1 - columns)
    reach, half_height = 0.7 * width, 0.45 * height
    inside = (depth / reach) ** 2 + ((rows - height / 2) / half_height) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    texture = rng.normal(0.0, 0.03, size=(height, width)).astype(np.float32)
    image = np.where(inside, BREAST_VALUE + texture, 0.0).astype(np.float32)
    for x, y, size in markers:
        x0, y0, x1, y1 = (int(v) for v in marker_box(x, y, size))
        image[y0:y1, x0:x1] = MARKER_VALUE
    if burned_in_label:
        side = max(2, min(height, width) // 12)
        x0 = width - 2 * side if laterality == "L" else side
        image[side : 2 * side, x0 : x0 + side] = 1.0
    return np.clip(image, 0.0, 1.0)


def stored_values(image: np.ndarray, bits_stored: int, photometric: str) -> np.ndarray:
    """uint16 stored pixel values of a [0, 1] display image (MONOCHROME1: bright = low)."""
    top = 2**bits_stored - 1
    values = np.rint(np.clip(image, 0.0, 1.0) * top).astype(np.uint16)
    return (top - values).astype(np.uint16) if photometric == "MONOCHROME1" else values


def write_mammogram(
    path: str | os.PathLike,
    image: np.ndarray,
    laterality: str | None = "L",
    view: str = "CC",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    compression: str | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    pixels: np.ndarray | None = None,
    patient_orientation: Sequence[str] | None = None,
    series_number: int | None = None,
    series_time: str | int | None = None,
    patient_id: str = "TEST-0001",
    study_uid: str | None = None,
    modality: str = "MG",
) -> Path:
    """Write ``image`` (display values in [0, 1]) as an MG DICOM file and return its path.

    ``laterality`` None writes no laterality tags. ``window`` (center, width) and ``voi_lut``
    (LUT entries for stored values 0, 1, ...) are written as such; ``rescale`` (slope,
    intercept) writes the modality LUT tags. ``pixels`` overrides the stored values.
    ``patient_orientation`` (e.g. ``("P", "L")``: the patient directions of the rows and the
    columns), ``series_number`` and ``series_time`` (``"HHMMSS"``) are written when given.
    ``patient_id`` is written as PatientID; ``study_uid`` (default: a new one) as
    StudyInstanceUID; ``modality`` as Modality.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    path = Path(path)
    stored = stored_values(image, bits_stored, photometric) if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography, presentation
    )
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Phantom"
    ds.PatientID = patient_id
    if laterality is not None:
        ds.ImageLaterality = laterality
        ds.Laterality = laterality
    ds.ViewPosition = view
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)
    if series_number is not None:
        ds.SeriesNumber = int(series_number)
    if series_time is not None:
        ds.SeriesTime = str(series_time)
    ds.Rows, ds.Columns = (int(v) for v in stored.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut), 0, 16])  # LUTDescriptor
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, dtype="<u2").tobytes())  # LUTData
        ds.VOILUTSequence = [item]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
        ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if compression == "jpeg2000":
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg")
    elif compression == "rle":
        ds.compress(RLELossless, stored)
    elif compression == "jpeg-lossless":
        ds.PixelData = encapsulate([encode_jpeg_lossless(stored, bits_stored)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_stored(path: str | os.PathLike) -> np.ndarray:
    """The stored pixel values of a file, decoded (to check an encoder round trip)."""
    return pydicom.dcmread(path).pixel_array


def encode_jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """One JPEG Lossless frame (ITU T.81 process 14, first-order prediction, one component).

    Every difference category 0-16 gets a 5-bit Huffman code; enough for tests, not small.
    """
    image = np.asarray(pixels).astype(np.int64)
    height, width = image.shape
    predicted = np.empty_like(image)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = image[0, :-1]  # first row: the left neighbour
    predicted[1:, 0] = image[:-1, 0]  # first column: the pixel above
    predicted[1:, 1:] = image[1:, :-1]  # elsewhere: predictor 1, the left neighbour
    difference = (image - predicted) % 65536
    difference = np.where(difference > 32768, difference - 65536, difference).ravel()
    category = np.zeros_like(difference)
    nonzero = difference != 0
    category[nonzero] = np.floor(np.log2(np.abs(difference[nonzero]))).astype(np.int64) + 1
    extra = np.where(difference < 0, difference - 1, difference) & ((1 << category) - 1)
    extra = np.where(category == 16, 0, extra)
    extra_bits = np.where(category == 16, 0, category)
    # code of category c: c itself in 5 bits (canonical codes for 17 symbols of length 5)
    values = (category << extra_bits) | extra
    lengths = 5 + extra_bits
    positions = np.arange(21)
    shifts = lengths[:, None] - 1 - positions[None, :]
    bits = ((values[:, None] >> np.maximum(shifts, 0)) & 1).astype(np.uint8)
    bits = bits[shifts >= 0]
    padding = (-len(bits)) % 8
    bits = np.concatenate([bits, np.ones(padding, dtype=np.uint8)])
    scan = np.packbits(bits)
    stuffed = np.insert(scan, np.flatnonzero(scan == 0xFF) + 1, 0)

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    frame = bytes([0xFF, 0xD8])
    frame += segment(
        0xC3,
        bytes([precision])
        + height.to_bytes(2, "big")
        + width.to_bytes(2, "big")
        + b"\x01\x01\x11\x00",
    )
    counts = [0] * 16
    counts[4] = 17
    frame += segment(0xC4, bytes([0x00] + counts + list(range(17))))
    frame += segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0]))
    return frame + stuffed.tobytes() + bytes([0xFF, 0xD9])


def write_paired_folder(
    folder: str | os.PathLike,
    pairs: int = 20,
    pairs_per_patient: int = 2,
    sm_size: tuple[int, int] = (120, 96),
    ffdm_size: tuple[int, int] = (160, 128),
    positive_every: int = 3,
    compression: str | None = None,
):
    """A data folder of FFDM-SM pairs: ``images/*.dcm``, ``manifest.csv``, ``lesions.csv``.

    Pair i (id ``p0000``...) is L or R, CC or MLO in turn; every ``positive_every``-th pair is
    positive, with a malignant lesion (a bright marker with its box, in each modality's own
    pixels, at the same relative place), and every other positive also a benign one. FFDMs
    are MONOCHROME1 12-bit, SMs MONOCHROME2 16-bit. Both images of a pair carry the row's
    patient id as PatientID and one StudyInstanceUID per exam. Returns (manifest, lesions)
    DataFrames.
    """
    import pandas as pd

    from datamodules.manifest import write_tables

    folder = Path(folder)
    rows, lesions = [], []
    for index in range(pairs):
        pair_id = f"p{index:04d}"
        laterality, view = "LR"[index % 2], ("CC", "MLO")[index // 2 % 2]
        positive = index % positive_every == 0
        row = {
            "pair_id": pair_id,
            "patient_id": f"patient{index // pairs_per_patient:04d}",
            "exam_id": f"exam{index // pairs_per_patient:04d}",
            "laterality": laterality,
            "view": view,
            "label": int(positive),
            "annotated": True,
        }
        for modality, (height, width), photometric, bits in (
            ("sm", sm_size, "MONOCHROME2", 16),
            ("ffdm", ffdm_size, "MONOCHROME1", 12),
        ):
            findings = []
            if positive:
                findings.append(("malignant", 0.3, 0.45))
                if index % (2 * positive_every) == 0:
                    findings.append(("benign", 0.2, 0.65))
            markers = []
            for pathology, depth, height_fraction in findings:
                depth_px = depth * width
                x = depth_px if laterality == "L" else width - depth_px
                size = max(4, width // 16)
                markers.append((x, height_fraction * height, size))
                x1, y1, x2, y2 = marker_box(x, height_fraction * height, size)
                lesions.append(
                    {
                        "pair_id": pair_id,
                        "modality": modality,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "pathology": pathology,
                    }
                )
            image = breast_image(height, width, laterality, markers=markers, seed=index)
            relative = f"images/{pair_id}_{modality}.dcm"
            write_mammogram(
                folder / relative,
                image,
                laterality,
                view,
                photometric,
                bits,
                compression,
                patient_id=row["patient_id"],
                study_uid=generate_uid(entropy_srcs=["dicom_factory", str(folder), row["exam_id"]]),
            )
            row[f"{modality}_path"] = relative
        rows.append(row)
    manifest = pd.DataFrame(rows)
    lesions = pd.DataFrame(
        lesions, columns=["pair_id", "modality", "x1", "y1", "x2", "y2", "pathology"]
    )
    write_tables(folder, manifest, lesions)
    return manifest, lesions


def rewrite_dicom(path: str | os.PathLike, **tags) -> Path:
    """Set header elements of an existing file (``rewrite_dicom(p, Modality="CT")``); a value
    of None deletes the element."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            if keyword in dataset:
                delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


def make_multiframe(path: str | os.PathLike, frames: int = 3) -> Path:
    """Rewrite a file as ``frames`` copies of its image (a tomosynthesis-like volume)."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    dataset.NumberOfFrames = frames
    dataset.PixelData = np.ascontiguousarray(np.stack([pixels] * frames), dtype="<u2").tobytes()
    dataset.save_as(path)
    return path


def make_colour(path: str | os.PathLike) -> Path:
    """Rewrite a file as an 8-bit RGB image of the same picture."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    grey = dataset.pixel_array.astype(np.float64) / max(1, int(dataset.pixel_array.max()))
    rgb = np.repeat(np.rint(grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = rgb.tobytes()
    dataset.save_as(path)
    return path


def make_float_pixels(path: str | os.PathLike, nan_box: tuple[int, int, int, int]) -> Path:
    """Rewrite a file with Float Pixel Data: its image as float32, NaN inside ``nan_box``
    (x1, y1, x2, y2)."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    values = dataset.pixel_array.astype(np.float32)
    x1, y1, x2, y2 = nan_box
    values[y1:y2, x1:x2] = np.nan
    del dataset.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.BitsAllocated = 32
    dataset.FloatPixelData = values.tobytes()
    dataset.save_as(path)
    return path


def truncate(path: str | os.PathLike, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its bytes (a copy that stopped half-way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def replace_pixels(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Rewrite a file's (uncompressed) stored values, keeping every other element."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    dataset.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    dataset.Rows, dataset.Columns = (int(v) for v in pixels.shape)
    dataset.save_as(path)
    return path


def corrupt_compressed(path: str | os.PathLike, length: int = 350) -> Path:
    """Zero ``length`` bytes near the end of a compressed file's last fragment: the file keeps
    its size and structure (its header and fragments are intact) but no longer decodes (RLE)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    end = len(data) - 50
    data[end - length : end] = bytes(length)
    path.write_bytes(bytes(data))
    return path
