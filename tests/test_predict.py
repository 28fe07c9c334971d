"""`cli.py predict` on a folder of raw SM DICOM files (no manifest, no FFDM): boxes come back in
each file's own pixels whatever its laterality and photometric interpretation.

A real detector is trained for a few seconds to find bright squares in the reader's output,
then predicts on DICOMs (L and R, MONOCHROME1 and 2) with one square placed in each; the top
detection must overlap the square in the file's stored pixels (IoU >= 0.5: a box regressed
after a short training is a few pixels off, a wrong flip or crop puts it tens of pixels away).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import wandb
import yaml
from dicom_factory import breast_image, marker_box, write_mammogram
from repo_paths import CONFIGS

import cli
from datamodules.dicom import load_image
from lightning_modules import TeacherDetector
from lightning_modules.artifacts import export_checkpoint
from lightning_modules.settings import OptimizerSettings

SIZE = (128, 128)
HEIGHT, WIDTH, MARKER = 240, 180, 30  # the marker about an anchor's size at the input
CASES = [("L", "MONOCHROME2"), ("R", "MONOCHROME2"), ("L", "MONOCHROME1"), ("R", "MONOCHROME1")]


def _marker_position(laterality: str, rng: np.random.Generator) -> tuple[float, float]:
    depth = rng.uniform(30, 80)  # from the chest wall, inside the breast
    x = depth if laterality == "L" else WIDTH - 1 - depth
    return float(x), float(rng.uniform(90, 150))


def _write(path, laterality, photometric, seed):
    rng = np.random.default_rng(seed)
    x, y = _marker_position(laterality, rng)
    image = breast_image(HEIGHT, WIDTH, laterality=laterality, markers=[(x, y, MARKER)], seed=seed)
    write_mammogram(path, image, laterality=laterality, photometric=photometric, bits_stored=12)
    return marker_box(x, y, MARKER)


@pytest.fixture(scope="module")
def square_detector(tmp_path_factory):
    """A demo-architecture SM detector trained on the reader's output of 24 such files."""
    folder = tmp_path_factory.mktemp("train_dicoms")
    samples = []
    for index in range(24):
        laterality, photometric = CASES[index % 4]
        box = _write(folder / f"{index}.dcm", laterality, photometric, seed=100 + index)
        image, geometry = load_image(folder / f"{index}.dcm", SIZE, laterality=laterality)
        boxes = torch.as_tensor(np.asarray(geometry.to_input(np.array([box]))), dtype=torch.float32)
        samples.append((torch.from_numpy(image.copy())[None], boxes))
    generator = torch.Generator().manual_seed(0)

    def batches():
        for _ in range(200):
            chosen = torch.randint(len(samples), (8,), generator=generator).tolist()
            yield {
                "sm": torch.stack([samples[i][0] for i in chosen]),
                "sm_boxes": [samples[i][1] for i in chosen],
                "sm_labels": [torch.zeros(1, dtype=torch.int64)] * 8,
                "pair_id": [str(i) for i in chosen],
            }

    stage = yaml.safe_load((CONFIGS / "demo" / "stage1_sm.yaml").read_text())
    init = stage["model"]["init_args"]
    pl.seed_everything(0)
    model = TeacherDetector(
        modality="sm",
        architecture=init["architecture"],
        image_size=SIZE,
        architecture_overrides=init["architecture_overrides"],
        optimizer=OptimizerSettings(learning_rate=5e-3, lr_schedule="constant"),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=10.0,
    )
    trainer.fit(
        model, train_dataloaders=torch.utils.data.DataLoader(list(batches()), batch_size=None)
    )
    checkpoint = folder / "squares.ckpt"
    trainer.save_checkpoint(checkpoint)
    artifact, _ = export_checkpoint(checkpoint, folder / "artifact")
    return artifact


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union


def _predict(config, sm_dir, root, artifact, *extra):
    try:
        code = cli.main(
            [
                "predict",
                "--config",
                str(config),
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
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.default_root_dir",
                str(root),
                "--ckpt_path",
                str(artifact),
                *extra,
            ]
        )
    finally:
        wandb.finish()
    assert code == 0
    return root / "predictions"


def test_predict_on_a_folder_returns_boxes_in_each_files_own_pixels(square_detector, tmp_path):
    sm_dir = tmp_path / "sm"
    truth = {}
    for index, (laterality, photometric) in enumerate(CASES):
        name = f"site/{laterality}_{photometric}.dcm" if index % 2 else f"{laterality}.dcm"
        truth[name] = _write(sm_dir / name, laterality, photometric, seed=index)
    out = _predict(
        CONFIGS / "demo" / "stage1_sm.yaml", sm_dir, tmp_path / "run", square_detector, "--overlays"
    )
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["image_id", "x1", "y1", "x2", "y2", "score", "label"]
    assert sorted(pd.read_parquet(out / "images.parquet")["image_id"]) == sorted(truth)
    for image_id, (x1, y1, x2, y2) in truth.items():
        top = predictions[predictions["image_id"] == image_id].sort_values("score").iloc[-1]
        assert _iou((top.x1, top.y1, top.x2, top.y2), (x1, y1, x2, y2)) >= 0.5, (image_id, top)
        assert 0 <= top.x1 < top.x2 <= WIDTH and 0 <= top.y1 < top.y2 <= HEIGHT
        overlay = out / "overlays" / f"{image_id}.png"
        from PIL import Image

        assert Image.open(overlay).size == (WIDTH, HEIGHT)


def test_the_fused_model_predicts_a_folder_from_its_stage3_artifact_alone(
    tiny_artifacts, tiny_phantom, tmp_path
):
    from tiny_runs import run_stage

    run_stage(
        "demo/stage3_fused.yaml",
        tiny_phantom,
        tmp_path / "stage3",
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.logger",
        "false",
        "--model.init_args.sm_teacher",
        str(tiny_artifacts["sm"] / "artifact"),
        "--model.init_args.partner",
        str(tiny_artifacts["stage2"] / "artifact"),
    )
    sm_dir = tmp_path / "sm"
    for index, (laterality, photometric) in enumerate(CASES):
        _write(sm_dir / f"{index}.dcm", laterality, photometric, seed=index)
    # The stage config's sm_teacher and partner point nowhere: the artifact is the whole model.
    out = _predict(
        CONFIGS / "stage3_fused.yaml", sm_dir, tmp_path / "run", tmp_path / "stage3" / "artifact"
    )
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert set(predictions["image_id"]) == {f"{index}.dcm" for index in range(4)}
    assert (predictions[["x2", "y2"]].to_numpy() > predictions[["x1", "y1"]].to_numpy()).all()


def test_predict_finds_dicoms_by_content_and_refuses_an_ffdm_unless_told(
    square_detector, tmp_path, capsys, caplog
):
    from dicom_factory import rewrite_dicom

    sm_dir = tmp_path / "sm"
    _write(sm_dir / "a.dcm", "L", "MONOCHROME2", seed=1)
    _write(sm_dir / "b", "R", "MONOCHROME1", seed=2)  # a DICOM without the .dcm name
    (sm_dir / "notes.txt").write_text("not an image")
    _write(sm_dir / "c.dcm", "L", "MONOCHROME2", seed=3)
    rewrite_dicom(sm_dir / "c.dcm", ImageType=["ORIGINAL", "PRIMARY"])
    try:
        code = cli.main(
            [
                "predict",
                "--config",
                str(CONFIGS / "demo" / "stage1_sm.yaml"),
                "--data",
                str(CONFIGS / "data" / "sm_folder.yaml"),
                "--data.init_args.sm_dir",
                str(sm_dir),
                "--data.init_args.image_size",
                "[128, 128]",
                "--data.init_args.num_workers",
                "0",
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(tmp_path / "no"),
                "--ckpt_path",
                str(square_detector),
            ]
        )
    finally:
        wandb.finish()
    assert code == 2
    err = capsys.readouterr().err
    assert (
        f"  {sm_dir / 'c.dcm'}: its tags say it is an FFDM (ImageType ORIGINAL\\PRIMARY), "
        "not an SM: this model reads synthesized 2D mammograms (SM)"
    ) in err
    assert "Traceback" not in err and not (tmp_path / "no" / "predictions").exists()
    out = _predict(
        CONFIGS / "demo" / "stage1_sm.yaml",
        sm_dir,
        tmp_path / "run",
        square_detector,
        "--allow-modality-mismatch",
    )
    assert sorted(pd.read_parquet(out / "images.parquet")["image_id"]) == ["a.dcm", "b", "c.dcm"]
    assert (
        ": 3 DICOM file(s) to read, 1 skipped (no 'DICM' mark at byte 128: not DICOM): "
        "notes.txt" in caplog.text
    )
