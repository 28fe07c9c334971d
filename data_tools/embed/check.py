"""``python cli.py adapt embed-check``: draw a sample of the boxes ``adapt embed`` wrote (left)
beside their mirror images x' = Columns - x (right), so a user sees whether the ROI frame of
their copy of EMBED was read right (see ``data_tools.embed.adapter``, "ROIs"). Each image is
titled with the rule that placed its boxes (``frame_rule`` in ``lesions.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from data_tools.embed.adapter import SUMMARY_FILE
from datamodules.manifest import ManifestError, read_table

CHECK_FILE = "roi_check.png"


def _mirror(boxes: np.ndarray, width: float) -> np.ndarray:
    mirrored = boxes.copy()
    mirrored[:, 0], mirrored[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return mirrored


def _sample_images(manifest, lesions, samples: int, seed: int) -> list[tuple[str, str]]:
    """(pair_id, modality) of up to ``samples`` images with boxes, alternating R and L (R first,
    where the two conventions differ under the laterality rule), in a seeded order."""
    laterality = dict(zip(manifest["pair_id"], manifest["laterality"]))
    keys = sorted(set(zip(lesions["pair_id"], lesions["modality"])))
    rng = np.random.default_rng(seed)
    by_side = {side: [k for k in keys if laterality.get(k[0]) == side] for side in ("R", "L")}
    for side in by_side:
        by_side[side] = [by_side[side][i] for i in rng.permutation(len(by_side[side]))]
    chosen = []
    while len(chosen) < samples and (by_side["R"] or by_side["L"]):
        for side in ("R", "L"):
            if by_side[side] and len(chosen) < samples:
                chosen.append(by_side[side].pop(0))
    return chosen


def render_check(
    out_dir: str | os.PathLike,
    png: str | os.PathLike | None = None,
    samples: int = 8,
    seed: int = 0,
    max_height: int = 384,
) -> tuple[Path, list[dict]]:
    """Draw a sample of the written boxes (left) and their mirror images x' = Columns - x
    (right) on their images; return the PNG's path and what was drawn (pair id, modality,
    laterality, image size, both box sets in stored pixels)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from datamodules.dicom import read_dicom, to_unit_range

    out_dir = Path(out_dir)
    manifest = read_table(out_dir / "manifest.csv")
    lesions = read_table(out_dir / "lesions.csv")
    if not len(lesions):
        raise ValueError(f"{out_dir / 'lesions.csv'}: no lesions to draw")
    conventions = {}
    if (out_dir / SUMMARY_FILE).is_file():
        conventions = json.loads((out_dir / SUMMARY_FILE).read_text()).get("conventions", {})
    frame = conventions.get("roi_frame", "?")
    other = {"chest-wall-left": "stored", "stored": "chest-wall-left"}.get(frame, "?")
    chosen = _sample_images(manifest, lesions, samples, seed)
    rows = manifest.set_index("pair_id")
    figure, axes = plt.subplots(len(chosen), 2, figsize=(7, 3.6 * len(chosen)), squeeze=False)
    drawn = []
    for (pair_id, modality), (left, right) in zip(chosen, axes):
        path = Path(rows.loc[pair_id, f"{modality}_path"])
        path = path if path.is_absolute() else out_dir / path
        pixels, dataset = read_dicom(path)
        image = to_unit_range(pixels, dataset, window="dicom")
        height, width = image.shape
        scale = min(1.0, max_height / height)
        shown = cv2.resize(
            image,
            (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA,
        )
        mine = lesions[(lesions["pair_id"] == pair_id) & (lesions["modality"] == modality)]
        written = mine[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
        mirrored = _mirror(written, width)
        laterality = rows.loc[pair_id, "laterality"]
        view = rows.loc[pair_id, "view"]
        # named by the EMBED metadata row, so the picture carries no patient or exam id
        source_row = rows.loc[pair_id].get(f"{modality}_metadata_row", "?")
        rules = sorted(set(mine["frame_rule"].dropna())) if "frame_rule" in mine else []
        label = f"metadata row {source_row}: {modality} {laterality} {view}"
        if rules:
            label += f" ({', '.join(map(str, rules))})"
        for axis, boxes, colour, title in (
            (left, written, "lime", f"as written (--roi-frame {frame})"),
            (right, mirrored, "orange", "mirrored: x' = Columns - x"),
        ):
            axis.imshow(shown, cmap="gray", vmin=0, vmax=1)
            for x1, y1, x2, y2 in boxes * scale:
                axis.add_patch(
                    Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=1.5)
                )
            axis.set_title(f"{label}\n{title}", fontsize=7)
            axis.set_axis_off()
        drawn.append(
            {
                "pair_id": pair_id,
                "modality": modality,
                "laterality": laterality,
                "size": (height, width),
                "written": written,
                "mirrored": mirrored,
            }
        )
    figure.suptitle(
        "Which column puts the boxes on the lesions? Left: keep this run. Right for every "
        f"PNG-frame image: rerun with --roi-frame {other}.\nRight for only some images: try "
        "--orientation-from pixels (dcm_roi_coords boxes are never mirrored).",
        fontsize=8,
    )
    figure.tight_layout()
    png = Path(png) if png is not None else out_dir / CHECK_FILE
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png, drawn


def main(argv: list[str]) -> int:
    """``python cli.py adapt embed-check --out DIR``: draw sample boxes in both orientations."""
    parser = argparse.ArgumentParser(
        prog="python cli.py adapt embed-check",
        description="Draw a sample of the boxes `adapt embed` wrote (left) beside their mirror "
        "images (right), to see which ROI convention this copy of EMBED follows.",
    )
    parser.add_argument("--out", required=True, help="the folder `adapt embed` wrote")
    parser.add_argument("--png", help=f"where to write the PNG (default OUT/{CHECK_FILE})")
    parser.add_argument("--samples", type=int, default=8, help="images to draw (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        png, drawn = render_check(args.out, args.png, args.samples, args.seed)
    except (ManifestError, FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"wrote {png} ({len(drawn)} images, written boxes left, mirrored right)")
    return 0
