"""What the phantom writes besides the images: the complementarity table, the data card
(``README.md``) and the contact sheet (``contact_sheet.png``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.pixels import apply_voi_lut

from common.defaults import MODALITIES
from data_tools.phantom.anatomy import Grid
from data_tools.phantom.cohort import DENSITIES, PhantomSettings
from data_tools.phantom.output import RING_GAP_MM, RING_WIDTH_MM
from data_tools.phantom.render import LOOKS

DENSITY_GROUPS = {
    **{d: (d,) for d in DENSITIES},
    "A/B": ("A", "B"),
    "C/D": ("C", "D"),
    "all": DENSITIES,
}

CNR_DEFINITION = f"""\
CNR = (mean over the lesion mask - mean over the ring) / standard deviation over the ring,
computed by the generator on each image's final stored pixel values, taken in the
MONOCHROME2 sense (a MONOCHROME1 value v counts as 2^BitsStored - 1 - v; CNR does not depend
on the window). Lesion mask: a mass's body where its thickness is at least half its peak
(spicules excluded); a cluster's specks (pixels whose speck signal is at least half the
brightest speck's, before the SM's blur). Ring: breast pixels
{RING_GAP_MM:g}-{RING_GAP_MM + RING_WIDTH_MM:g} mm outside the rectangle that holds the lesion,
away from any other lesion or artefact. Medians over lesions; the ratio is SM / FFDM of the
medians."""


def cnr_summary(lesions: pd.DataFrame) -> pd.DataFrame:
    """Median CNR per lesion type, density group and modality, and the SM / FFDM ratio.

    Index (lesion_type, density group); columns ``lesions``, ``ffdm``, ``sm``, ``sm_over_ffdm``.
    """
    rows = []
    for lesion_type in ("mass", "calcification"):
        of_type = lesions[lesions["lesion_type"] == lesion_type]
        for group, members in DENSITY_GROUPS.items():
            chosen = of_type[of_type["density"].isin(members)]
            medians = {m: chosen.loc[chosen["modality"] == m, "cnr"].median() for m in MODALITIES}
            rows.append(
                {
                    "lesion_type": lesion_type,
                    "density": group,
                    "lesions": int(chosen["lesion_id"].nunique()),
                    "ffdm": medians["ffdm"],
                    "sm": medians["sm"],
                    "sm_over_ffdm": medians["sm"] / medians["ffdm"],
                }
            )
    return pd.DataFrame(rows).set_index(["lesion_type", "density"])


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if np.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def data_card(
    settings: PhantomSettings,
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    artefacts: pd.DataFrame,
    command: str,
) -> str:
    """The text of ``README.md``: what was generated, how, and what it measures."""
    grids = {m: Grid.for_modality(m, settings.scale, "L") for m in MODALITIES}
    per_lesion = lesions[lesions["modality"] == "sm"]
    density_rows = []
    for density in DENSITIES:
        pairs = manifest[manifest["density"] == density]
        found = per_lesion[per_lesion["density"] == density]
        density_rows.append(
            [
                density,
                len(pairs),
                pairs["patient_id"].nunique(),
                int(pairs["label"].sum()),
                int((found["lesion_type"] == "mass").sum()),
                int((found["lesion_type"] == "calcification").sum()),
            ]
        )
    kind_rows = [
        [lesion_type, subtype, pathology, len(group)]
        for (lesion_type, subtype, pathology), group in per_lesion.groupby(
            ["lesion_type", "subtype", "pathology"], sort=True
        )
    ]
    summary = cnr_summary(lesions)
    cnr_rows = [
        [row.Index[0], row.Index[1], int(row.lesions), row.ffdm, row.sm, row.sm_over_ffdm]
        for row in summary.itertuples()
    ]
    by_subtype = lesions.assign(
        group=np.where(lesions["density"].isin(["C", "D"]), "C/D", "A/B")
    ).pivot_table(index=["subtype", "group"], columns="modality", values="cnr", aggfunc="median")
    subtype_rows = [
        [subtype, group, row["ffdm"], row["sm"]] for (subtype, group), row in by_subtype.iterrows()
    ]
    artefact_counts = artefacts["kind"].value_counts().to_dict() if len(artefacts) else {}
    knobs = [
        [name, f"{value:g}" if isinstance(value, float) else str(value)]
        for name, value in asdict(settings).items()
    ]
    image_rows = [
        [
            m.upper(),
            f"{g.rows} x {g.cols}",
            f"{g.spacing:.4g}",
            LOOKS[m].bits_stored,
            "MONOCHROME1 in "
            + f"{(manifest['ffdm_photometric'] == 'MONOCHROME1').mean():.0%}"
            + " of pairs, else MONOCHROME2"
            if m == "ffdm"
            else "MONOCHROME2",
        ]
        for m, g in grids.items()
    ]
    return f"""# mammofuse phantom: synthetic paired FFDM / SM mammograms

Written by `{command}`. Entirely synthetic: no patient data; ids are made up.

Each pair is one breast and view seen by two modalities: a full-field digital mammogram
(FFDM) and a synthetic 2D mammogram (SM) as synthesised from tomosynthesis. One physical scene
(breast outline, glandular tissue in overlapping slabs, lesions, in millimetres) is rendered
onto each modality's own pixel grid, so a lesion sits at corresponding places in both. The
two renderings differ the way Section 3 of the paper finds FFDM and SM to differ: overlapping
dense tissue hides masses in the FFDM and much less in the SM (tomosynthesis removes most
overlap); calcifications are sharp and bright in the FFDM, blurred and faint in the SM; and
the SM alone shows pseudo-calcifications and pseudo-distortions (false-positive traps).

## Contents

- {len(manifest)} pairs from {manifest["patient_id"].nunique()} patients, one exam each with
  2-4 views (CC and MLO, left and right); {int(manifest["label"].sum())} pairs hold a
  malignant lesion (label 1). A breast's lesions show in each of its views, so splits must
  be by patient (D1's manifest splits 60/10/30 by patient; this folder is not split).
- `manifest.csv`, `lesions.csv`: D1's manifest format. Lesion boxes are xyxy in each
  modality's own stored pixels (before any flip); `lesion_id` links the SM and FFDM rows
  of a lesion; extra columns: `lesion_type`, `subtype`, `density`, `cnr`.
- `artefacts.csv`: the SM's artefacts (not lesions, never in `lesions.csv`), boxes in SM
  pixels: {artefact_counts or "none"}.
- `images/<pair_id>_sm.dcm`, `images/<pair_id>_ffdm.dcm`: Digital Mammography X-Ray Image
  (For Presentation), modality MG, ImageLaterality, ViewPosition, PixelSpacing.
  Orientation: a right breast's chest wall on the image's right edge, a left breast's on
  the left (the reader flips R images).
- `contact_sheet.png`: a few pairs, SM left and FFDM right; red boxes malignant, yellow
  benign, dashed cyan the SM's artefacts.

{
        markdown_table(
            ["modality", "rows x columns", "pixel spacing (mm)", "BitsStored", "photometric"],
            image_rows,
        )
    }

Per density (BI-RADS A fatty .. D extremely dense; one density per patient):

{
        markdown_table(
            ["density", "pairs", "patients", "label 1", "masses", "calcification clusters"],
            density_rows,
        )
    }

Lesions (counted once per pair and view; each has an SM row and an FFDM row):

{markdown_table(["type", "subtype", "pathology", "count"], kind_rows)}

## Knobs and seed

{markdown_table(["knob", "value"], knobs)}

## Scale and the hit rule

The images are written at scale {settings.scale:g} of the full-size detectors (FFDM
4096 x 3328 at 0.07 mm, SM 2457 x 1996 at 0.1 mm). The paper's hit rule (a detection hits
a lesion when its centre lies within max(half the box diagonal, 100 px) of the lesion's
centre) is defined on full-size images, so its floor scales by the same factor:
**hit_min_distance = {settings.hit_min_distance:g} px** in this data set's pixels. A data
config for this folder must set it; with 100 px almost every detection near a lesion would
count as a hit.

## Complementarity, measured

{CNR_DEFINITION}

{markdown_table(["lesion type", "density", "lesions", "FFDM CNR", "SM CNR", "SM / FFDM"], cnr_rows)}

By subtype (median CNR; C/D dense, A/B not):

{markdown_table(["subtype", "density", "FFDM CNR", "SM CNR"], subtype_rows)}
"""


# ---------------------------------------------------------------------------------------------
# Contact sheet


def read_for_display(path: Path) -> np.ndarray:
    """A DICOM file's pixels through its window, MONOCHROME1 inverted, as 0..1."""
    dataset = pydicom.dcmread(path)
    values = apply_voi_lut(dataset.pixel_array, dataset).astype(np.float32)
    values = (values - values.min()) / max(float(values.max() - values.min()), 1e-6)
    return 1 - values if dataset.PhotometricInterpretation == "MONOCHROME1" else values


def pick_examples(
    manifest: pd.DataFrame, lesions: pd.DataFrame, artefacts: pd.DataFrame, count: int = 6
) -> list[str]:
    """Pair ids showing: masses in dense and fatty breasts, both calcification kinds, and
    the SM's artefacts."""
    sm = lesions[lesions["modality"] == "sm"].merge(manifest[["pair_id"]], on="pair_id")
    dense = sm["density"].isin(["C", "D"])
    wishes = [
        sm[dense & (sm["subtype"] == "spiculated")],
        sm[dense & (sm["subtype"] == "round")],
        sm[~dense & (sm["lesion_type"] == "mass")],
        sm[sm["subtype"] == "pleomorphic"],
        sm[sm["subtype"] == "punctate"],
        artefacts[~artefacts["pair_id"].isin(sm["pair_id"])],
    ]
    chosen: list[str] = []
    for wish in wishes:
        for pair_id in wish["pair_id"]:
            if pair_id not in chosen:
                chosen.append(pair_id)
                break
    for pair_id in manifest["pair_id"]:
        if len(chosen) >= count:
            break
        if pair_id not in chosen:
            chosen.append(pair_id)
    return chosen[:count]


def contact_sheet(
    out_dir: Path,
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    artefacts: pd.DataFrame,
    path: Path,
    count: int = 6,
) -> list[str]:
    """Draw a few pairs side by side (SM left, FFDM right, as in the paper's figures), each
    cropped to the breast, with the lesion and artefact boxes; return the pair ids shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    chosen = pick_examples(manifest, lesions, artefacts, count)
    columns = 2
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(
        rows, 2 * columns, figsize=(4.2 * columns * 2, 5.0 * rows), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    by_pair = manifest.set_index("pair_id")
    for slot, pair_id in enumerate(chosen):
        pair = by_pair.loc[pair_id]
        kinds = lesions[(lesions["pair_id"] == pair_id) & (lesions["modality"] == "sm")]
        described = (
            ", ".join(f"{r.subtype} {r.lesion_type} ({r.pathology})" for r in kinds.itertuples())
            or "no lesion"
        )
        for side, modality in enumerate(MODALITIES):
            axis = axes[slot // columns, (slot % columns) * 2 + side]
            image = read_for_display(out_dir / pair[f"{modality}_path"])
            ys, xs = np.nonzero(image > 0.03)
            top, left = max(0, ys.min() - 4), max(0, xs.min() - 4)
            axis.imshow(image[top : ys.max() + 5, left : xs.max() + 5], cmap="gray", vmin=0, vmax=1)
            boxes = lesions[(lesions["pair_id"] == pair_id) & (lesions["modality"] == modality)]
            for box in boxes.itertuples():
                colour = "red" if box.pathology == "malignant" else "yellow"
                axis.add_patch(
                    Rectangle(
                        (box.x1 - left - 0.5, box.y1 - top - 0.5),
                        box.x2 - box.x1,
                        box.y2 - box.y1,
                        fill=False,
                        edgecolor=colour,
                        linewidth=1.2,
                    )
                )
            shown = artefacts[
                (artefacts["pair_id"] == pair_id) & (artefacts["modality"] == modality)
            ]
            for box in shown.itertuples():
                axis.add_patch(
                    Rectangle(
                        (box.x1 - left - 0.5, box.y1 - top - 0.5),
                        box.x2 - box.x1,
                        box.y2 - box.y1,
                        fill=False,
                        edgecolor="cyan",
                        linewidth=1.0,
                        linestyle="--",
                    )
                )
            if side == 0:
                axis.set_title(f"SM  {pair_id}  density {pair['density']}", fontsize=9)
            else:
                axis.set_title(f"FFDM  {described}", fontsize=8)
    figure.suptitle(
        "mammofuse phantom: SM (left) and FFDM (right) of the same breast; red "
        "malignant, yellow benign, dashed cyan SM artefact (no lesion)",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return chosen
