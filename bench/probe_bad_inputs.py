"""Bad inputs, tried as a new user would try them: each case writes one bad input into a scratch
folder, runs the real command (``python cli.py ...`` in a subprocess, as typed at a shell) and
judges what came back.

    python bench/probe_bad_inputs.py --out runs/probe [--only TEXT] [--list]

- CLEAR: the command refused (exit status not 0) with a message that names what the case says
  it must (the file, row or key) and says what is wrong (its expected words), without a
  traceback; for a case that is a warning, it went on and said so; for a form people have
  (a semicolon-separated or UTF-16 table), it just worked;
- UNCLEAR: it refused, but the message misses the name or the reason, or is a traceback (or
  it refused what it should have taken);
- SILENT: it went on as if nothing were wrong.

Writes ``OUT/probe.json`` and ``OUT/probe.md`` (surface, case, command, the message's first
lines, verdict) and prints the counts per surface; ``named`` marks the cases new users reported.
Not a test (it takes minutes): the tests of each case are in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "helpers")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
import yaml  # noqa: E402

CLI = str(ROOT / "cli.py")
SIZE = [128, 128]
TINY = [
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
]
# Output lines that are not the command's answer (Lightning's and PyTorch's chatter).
NOISE = re.compile(
    r"^(Seed set|GPU available|TPU available|HPU available|LOCAL_RANK|  warnings\."
    r"|.*FutureWarning|.*UserWarning|.*DeprecationWarning|  \||\s*$|💡|.*[Pp]ossible"
    r"|Trainer already configured|`Trainer\(|.*litlogger|.*tensorboard|You are using"
    r"|.*it/s\]|.*s/it\]|Epoch |  rank_zero_warn|Restoring|Loaded model|.*JSONARG)"
)


@dataclass
class Case:
    surface: str
    name: str
    build: Callable
    expect: tuple[str, ...]
    named: bool = False
    mode: str = "error"  # "error": must refuse; "warn": goes on, but must say so
    argv: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(surface: str, name: str, *expect: str, named: bool = False, mode: str = "error"):
    def register(build):
        CASES.append(Case(surface, name, build, tuple(expect), named, mode))
        return build

    return register


# -- the workspace: a tiny phantom, its data config, a cache and every stage's artifact --------
class Workspace:
    def __init__(self, folder: Path):
        self.folder = folder
        self.phantom = folder / "phantom"
        self.data_yaml = folder / "data.yaml"
        self.runs = folder / "runs"
        self.cache = folder / "cache"

    def build(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.phantom / "manifest.csv").is_file():
            run(
                [
                    "phantom",
                    "--out",
                    str(self.phantom),
                    "--pairs",
                    "30",
                    "--seed",
                    "3",
                    "--workers",
                    "1",
                    "--quiet",
                ],
                check=True,
            )
        self.write_data_yaml(self.data_yaml, self.phantom)
        if not (self.cache / "cache.json").is_file():
            run(
                [
                    "prepare",
                    "--manifest",
                    str(self.phantom),
                    "--out",
                    str(self.cache),
                    "--image-size",
                    "128",
                    "128",
                    "--workers",
                    "1",
                    "--no-progress",
                ],
                check=True,
            )
        stages = [
            ("sm", "demo/stage1_sm.yaml", []),
            ("ffdm", "demo/stage1_ffdm.yaml", []),
            (
                "stage2",
                "demo/stage2_distill.yaml",
                [
                    "--model.init_args.ffdm_teacher",
                    self.artifact("ffdm"),
                    "--model.init_args.init_from",
                    self.artifact("ffdm"),
                ],
            ),
            (
                "stage3",
                "demo/stage3_fused.yaml",
                [
                    "--model.init_args.sm_teacher",
                    self.artifact("sm"),
                    "--model.init_args.partner",
                    self.artifact("stage2"),
                ],
            ),
            (
                "ub",
                "demo/upper_bound.yaml",
                [
                    "--model.init_args.sm_teacher",
                    self.artifact("sm"),
                    "--model.init_args.partner",
                    self.artifact("ffdm"),
                ],
            ),
        ]
        for name, config, extra in stages:
            if not (self.runs / name / "artifact" / "artifact.json").is_file():
                run(
                    [
                        "fit",
                        "--config",
                        str(self.data_yaml),
                        "--config",
                        str(ROOT / "configs" / config),
                        *TINY,
                        "--trainer.default_root_dir",
                        str(self.runs / name),
                        *extra,
                    ],
                    check=True,
                )

    def write_data_yaml(self, path: Path, manifest: Path, **init_args) -> Path:
        args = {
            "manifest": str(manifest),
            "cache_dir": None,
            "image_size": SIZE,
            "batch_size": 4,
            "num_workers": 0,
            "hit_min_distance": 12.5,
            **init_args,
        }
        path.write_text(
            yaml.safe_dump(
                {"data": {"class_path": "datamodules.PairedMammoDataModule", "init_args": args}}
            )
        )
        return path

    def artifact(self, name: str) -> str:
        return str(self.runs / name / "artifact")

    def checkpoint(self, name: str) -> str:
        return str(self.runs / name / "checkpoints" / "last.ckpt")

    def copy(self, folder: Path) -> Path:
        """A copy of the phantom (tables and images) to break."""
        target = folder / "data"
        if not target.exists():
            shutil.copytree(self.phantom, target, ignore=shutil.ignore_patterns("cache"))
        return target

    def manifest(self) -> pd.DataFrame:
        return pd.read_csv(self.phantom / "manifest.csv", dtype=str, keep_default_na=False)

    def lesions(self) -> pd.DataFrame:
        return pd.read_csv(self.phantom / "lesions.csv", dtype=str, keep_default_na=False)

    def pair(self, label: str = "1", split: str | None = None, index: int = 0) -> tuple[str, int]:
        """(pair id, manifest row as a spreadsheet shows it) of the index-th pair with this
        label (and this split of the default seed)."""
        table = self.manifest()
        if split is not None:
            from datamodules.manifest import load_tables

            splits = dict(zip(*[load_tables(self.phantom)[0][c] for c in ("pair_id", "split")]))
            table = table[table["pair_id"].map(splits) == split]
        chosen = table[table["label"] == label]
        row = (chosen if len(chosen) > index else table).index[index]  # any label, if need be
        return str(table.loc[row, "pair_id"]), int(row) + 2


def run(
    argv: list[str], check: bool = False, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, CLI, *argv],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done


# -- helpers that break things -------------------------------------------------------------------
def image_of(data: Path, pair_id: str, modality: str) -> Path:
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    return data / table.loc[table["pair_id"] == pair_id, f"{modality}_path"].iloc[0]


def edit(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Path:
    """Rewrite a table; ``change`` edits it in place or returns the new one."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    changed = change(table)
    (table if changed is None else changed).to_csv(path, index=False)
    return path


def set_cell(table: pd.DataFrame, pair_id: str, column: str, value, modality=None) -> None:
    rows = table["pair_id"] == pair_id
    if modality is not None:
        rows &= table["modality"] == modality
    table.loc[rows, column] = value


def retag(path: Path, **tags) -> Path:
    from dicom_factory import rewrite_dicom

    return rewrite_dicom(path, **tags)


def pixels(path: Path, values: np.ndarray) -> Path:
    from dicom_factory import replace_pixels

    return replace_pixels(path, values)


def stored(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def check_data(data: Path, *extra: str) -> list[str]:
    return [
        "check-data",
        "--manifest",
        str(data),
        "--image-size",
        "128",
        "128",
        "--workers",
        "0",
        "--no-progress",
        *extra,
    ]


def fit(
    ws: Workspace,
    d: Path,
    config: str = "demo/stage1_sm.yaml",
    data: Path | None = None,
    *extra: str,
    command: str = "fit",
) -> list[str]:
    if "stage2" in config and "--model.init_args.init_from" not in extra:
        extra = (*extra, "--model.init_args.init_from", ws.artifact("ffdm"))  # the config's
    return [
        command,
        "--config",
        str(data or ws.data_yaml),
        "--config",
        str(ROOT / "configs" / config),
        *TINY,
        "--trainer.default_root_dir",
        str(d / "run"),
        *extra,
    ]


def lesion_row(data: Path, pair_id: str, modality: str) -> int:
    table = pd.read_csv(data / "lesions.csv", dtype=str, keep_default_na=False)
    return int(table.index[(table["pair_id"] == pair_id) & (table["modality"] == modality)][0]) + 2


# == check-data ==================================================================================
@case(
    "check-data",
    "pathology_classes key that no lesion has",
    "pathology_classes",
    "unknown",
    "never be trained",
    named=True,
)
def _(ws, d):
    config = ws.write_data_yaml(
        d / "data.yaml", ws.phantom, pathology_classes={"malignant": 0, "unknown": 1}
    )
    return ["check-data", "--config", str(config), "--workers", "0", "--no-progress"]


@case(
    "check-data",
    "a box in the background, outside the breast crop",
    "lesions.csv row",
    "outside the breast crop",
    named=True,
    mode="warn",
)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    row = lesion_row(data, pair, "sm")

    def move(table):  # the top corner away from the chest wall: background
        width = int(pydicom.dcmread(image_of(data, pair, "sm"), stop_before_pixels=True).Columns)
        index = row - 2
        flip = table.loc[index, "pair_id"].endswith(("RCC", "RMLO"))
        x = 2 if flip else width - 8
        table.loc[index, ["x1", "y1", "x2", "y2"]] = [str(x), "2", str(x + 6), "8"]
        table.loc[len(table)] = table.loc[
            (table["pair_id"] == pair) & (table["modality"] == "sm")
        ].iloc[0]

    edit(data / "lesions.csv", move)
    return check_data(data)


@case(
    "check-data",
    "boxes mirrored (written for the flipped image)",
    "mirrored",
    "lesions.csv row",
    named=True,
)
def _(ws, d):
    data = ws.copy(d)
    pair, row = ws.pair("1")
    width = int(pydicom.dcmread(image_of(data, pair, "sm"), stop_before_pixels=True).Columns)

    def mirror(table):
        rows = (table["pair_id"] == pair) & (table["modality"] == "sm")
        x1 = table.loc[rows, "x1"].astype(float)
        x2 = table.loc[rows, "x2"].astype(float)
        table.loc[rows, "x1"] = (width - x2).astype(str)
        table.loc[rows, "x2"] = (width - x1).astype(str)

    edit(data / "lesions.csv", mirror)
    return check_data(data)


@case(
    "check-data",
    "near-black image with one bright pixel (crop collapses)",
    "sm_path",
    "enlarges it",
    "breast was not found",
    named=True,
)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    values = np.full(stored(path).shape, 3, dtype=np.uint16)
    values[40, 30] = 4000
    pixels(path, values)
    return check_data(data)


@case("check-data", "a sub-pixel box", "lesions.csv row", "too small", named=True, mode="warn")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    row = lesion_row(data, pair, "sm")

    def shrink(table):
        x1, y1 = float(table.loc[row - 2, "x1"]), float(table.loc[row - 2, "y1"])
        extra = table.loc[row - 2].copy()
        extra[["x1", "y1", "x2", "y2"]] = [str(x1 + 2), str(y1 + 2), str(x1 + 2.3), str(y1 + 2.3)]
        table.loc[len(table)] = extra

    edit(data / "lesions.csv", shrink)
    return check_data(data)


@case(
    "check-data",
    "label-1 data set with every pair unannotated",
    "annotated",
    "nothing would be trained",
    named=True,
)
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda table: table.__setitem__("annotated", "False"))
    return check_data(data)


@case("check-data", "a constant image with a VOI window", "sm_path", "blank", named=True)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    pixels(path, np.full(stored(path).shape, 1234, dtype=np.uint16))
    retag(path, WindowCenter=1000.0, WindowWidth=3000.0)
    return check_data(data)


@case("check-data", "an almost constant image (noise of 2 levels)", "sm_path", "blank")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    rng = np.random.default_rng(0)
    pixels(path, (1234 + rng.integers(0, 3, stored(path).shape)).astype(np.uint16))
    return check_data(data)


@case("check-data", "SM and FFDM swapped in the manifest", "swapped", "row", named=True)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")

    def swap(table):
        rows = table["pair_id"] == pair
        table.loc[rows, ["sm_path", "ffdm_path"]] = table.loc[rows, ["ffdm_path", "sm_path"]].values

    edit(data / "manifest.csv", swap)
    return check_data(data)


@case("check-data", "SM and FFDM swapped in a pair without lesions", "swapped", "row", named=True)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")

    def swap(table):
        rows = table["pair_id"] == pair
        table.loc[rows, ["sm_path", "ffdm_path"]] = table.loc[rows, ["ffdm_path", "sm_path"]].values

    edit(data / "manifest.csv", swap)
    return check_data(data)


@case("check-data", "a semicolon-separated manifest (decimal commas)", mode="accept")
def _(ws, d):
    data = ws.copy(d)
    for name in ("manifest.csv", "lesions.csv"):
        table = pd.read_csv(data / name, dtype=str, keep_default_na=False)
        table = table.apply(
            lambda column: (
                column.str.replace(".", ",", regex=False)
                if column.name in ("x1", "y1", "x2", "y2")
                else column
            )
        )
        table.to_csv(data / name, sep=";", index=False)
    return check_data(data)


@case("check-data", "a non-UTF-8 manifest (Latin-1)", "manifest.csv", "utf-8", "line", named=True)
def _(ws, d):
    data = ws.copy(d)
    text = (data / "manifest.csv").read_text().replace("PH000", "PHé00", 1)
    (data / "manifest.csv").write_bytes(text.encode("latin-1"))
    return check_data(data)


@case("check-data", "a manifest with a UTF-8 BOM", mode="accept")
def _(ws, d):
    data = ws.copy(d)
    (data / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + (data / "manifest.csv").read_bytes())
    return check_data(data)


@case("check-data", "a manifest saved as UTF-16 text, tab separated", mode="accept")
def _(ws, d):
    data = ws.copy(d)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    (data / "manifest.csv").write_bytes(table.to_csv(sep="\t", index=False).encode("utf-16"))
    return check_data(data)


@case("check-data", "a missing lesion table", "no lesion table", "label 1", named=True)
def _(ws, d):
    data = ws.copy(d)
    (data / "lesions.csv").unlink()
    return check_data(data)


@case("check-data", "a lesion table named but missing", "lesions.csv", "no such file")
def _(ws, d):
    data = ws.copy(d)
    return check_data(data, "--lesions", str(data / "nowhere" / "lesions.csv"))


@case("check-data", "missing image file", "row", "file not found")
def _(ws, d):
    data = ws.copy(d)
    image_of(data, ws.pair("0")[0], "sm").unlink()
    return check_data(data)


@case("check-data", "a folder where an image should be", "row", "folder")
def _(ws, d):
    data = ws.copy(d)
    path = image_of(data, ws.pair("0")[0], "ffdm")
    path.unlink()
    path.mkdir()
    return check_data(data)


@case("check-data", "a JPEG where a DICOM should be", "row", "not a DICOM")
def _(ws, d):
    data = ws.copy(d)
    image_of(data, ws.pair("0")[0], "sm").write_bytes(b"\xff\xd8\xff\xe0JFIF" + bytes(500))
    return check_data(data)


@case("check-data", "a truncated DICOM", "row", "truncated")
def _(ws, d):
    from dicom_factory import truncate

    data = ws.copy(d)
    truncate(image_of(data, ws.pair("0")[0], "ffdm"), 0.5)
    return check_data(data)


@case("check-data", "a DICOM without pixel data", "row", "no pixel data")
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "sm"), PixelData=None)
    return check_data(data)


@case("check-data", "a CT image in ffdm_path", "row", "modality CT")
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "ffdm"), Modality="CT")
    return check_data(data)


@case("check-data", "a tomosynthesis volume (multi-frame)", "row", "frames")
def _(ws, d):
    from dicom_factory import make_multiframe

    data = ws.copy(d)
    make_multiframe(image_of(data, ws.pair("0")[0], "sm"), 3)
    return check_data(data)


@case("check-data", "a colour (RGB) image", "row", "colour")
def _(ws, d):
    from dicom_factory import make_colour

    data = ws.copy(d)
    make_colour(image_of(data, ws.pair("0")[0], "sm"))
    return check_data(data)


@case(
    "check-data",
    "a tomosynthesis slice (ImageType TOMOSYNTHESIS) as the SM",
    "sm_path",
    "tomosynthesis",
)
def _(ws, d):
    data = ws.copy(d)
    retag(
        image_of(data, ws.pair("0")[0], "sm"),
        ImageType=["DERIVED", "PRIMARY", "TOMOSYNTHESIS"],
        SeriesDescription="L CC Tomo",
    )
    return check_data(data)


@case("check-data", "an FFDM (ORIGINAL\\PRIMARY) as the SM", "sm_path", "FFDM")
def _(ws, d):
    data = ws.copy(d)
    retag(
        image_of(data, ws.pair("0")[0], "sm"),
        ImageType=["ORIGINAL", "PRIMARY"],
        SeriesDescription="L CC",
    )
    return check_data(data)


@case("check-data", "laterality disagrees with the DICOM", "row", "laterality")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    side = "R" if "-L" in pair else "L"
    retag(image_of(data, pair, "sm"), ImageLaterality=side, Laterality=side)
    return check_data(data)


@case("check-data", "view disagrees with the DICOM", "row", "view")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    retag(image_of(data, pair, "ffdm"), ViewPosition="ML")
    return check_data(data)


@case("check-data", "SM and FFDM of different patients", "row", "PatientID")
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "ffdm"), PatientID="SOMEONE-ELSE")
    return check_data(data)


@case("check-data", "SM and FFDM of different studies", "row", "StudyInstanceUID")
def _(ws, d):
    from pydicom.uid import generate_uid

    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "ffdm"), StudyInstanceUID=generate_uid())
    return check_data(data)


@case("check-data", "one DICOM listed in two rows", "row", "same DICOM image")
def _(ws, d):
    data = ws.copy(d)
    a, b = ws.pair("0", index=0)[0], ws.pair("0", index=1)[0]
    shutil.copy(image_of(data, a, "ffdm"), image_of(data, b, "ffdm"))
    return check_data(data)


@case("check-data", "a box past its image's edge", "lesions.csv row", "not inside")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(data / "lesions.csv", lambda t: set_cell(t, pair, "x2", "5000", "sm"))
    return check_data(data)


@case("check-data", "negative box coordinates", "lesions.csv row", "not inside")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(data / "lesions.csv", lambda t: set_cell(t, pair, "x1", "-50", "ffdm"))
    return check_data(data)


@case("check-data", "a box with x2 <= x1", "lesions.csv row", "not greater")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(data / "lesions.csv", lambda t: set_cell(t, pair, "x2", "1", "sm"))
    return check_data(data)


@case("check-data", "a coordinate that is not a number", "lesions.csv row", "not a finite")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(data / "lesions.csv", lambda t: set_cell(t, pair, "y1", "12px", "sm"))
    return check_data(data)


@case("check-data", "label 1 without any lesion", "row", "no malignant lesion")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    edit(data / "manifest.csv", lambda t: set_cell(t, pair, "label", "1"))
    return check_data(data)


@case("check-data", "a malignant lesion on a label-0 pair", "row", "label 0")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(data / "manifest.csv", lambda t: set_cell(t, pair, "label", "0"))
    return check_data(data)


@case("check-data", "label 1 with SM boxes only (FFDM read too)", "row", "no ffdm box")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1")
    edit(
        data / "lesions.csv",
        lambda t: t.drop(t.index[(t["pair_id"] == pair) & (t["modality"] == "ffdm")]),
    )
    return check_data(data)


@case(
    "check-data",
    "pathology_classes dropping every box of a label-1 pair",
    "row",
    "not a class of pathology_classes",
)
def _(ws, d):
    config = ws.write_data_yaml(d / "data.yaml", ws.phantom, pathology_classes={"benign": 0})
    return ["check-data", "--config", str(config), "--workers", "0", "--no-progress"]


@case(
    "check-data",
    "pathology_classes with a pathology the table cannot have",
    "pathology_classes",
    "cancer",
)
def _(ws, d):
    config = ws.write_data_yaml(d / "data.yaml", ws.phantom, pathology_classes={"cancer": 0})
    return ["check-data", "--config", str(config), "--workers", "0", "--no-progress"]


@case("check-data", "duplicate pair_id", "row", "same pair_id")
def _(ws, d):
    data = ws.copy(d)
    a, b = ws.pair("0", index=0)[0], ws.pair("0", index=1)[0]
    edit(data / "manifest.csv", lambda t: set_cell(t, b, "pair_id", a))
    return check_data(data)


@case("check-data", "sm_path equal to ffdm_path", "row", "same file")
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    edit(
        data / "manifest.csv",
        lambda t: t.__setitem__(
            "ffdm_path", t["ffdm_path"].where(t["pair_id"] != pair, t["sm_path"])
        ),
    )
    return check_data(data)


@case("check-data", "one patient in two given splits", "row", "split")
def _(ws, d):
    data = ws.copy(d)

    def split(table):
        table["split"] = "train"
        patient = table["patient_id"].iloc[0]
        first = table.index[table["patient_id"] == patient]
        table.loc[first[-1], "split"] = "test"

    edit(data / "manifest.csv", split)
    return check_data(data)


@case("check-data", "an unknown split name", "row", "'validation' is not one of")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: t.__setitem__("split", "validation"))
    return check_data(data)


@case("check-data", "an unknown laterality", "row", "is not one of")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "laterality", "left"))
    return check_data(data)


@case("check-data", "an unknown view", "row", "is not one of")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "view", "AXIAL"))
    return check_data(data)


@case("check-data", "label 2", "row", "not 0 or 1")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "label", "2"))
    return check_data(data)


@case("check-data", "annotated 'maybe'", "row", "not a boolean")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "annotated", "maybe"))
    return check_data(data)


@case("check-data", "a missing column", "missing required column", "view")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: t.drop(columns=["view"]))
    return check_data(data)


@case("check-data", "an empty cell", "row", "empty value")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "exam_id", ""))
    return check_data(data)


@case(
    "check-data", "a lesion of a pair not in the manifest", "lesions.csv row", "not in the manifest"
)
def _(ws, d):
    data = ws.copy(d)
    edit(
        data / "lesions.csv",
        lambda t: t.__setitem__("pair_id", t["pair_id"].where(t.index != 0, "NOPE-1")),
    )
    return check_data(data)


@case("check-data", "an unknown lesion modality", "lesions.csv row", "is not one of")
def _(ws, d):
    data = ws.copy(d)
    edit(
        data / "lesions.csv",
        lambda t: t.__setitem__("modality", t["modality"].where(t.index != 0, "dbt")),
    )
    return check_data(data)


@case("check-data", "an unknown pathology", "lesions.csv row", "is not one of")
def _(ws, d):
    data = ws.copy(d)
    edit(
        data / "lesions.csv",
        lambda t: t.__setitem__("pathology", t["pathology"].where(t.index != 0, "cancer")),
    )
    return check_data(data)


@case("check-data", "a manifest with only a header", "manifest.csv", "no data rows")
def _(ws, d):
    data = ws.copy(d)
    (data / "manifest.csv").write_text((data / "manifest.csv").read_text().splitlines()[0] + "\n")
    return check_data(data)


@case("check-data", "an empty manifest file", "manifest.csv", "empty")
def _(ws, d):
    data = ws.copy(d)
    (data / "manifest.csv").write_text("")
    return check_data(data)


@case("check-data", "a manifest that does not exist", "nowhere.csv", "no such file")
def _(ws, d):
    return check_data(d / "nowhere.csv")


@case("check-data", "an Excel file as the manifest", "manifest.xlsx", "unknown table format")
def _(ws, d):
    (d / "manifest.xlsx").write_bytes(b"PK\x03\x04" + bytes(100))
    return check_data(d / "manifest.xlsx")


@case("check-data", "a corrupt Parquet manifest", "manifest.parquet", "Parquet")
def _(ws, d):
    (d / "manifest.parquet").write_bytes(b"PAR1" + bytes(100))
    return check_data(d / "manifest.parquet")


@case("check-data", "an image far smaller than the input", "row", "far smaller")
def _(ws, d):
    from dicom_factory import breast_image, write_mammogram

    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    old = pydicom.dcmread(path, stop_before_pixels=True)
    write_mammogram(
        path,
        breast_image(16, 12),
        laterality=old.ImageLaterality,
        view=old.ViewPosition,
        patient_id=old.PatientID,
        study_uid=old.StudyInstanceUID,
    )
    return check_data(data)


@case("check-data", "NaN pixels (float pixel data)", "row", "not finite")
def _(ws, d):
    from dicom_factory import make_float_pixels

    data = ws.copy(d)
    make_float_pixels(image_of(data, ws.pair("0")[0], "ffdm"), (5, 5, 40, 40))
    return check_data(data)


@case("check-data", "a NaN rescale slope", "row", "not finite")
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "sm"), RescaleSlope="NaN", RescaleIntercept=0)
    return check_data(data)


@case("check-data", "a bad pixel stream (RLE that does not decode)", "row", "RLE")
def _(ws, d):
    from dicom_factory import breast_image, corrupt_compressed, write_mammogram

    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    old = pydicom.dcmread(path, stop_before_pixels=True)
    write_mammogram(
        path,
        breast_image(int(old.Rows), int(old.Columns), old.ImageLaterality),
        laterality=old.ImageLaterality,
        view=old.ViewPosition,
        compression="rle",
        patient_id=old.PatientID,
        study_uid=old.StudyInstanceUID,
    )
    corrupt_compressed(path)
    return check_data(data)


@case("check-data", "a truncated cache entry", "row", "cache entry")
def _(ws, d):
    from dicom_factory import truncate

    data = ws.copy(d)
    cache = d / "cache"
    shutil.copytree(ws.cache, cache)
    from datamodules.cache import ImageCache

    truncate(ImageCache(cache, SIZE).path(ws.pair("0")[0], "sm"), 0.5)
    return check_data(data, "--cache-dir", str(cache))


@case("check-data", "a cache made for another size", "cache.json", "image size")
def _(ws, d):
    data = ws.copy(d)
    return check_data(data, "--cache-dir", str(ws.cache), "--image-size", "256", "256")


@case("check-data", "a cache entry of another image", "row", "cache entry")
def _(ws, d):
    data = ws.copy(d)
    cache = d / "cache"
    shutil.copytree(ws.cache, cache)
    from datamodules.cache import ImageCache

    entries = ImageCache(cache, SIZE)
    a, b = ws.pair("0", index=0)[0], ws.pair("0", index=1)[0]
    shutil.copy(entries.path(a, "sm"), entries.path(b, "sm"))
    return check_data(data, "--cache-dir", str(cache))


@case("check-data", "a folder that is not a cache as --cache-dir", "not an image cache")
def _(ws, d):
    data = ws.copy(d)
    return check_data(data, "--cache-dir", str(data / "images"))


@case("check-data", "--image-size 0 0", "image_size", "at least")
def _(ws, d):
    return ["check-data", "--manifest", str(ws.phantom), "--image-size", "0", "0"]


@case("check-data", "--image-size 127 129", "image_size", "divisible")
def _(ws, d):
    return ["check-data", "--manifest", str(ws.phantom), "--image-size", "127", "129"]


@case("check-data", "--margin 0.9", "margin", "0.9")
def _(ws, d):
    return ["check-data", "--manifest", str(ws.phantom), "--margin", "0.9"]


@case("check-data", "--modalities ct", "modalities", "ct")
def _(ws, d):
    return ["check-data", "--manifest", str(ws.phantom), "--modalities", "ct"]


@case("check-data", "--window auto", "window", "auto")
def _(ws, d):
    return ["check-data", "--manifest", str(ws.phantom), "--window", "auto"]


@case("check-data", "a config that does not exist", "nowhere.yaml")
def _(ws, d):
    return ["check-data", "--config", str(d / "nowhere.yaml")]


@case("check-data", "a config of the SM-folder data module", "SMFolderDataModule")
def _(ws, d):
    return ["check-data", "--config", str(ROOT / "configs" / "data" / "sm_folder.yaml")]


@case("check-data", "split_fractions that do not sum to 1", "split_fractions", "sum")
def _(ws, d):
    config = ws.write_data_yaml(d / "data.yaml", ws.phantom, split_fractions=[0.5, 0.5, 0.5])
    return ["check-data", "--config", str(config), "--workers", "0", "--no-progress"]


@case(
    "check-data", "a breast crop keeping little of a large image", "sm_path", "keeps", mode="warn"
)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0")
    path = image_of(data, pair, "sm")
    values = stored(path)
    big = np.zeros((values.shape[0] * 5, values.shape[1] * 5), dtype=np.uint16)
    side = "R" in pair.split("-")[1][:1]
    x0 = big.shape[1] - values.shape[1] if side else 0
    big[: values.shape[0], x0 : x0 + values.shape[1]] = values
    pixels(path, big)
    edit(data / "lesions.csv", lambda t: t.drop(t.index[t["pair_id"] == pair]))
    return check_data(data)


# == prepare =====================================================================================
def prepare(data: Path, d: Path, *extra: str) -> list[str]:
    return [
        "prepare",
        "--manifest",
        str(data),
        "--out",
        str(d / "cache"),
        "--image-size",
        "128",
        "128",
        "--workers",
        "0",
        "--no-progress",
        *extra,
    ]


@case("prepare", "a NaN rescale slope (cached as zeros before)", "row", "not finite", named=True)
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "sm"), RescaleSlope="NaN", RescaleIntercept=0)
    return prepare(data, d)


@case("prepare", "a constant image", "row", "blank", named=True)
def _(ws, d):
    data = ws.copy(d)
    path = image_of(data, ws.pair("0")[0], "sm")
    pixels(path, np.full(stored(path).shape, 777, dtype=np.uint16))
    return prepare(data, d)


@case("prepare", "a CT image", "row", "modality CT", named=True)
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "ffdm"), Modality="CT")
    return prepare(data, d)


@case("prepare", "a tiny image", "row", "far smaller", named=True)
def _(ws, d):
    from dicom_factory import breast_image, write_mammogram

    data = ws.copy(d)
    path = image_of(data, ws.pair("0")[0], "sm")
    write_mammogram(path, breast_image(16, 12))
    return prepare(data, d)


@case("prepare", "--image-size 127 129", "image-size", "divisible", named=True)
def _(ws, d):
    return [
        "prepare",
        "--manifest",
        str(ws.phantom),
        "--out",
        str(d / "cache"),
        "--image-size",
        "127",
        "129",
    ]


@case(
    "prepare",
    "--image-size 320 256 for a d0 stage config (stride 128)",
    "image-size",
    "divisible by 128",
)
def _(ws, d):
    return [
        "prepare",
        "--manifest",
        str(ws.phantom),
        "--out",
        str(d / "cache"),
        "--image-size",
        "320",
        "256",
        "--config",
        str(ROOT / "configs" / "stage1_sm.yaml"),
    ]


@case("prepare", "--image-size 0 0", "image-size", "at least")
def _(ws, d):
    return [
        "prepare",
        "--manifest",
        str(ws.phantom),
        "--out",
        str(d / "cache"),
        "--image-size",
        "0",
        "0",
    ]


@case("prepare", "--image-size -64 64", "image-size", "at least")
def _(ws, d):
    return [
        "prepare",
        "--manifest",
        str(ws.phantom),
        "--out",
        str(d / "cache"),
        "--image-size",
        "-64",
        "64",
    ]


@case("prepare", "--margin 0.9", "margin", "0.9")
def _(ws, d):
    return prepare(ws.phantom, d, "--margin", "0.9")


@case("prepare", "--shard 3/2", "shard", "3/2")
def _(ws, d):
    return prepare(ws.phantom, d, "--shard", "3/2")


@case("prepare", "--workers -2", "workers", "-2")
def _(ws, d):
    return prepare(ws.phantom, d, "--workers", "-2")


@case("prepare", "a manifest that does not exist", "nowhere.csv", "no such file")
def _(ws, d):
    return prepare(d / "nowhere.csv", d)


@case("prepare", "a truncated DICOM", "row", "truncated")
def _(ws, d):
    from dicom_factory import truncate

    data = ws.copy(d)
    truncate(image_of(data, ws.pair("0")[0], "sm"), 0.5)
    return prepare(data, d)


@case("prepare", "a text file as an image", "row", "not a DICOM")
def _(ws, d):
    data = ws.copy(d)
    image_of(data, ws.pair("0")[0], "sm").write_text("hello")
    return prepare(data, d)


@case("prepare", "a multi-frame image", "row", "frames")
def _(ws, d):
    from dicom_factory import make_multiframe

    data = ws.copy(d)
    make_multiframe(image_of(data, ws.pair("0")[0], "sm"), 3)
    return prepare(data, d)


@case("prepare", "a near-black image with one bright pixel", "row", "enlarges it")
def _(ws, d):
    data = ws.copy(d)
    path = image_of(data, ws.pair("0")[0], "sm")
    values = np.full(stored(path).shape, 3, dtype=np.uint16)
    values[40, 30] = 4000
    pixels(path, values)
    return prepare(data, d)


@case("prepare", "an output folder that is a cache of another size", "cache", "image size")
def _(ws, d):
    return [
        "prepare",
        "--manifest",
        str(ws.phantom),
        "--out",
        str(ws.cache),
        "--image-size",
        "256",
        "256",
        "--workers",
        "0",
        "--no-progress",
    ]


@case("prepare", "a semicolon-separated manifest", mode="accept")
def _(ws, d):
    data = ws.copy(d)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    table.to_csv(data / "manifest.csv", sep=";", index=False)
    return prepare(data, d)


@case("prepare", "a manifest with a bad label", "row", "not 0 or 1")
def _(ws, d):
    data = ws.copy(d)
    edit(data / "manifest.csv", lambda t: set_cell(t, ws.pair("0")[0], "label", "yes"))
    return prepare(data, d)


@case("prepare", "--shard abc", "shard", "abc")
def _(ws, d):
    return prepare(ws.phantom, d, "--shard", "abc")


@case("prepare", "a NaN window width", "row", "not finite")
def _(ws, d):
    data = ws.copy(d)
    retag(image_of(data, ws.pair("0")[0], "sm"), WindowCenter="2000", WindowWidth="NaN")
    return prepare(data, d)


# == fit / validate / test / predict ============================================================
@case(
    "lightning",
    "validate a Stage III config with a Stage I checkpoint",
    "ckpt_path",
    "TeacherDetector",
    "FusedDetector",
    named=True,
)
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
        "--ckpt_path",
        ws.checkpoint("sm"),
        command="validate",
    )


@case(
    "lightning",
    "test an SM config with the FFDM model's checkpoint",
    "ckpt_path",
    "modality",
    "ffdm",
)
def _(ws, d):
    return fit(
        ws, d, "demo/stage1_sm.yaml", None, "--ckpt_path", ws.checkpoint("ffdm"), command="test"
    )


@case(
    "lightning", "assess a BASE_UB config with the fused model's checkpoint", "ckpt_path", "variant"
)
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/upper_bound.yaml",
        None,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("ffdm"),
        "--ckpt_path",
        ws.checkpoint("stage3"),
        command="assess",
    )


@case("lightning", "validate with a checkpoint of another input size", "ckpt_path", "image_size")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage1_sm.yaml",
        None,
        "--data.init_args.image_size",
        "[256, 256]",
        "--ckpt_path",
        ws.checkpoint("sm"),
        command="validate",
    )


@case("lightning", "validate with a Stage I artifact on a Stage III config", "ckpt_path", "stage-1")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
        "--ckpt_path",
        ws.artifact("sm"),
        command="validate",
    )


@case("lightning", "test an SM config with the FFDM artifact", "ckpt_path", "ffdm")
def _(ws, d):
    return fit(
        ws, d, "demo/stage1_sm.yaml", None, "--ckpt_path", ws.artifact("ffdm"), command="test"
    )


@case(
    "lightning",
    "a torch file that is not one of our checkpoints",
    "ckpt_path",
    "not a checkpoint of a mammofuse",
)
def _(ws, d):
    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)}}, d / "other.ckpt")
    return fit(ws, d, command="validate") + ["--ckpt_path", str(d / "other.ckpt")]


@case("lightning", "a truncated checkpoint", "ckpt_path", "cut.ckpt")
def _(ws, d):
    (d / "cut.ckpt").write_bytes(Path(ws.checkpoint("sm")).read_bytes()[:4000])
    return fit(ws, d, command="validate") + ["--ckpt_path", str(d / "cut.ckpt")]


@case("lightning", "a checkpoint that does not exist", "ckpt_path", "does not exist")
def _(ws, d):
    return fit(ws, d, command="test") + ["--ckpt_path", str(d / "none.ckpt")]


@case(
    "lightning", "a Stage II artifact as --ckpt_path of a Stage II config", "ckpt_path", "artifact"
)
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--ckpt_path",
        ws.artifact("stage2"),
        command="validate",
    )


def sm_folder(d: Path) -> Path:
    folder = d / "sm"
    folder.mkdir(exist_ok=True)
    return folder


def predict(
    ws: Workspace,
    d: Path,
    folder: Path,
    *extra: str,
    config: str = "demo/stage1_sm.yaml",
    ckpt: str | None = None,
) -> list[str]:
    return [
        "predict",
        "--config",
        str(ROOT / "configs" / config),
        "--data",
        str(ROOT / "configs" / "data" / "sm_folder.yaml"),
        "--data.init_args.sm_dir",
        str(folder),
        "--data.init_args.image_size",
        "[128, 128]",
        "--data.init_args.num_workers",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(d / "run"),
        "--ckpt_path",
        ckpt or ws.artifact("sm"),
        *extra,
    ]


def phantom_files(ws: Workspace, modality: str, count: int = 3) -> list[Path]:
    table = ws.manifest()
    return [ws.phantom / path for path in table[f"{modality}_path"][:count]]


@case(
    "lightning", "predict with an SM model on FFDM images", "FFDM", "not an SM", ".dcm", named=True
)
def _(ws, d):
    folder = sm_folder(d)
    for path in phantom_files(ws, "ffdm"):
        shutil.copy(path, folder / path.name)
    return predict(ws, d, folder)


@case("lightning", "predict with an SM model on CT images", "CT", ".dcm", named=True)
def _(ws, d):
    folder = sm_folder(d)
    for path in phantom_files(ws, "sm"):
        retag(shutil.copy(path, folder / path.name), Modality="CT")
    return predict(ws, d, folder)


@case(
    "lightning",
    "predict on FFDMs with --allow-modality-mismatch (the way out)",
    "allow_modality_mismatch",
    "FFDM",
    mode="warn",
)
def _(ws, d):
    folder = sm_folder(d)
    for path in phantom_files(ws, "ffdm", 2):
        shutil.copy(path, folder / path.name)
    return predict(ws, d, folder, "--allow-modality-mismatch")


@case(
    "lightning",
    "predict on a folder where 2 of 5 DICOMs have no .dcm name",
    "5 DICOM file(s) to read",
    named=True,
    mode="warn",
)
def _(ws, d):
    folder = sm_folder(d)
    for index, path in enumerate(phantom_files(ws, "sm", 5)):
        shutil.copy(path, folder / (path.name if index < 3 else path.stem))
    (folder / "notes.txt").write_text("read me")
    return predict(ws, d, folder)


@case("lightning", "predict on a folder of text files", "no DICOM file", "sm")
def _(ws, d):
    folder = sm_folder(d)
    (folder / "a.txt").write_text("x")
    return predict(ws, d, folder)


@case("lightning", "predict on a folder that does not exist", "sm_dir", "not a folder")
def _(ws, d):
    return predict(ws, d, d / "nowhere")


@case("lightning", "predict on a truncated DICOM", "truncated", ".dcm")
def _(ws, d):
    from dicom_factory import truncate

    folder = sm_folder(d)
    for path in phantom_files(ws, "sm", 2):
        truncate(shutil.copy(path, folder / path.name), 0.5)
    return predict(ws, d, folder)


@case("lightning", "predict on a tomosynthesis volume", "frames", ".dcm")
def _(ws, d):
    from dicom_factory import make_multiframe

    folder = sm_folder(d)
    for path in phantom_files(ws, "sm", 1):
        make_multiframe(shutil.copy(path, folder / path.name), 3)
    return predict(ws, d, folder)


@case("lightning", "predict with a BASE_UB artifact from an SM folder", "SM folder", "FFDM")
def _(ws, d):
    folder = sm_folder(d)
    for path in phantom_files(ws, "sm", 1):
        shutil.copy(path, folder / path.name)
    return predict(
        ws,
        d,
        folder,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("ffdm"),
        config="demo/upper_bound.yaml",
        ckpt=ws.artifact("ub"),
    )


@case("lightning", "predict on a blank SM", "blank", ".dcm")
def _(ws, d):
    folder = sm_folder(d)
    path = Path(shutil.copy(phantom_files(ws, "sm", 1)[0], folder / "blank.dcm"))
    pixels(path, np.full(stored(path).shape, 50, dtype=np.uint16))
    return predict(ws, d, folder)


@case(
    "lightning",
    "fit with a pathology_classes key that no lesion has",
    "pathology_classes",
    "unknown",
    named=True,
)
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage1_sm.yaml",
        None,
        "--data.init_args.pathology_classes",
        '{"malignant": 0, "unknown": 1}',
        "--model.init_args.num_classes",
        "2",
    )


@case("lightning", "fit with a constant training image", "row", "blank", named=True)
def _(ws, d):
    data = ws.copy(d)
    path = image_of(data, ws.pair("0", "train")[0], "sm")
    pixels(path, np.full(stored(path).shape, 99, dtype=np.uint16))
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "test with a NaN image in the test split", "row", "not finite", named=True)
def _(ws, d):
    from dicom_factory import make_float_pixels

    data = ws.copy(d)
    make_float_pixels(image_of(data, ws.pair("0", "test")[0], "sm"), (5, 5, 40, 40))
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data), command="test") + [
        "--ckpt_path",
        ws.checkpoint("sm"),
    ]


@case("lightning", "fit with a truncated test-split file", "row", "truncated", named=True)
def _(ws, d):
    from dicom_factory import truncate

    data = ws.copy(d)
    truncate(image_of(data, ws.pair("0", "test")[0], "sm"), 0.5)
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit with a bad pixel stream in a training pair", "row", "RLE", named=True)
def _(ws, d):
    from dicom_factory import breast_image, corrupt_compressed, write_mammogram

    data = ws.copy(d)
    pair, _ = ws.pair("0", "train")
    path = image_of(data, pair, "sm")
    old = pydicom.dcmread(path, stop_before_pixels=True)
    write_mammogram(
        path,
        breast_image(int(old.Rows), int(old.Columns), old.ImageLaterality),
        laterality=old.ImageLaterality,
        view=old.ViewPosition,
        compression="rle",
        patient_id=old.PatientID,
        study_uid=old.StudyInstanceUID,
    )
    corrupt_compressed(path)
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit Stage II with SM and FFDM swapped in a pair", "row", "swapped", named=True)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("0", "train")

    def swap(table):
        rows = table["pair_id"] == pair
        table.loc[rows, ["sm_path", "ffdm_path"]] = table.loc[rows, ["ffdm_path", "sm_path"]].values

    edit(data / "manifest.csv", swap)
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        ws.write_data_yaml(d / "data.yaml", data),
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
    )


@case(
    "lightning",
    "fit with boxes in the background outside the breast",
    "lesions.csv",
    "outside the breast crop",
    mode="warn",
)
def _(ws, d):
    data = ws.copy(d)
    pair, _ = ws.pair("1", "train")
    row = lesion_row(data, pair, "sm")

    def move(table):
        extra = table.loc[row - 2].copy()
        flip = pair.endswith(("RCC", "RMLO"))
        width = int(pydicom.dcmread(image_of(data, pair, "sm"), stop_before_pixels=True).Columns)
        x = 2 if flip else width - 8
        extra[["x1", "y1", "x2", "y2"]] = [str(x), "2", str(x + 6), "8"]
        table.loc[len(table)] = extra

    edit(data / "lesions.csv", move)
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit with every label-1 pair's boxes mirrored", "row", "mirrored")
def _(ws, d):
    data = ws.copy(d)

    def mirror(table):
        for index in table.index:
            path = image_of(data, table.loc[index, "pair_id"], table.loc[index, "modality"])
            width = int(pydicom.dcmread(path, stop_before_pixels=True).Columns)
            x1, x2 = float(table.loc[index, "x1"]), float(table.loc[index, "x2"])
            table.loc[index, ["x1", "x2"]] = [str(width - x2), str(width - x1)]

    edit(data / "lesions.csv", mirror)
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit with a missing lesion table", "no lesion table", named=True)
def _(ws, d):
    data = ws.copy(d)
    (data / "lesions.csv").unlink()
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit with a semicolon-separated manifest", mode="accept")
def _(ws, d):
    data = ws.copy(d)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    table.to_csv(data / "manifest.csv", sep=";", index=False)
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "fit with a Latin-1 manifest", "manifest.csv", "UTF-8")
def _(ws, d):
    data = ws.copy(d)
    text = (data / "manifest.csv").read_text().replace("PH000", "PHé00", 1)
    (data / "manifest.csv").write_bytes(text.encode("latin-1"))
    return fit(ws, d, data=ws.write_data_yaml(d / "data.yaml", data))


@case("lightning", "max_steps 0", "trainer.max_steps", "0", named=True)
def _(ws, d):
    return fit(ws, d) + ["--trainer.max_steps", "0"]


@case("lightning", "max_epochs 0", "trainer.max_epochs", "0")
def _(ws, d):
    return fit(ws, d) + ["--trainer.max_epochs", "0", "--trainer.max_steps", "-1"]


@case("lightning", "limit_train_batches 0", "trainer.limit_train_batches")
def _(ws, d):
    return fit(ws, d) + ["--trainer.limit_train_batches", "0"]


@case("lightning", "samples_per_epoch 0", "samples_per_epoch", ">= 1", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.samples_per_epoch", "0"]


@case("lightning", "image_size [0, 0]", "image_size", "at least", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.image_size", "[0, 0]"]


@case("lightning", "a negative image_size", "image_size", "at least", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.image_size", "[-128, 128]"]


@case("lightning", "image_size not divisible by the model's stride", "image_size", "divisible")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.image_size", "[100, 128]"]


@case("lightning", "num_classes 0", "num_classes", ">= 1", named=True)
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.num_classes", "0"]


@case("lightning", "a class index >= num_classes", "pathology_classes", "num_classes", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.pathology_classes", '{"malignant": 1}']


@case("lightning", "modalities [ct]", "modalities", "ct", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.modalities", "[ct]"]


@case("lightning", "modality ct", "modality", "ct")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.modality", "ct"]


@case("lightning", "an SM model on FFDM-only data", "modalities", "sm")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.modalities", "[ffdm]"]


@case("lightning", "Stage II with SM-only data", "modalities", "ffdm")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--data.init_args.modalities",
        "[sm]",
    )


@case("lightning", "no data config at all", "data", "data config", named=True)
def _(ws, d):
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "demo" / "stage1_sm.yaml"),
        *TINY,
        "--trainer.default_root_dir",
        str(d / "run"),
    ]


@case(
    "lightning",
    "pathology_classes with a pathology the table cannot have",
    "pathology_classes",
    "cancer",
)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.pathology_classes", '{"cancer": 0}']


@case("lightning", "a negative class index", "pathology_classes", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.pathology_classes", '{"malignant": -1}']


def _wrong_artifact(config: str, **inputs):
    def build(ws, d):
        extra = []
        for key, name in inputs.items():
            extra += [f"--model.init_args.{key}", ws.artifact(name)]
        return fit(ws, d, config, None, *extra)

    return build


for _config, _inputs, _words in [
    ("demo/stage2_distill.yaml", {"ffdm_teacher": "sm"}, ("ffdm_teacher", "on sm")),
    ("demo/stage2_distill.yaml", {"ffdm_teacher": "stage2"}, ("ffdm_teacher", "stage-2")),
    (
        "demo/stage2_distill.yaml",
        {"ffdm_teacher": "ffdm", "init_from": "stage2"},
        ("init_from", "stage-2"),
    ),
    (
        "demo/stage3_fused.yaml",
        {"sm_teacher": "ffdm", "partner": "stage2"},
        ("sm_teacher", "on ffdm"),
    ),
    ("demo/stage3_fused.yaml", {"sm_teacher": "sm", "partner": "sm"}, ("partner", "on sm")),
    ("demo/stage3_fused.yaml", {"sm_teacher": "sm", "partner": "stage3"}, ("partner", "stage-3")),
]:
    case(
        "lightning",
        f"wrong artifact kind: {', '.join(f'{k}={v}' for k, v in _inputs.items())}",
        *_words,
        named=True,
    )(_wrong_artifact(_config, **_inputs))


@case("lightning", "pretrained of a fused config: a Stage I artifact", "pretrained", "stage-1")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.pretrained",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
    )


@case("lightning", "a corrupt weights.safetensors", "weights.safetensors", "corrupt", named=True)
def _(ws, d):
    artifact = d / "artifact"
    shutil.copytree(ws.artifact("sm"), artifact)
    weights = artifact / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        str(artifact),
        "--model.init_args.partner",
        ws.artifact("stage2"),
    )


@case("lightning", "a CSV as pretrained", "pretrained", "lesions.csv", "not weights", named=True)
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.pretrained", str(ws.phantom / "lesions.csv")]


@case("lightning", "a folder as pretrained", "pretrained", "folder", named=True)
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.pretrained", str(ws.phantom)]


@case("lightning", "a pickled non-weights torch file as pretrained", "pretrained", "weights alone")
def _(ws, d):
    import torch

    torch.save({"model": Path("x")}, d / "model.pth")
    return fit(ws, d) + ["--model.init_args.pretrained", str(d / "model.pth")]


@case("lightning", "an empty validation split", "val split", "no pairs", named=True)
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.split_fractions", "[0.7, 0.0, 0.3]"]


@case("lightning", "limit_val_batches 0 in a fit", "trainer.limit_val_batches")
def _(ws, d):
    return fit(ws, d) + ["--trainer.limit_val_batches", "0"]


@case("lightning", "focal_alpha 2", "focal_alpha", "[0, 1]")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.focal_alpha", "2"]


@case("lightning", "focal_gamma -1", "focal_gamma", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.focal_gamma", "-1"]


@case("lightning", "learning_rate 0", "learning_rate", "> 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.optimizer.learning_rate", "0"]


@case("lightning", "weight_decay -1", "weight_decay", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.optimizer.weight_decay", "-1"]


@case("lightning", "warmup_steps -5", "warmup_steps", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.optimizer.warmup_steps", "-5"]


@case("lightning", "lr_schedule linear", "lr_schedule", "linear")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.optimizer.lr_schedule", "linear"]


@case("lightning", "fauc_max_fp 0", "fauc_max_fp", "> 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.evaluation.fauc_max_fp", "0"]


@case("lightning", "fauc_n_boot -1", "fauc_n_boot", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.evaluation.fauc_n_boot", "-1"]


@case("lightning", "batch_size 0", "batch_size", ">= 1")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.batch_size", "0"]


@case("lightning", "num_workers -1", "num_workers", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.num_workers", "-1"]


@case("lightning", "window auto", "window", "auto")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.window", "auto"]


@case("lightning", "margin 0.9", "margin", "0.9")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.margin", "0.9"]


@case("lightning", "margin -0.1", "margin", "-0.1")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.margin", "-0.1"]


@case("lightning", "split_fractions [0.5, 0.5, 0.5]", "split_fractions", "sum")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.split_fractions", "[0.5, 0.5, 0.5]"]


@case("lightning", "hit_min_distance 0", "hit_min_distance", "> 0")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.hit_min_distance", "0"]


@case("lightning", "seed -3", "seed", ">= 0")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.seed", "-3"]


@case("lightning", "predict_split everything", "predict_split", "everything")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.predict_split", "everything"]


@case("lightning", "on_bad_sample ignore", "on_bad_sample", "ignore")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.on_bad_sample", "ignore"]


@case("lightning", "architecture efficientdet_d9", "architecture", "efficientdet_d9")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.architecture", "efficientdet_d9"]


@case("lightning", "an unknown architecture_overrides key", "fpn_chanels")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.architecture_overrides.fpn_chanels", "32"]


@case("lightning", "manifest that does not exist", "manifest", "does not exist")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.manifest", str(d / "nowhere.csv")]


@case("lightning", "a lesion table that does not exist", "lesions", "does not exist")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.lesions", str(d / "nowhere.csv")]


@case("lightning", "a cache_dir that does not exist", "cache_dir", "not a folder")
def _(ws, d):
    return fit(ws, d) + ["--data.init_args.cache_dir", str(d / "nowhere")]


@case("lightning", "a cache made for another size", "cache", "image size")
def _(ws, d):
    return fit(ws, d) + [
        "--data.init_args.cache_dir",
        str(ws.cache),
        "--data.init_args.image_size",
        "[256, 256]",
    ]


@case("lightning", "projection conv5x5 (Stage II)", "projection", "conv5x5")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--model.init_args.projection",
        "conv5x5",
    )


@case("lightning", "levels [9] (Stage II)", "levels", "9")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--model.init_args.levels",
        "[9]",
    )


@case("lightning", "level_weights [-1, 1, 1] (Stage II)", "level_weights", "non-negative")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--model.init_args.level_weights",
        "[-1, 1, 1]",
    )


@case("lightning", "eps 0 (Stage II)", "eps", "> 0")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage2_distill.yaml",
        None,
        "--model.init_args.ffdm_teacher",
        ws.artifact("ffdm"),
        "--model.init_args.eps",
        "0",
    )


@case("lightning", "partner_features both (Stage III)", "partner_features", "both")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
        "--model.init_args.partner_features",
        "both",
    )


@case("lightning", "head_init zeros (Stage III)", "head_init", "zeros")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        ws.artifact("sm"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
        "--model.init_args.head_init",
        "zeros",
    )


@case("lightning", "an sm_teacher that does not exist (Stage III)", "sm_teacher", "does not exist")
def _(ws, d):
    return fit(
        ws,
        d,
        "demo/stage3_fused.yaml",
        None,
        "--model.init_args.sm_teacher",
        str(d / "nowhere"),
        "--model.init_args.partner",
        ws.artifact("stage2"),
    )


@case("lightning", "freeze_extractor without pretrained", "freeze_extractor", "pretrained")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.freeze_extractor", "true"]


@case("lightning", "a Stage III artifact as pretrained of a Stage I model", "pretrained", "head")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.pretrained", ws.artifact("stage3")]


@case("lightning", "an unknown config key", "learning_rat")
def _(ws, d):
    return fit(ws, d) + ["--model.init_args.learning_rat", "0.1"]


@case("lightning", "a stage config that does not exist", "nowhere.yaml")
def _(ws, d):
    return ["fit", "--config", str(ws.data_yaml), "--config", str(d / "nowhere.yaml")]


@case("lightning", "a test split with no pairs (test)", "test", "no pairs")
def _(ws, d):
    return fit(ws, d, command="test") + [
        "--ckpt_path",
        ws.checkpoint("sm"),
        "--data.init_args.split_fractions",
        "[0.9, 0.1, 0.0]",
    ]


# == evaluate ====================================================================================
def eval_files(ws: Workspace, d: Path) -> dict[str, Path]:
    """A copy of a real run's test predictions, ground truth and images."""
    source = ws.runs / "sm" / "predictions"
    if not (source / "test_predictions.parquet").is_file():
        run(
            [
                "test",
                "--config",
                str(ws.data_yaml),
                "--config",
                str(ROOT / "configs" / "demo" / "stage1_sm.yaml"),
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.default_root_dir",
                str(ws.runs / "sm"),
                "--ckpt_path",
                ws.checkpoint("sm"),
            ],
            check=True,
        )
    if not (source / "test_predictions.csv").is_file():  # the tables as a user exports them
        run(["evaluate", "--export-csv", str(source)], check=True)
    files = {}
    for name in ("predictions", "ground_truth", "images"):
        files[name] = Path(shutil.copy(source / f"test_{name}.csv", d / f"{name}.csv"))
    return files


def evaluate(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "evaluate",
        "--predictions",
        str(files["predictions"]),
        "--ground-truth",
        str(files["ground_truth"]),
        "--images",
        str(files["images"]),
        "--n-boot",
        "20",
        *extra,
    ]


def _eval_case(name, change, *expect, named=False, extra=()):
    def build(ws, d):
        files = eval_files(ws, d)
        change(files)
        return evaluate(files, *extra)

    case("evaluate", name, *expect, named=named)(build)


def _rows(name, transform):
    def change(files):
        table = pd.read_csv(files[name], dtype={"image_id": str})
        transform(table).to_csv(files[name], index=False)

    return change


_eval_case(
    "duplicate prediction rows",
    _rows("predictions", lambda t: pd.concat([t, t.head(20)])),
    "predictions.csv",
    "duplicate",
    named=True,
)
_eval_case(
    "duplicate ground-truth rows",
    _rows("ground_truth", lambda t: pd.concat([t, t])),
    "ground_truth.csv",
    "duplicate",
    named=True,
)
_eval_case(
    "a predictions file with only a header",
    _rows("predictions", lambda t: t.head(0)),
    "predictions.csv",
    "no",
    named=True,
)
_eval_case(
    "scores above 1",
    _rows("predictions", lambda t: t.assign(score=t["score"] + 1)),
    "predictions.csv",
    "score",
    named=True,
)
_eval_case(
    "negative coordinates",
    _rows("predictions", lambda t: t.assign(x1=t["x1"] - 1000)),
    "predictions.csv",
    "x1",
    named=True,
)
_eval_case(
    "NaN scores",
    _rows("predictions", lambda t: t.assign(score=t["score"].where(t.index != 0, np.nan))),
    "predictions.csv",
    "score",
)
_eval_case(
    "prediction ids that match no image",
    _rows("predictions", lambda t: t.assign(image_id="X" + t["image_id"])),
    "predictions.csv",
    "image_id",
)
_eval_case(
    "a missing score column",
    _rows("predictions", lambda t: t.drop(columns=["score"])),
    "predictions.csv",
    "score",
)
_eval_case("an empty images file", _rows("images", lambda t: t.head(0)), "images.csv", "no")
_eval_case(
    "a semicolon-separated predictions file",
    lambda files: pd.read_csv(files["predictions"]).to_csv(
        files["predictions"], sep=";", index=False
    ),
    "predictions.csv",
    "column",
)


@case("evaluate", "a predictions file that does not exist", "nowhere.csv")
def _(ws, d):
    files = eval_files(ws, d)
    files["predictions"] = d / "nowhere.csv"
    return evaluate(files)


@case("evaluate", "--min-distance -5", "min-distance", "-5")
def _(ws, d):
    return evaluate(eval_files(ws, d), "--min-distance", "-5")


@case("evaluate", "--n-boot -3", "n-boot", "-3")
def _(ws, d):
    return evaluate(eval_files(ws, d), "--n-boot", "-3")


@case("evaluate", "--max-fp 0", "max-fp", "0")
def _(ws, d):
    return evaluate(eval_files(ws, d), "--max-fp", "0")


@case("evaluate", "boxes with x2 < x1 in the ground truth", "ground_truth.csv", "x2")
def _(ws, d):
    files = eval_files(ws, d)
    _rows("ground_truth", lambda t: t.assign(x2=t["x1"] - 5))(files)
    return evaluate(files)


# == pipeline ====================================================================================
def pipeline_config(ws: Workspace, d: Path, **changes) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "pipeline" / "phantom.yaml").read_text())
    for key in ("data",):
        config[key] = str(ws.data_yaml)
    for stage in config["stages"].values():
        stage["config"] = str(ROOT / stage["config"])
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = d / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def pipeline(path: Path, d: Path, *extra: str) -> list[str]:
    return ["pipeline", "--config", str(path), "--run", str(d / "run"), *extra]


@case("pipeline", "stages as a list", "stages", "mapping", named=True)
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    stages = [{"name": name, **entry} for name, entry in config["stages"].items()]
    return pipeline(pipeline_config(ws, d, stages=stages), d)


@case("pipeline", "overrides as a list", "overrides", "mapping", named=True)
def _(ws, d):
    return pipeline(pipeline_config(ws, d, overrides=["trainer.max_epochs=1"]), d)


@case("pipeline", "a stage's overrides as a list", "overrides", "mapping")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage1_sm"]["overrides"] = ["trainer.max_epochs=1"]
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "a stage's inputs as a list", "inputs", "mapping")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage2"]["inputs"] = ["stage1_ffdm"]
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "a stage without a config", "stages.stage1_sm", "config")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage1_sm"] = {"inputs": {}}
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "a stage config that does not exist", "stages.stage1_sm.config", "not found")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage1_sm"]["config"] = str(d / "nowhere.yaml")
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "an input naming no stage", "inputs", "stage1_xx")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage2"]["inputs"]["ffdm_teacher"] = "stage1_xx"
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "a report row naming no stage", "report", "stage9")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, report={"Model_SM": "stage9"}), d)


@case("pipeline", "report as a list", "report", "mapping")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, report=["stage1_sm"]), d)


@case("pipeline", "a comparison of three rows", "comparisons", "two rows")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, comparisons=[["Fused", "Model_SM", "BASE_UB"]]), d)


@case("pipeline", "comparisons as a string", "comparisons", "list")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, comparisons="Fused vs Model_SM"), d)


@case("pipeline", "no data key", "data", "missing")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, data=None), d)


@case("pipeline", "a data config that does not exist", "data", "not found")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, data=str(d / "nowhere.yaml")), d)


@case("pipeline", "data as a mapping", "data", "path")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, data={"manifest": str(ws.phantom)}), d)


@case("pipeline", "an unknown top-level key", "stagess", "unknown")
def _(ws, d):
    return pipeline(pipeline_config(ws, d, stagess={}), d)


@case("pipeline", "a YAML syntax error", "pipeline.yaml", "YAML")
def _(ws, d):
    path = d / "pipeline.yaml"
    path.write_text("data: x\nstages:\n  a: [b\n")
    return pipeline(path, d)


@case("pipeline", "an empty pipeline file", "pipeline.yaml", "empty")
def _(ws, d):
    path = d / "pipeline.yaml"
    path.write_text("")
    return pipeline(path, d)


@case("pipeline", "a list as the whole pipeline file", "pipeline.yaml", "mapping")
def _(ws, d):
    path = d / "pipeline.yaml"
    path.write_text("- stage1_sm\n- stage2\n")
    return pipeline(path, d)


@case("pipeline", "a cycle in the inputs", "cycle")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"]["stage1_sm"]["inputs"] = {"pretrained": "stage3"}
    return pipeline(pipeline_config(ws, d, stages=config["stages"]), d)


@case("pipeline", "--from a stage that does not exist", "--from", "stage7")
def _(ws, d):
    return pipeline(pipeline_config(ws, d), d, "--from", "stage7")


@case("pipeline", "--only a stage that does not exist", "--only", "stage7")
def _(ws, d):
    return pipeline(pipeline_config(ws, d), d, "--only", "stage7")


@case("pipeline", "a pipeline config that does not exist", "nowhere.yaml", "not found")
def _(ws, d):
    return pipeline(d / "nowhere.yaml", d)


@case("pipeline", "--data that does not exist", "data", "not found")
def _(ws, d):
    return pipeline(pipeline_config(ws, d), d, "--data", str(d / "nowhere.yaml"))


@case("pipeline", "an override that sets a bad value", "focal_alpha", "[0, 1]")
def _(ws, d):
    return pipeline(
        pipeline_config(ws, d, overrides={"model.init_args.focal_alpha": 3}),
        d,
        "--only",
        "stage1_sm",
    )


@case("pipeline", "a stage name that is not a string", "stages", "1")
def _(ws, d):
    config = yaml.safe_load(pipeline_config(ws, d).read_text())
    config["stages"] = {1: config["stages"]["stage1_sm"]}
    return pipeline(pipeline_config(ws, d, stages=config["stages"], report={}, comparisons=None), d)


@case("pipeline", "a run folder that is a file", "run")
def _(ws, d):
    (d / "run").write_text("x")
    return pipeline(pipeline_config(ws, d), d, "--only", "stage1_sm")


# -- running and judging -------------------------------------------------------------------------
def message_lines(text: str, count: int = 3) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines() if not NOISE.match(line)]
    key = [
        i
        for i, line in enumerate(lines)
        if re.search(r"error|problem|warning|refus|Traceback|predict: \d+ file", line, re.I)
    ]
    start = key[0] if key else max(0, len(lines) - count)
    return lines[start : start + count]


def judge(item: Case, code: int, text: str) -> str:
    """``error``: refused, naming and saying (CLEAR), refused otherwise (UNCLEAR), or not
    refused (SILENT). ``warn``: went on and said so (CLEAR), went on silently (SILENT), or
    refused (UNCLEAR). ``accept`` (a form people have that must just work): went on (CLEAR)
    or refused (UNCLEAR)."""
    found = all(word.lower() in text.lower() for word in item.expect)
    traceback = "Traceback (most recent call last)" in text
    if item.mode == "accept":
        return "CLEAR" if code == 0 and found else "UNCLEAR"
    if item.mode == "warn":
        if code != 0:
            return "UNCLEAR"
        return "CLEAR" if found and not traceback else "SILENT"
    if code == 0:
        return "SILENT"
    return "CLEAR" if found and not traceback else "UNCLEAR"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "probe")
    parser.add_argument("--only", help="run the cases whose surface or name holds this text")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the commands run in their case's folder
    chosen = [
        item
        for item in CASES
        if not args.only or args.only.lower() in f"{item.surface} {item.name}".lower()
    ]
    if args.list:
        for item in chosen:
            print(f"{item.surface:10} {'*' if item.named else ' '} {item.name}")
        print(f"{len(chosen)} cases")
        return 0
    workspace = Workspace(args.out / "workspace")
    workspace.build()
    results = []
    for number, item in enumerate(chosen, 1):
        folder = args.out / "cases" / f"{number:03d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.monotonic()
        try:
            item.argv = item.build(workspace, folder)
            done = run(item.argv, cwd=folder)
            code, text = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired:
            code, text = -1, "timed out"
        except Exception as error:  # noqa: BLE001 - a case that cannot be built is reported
            code, text = -2, f"the probe could not build this case: {error!r}"
        (folder / "output.txt").write_text(text)
        verdict = judge(item, code, text)
        item.result = {
            "surface": item.surface,
            "case": item.name,
            "named": item.named,
            "mode": item.mode,
            "command": "python cli.py " + " ".join(item.argv),
            "exit": code,
            "message": message_lines(text),
            "verdict": verdict,
            "expect": list(item.expect),
            "seconds": round(time.monotonic() - started, 1),
        }
        results.append(item.result)
        print(
            f"[{number}/{len(chosen)}] {verdict:8} {item.surface:10} {item.name} "
            f"(exit {code}): {' | '.join(item.result['message'])[:160]}",
            flush=True,
        )
    counts = Counter(result["verdict"] for result in results)
    named = Counter(result["verdict"] for result in results if result["named"])
    per_surface = {
        surface: dict(Counter(r["verdict"] for r in results if r["surface"] == surface))
        for surface in dict.fromkeys(r["surface"] for r in results)
    }
    summary = {
        "cases": len(results),
        "counts": dict(counts),
        "named": dict(named),
        "per_surface": per_surface,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| surface | case | named | command | message (first lines) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        message = "<br>".join(line.replace("|", "\\|")[:200] for line in result["message"])
        command = result["command"].replace(str(args.out), "OUT").replace("|", "/")
        mark = "yes" if result["named"] else ""
        lines.append(
            f"| {result['surface']} | {result['case']} | {mark} | `{command}` | "
            f"{message} | {result['verdict']} |"
        )
    (args.out / "probe.md").write_text("\n".join(lines) + "\n")
    print(
        f"{len(results)} cases: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "; named in the issue: "
        + ", ".join(f"{k} {v}" for k, v in sorted(named.items()))
    )
    for surface, verdicts in per_surface.items():
        print(f"  {surface}: {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
