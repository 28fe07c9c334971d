"""`adapt embed-check`: the picture of the written boxes beside their mirror images."""

import matplotlib.image
from embed_copies import FFDM_SIZE, SM_SIZE, boxes_of, mirror, run_adapter

import cli
from data_tools.embed.check import render_check
from datamodules.manifest import read_table


def test_check_draws_written_and_mirrored_boxes(embed_copy, tmp_path):
    metadata, clinical = embed_copy
    out = tmp_path / "out"
    assert run_adapter(metadata, clinical, out) == 0
    assert cli.main(["adapt", "embed-check", "--out", str(out), "--samples", "3"]) == 0
    picture = matplotlib.image.imread(out / "roi_check.png")
    assert picture.shape[:2] == (3 * 360, 700)  # 3 images, written and mirrored side by side
    green = (picture[..., 1] > 0.8) & (picture[..., 0] < 0.3) & (picture[..., 2] < 0.3)
    orange = (picture[..., 0] > 0.9) & (picture[..., 1] > 0.5) & (picture[..., 2] < 0.2)
    assert green[:, :350].sum() > 20 and green[:, 350:].sum() == 0
    assert orange[:, 350:].sum() > 20 and orange[:, :350].sum() == 0

    png, drawn = render_check(out, tmp_path / "again.png", samples=4, seed=0)
    assert png.is_file()
    assert [item["laterality"] for item in drawn] == ["R", "L", "R", "L"]
    lesions = read_table(out / "lesions.csv")
    for item in drawn:
        written = boxes_of(lesions, item["pair_id"], item["modality"])
        columns = (FFDM_SIZE if item["modality"] == "ffdm" else SM_SIZE)[1]
        assert item["size"] == (FFDM_SIZE if item["modality"] == "ffdm" else SM_SIZE)
        assert item["written"].tolist() == written
        assert item["mirrored"].tolist() == [mirror(b, columns) for b in written]
