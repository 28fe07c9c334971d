"""The data path: DICOM decode and preprocessing per image per core, the
cached loader's pairs per second, and from these the CPU cores that keep one GPU fed.

1. Decode + preprocessing. Full-size FFDMs (4096 x 3328, 12-bit MONOCHROME2 with a window in
   the header, as Hologic writes them) uncompressed (Explicit VR Little Endian), JPEG 2000
   Lossless and JPEG Lossless SV1 (the same picture in all three), a 14-bit MONOCHROME1 FFDM
   (uncompressed) and an SM (2457 x 1996, 16-bit, uncompressed), written once per run by
   ``tests/helpers/dicom_factory.py`` (``breast_image``, ``write_mammogram``; JPEG 2000 through
   pydicom's ``Dataset.compress`` with pylibjpeg-openjpeg, JPEG Lossless by the factory's
   ``encode_jpeg_lossless``: 20-30 s and about 8 GB of memory for a full-size FFDM). Each
   repeat times the floor, ``pydicom.dcmread(path).pixel_array``, and ours,
   `datamodules.dicom.load_image` (what ``cli.py prepare`` runs per image), in alternating
   order; then each step of ours on its own (``read_dicom``, ``ValueTable.of``: the window as
   a table of the image's values, laterality, the breast mask as a comparison of stored
   values, ``mask_box``'s connected components, ``Geometry.build``, ``apply_geometry``, of
   which the crop's windowing and the resize, and the cache write of ``prepare``), and the
   cache builder's own call per image (``_prepare_one`` after ``_init_worker``). One thread
   everywhere (torch, OpenCV, OpenMP): the figures are per core. The files are in the page
   cache: the floor is decoding, not the disk. A local experiment (not package code), in a pass
   of its own after each uncompressed file's repeats, times faster variants of our path
   against it and the floor: the breast box found at 1/4 resolution, then also resizing before
   windowing (both move the crop box).
2. Cached loader: a phantom (``cli.py phantom --pairs 64 --scale 5/16``, so FFDMs come at about
   the model's input size) prepared at 1280 x 1024 (``cli.py prepare``), read by
   `PairedMammoDataModule`'s training loader (balanced sampler, training augmentation, batch
   4) with 0, 1 and 2 workers, for Stage I (one modality) and for two modalities (Stage II and
   BASE_UB): pairs/s over a fixed number of batches after warm-up; and, in this process, what
   one sample costs (cache read, of which zlib inflation; augmentation; the rest; collation).
3. Cores per GPU: an assumed GPU rate (``--gpu-pairs-per-s``, default 60 pairs/s for Stage I:
   EfficientDet-D0 at 1280 x 1024, bf16, one H100/H200-class GPU; not measured here) over the
   pairs/s of one loader worker (one core), and the same for the decode path without a cache.

    .venv/bin/python bench/bench_data.py [--repeats 7] [--compressed-repeats 3] [--pairs 64]
        [--workers 0 1 2] [--gpu-pairs-per-s 60] [--quick]

``--quick`` (about 30 s) uses quarter-size DICOMs, 8 pairs and one or two repeats: a smoke run,
not figures. Writes ``bench/results/data.json`` (``--out``).
"""

from __future__ import annotations

import os

# Per core: one thread for every library that could start a pool (before numpy is imported).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import torch  # noqa: E402
from data_decode import bench_decode  # noqa: E402
from data_loader import bench_loader  # noqa: E402
from data_report import ASSUMPTION, conclusions, print_summary  # noqa: E402
from shared import machine  # noqa: E402

from common.defaults import IMAGE_SIZE  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per uncompressed file")
    parser.add_argument("--compressed-repeats", type=int, default=3)
    parser.add_argument("--image-size", nargs=2, type=int, default=IMAGE_SIZE, metavar=("H", "W"))
    parser.add_argument(
        "--dicom-scale",
        type=float,
        default=1.0,
        help="size of the test DICOMs relative to full size",
    )
    parser.add_argument("--pairs", type=int, default=64, help="phantom pairs for the loader")
    parser.add_argument("--phantom-scale", default="5/16")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per repeat")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--loader-repeats", type=int, default=3)
    parser.add_argument("--step-samples", type=int, default=16)
    parser.add_argument(
        "--gpu-pairs-per-s", type=float, default=60.0, help=f"GPU training rate ({ASSUMPTION})"
    )
    parser.add_argument(
        "--no-proposals", action="store_true", help="skip the local experiment of faster variants"
    )
    parser.add_argument("--workdir", help="folder for the temporary files (default: system's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: quarter-size DICOMs, 8 pairs, 1-2 repeats"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.compressed_repeats, args.dicom_scale = 2, 1, 0.25
        args.pairs, args.batches, args.warmup_batches = 8, 3, 1
        args.loader_repeats, args.step_samples = 1, 4
    started = time.perf_counter()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_data_", dir=args.workdir) as temporary:
        folder = Path(temporary)
        decode = bench_decode(args, folder / "dicom")
        loader = bench_loader(args, folder / "phantom")
    settings = {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in vars(args).items()
        if key not in ("out", "workdir")
    }
    settings["threads"] = {
        "torch": torch.get_num_threads(),
        "opencv": cv2.getNumThreads(),
        **{
            name: os.environ.get(name)
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "note": "one thread per process: figures are per core; DataLoader "
        "workers are one process (core) each",
    }
    info = machine()
    info["opencv"] = cv2.__version__
    info["numpy"] = np.__version__
    info["pydicom"] = pydicom.__version__
    info["torch"] = torch.__version__
    info["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    result = {
        "benchmark": "data",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "settings": settings,
        "decode": decode,
        "loader": loader,
    }
    result["conclusions"] = conclusions(decode, loader, args)
    result["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
