"""The run's validation history as a plain CSV: ``<run>/history.csv``, one row per validation
inside ``fit`` (epoch, step, and every ``val_*`` value logged), whatever the logger (W&B
offline keeps its numbers in a binary file). The report reads it, e.g. Stage II's
``val_cosine`` from its first to its last validation.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytorch_lightning as pl

HISTORY = "history.csv"


class MetricsHistory(pl.Callback):
    """Appends the ``val_*`` metrics of each validation run during ``fit`` to a CSV."""

    def __init__(self, filename: str = HISTORY):
        super().__init__()
        self.filename = filename
        self._header: list[str] | None = None

    def path(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.filename

    def on_fit_start(self, trainer, pl_module) -> None:
        self._header = None
        if trainer.is_global_zero and trainer.ckpt_path is None and self.path(trainer).exists():
            self.path(trainer).unlink()  # a fresh fit starts a fresh history; a resumed one adds

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        values = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("val_") and getattr(value, "numel", lambda: 1)() == 1
        }
        if not values:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **values}
        path = self.path(trainer)
        existing = path.is_file() and path.stat().st_size > 0
        if self._header is None:
            if existing:
                with open(path, newline="") as handle:
                    self._header = next(csv.reader(handle), None)
            self._header = self._header or list(row)
        os.makedirs(path.parent, exist_ok=True)
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._header, extrasaction="ignore")
            if not existing:
                writer.writeheader()
            writer.writerow(row)
