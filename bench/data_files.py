"""The data benchmark's test DICOMs, written once per run (full-size FFDMs in three transfer
syntaxes, a MONOCHROME1 FFDM and an SM), and the timer and pydicom floor its measurements use."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import shared  # noqa: F401  (puts the repository root on sys.path, for tests.helpers)

from tests.helpers.dicom_factory import breast_image, write_mammogram

FFDM_SIZE = (4096, 3328)  # rows, columns: Hologic Selenia Dimensions FFDM
SM_SIZE = (2457, 1996)  # Hologic C-View synthesised mammogram
TRANSFER_SYNTAXES = {
    None: "1.2.840.10008.1.2.1 Explicit VR Little Endian",
    "jpeg2000": "1.2.840.10008.1.2.4.90 JPEG 2000 Lossless",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70 JPEG Lossless SV1",
}


def timed(function, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def floor_read(path) -> np.ndarray:
    """What any reader pays: pydicom's bare decode."""
    return pydicom.dcmread(path).pixel_array


# -- 1. the test files ---------------------------------------------------------------------------
def file_specs(scale: float) -> list[dict[str, Any]]:
    """The files to write: name, size, laterality, photometric, bits, compression, window."""
    ffdm = tuple(max(64, round(v * scale)) for v in FFDM_SIZE)
    sm = tuple(max(64, round(v * scale)) for v in SM_SIZE)
    specs = []
    for compression, name in (
        (None, "ffdm_uncompressed"),
        ("jpeg2000", "ffdm_jpeg2000"),
        ("jpeg-lossless", "ffdm_jpeg_lossless"),
    ):
        specs.append(
            {
                "name": name,
                "modality": "ffdm",
                "size": ffdm,
                "laterality": "R",
                "photometric": "MONOCHROME2",
                "bits_stored": 12,
                "compression": compression,
                "window": (2048.0, 4096.0),
                "seed": 0,
            }
        )
    specs.append(
        {
            "name": "ffdm_uncompressed_monochrome1",
            "modality": "ffdm",
            "size": ffdm,
            "laterality": "L",
            "photometric": "MONOCHROME1",
            "bits_stored": 14,
            "compression": None,
            "window": (8192.0, 16384.0),
            "seed": 1,
        }
    )
    specs.append(
        {
            "name": "sm_uncompressed",
            "modality": "sm",
            "size": sm,
            "laterality": "R",
            "photometric": "MONOCHROME2",
            "bits_stored": 16,
            "compression": None,
            "window": (32768.0, 65536.0),
            "seed": 2,
        }
    )
    return specs


def write_files(specs, folder: Path) -> dict[str, float]:
    """Write every file once (the same picture for the three FFDM syntaxes); returns the time
    each took. Each compressed file is checked to decode to the uncompressed one's pixels."""
    images, setup = {}, {}
    reference = {}
    for spec in specs:
        key = (spec["size"], spec["laterality"], spec["seed"])
        if key not in images:
            images[key] = breast_image(
                *spec["size"], laterality=spec["laterality"], seed=spec["seed"]
            )
        seconds, path = timed(
            write_mammogram,
            folder / f"{spec['name']}.dcm",
            images[key],
            spec["laterality"],
            "CC",
            spec["photometric"],
            spec["bits_stored"],
            spec["compression"],
            window=spec["window"],
        )
        spec["path"] = str(path)
        setup[spec["name"]] = seconds
        dataset = pydicom.dcmread(path)
        spec["transfer_syntax"] = str(dataset.file_meta.TransferSyntaxUID)
        spec["transfer_syntax_expected"] = TRANSFER_SYNTAXES[spec["compression"]]
        spec["file_mib"] = path.stat().st_size / 2**20
        stored = dataset.pixel_array
        if spec["compression"] is None:
            reference[key + (spec["bits_stored"], spec["photometric"])] = stored
        else:
            expected = reference[key + (spec["bits_stored"], spec["photometric"])]
            spec["lossless_round_trip"] = bool(np.array_equal(stored, expected))
    return setup
