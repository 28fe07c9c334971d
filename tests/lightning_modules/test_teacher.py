"""TeacherDetector under a real Lightning Trainer, and the package's offline imports."""

import os
import subprocess
import sys

import pytorch_lightning as pl
import torch

from lightning_modules import TeacherDetector
from lightning_modules.settings import OptimizerSettings

SIZE = 128


def _square_on_noise_batch():
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(2, 1, SIZE, SIZE, generator=generator)
    boxes = [torch.tensor([[30.0, 40.0, 62.0, 72.0]]), torch.tensor([[70.0, 20.0, 110.0, 60.0]])]
    for image, box in zip(images, boxes):
        x1, y1, x2, y2 = box[0].int().tolist()
        image[:, y1:y2, x1:x2] = 0.9
    return {
        "sm": images,
        "sm_boxes": boxes,
        "sm_labels": [torch.tensor([0]), torch.tensor([0])],
        "pair_id": ["a", "b"],
    }


class RecordLoss(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_teacher_overfits_one_batch_under_a_real_trainer(tiny_architecture):
    pl.seed_everything(0)
    batch = _square_on_noise_batch()
    steps = 60
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
    model = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=(SIZE, SIZE),
        architecture_overrides=tiny_architecture,
        optimizer=OptimizerSettings(learning_rate=5e-3, lr_schedule="constant"),
    )
    recorder = RecordLoss()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        gradient_clip_val=10.0,
    )
    trainer.fit(model, train_dataloaders=loader)
    assert len(recorder.losses) == steps
    first, last = recorder.losses[0], sum(recorder.losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)


def test_ffdm_teacher_reads_ffdm_images_only(tiny_architecture):
    model = TeacherDetector(
        modality="ffdm",
        architecture="efficientdet_d0",
        image_size=(SIZE, SIZE),
        architecture_overrides=tiny_architecture,
    )
    batch = _square_on_noise_batch()
    ffdm_batch = {
        "ffdm": batch["sm"],
        "ffdm_boxes": batch["sm_boxes"],
        "ffdm_labels": batch["sm_labels"],
        "pair_id": batch["pair_id"],
    }
    assert model.detection_loss(ffdm_batch)["loss"] > 0
    try:
        model.training_step(batch, 0)
    except ValueError as error:
        assert "'ffdm'" in str(error)
    else:
        raise AssertionError("an FFDM teacher accepted a batch without FFDM images")


def test_packages_import_offline_and_set_hf_hub_offline():
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    code = (
        "import os, lightning_modules, datamodules, callbacks, metrics; "
        "print(os.environ['HF_HUB_OFFLINE'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
