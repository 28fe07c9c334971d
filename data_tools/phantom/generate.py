"""``python cli.py phantom``: generate a phantom folder, in parallel processes."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from fractions import Fraction
from pathlib import Path

import pandas as pd

from common.parallel import run_parallel
from data_tools.phantom.cohort import PhantomSettings, plan_pairs
from data_tools.phantom.output import IMAGE_FOLDER, generate_pair
from data_tools.phantom.report import contact_sheet, data_card
from datamodules.manifest import validate, write_tables

CARD_TITLE = "# mammofuse phantom"
ARTEFACT_COLUMNS = ["pair_id", "modality", "x1", "y1", "x2", "y2", "kind"]


def _quiet_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism


def prepare_folder(out_dir: Path) -> None:
    """Create the folder; clear the images of an earlier phantom there. Refuse a non-empty
    folder that is not a phantom's, rather than mix files into it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        card = out_dir / "README.md"
        if not (card.exists() and card.read_text().startswith(CARD_TITLE)):
            raise FileExistsError(
                f"{out_dir} is not empty and holds no phantom; choose another --out"
            )
        for old in (out_dir / IMAGE_FOLDER).glob("*.dcm"):
            old.unlink()
    (out_dir / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: str | os.PathLike,
    settings: PhantomSettings,
    workers: int | None = None,
    progress: bool = True,
    command: str = "mammofuse phantom",
) -> dict[str, pd.DataFrame]:
    """Write a phantom folder: DICOMs, ``manifest.csv``, ``lesions.csv``, ``artefacts.csv``,
    ``README.md`` and ``contact_sheet.png``. Returns the three tables.

    The output is the same for any number of ``workers`` (default: all cores).
    """
    out_dir = Path(out_dir)
    prepare_folder(out_dir)
    plans = plan_pairs(settings)
    workers = max(1, min(workers or os.cpu_count() or 1, len(plans)))
    jobs = [(plan, settings, str(out_dir)) for plan in plans]
    tables: dict[str, list[dict]] = {"manifest": [], "lesions": [], "artefacts": []}
    for rows in run_parallel(
        generate_pair,
        jobs,
        workers=workers,
        initializer=_quiet_worker,
        chunksize=8,
        desc="phantom",
        unit="pair",
        progress=progress,
    ):
        for name, part in rows.items():
            tables[name].extend(part)
    manifest = pd.DataFrame(tables["manifest"])
    lesions = pd.DataFrame(tables["lesions"])
    artefacts = pd.DataFrame(tables["artefacts"], columns=ARTEFACT_COLUMNS)
    validate(manifest, lesions)
    write_tables(out_dir, manifest, lesions)
    artefacts.to_csv(out_dir / "artefacts.csv", index=False)
    (out_dir / "README.md").write_text(data_card(settings, manifest, lesions, artefacts, command))
    contact_sheet(out_dir, manifest, lesions, artefacts, out_dir / "contact_sheet.png")
    return {"manifest": manifest, "lesions": lesions, "artefacts": artefacts}


def _share(text: str) -> float:
    value = float(Fraction(text))
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _density_mix(text: str) -> tuple[float, float, float, float]:
    parts = [float(part) for part in text.split(",")]
    if len(parts) != 4 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 4 non-negative weights A,B,C,D")
    return tuple(parts)


def parser() -> argparse.ArgumentParser:
    defaults = PhantomSettings()
    p = argparse.ArgumentParser(
        prog="cli.py phantom",
        description="Generate the synthetic paired FFDM/SM phantom (DICOMs, manifest, lesion "
        "table, data card, contact sheet).",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--pairs", type=int, default=defaults.pairs, help="number of FFDM-SM pairs")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--positive-share",
        type=_share,
        default=defaults.positive_share,
        help="share of breasts holding a malignant lesion",
    )
    p.add_argument(
        "--benign-share",
        type=_share,
        default=defaults.benign_share,
        help="share of breasts holding a benign lesion",
    )
    p.add_argument(
        "--density-mix",
        type=_density_mix,
        default=defaults.density_mix,
        help="weights of BI-RADS densities A,B,C,D (default 0.1,0.4,0.4,0.1)",
    )
    p.add_argument(
        "--sm-calc-visibility",
        type=_share,
        default=defaults.sm_calc_visibility,
        help="share of the calcification signal left in the SM (0..1)",
    )
    p.add_argument(
        "--artefact-rate",
        type=float,
        default=defaults.artefact_rate,
        help="mean number of SM-only artefacts per image",
    )
    p.add_argument(
        "--monochrome1-share",
        type=_share,
        default=defaults.monochrome1_share,
        help="share of exams whose FFDM is stored MONOCHROME1",
    )
    p.add_argument(
        "--scale",
        type=lambda text: float(Fraction(text)),
        default=defaults.scale,
        help="image size relative to full-size detectors, e.g. 0.125 or 1/8",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``python cli.py phantom``."""
    args = parser().parse_args(argv)
    try:
        settings = PhantomSettings(
            pairs=args.pairs,
            seed=args.seed,
            positive_share=args.positive_share,
            benign_share=args.benign_share,
            density_mix=args.density_mix,
            sm_calc_visibility=args.sm_calc_visibility,
            artefact_rate=args.artefact_rate,
            monochrome1_share=args.monochrome1_share,
            scale=args.scale,
        )
    except ValueError as error:
        print(f"phantom: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    command = "python cli.py phantom " + shlex.join(argv)
    tables = generate(
        args.out, settings, workers=args.workers, progress=not args.quiet, command=command
    )
    elapsed = time.perf_counter() - start
    lesions = tables["lesions"]
    print(
        f"phantom: {len(tables['manifest'])} pairs, {lesions['lesion_id'].nunique()} lesions, "
        f"{len(tables['artefacts'])} SM artefacts in {args.out} ({elapsed:.1f} s); "
        f"hit_min_distance for this scale: {settings.hit_min_distance:g} px"
    )
    return 0
