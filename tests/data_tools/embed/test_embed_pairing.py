"""Pairing each 2D image with its C-view: the candidate kept and the images left out."""

from pathlib import Path

import pandas as pd
from embed_copies import E1, E2, E3, P2, EmbedCopy, boxes_of, source_path, write_embed_copy

from data_tools.embed.adapter import build_tables
from data_tools.embed.options import EmbedOptions


def test_the_2d_of_the_c_views_series_is_paired(tmp_path):
    copy = EmbedCopy(tmp_path)
    # key 1: the first 2D by path is of another series; the second shares the C-view's
    copy.image("p1", "e1", "a_2d", "2D", lesions=[(0.2, 0.3)], series=(71100000, 100000))
    copy.image("p1", "e1", "b_2d", "2D", lesions=[(0.4, 0.6)], series=(71300000, 101500))
    copy.image("p1", "e1", "cview", "cview", lesions=[(0.4, 0.6)], series=(71300000, 101500))
    # key 2: one series for all (EMBED's SeriesNumber often is); the nearest SeriesTime wins
    copy.image("p1", "e1", "a_2d_mlo", "2D", view="MLO", series=(71300000, 101900))
    copy.image("p1", "e1", "b_2d_mlo", "2D", view="MLO", series=(71300000, 102210))
    copy.image("p1", "e1", "cview_mlo", "cview", view="MLO", series=(71300000, 102213))
    # key 3: no series recorded: the one with ROIs, as before
    copy.image("p1", "e1", "a_2d_lcc", "2D", "L", extra={"SeriesNumber": ""})
    copy.image("p1", "e1", "b_2d_lcc", "2D", "L", lesions=[(0.3, 0.5)])
    copy.image("p1", "e1", "cview_lcc", "cview", "L")
    copy.finding("p1", "e1", "2019-09-09", "MG Diagnostic Mammo Bilateral", "R", "S", "0")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["e1_L_CC", "e1_R_CC", "e1_R_MLO"]
    chosen = [Path(path).stem for path in manifest["ffdm_path"]]
    assert chosen == ["b_2d_lcc", "b_2d", "b_2d_mlo"]
    assert manifest["pairing_basis"].tolist() == ["with_rois", "same_series", "nearest_series_time"]
    assert manifest["label"].tolist() == [0, 1, 1]
    assert boxes_of(lesions, "e1_R_CC", "ffdm") == copy.expected[("e1", "b_2d", "2D")]
    assert boxes_of(lesions, "e1_R_CC", "sm") == copy.expected[("e1", "cview", "cview")]
    assert boxes_of(lesions, "e1_L_CC", "ffdm") == copy.expected[("e1", "b_2d_lcc", "2D")]
    assert summary["several_candidates"] == {
        "keys_with_several_2d": 3,
        "keys_with_several_cview": 0,
        "images_not_chosen": 3,
        "chosen_by": {"nearest_series_time": 1, "same_series": 1, "with_rois": 1},
    }
    assert summary["pair_series"] == {"same_series": 2, "other_series": 0, "series_unknown": 1}


def test_an_exam_id_of_two_patients_is_excluded_not_merged(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path, size_columns=(48, 36), write_images=False)
    table = pd.read_csv(metadata, dtype=str)
    stray = table.iloc[[0]].assign(empi_anon=P2, anon_dicom_path=source_path(P2, E1, "x"))
    pd.concat([table, stray]).to_csv(metadata, index=False)
    options = EmbedOptions(images_root=tmp_path, check_files=False, orientation_from="laterality")
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert summary["excluded_images"]["exam_id_shared_by_patients"] == 8  # + 1 spot view
    assert list(manifest["pair_id"]) == [f"{E2}_L_CC", f"{E2}_R_CC", f"{E3}_L_CC"]
    assert set(lesions["pair_id"]) == {f"{E2}_R_CC"}
