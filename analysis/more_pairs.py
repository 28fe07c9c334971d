"""A manifest that trains on more pairs and validates and tests on the same images as another.

How much can an SM-only model still learn on the phantom? Model_SM trained on 4x the pairs,
drawn from the same generator with another seed, and tested on the demo's test images, so that
its FAUC-1 sits in the same paired tables as the other models (a pipeline stage with its own
``data``; the seeds report's ``gap``).

    python -m analysis.more_pairs --base data/phantom --extra data/phantom_seed1 \\
        --factor 4 --out data/phantom_4x

writes ``<out>/manifest.csv`` and ``<out>/lesions.csv`` with a ``split`` column:

* ``val`` and ``test``: the base's pairs of those splits, unchanged (pair ids, images,
  lesions), as the base's data config splits them (``--seed``, the default fractions);
* ``train``: ``factor`` times the base's training pairs, whole patients of ``extra`` in its
  manifest order; their pair, patient, exam and lesion ids get the prefix ``--prefix`` so that
  no id is shared with the base. The base's own training pairs are not used.

Image paths are written relative to ``<out>``; nothing is copied.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from datamodules.manifest import load_tables

ID_COLUMNS = ("pair_id", "patient_id", "exam_id")
PATH_COLUMNS = ("sm_path", "ffdm_path")


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a phantom or manifest folder holds one)")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _relative(paths: pd.Series, source: Path, out: Path) -> pd.Series:
    return paths.map(lambda p: os.path.relpath((source / p).resolve(), out.resolve()))


def build(
    base: Path, extra: Path, out: Path, factor: float = 4.0, seed: int = 0, prefix: str = "X-"
) -> dict[str, int]:
    """Write the manifest and lesion table; returns pairs per split."""
    base_manifest, base_lesions = _read(base, "manifest.csv"), _read(base, "lesions.csv")
    extra_manifest, extra_lesions = _read(extra, "manifest.csv"), _read(extra, "lesions.csv")
    if "split" in extra_manifest.columns:
        extra_manifest = extra_manifest.drop(columns="split")

    # the split exactly as the base's data module makes it (exclusions included)
    loaded, _, _ = load_tables(base / "manifest.csv", seed=seed)
    split = base_manifest["pair_id"].map(dict(zip(loaded["pair_id"], loaded["split"])))
    kept = base_manifest[split.isin(["val", "test"])].copy()
    kept["split"] = split[kept.index]
    wanted = int(round(factor * int((split == "train").sum())))

    patients = extra_manifest["patient_id"].drop_duplicates()
    counts = extra_manifest.groupby("patient_id", sort=False).size()[patients]
    chosen = set(patients[(counts.cumsum() - counts).to_numpy() < wanted])
    train = extra_manifest[extra_manifest["patient_id"].isin(chosen)].copy()
    if len(train) < wanted:
        raise ValueError(
            f"{extra / 'manifest.csv'}: {len(train)} pairs, fewer than the "
            f"{wanted} wanted ({factor} x the base's training pairs)"
        )
    for column in ID_COLUMNS:
        train[column] = prefix + train[column]
    train["split"] = "train"

    out.mkdir(parents=True, exist_ok=True)
    for table, source in ((kept, base), (train, extra)):
        for column in PATH_COLUMNS:
            table[column] = _relative(table[column], source, out)
    manifest = pd.concat([train, kept], ignore_index=True)[[*base_manifest.columns, "split"]]

    train_lesions = extra_lesions[
        extra_lesions["pair_id"].isin(set(train["pair_id"].str.removeprefix(prefix)))
    ].copy()
    for column in ("pair_id", "lesion_id"):
        train_lesions[column] = prefix + train_lesions[column]
    kept_lesions = base_lesions[base_lesions["pair_id"].isin(set(kept["pair_id"]))]
    lesions = pd.concat([train_lesions, kept_lesions], ignore_index=True)

    manifest.to_csv(out / "manifest.csv", index=False)
    lesions.to_csv(out / "lesions.csv", index=False)
    return manifest["split"].value_counts().to_dict()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        type=Path,
        required=True,
        help="the manifest folder whose val and test pairs are kept",
    )
    parser.add_argument(
        "--extra",
        type=Path,
        required=True,
        help="the manifest folder the training pairs are drawn from",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--factor",
        type=float,
        default=4.0,
        help="training pairs as a multiple of the base's (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the base's split seed (default 0)")
    parser.add_argument("--prefix", default="X-", help="prefix of the extra pairs' ids")
    args = parser.parse_args(argv)
    if args.factor <= 0:
        parser.error(f"--factor must be above 0, got {args.factor}")
    counts = build(args.base, args.extra, args.out, args.factor, args.seed, args.prefix)
    print(
        f"{args.out / 'manifest.csv'}: "
        + ", ".join(f"{name} {counts.get(name, 0)} pairs" for name in ("train", "val", "test"))
    )


if __name__ == "__main__":
    main()
