"""analysis.more_pairs: more training pairs, the same validation and test images."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.more_pairs import build, main
from datamodules.manifest import load_tables


@pytest.fixture(scope="module")
def extra_phantom(tmp_path_factory):
    from data_tools.phantom import PhantomSettings, generate

    folder = tmp_path_factory.mktemp("extra")
    generate(folder, PhantomSettings(pairs=60, seed=4), workers=1, progress=False)
    return folder


def test_keeps_the_base_val_and_test_pairs_and_draws_whole_patients_for_training(
    tiny_phantom, extra_phantom, tmp_path
):
    counts = build(tiny_phantom, extra_phantom, tmp_path / "more", factor=2, prefix="E-")
    base, base_lesions, _ = load_tables(tiny_phantom)
    out, out_lesions, _ = load_tables(tmp_path / "more")

    for split in ("val", "test"):  # the same pairs, images, split and lesions as the base's
        ours = out[out["split"] == split].set_index("pair_id").sort_index()
        theirs = base[base["split"] == split].set_index("pair_id").sort_index()
        assert len(theirs) > 0 and list(ours.index) == list(theirs.index)
        for column in ("sm_path", "ffdm_path"):
            assert [Path(p).resolve() for p in ours[column]] == list(map(Path, theirs[column]))
        assert list(ours["label"]) == list(theirs["label"])
        columns = ["pair_id", "modality", "x1", "y1", "x2", "y2"]
        mine = out_lesions[out_lesions["pair_id"].isin(ours.index)][columns]
        base_rows = base_lesions[base_lesions["pair_id"].isin(theirs.index)][columns]
        pd.testing.assert_frame_equal(
            mine.sort_values(columns).reset_index(drop=True),
            base_rows.sort_values(columns).reset_index(drop=True),
        )

    train = out[out["split"] == "train"]
    wanted = 2 * int((base["split"] == "train").sum())
    assert counts["train"] == len(train) >= wanted
    assert train["pair_id"].str.startswith("E-").all()
    assert train["patient_id"].str.startswith("E-").all()
    # whole patients, in the extra manifest's order, no more than needed
    extra = pd.read_csv(extra_phantom / "manifest.csv", dtype=str)
    patients = list(dict.fromkeys(extra["patient_id"]))
    taken = list(dict.fromkeys(train["patient_id"].str.removeprefix("E-")))
    assert taken == patients[: len(taken)]
    per_patient = extra.groupby("patient_id").size()
    assert per_patient[taken].sum() == len(train)
    assert per_patient[taken[:-1]].sum() < wanted
    # a training pair's lesions are the extra phantom's, under the new ids
    raw = pd.read_csv(extra_phantom / "lesions.csv")
    positive = train[train["label"] == 1]["pair_id"].iloc[0]
    expected = raw[raw["pair_id"] == positive.removeprefix("E-")]
    got = out_lesions[out_lesions["pair_id"] == positive]
    assert len(got) == len(expected) > 0
    assert sorted(got["x1"]) == sorted(expected["x1"])
    assert all(Path(p).is_file() for p in [*train["sm_path"], *train["ffdm_path"]])


def test_too_few_extra_pairs_is_refused_naming_the_file(tiny_phantom, extra_phantom, tmp_path):
    with pytest.raises(ValueError, match=r"extra.*manifest\.csv: 60 pairs, fewer than the"):
        build(tiny_phantom, extra_phantom, tmp_path / "more", factor=10)
    with pytest.raises(SystemExit):
        main(
            [
                "--base",
                str(tiny_phantom),
                "--extra",
                str(extra_phantom),
                "--out",
                str(tmp_path / "x"),
                "--factor",
                "0",
            ]
        )
