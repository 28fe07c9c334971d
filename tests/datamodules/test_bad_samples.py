"""Bad samples during training: `PairedMammoDataModule.setup` checks the files before the first
step and fails naming them (``on_bad_sample: error``) or leaves the pairs out and counts them
(``skip``) under a real Trainer; the data set skips a pair that fails to read later; a
truncated cache entry is named, and a resumed ``prepare`` writes it again."""

from __future__ import annotations

import logging
import re

import pytest
import pytorch_lightning as pl
from dicom_factory import corrupt_compressed, truncate, write_paired_folder

from data_tools.prepare import main, prepare_cache
from datamodules import preflight
from datamodules.batch import collate_pairs
from datamodules.cache import CacheEntryError, ImageCache
from datamodules.dataset import SKIPPED_PAIRS, PairedMammoDataset
from datamodules.dicom import DicomReadError
from datamodules.manifest import load_tables
from datamodules.paired import PairedMammoDataModule
from datamodules.preflight import DataCheckError
from lightning_modules import TeacherDetector
from lightning_modules.settings import OptimizerSettings

SIZE = (128, 128)
# write_paired_folder(8 pairs): p0000, p0003 and p0006 are positive; p000i is manifest row i+2.


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    write_paired_folder(folder, pairs=8, pairs_per_patient=2)
    return folder


def _module(folder, **overrides):
    arguments = dict(
        manifest=str(folder),
        image_size=SIZE,
        modalities=["sm"],
        batch_size=2,
        num_workers=0,
        augment=False,
        split_fractions=(1.0, 0.0, 0.0),
        samples_per_epoch=4,
    )
    arguments.update(overrides)
    return PairedMammoDataModule(**arguments)


class CountSteps(pl.Callback):
    def __init__(self):
        self.steps = 0
        self.pairs: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.steps += 1
        self.pairs += batch["pair_id"]


def _fit(module, architecture, counter: CountSteps, steps=3) -> None:
    pl.seed_everything(0)
    model = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=architecture,
        optimizer=OptimizerSettings(learning_rate=1e-3, lr_schedule="constant"),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[counter],
    )
    trainer.fit(model, datamodule=module)


def test_a_truncated_dicom_fails_setup_before_any_step_and_is_skipped_with_skip(
    data, tiny_architecture, caplog
):
    path = truncate(data / "images" / "p0003_sm.dcm", 0.5)
    module, counter = _module(data), CountSteps()
    with pytest.raises(DataCheckError) as caught:
        _fit(module, tiny_architecture, counter)
    assert counter.steps == 0
    message = str(caught.value)
    assert f"{data / 'manifest.csv'} row 5, column sm_path: truncated: the pixel data" in message
    assert f"(pair p0003, file {path})" in message
    assert "on_bad_sample: skip leaves them out" in message
    [problem] = caught.value.problems
    assert (problem.kind, problem.row, problem.pair_id) == (preflight.TRUNCATED_DICOM, 5, "p0003")

    module, counter = _module(data, on_bad_sample="skip"), CountSteps()
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        _fit(module, tiny_architecture, counter)
    assert counter.steps == 3 and "p0003" not in counter.pairs
    assert module.summary.pairs_skipped == 1
    assert list(module.summary.skipped) == ["p0003"]
    assert "truncated: the pixel data" in module.summary.skipped["p0003"]
    assert "1 pairs skipped (bad samples)" in str(module.summary)
    assert module.summary.to_dict()["pairs_skipped"] == 1
    assert "skipping pair p0003" in caplog.text and str(path) in caplog.text
    assert "p0003" not in set(module.tables("train")["pair_id"])


def test_setup_reports_boxes_outside_their_image_and_every_other_problem(data):
    (data / "images" / "p0001_sm.dcm").unlink()
    lesions = (data / "lesions.csv").read_text().splitlines()
    first = lesions[1].split(",")
    assert first[:2] == ["p0000", "sm"]
    first[4] = "500"  # x2 far right of a 96-pixel wide image
    (data / "lesions.csv").write_text("\n".join([lesions[0], ",".join(first), *lesions[2:]]))
    with pytest.raises(DataCheckError) as caught:
        _module(data).setup("fit")
    found = [
        (p.kind, p.file.rsplit("/", 1)[-1], p.row, p.column, p.pair_id)
        for p in caught.value.problems
    ]
    assert sorted(found) == [
        (preflight.BOX_OUTSIDE, "lesions.csv", 2, "x2", "p0000"),
        (preflight.MISSING_FILE, "manifest.csv", 3, "sm_path", "p0001"),
    ]
    assert "2 problem(s) in the data of" in str(caught.value)


def test_setup_checks_only_the_modalities_and_splits_it_reads(data):
    (data / "images" / "p0002_ffdm.dcm").unlink()
    _module(data).setup("fit")  # an SM model never opens an FFDM file
    module = _module(data, modalities=["sm", "ffdm"], split_fractions=(0.0, 0.0, 1.0))
    module.setup("validate")  # no pair in val
    with pytest.raises(DataCheckError, match="p0002_ffdm.dcm"):
        module.setup("test")
    # fit checks the test split too: the stage's assessment reads it right after training
    with pytest.raises(DataCheckError, match="p0002_ffdm.dcm"):
        _module(data, modalities=["sm", "ffdm"], split_fractions=(0.0, 0.0, 1.0)).setup("fit")


def test_a_cached_pair_needs_no_dicom_but_a_truncated_entry_is_named(data):
    manifest = load_tables(data)[0]
    prepare_cache(manifest, data / "cache", SIZE, workers=0, progress=False)
    (data / "images" / "p0004_sm.dcm").unlink()
    _module(data, cache_dir=str(data / "cache")).setup("fit")
    entry = ImageCache(data / "cache", SIZE).path("p0005", "sm")
    truncate(entry, 0.5)
    with pytest.raises(DataCheckError) as caught:
        _module(data, cache_dir=str(data / "cache")).setup("fit")
    [problem] = caught.value.problems
    assert (problem.kind, problem.row, problem.pair_id, problem.path) == (
        preflight.UNREADABLE_CACHE_ENTRY,
        7,
        "p0005",
        str(entry),
    )
    # and read during a run (the check passed, the entry broke later) it is named too
    cache = ImageCache(data / "cache", SIZE)
    with pytest.raises(CacheEntryError, match=re.escape(str(entry))):
        cache.read("p0005", "sm")


def test_a_pair_that_fails_to_read_during_the_run_is_skipped_and_counted(tmp_path, caplog):
    write_paired_folder(tmp_path, pairs=8, pairs_per_patient=2, compression="rle")
    module = _module(tmp_path, on_bad_sample="skip")
    module.setup("fit")
    dataset = module.dataset("train")
    index = list(dataset.pair_ids).index(b"p0006")
    # the file breaks after the check (the header is intact; the pixel data no longer decode)
    path = corrupt_compressed(tmp_path / "images" / "p0006_sm.dcm")
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        sample = dataset[index]
    assert sample["pair_id"] == "p0000" and sample["label"] == 1  # the next positive pair
    [(pair_id, reason)] = sample[SKIPPED_PAIRS]
    assert pair_id == "p0006" and str(path) in reason and "RLE" in reason
    assert "skipping pair p0006" in caplog.text
    assert dataset[index][SKIPPED_PAIRS] == []  # known bad in this process: not read again

    batch = module.on_before_batch_transfer(collate_pairs([sample, dataset[1]]), 0)
    assert SKIPPED_PAIRS not in batch and batch["pair_id"] == ["p0000", "p0001"]
    assert module.summary.pairs_skipped == 1 and "RLE" in module.summary.skipped["p0006"]

    strict = PairedMammoDataset(
        module.tables("train"), module.lesion_table("train"), SIZE, modalities=["sm"]
    )
    with pytest.raises(DicomReadError, match=re.escape(str(path))):
        strict[index]
    # a new run decodes every image in setup: it names the file before its first step
    with pytest.raises(DataCheckError, match=re.escape(str(path))):
        _module(tmp_path).dataset("train")


def test_on_bad_sample_is_checked():
    with pytest.raises(ValueError, match="on_bad_sample must be 'error' or 'skip'"):
        PairedMammoDataModule(manifest="x", on_bad_sample="ignore")


def test_prepare_prints_the_first_reasons_and_rewrites_an_unreadable_entry(data, capsys):
    (data / "images" / "p0001_ffdm.dcm").write_bytes(b"broken")
    argv = [
        "--manifest",
        str(data),
        "--out",
        str(data / "cache"),
        "--image-size",
        "64",
        "48",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 problem(s) in the images" in err
    assert (
        f"{data / 'manifest.csv'} row 3, column ffdm_path: not a DICOM file (no 'DICM' "
        "prefix and no file meta information)"
    ) in err
    assert f"(pair p0001, file {data / 'images' / 'p0001_ffdm.dcm'})" in err

    cache = ImageCache(data / "cache", (64, 48))
    entry = truncate(cache.path("p0004", "sm"), 0.5)
    before = entry.stat().st_size
    assert main(argv) == 1  # p0001's FFDM is still broken
    captured = capsys.readouterr()
    assert re.search(r"16 images, 1 written, 14 skipped \(already cached\), 1 failed", captured.out)
    assert "entries that could not be read back, each written again" in captured.err
    assert "row 6, column sm_path: cannot read the cache entry (" in captured.err
    assert f"(pair p0004, file {entry})" in captured.err
    assert entry.stat().st_size > before
    image, geometry = cache.read("p0004", "sm")
    assert image.shape == (64, 48) and geometry.input_size == (64, 48)


def test_setup_check_in_processes_finds_what_it_finds_in_one(data):
    truncate(data / "images" / "p0002_ffdm.dcm", 0.5)
    (data / "images" / "p0005_sm.dcm").write_bytes(b"not a DICOM file")
    manifest, lesions, _ = load_tables(data, row_numbers=True)
    settings = preflight.CheckSettings(manifest=str(data), image_size=SIZE)
    alone = preflight.setup_check(manifest, lesions, settings).problems
    assert [(p.kind, p.row, p.pair_id) for p in alone] == [
        (preflight.TRUNCATED_DICOM, 4, "p0002"),
        (preflight.NOT_DICOM, 7, "p0005"),
    ]
    assert (
        preflight.setup_check(manifest, lesions, settings, workers=2, parallel_from=0).problems
        == alone
    )
