"""No patient data leaves the DICOM headers: a short pipeline (with W&B offline logging, the
report and its galleries) and a predict with overlays, on DICOMs that carry a known patient
name, patient ID, accession number and study date; every file the runs wrote is scanned for
those strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import wandb
import yaml
from repo_paths import CONFIGS

import cli
from pipeline.config import load_pipeline
from pipeline.runner import run_pipeline

PHI = {
    "PatientName": "Zyxwvut^Quillane",
    "PatientID": "PID73195XQ",
    "AccessionNumber": "ACC991734",
    "StudyDate": "19870412",
    "PatientBirthDate": "19511123",
}


def _with_phi(phantom: Path, folder: Path) -> Path:
    copy = folder / "phantom"
    shutil.copytree(phantom, copy)
    for path in (copy / "images").glob("*.dcm"):
        dataset = pydicom.dcmread(path)
        for keyword, value in PHI.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)
    return copy


def _scan(folders: list[Path]) -> list[str]:
    """Files (under ``folders``) that contain any of the PHI strings, with which."""
    found = []
    needles = {key: value.encode() for key, value in PHI.items()}
    needles["PatientName part"] = b"Quillane"
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                if path.suffix == ".parquet":  # compressed pages: scan the values as text too
                    import pyarrow.parquet as pq

                    data += pq.read_table(path).to_pandas().to_csv().encode()
                hits = [key for key, needle in needles.items() if needle in data]
                if hits:
                    found.append(f"{path}: {hits}")
    return found


def test_no_phi_in_anything_a_pipeline_and_predict_write(tiny_phantom, tmp_path):
    phantom = _with_phi(tiny_phantom, tmp_path)
    assert PHI["PatientID"].encode() in next((phantom / "images").glob("*.dcm")).read_bytes()
    data = tmp_path / "data.yaml"
    loaded = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    loaded["data"]["init_args"].update(
        manifest=str(phantom),
        cache_dir=None,
        image_size=[128, 128],
        batch_size=4,
        num_workers=0,
        samples_per_epoch=8,
    )
    data.write_text(yaml.safe_dump(loaded))
    detector = {"model.init_args.evaluation.fauc_n_boot": 20}
    pipeline = {
        "data": str(data),
        "run": str(tmp_path / "run"),
        "overrides": {
            "trainer.max_epochs": 1,
            "trainer.num_sanity_val_steps": 0,
            "trainer.enable_progress_bar": False,
        },  # W&B offline: the default logger
        "stages": {
            "stage1_sm": {
                "config": str(CONFIGS / "demo" / "stage1_sm.yaml"),
                "overrides": detector,
            },
            "stage1_ffdm": {
                "config": str(CONFIGS / "demo" / "stage1_ffdm.yaml"),
                "overrides": detector,
            },
            "stage2": {
                "config": str(CONFIGS / "demo" / "stage2_distill.yaml"),
                "inputs": {"ffdm_teacher": "stage1_ffdm", "init_from": "stage1_ffdm"},
            },
            "stage3": {
                "config": str(CONFIGS / "demo" / "stage3_fused.yaml"),
                "overrides": detector,
                "inputs": {"sm_teacher": "stage1_sm", "partner": "stage2"},
            },
        },
        "report": {"Model_SM": "stage1_sm", "Model_FFDM": "stage1_ffdm", "Fused": "stage3"},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run_pipeline(load_pipeline(path))
    run = tmp_path / "run"
    assert list(run.glob("stage1_sm/wandb/offline-run-*")) and list(run.glob("gallery_*.png"))

    sm_dir = tmp_path / "sm_only"
    sm_dir.mkdir()
    for file in sorted((phantom / "images").glob("*_sm.dcm"))[:4]:
        shutil.copy(file, sm_dir / file.name)
    try:
        code = cli.main(
            [
                "predict",
                "--config",
                str(CONFIGS / "demo" / "stage3_fused.yaml"),
                "--data",
                str(CONFIGS / "data" / "sm_folder.yaml"),
                "--data.init_args.sm_dir",
                str(sm_dir),
                "--data.init_args.image_size",
                "[128, 128]",
                "--data.init_args.num_workers",
                "0",
                "--trainer.accelerator",
                "cpu",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.default_root_dir",
                str(tmp_path / "predict"),
                "--ckpt_path",
                str(run / "stage3" / "artifact"),
                "--overlays",
                "--predictions.overlay_min_score",
                "0",
            ]
        )
    finally:
        wandb.finish()
    assert code == 0
    assert len(list((tmp_path / "predict" / "predictions" / "overlays").glob("*.png"))) == 4
    assert _scan([run, tmp_path / "predict"]) == []
