"""The ``check-data`` command: a clean run, exit status, JSON report, config and processes."""

from __future__ import annotations

import json

import yaml
from check_data_cases import SIZE, edit_table, image, only, run
from dicom_factory import rewrite_dicom, truncate

import cli
from data_tools.check import check_data
from data_tools.prepare import prepare_cache
from datamodules import preflight
from datamodules.manifest import load_tables
from datamodules.preflight import CheckSettings

# the ``data`` folder's pairs, rows and patients: see ``pristine`` in conftest.py


def test_a_clean_folder_has_no_problem(data):
    assert run(data) == []


# -- the command ------------------------------------------------------------------------------


def test_the_phantom_passes_with_its_data_config_and_cache(tiny_phantom, tmp_path, capsys):
    manifest = load_tables(tiny_phantom)[0]
    prepare_cache(manifest, tmp_path / "cache", (128, 128), workers=0, progress=False)
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "datamodules.PairedMammoDataModule",
                    "init_args": {
                        "manifest": str(tiny_phantom),
                        "cache_dir": str(tmp_path / "cache"),
                        "image_size": [128, 128],
                        "batch_size": 4,
                    },
                }
            }
        )
    )
    report = tmp_path / "report.json"
    code = cli.main(
        ["check-data", "--config", str(config), "--workers", "0", "--json", str(report)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert captured.out.startswith("check-data: 30 pairs, 60 images checked in ")
    assert captured.out.strip().endswith(": no problems")
    assert "30/30" in captured.err  # the progress bar reached the end
    document = json.loads(report.read_text())
    assert document["problems"] == [] and document["pairs_checked"] == 30
    assert document["settings"]["cache_dir"] == str(tmp_path / "cache")
    assert document["settings"]["image_size"] == [128, 128]


def test_every_problem_at_once_in_processes_and_in_the_json(data, capsys):
    truncate(image(data, "p0001", "sm"), 0.5)
    rewrite_dicom(image(data, "p0002", "ffdm"), Modality="CT")

    def widen(lesions):
        lesions.loc[0, "x2"] = "200"

    edit_table(data, "lesions.csv", widen)
    expected = [
        (preflight.TRUNCATED_DICOM, 3, "p0001"),
        (preflight.NOT_MG, 4, "p0002"),
        (preflight.BOX_OUTSIDE, 2, "p0000"),
    ]
    settings = CheckSettings(manifest=str(data), image_size=SIZE)
    in_processes = check_data(settings, workers=2, progress=False).problems
    assert [(p.kind, p.row, p.pair_id) for p in in_processes] == expected
    assert in_processes == run(data)
    report = data / "report.json"
    assert (
        cli.main(
            [
                "check-data",
                "--manifest",
                str(data),
                "--image-size",
                "64",
                "48",
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(report),
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert out.startswith("3 problem(s) in the data of")
    assert f"  {data / 'manifest.csv'} row 3, column sm_path: truncated" in out
    assert out.strip().endswith(": 3 problem(s)")
    document = json.loads(report.read_text())
    assert [(p["kind"], p["row"], p["pair_id"]) for p in document["problems"]] == expected
    assert document["by_kind"] == {kind: 1 for kind, _, _ in expected}


def test_a_config_of_another_data_module_is_refused(tmp_path, capsys):
    config = tmp_path / "folder.yaml"
    config.write_text("class_path: datamodules.folder.SMFolderDataModule\ninit_args: {sm_dir: x}\n")
    assert cli.main(["check-data", "--config", str(config)]) == 2
    assert "only a PairedMammoDataModule reads a manifest" in capsys.readouterr().err


def test_a_missing_manifest_is_a_problem(tmp_path):
    problem = only(run(tmp_path / "nowhere.csv"), preflight.MISSING_FILE)
    assert problem.file == str(tmp_path / "nowhere.csv") and problem.reason == "no such file"
