"""The synthetic paired phantom: files, determinism, boxes, the designed complementarity, and
reading its DICOMs through the package's reader."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.phantom import (
    Grid,
    PhantomSettings,
    cnr_summary,
    contrast_to_noise,
    generate,
    generate_pair,
    lesion_box,
    lesion_signal,
    main,
    plan_pairs,
    render_pair,
)
from data_tools.phantom.lesions import ClusterShape
from datamodules.dicom import load_image
from datamodules.manifest import load_tables, validate

# Every pair holds a lesion, half of the FFDMs are MONOCHROME1: small, but all cases occur.
SMALL = PhantomSettings(
    pairs=16, seed=11, positive_share=1.0, benign_share=0.7, monochrome1_share=0.5
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate(out, SMALL, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def tables(folder) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_csv(folder / f"{name}.csv", dtype={"pair_id": str})
        for name in ("manifest", "lesions", "artefacts")
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_files_whatever_the_worker_count(folder, tmp_path):
    again = tmp_path / "again"
    generate(again, SMALL, workers=1, progress=False)
    files = sorted(p.relative_to(folder) for p in (folder / "images").glob("*.dcm"))
    assert len(files) == 2 * SMALL.pairs
    for name in [
        *files,
        Path("manifest.csv"),
        Path("lesions.csv"),
        Path("artefacts.csv"),
        Path("README.md"),
    ]:
        assert digest(folder / name) == digest(again / name), name
    other = PhantomSettings(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    pair = plan_pairs(other)[0]
    first = render_pair(plan_pairs(SMALL)[0], SMALL)[0]["ffdm"].display
    assert not np.array_equal(first, render_pair(pair, other)[0]["ffdm"].display)


def test_dicom_files_are_mammograms_of_both_sizes_and_orientations(folder, tables):
    manifest = tables["manifest"]
    expected = {"ffdm": (512, 416, 0.56, 14), "sm": (307, 250, 0.8, 12)}
    photometrics = set()
    for row in manifest.itertuples():
        for modality, (rows, cols, spacing, bits) in expected.items():
            ds = pydicom.dcmread(folder / getattr(row, f"{modality}_path"))
            assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
            assert (ds.Modality, ds.ImageLaterality, ds.ViewPosition) == (
                "MG",
                row.laterality,
                row.view,
            )
            assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored) == (rows, cols, 16, bits)
            assert float(ds.PixelSpacing[0]) == pytest.approx(spacing)
            assert float(ds.ImagerPixelSpacing[1]) == pytest.approx(spacing)
            assert ds.PatientID == row.patient_id and "PatientBirthDate" not in ds
            photometrics.add(ds.PhotometricInterpretation)
            pixels = ds.pixel_array.astype(float)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                pixels = 2**bits - 1 - pixels
            assert pixels.max() < 2**bits
            # Chest wall on the image's left edge for L, right edge for R; air on the other.
            chest, far = (pixels[:, 0], pixels[:, -1])
            if row.laterality == "R":
                chest, far = far, chest
            assert (chest > 0).mean() > 0.3 and (far > 0).mean() == 0
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_tables_follow_the_manifest_format(folder, tables):
    manifest, lesions = tables["manifest"], tables["lesions"]
    validate(manifest, lesions)
    loaded, loaded_lesions, _ = load_tables(folder / "manifest.csv")
    assert len(loaded) == SMALL.pairs and len(loaded_lesions) == len(lesions)
    views = manifest.groupby("patient_id")["pair_id"].count()
    assert (
        views.between(2, 4).all()
        and (manifest.groupby("patient_id")["exam_id"].nunique() == 1).all()
    )
    assert manifest["annotated"].all()
    both = lesions.groupby("lesion_id")["modality"].agg(sorted)
    assert (both.map(tuple) == ("ffdm", "sm")).all()
    pathology = {
        "round": "benign",
        "spiculated": "malignant",
        "punctate": "benign",
        "pleomorphic": "malignant",
    }
    assert (lesions["subtype"].map(pathology) == lesions["pathology"]).all()
    malignant = set(lesions.loc[lesions["pathology"] == "malignant", "pair_id"])
    assert (manifest["label"] == manifest["pair_id"].isin(malignant).astype(int)).all()
    assert set(tables["artefacts"]["modality"]) <= {"sm"}


def test_data_card_and_contact_sheet(folder):
    card = (folder / "README.md").read_text()
    assert "hit_min_distance = 12.5 px" in card and "CNR = (mean over the lesion mask" in card
    assert (folder / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_box_covers_its_lesion_tightly_and_both_boxes_sit_on_one_lesion():
    sides = {"mass": [], "calcification": []}
    for pair in plan_pairs(SMALL):
        renderings, findings = render_pair(pair, SMALL)
        centres = {}
        for modality, rendering in renderings.items():
            grid = rendering.grid
            for number, finding in enumerate(findings):
                if finding.artefact and modality == "ffdm":
                    assert rendering.boxes[number] is None  # SM artefacts only
                    continue
                box = lesion_box(finding.shape, grid)
                assert rendering.boxes[number] == box
                footprint = lesion_signal(finding.shape, grid)
                rows, cols = np.nonzero(footprint.signal > 0.1 * footprint.signal.max())
                rows = rows + footprint.window[0].start
                cols = cols + footprint.window[1].start
                x1, y1, x2, y2 = box
                where = (pair.pair_id, modality, number)
                # Covers: every pixel of the rendered lesion lies in the box ...
                assert x1 <= cols.min() and cols.max() + 1 <= x2, where
                assert y1 <= rows.min() and rows.max() + 1 <= y2, where
                # ... and tightly: at most 2.5 mm (plus the SM's blur) and a pixel to spare.
                blurred = modality == "sm" and isinstance(finding.shape, ClusterShape)
                slack = (2.5 + (1.75 if blurred else 0.0)) / grid.spacing + 1
                gaps = (cols.min() - x1, x2 - cols.max() - 1, rows.min() - y1, y2 - rows.max() - 1)
                assert max(gaps) <= slack, (where, gaps)
                if not finding.artefact:
                    centres.setdefault(number, []).append(box_centre_mm(box, grid))
                    if modality == "ffdm":
                        sides[finding.plan.lesion_type].append(max(x2 - x1, y2 - y1))
        for same_lesion in centres.values():
            assert math.dist(*same_lesion) < 1.5  # mm: one scene on two grids
    # Sizes that survive the detectors' resize (about 320 x 256): in 1/8 FFDM pixels.
    assert len(sides["mass"]) >= 8 and len(sides["calcification"]) >= 8
    assert 14 <= min(sides["mass"]) and max(sides["mass"]) <= 48
    assert 10 <= min(sides["calcification"]) and max(sides["calcification"]) <= 38


def box_centre_mm(box, grid: Grid) -> tuple[float, float]:
    """(u, v) mm of a box's centre, undoing the grid's orientation."""
    x = (box[0] + box[2]) / 2 * grid.spacing
    u = x if grid.laterality == "L" else grid.width_mm - x
    return u, (box[1] + box[3]) / 2 * grid.spacing - grid.height_mm / 2


def test_calcification_specks_are_2_to_3_ffdm_pixels_wide():
    ffdm = Grid.for_modality("ffdm", SMALL.scale, "L")
    widths = []
    for pair in plan_pairs(SMALL)[:8]:
        for finding in render_pair(pair, SMALL)[1]:
            if finding.plan is not None and finding.plan.lesion_type == "calcification":
                widths += list(2 * finding.shape.radii / ffdm.spacing)
    assert len(widths) >= 10 and 1.5 <= min(widths) and max(widths) <= 3.1


def test_designed_complementarity_in_contrast_to_noise(tmp_path):
    """Masses: higher CNR in SM than in FFDM in dense breasts; calcifications: higher in FFDM."""
    sample = PhantomSettings(
        pairs=60, seed=3, positive_share=1.0, benign_share=0.6, density_mix=(0.0, 0.2, 0.5, 0.3)
    )
    (tmp_path / "images").mkdir()
    rows = []
    for pair in plan_pairs(sample):
        rows += generate_pair((pair, sample, str(tmp_path)))["lesions"]
    lesions = pd.DataFrame(rows)
    summary = cnr_summary(lesions)
    dense_masses = summary.loc[("mass", "C/D")]
    calcifications = summary.loc[("calcification", "all")]
    assert dense_masses["lesions"] >= 25 and calcifications["lesions"] >= 25
    assert dense_masses["sm"] / dense_masses["ffdm"] > 1.5
    assert calcifications["ffdm"] / calcifications["sm"] > 2.0
    # Faint, not gone: the SM keeps a trace of the calcifications.
    assert calcifications["sm"] > 1.0
    # Lesion by lesion, too.
    paired = lesions.pivot_table(
        index=["lesion_id", "lesion_type", "density"], columns="modality", values="cnr"
    ).reset_index()
    dense = paired[(paired["lesion_type"] == "mass") & paired["density"].isin(["C", "D"])]
    assert (dense["sm"] > dense["ffdm"]).mean() > 0.8
    calcs = paired[paired["lesion_type"] == "calcification"]
    assert (calcs["ffdm"] > calcs["sm"]).mean() > 0.9


def test_less_calcification_signal_in_sm_lowers_its_cnr(tmp_path):
    (tmp_path / "images").mkdir()
    medians = []
    for visibility in (0.2, 0.8):
        sample = PhantomSettings(
            pairs=16, seed=9, positive_share=1.0, benign_share=1.0, sm_calc_visibility=visibility
        )
        rows = []
        for pair in plan_pairs(sample):
            rows += generate_pair((pair, sample, str(tmp_path)))["lesions"]
        lesions = pd.DataFrame(rows)
        medians.append(
            lesions.query("lesion_type == 'calcification' and modality == 'sm'")["cnr"].median()
        )
    assert medians[1] > 2 * medians[0]


def test_reader_maps_boxes_onto_bright_lesion_pixels(folder, tables):
    """Through datamodules.dicom: flip, inversion, crop and resize put each box on its lesion
    (masses in SM, calcifications in FFDM, where they are clearly visible)."""
    manifest = tables["manifest"].set_index("pair_id")
    lesions = tables["lesions"]
    visible = lesions[
        ((lesions["modality"] == "sm") & (lesions["lesion_type"] == "mass"))
        | ((lesions["modality"] == "ffdm") & (lesions["lesion_type"] == "calcification"))
    ]
    assert len(visible) >= 10
    flips = set()
    for row in visible.itertuples():
        pair = manifest.loc[row.pair_id]
        image, geometry = load_image(
            folder / pair[f"{row.modality}_path"], (320, 256), laterality=pair["laterality"]
        )
        flips.add(geometry.flip)
        x1, y1, x2, y2 = geometry.to_input(np.array([[row.x1, row.y1, row.x2, row.y2]]))[0]
        inside = image[int(y1) : math.ceil(y2), int(x1) : math.ceil(x2)]
        ring = np.zeros(image.shape, bool)
        ring[max(0, int(y1) - 6) : math.ceil(y2) + 6, max(0, int(x1) - 6) : math.ceil(x2) + 6] = (
            True
        )
        ring[int(y1) : math.ceil(y2), int(x1) : math.ceil(x2)] = False
        ring &= image > 0.05
        if row.lesion_type == "mass":
            assert inside.mean() > image[ring].mean() + 0.03, row.lesion_id
        else:
            assert inside.max() > np.percentile(image[ring], 99) + 0.1, row.lesion_id
    assert flips == {True, False}


def test_contrast_to_noise_definition():
    values = np.zeros((20, 20))
    values[::2] = 2.0  # ring: mean 1, std 1
    lesion = np.zeros_like(values, bool)
    lesion[8:12, 8:12] = True
    values[lesion] = 4.0
    ring = ~lesion
    expected = (4.0 - values[ring].mean()) / values[ring].std()
    assert contrast_to_noise(values, lesion, ring) == pytest.approx(expected)
    assert math.isnan(contrast_to_noise(values, np.zeros_like(lesion), ring))


@settings(max_examples=25, deadline=None)
@given(pairs=st.integers(2, 60), seed=st.integers(0, 10_000))
def test_cohort_has_exactly_the_pairs_asked_for_with_2_to_4_views_per_exam(pairs, seed):
    plans = plan_pairs(PhantomSettings(pairs=pairs, seed=seed))
    assert len(plans) == pairs and [p.index for p in plans] == list(range(pairs))
    views = pd.Series([p.patient_id for p in plans]).value_counts()
    assert views.between(2, 4).all()
    assert len({p.pair_id for p in plans}) == pairs


def test_knobs_shape_the_cohort():
    plans = plan_pairs(
        PhantomSettings(pairs=3000, seed=2, positive_share=0.3, density_mix=(0.0, 0.0, 1.0, 1.0))
    )
    labels = np.array([p.label for p in plans])
    assert abs(labels.mean() - 0.3) < 0.04
    assert {p.density for p in plans} == {"C", "D"}


def test_invalid_knobs_are_refused_by_name(tmp_path, capsys):
    with pytest.raises(ValueError, match="sm_calc_visibility"):
        PhantomSettings(sm_calc_visibility=1.5)
    with pytest.raises(ValueError, match="density_mix"):
        PhantomSettings(density_mix=(0, 0, 0, 0))
    assert main(["--out", str(tmp_path / "x"), "--artefact-rate", "-1"]) == 2
    assert "artefact_rate" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy"):
        main(["--out", str(tmp_path / "busy"), "--pairs", "2", "--quiet"])


def test_command_line_writes_a_phantom_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "--out",
                str(out),
                "--pairs",
                "3",
                "--seed",
                "4",
                "--scale",
                "1/16",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "hit_min_distance for this scale: 6.25 px" in capsys.readouterr().out
    ffdm = pydicom.dcmread(next((out / "images").glob("*_ffdm.dcm")))
    assert (ffdm.Rows, ffdm.Columns) == (256, 208)
    # A second run into the same folder replaces the first.
    assert main(["--out", str(out), "--pairs", "2", "--workers", "1", "--quiet"]) == 0
    assert len(list((out / "images").glob("*.dcm"))) == 4
