"""The preprocessing cache: parallel, with a progress bar, resumable, shardable, size-checked,
and read by the dataset in place of the DICOM."""

from __future__ import annotations

import re

import numpy as np
import pytest
from dicom_factory import write_paired_folder

import cli
from data_tools.prepare import in_shard, parse_shard, prepare_cache
from datamodules.cache import ImageCache
from datamodules.dataset import PairedMammoDataset
from datamodules.manifest import load_tables

SIZE = (64, 48)


def _counts(text: str) -> dict[str, int]:
    match = re.search(
        r"(\d+) images, (\d+) written, (\d+) skipped \(already cached\), (\d+) failed, "
        r"(\d+) worker process",
        text,
    )
    assert match, text
    keys = ("images", "written", "skipped", "failed", "workers")
    return dict(zip(keys, map(int, match.groups())))


def test_prepare_200_pairs_in_parallel_then_skip_them_all(tmp_path, capsys):
    write_paired_folder(tmp_path / "data", pairs=200, sm_size=(72, 56), ffdm_size=(96, 72))
    argv = ["prepare", "--manifest", str(tmp_path / "data"), "--out", str(tmp_path / "cache")]
    argv += ["--image-size", str(SIZE[0]), str(SIZE[1]), "--workers", "2"]

    assert cli.main(argv) == 0
    first = capsys.readouterr()
    assert _counts(first.out) == {
        "images": 400,
        "written": 400,
        "skipped": 0,
        "failed": 0,
        "workers": 2,
    }
    assert "400/400" in first.err  # the tqdm progress bar reached the end
    entries = sorted((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 400
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]

    assert cli.main(argv) == 0
    second = capsys.readouterr()
    assert _counts(second.out)["written"] == 0 and _counts(second.out)["skipped"] == 400


def test_shards_partition_the_images(tmp_path):
    write_paired_folder(tmp_path / "data", pairs=12)
    manifest = load_tables(tmp_path / "data")[0]
    totals = []
    for index in range(3):
        result = prepare_cache(
            manifest, tmp_path / "cache", SIZE, workers=0, shard=(index, 3), progress=False
        )
        assert result.written == result.total and not result.failed
        totals.append(result.total)
    assert sum(totals) == 24 and min(totals) > 0
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 24
    keys = [(p, m) for p in manifest["pair_id"] for m in ("sm", "ffdm")]
    owners = [[i for i in range(3) if in_shard(p, m, (i, 3))] for p, m in keys]
    assert all(len(owner) == 1 for owner in owners)
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(ValueError, match="0-based"):
        parse_shard("3/3")


def test_dataset_reads_the_cache_and_falls_back_to_the_dicom(tmp_path):
    write_paired_folder(tmp_path / "data", pairs=6)
    manifest, lesions, _ = load_tables(tmp_path / "data")
    direct = PairedMammoDataset(manifest, lesions, SIZE)
    prepare_cache(manifest.iloc[:3], tmp_path / "cache", SIZE, workers=0, progress=False)
    cached = PairedMammoDataset(manifest, lesions, SIZE, cache_dir=tmp_path / "cache")
    for index in range(6):
        a, b = direct[index], cached[index]
        for modality in ("sm", "ffdm"):
            assert a[f"{modality}_geometry"] == b[f"{modality}_geometry"]
            np.testing.assert_allclose(a[modality], b[modality], atol=1 / 65535)
            np.testing.assert_array_equal(a[f"{modality}_boxes"], b[f"{modality}_boxes"])
    # the cached pairs no longer need their DICOMs; the others still read theirs
    for path in manifest["sm_path"].iloc[:3]:
        open(path, "wb").close()
    assert cached[0]["sm"].shape == (1, *SIZE)
    with pytest.raises(ValueError, match="p0000_sm.dcm"):
        direct[0]


def test_a_cache_for_another_size_or_window_is_refused(tmp_path):
    write_paired_folder(tmp_path / "data", pairs=2)
    manifest, lesions, _ = load_tables(tmp_path / "data")
    prepare_cache(manifest, tmp_path / "cache", SIZE, workers=0, progress=False)
    with pytest.raises(ValueError, match=r"made for image size \(64, 48\).*not for image size"):
        PairedMammoDataset(manifest, lesions, (128, 96), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="window 'dicom'"):
        ImageCache(tmp_path / "cache", SIZE, window="minmax")
    with pytest.raises(FileNotFoundError, match="not an image cache"):
        PairedMammoDataset(manifest, lesions, SIZE, cache_dir=tmp_path / "elsewhere")


def test_a_broken_file_is_reported_and_the_rest_is_cached(tmp_path, capsys):
    write_paired_folder(tmp_path / "data", pairs=3)
    (tmp_path / "data" / "images" / "p0001_ffdm.dcm").write_bytes(b"broken")
    argv = ["--manifest", str(tmp_path / "data"), "--out", str(tmp_path / "cache")]
    argv += ["--image-size", "64", "48", "--workers", "0", "--no-progress"]
    from data_tools.prepare import main

    assert main(argv) == 1
    counts = _counts(capsys.readouterr().out)
    assert (counts["written"], counts["failed"]) == (5, 1)
    failures = (tmp_path / "cache" / "failed-shard0of1.csv").read_text()
    assert "p0001,ffdm" in failures and "p0001_ffdm.dcm" in failures
