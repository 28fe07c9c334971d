"""A stage is assessed on the whole allocation: `cli.py pipeline` starts validation and test with
the stage's devices, under the same launcher as the fit. Two processes (gloo, CPU) write the
same prediction files and give the same FAUC as one."""

from __future__ import annotations

import json

import numpy as np
import yaml
from repo_paths import CONFIGS

from analysis.report import read_run
from datamodules.manifest import load_tables
from metrics.froc import fauc
from pipeline.config import load_pipeline
from pipeline.runner import Launch, _lightning, run_pipeline


def test_two_process_assessment_equals_one_process(tiny_phantom, tmp_path):
    data = tmp_path / "data.yaml"
    config = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    config["data"]["init_args"].update(
        manifest=str(tiny_phantom),
        cache_dir=None,
        image_size=[128, 128],
        batch_size=4,
        samples_per_epoch=48,
    )
    data.write_text(yaml.safe_dump(config))
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": str(data),
                "run": str(tmp_path / "run"),
                "overrides": {
                    "trainer.max_epochs": 1,
                    "trainer.num_sanity_val_steps": 0,
                    "trainer.enable_progress_bar": False,
                    "trainer.logger": False,
                    "model.init_args.evaluation.fauc_n_boot": 0,
                },
                "stages": {"stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml")}},
            }
        )
    )
    pipeline = load_pipeline(path)
    run_pipeline(pipeline, report=False, log=lambda line: None)  # fit and assess, one process
    one = pipeline.run / "stage1_sm"
    checkpoint = json.loads((one / "stage.json").read_text())["checkpoint"]
    two = tmp_path / "two"
    _lightning(
        "assess",
        pipeline,
        pipeline.stages["stage1_sm"],
        two,
        f"--ckpt_path={checkpoint}",
        launch=Launch(devices=2, accelerator="cpu"),
    )

    for split in ("val", "test"):
        info = json.loads((two / "predictions" / f"{split}_info.json").read_text())
        assert info["world_size"] == 2
    manifest, lesions, _ = load_tables(tiny_phantom)
    runs = [
        read_run(name, folder, manifest, lesions) for name, folder in (("one", one), ("two", two))
    ]
    for split in ("val", "test"):
        first, second = (run.tables[split] for run in runs)
        assert first.image_ids.tolist() == second.image_ids.tolist()
        for table in ("predictions", "ground_truth"):
            a, b = getattr(first, table), getattr(second, table)
            assert a["image_id"].tolist() == b["image_id"].tolist()
            numbers = [c for c in a.columns if c not in ("image_id", "image_index")]
            # other batch compositions change the last float bits of the convolutions only
            assert np.allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float), atol=1e-4)
        scores = [fauc(run.matched[split], 1.0) for run in runs]
        assert scores[0] > 0 and scores[0] == scores[1], (split, scores)
