"""``common.io``: files written atomically (the old file or the new one, never half, and no
temporary file left behind) and a file's SHA-256."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from common.io import atomic_path, sha256_file, write_atomically


def _names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_write_atomically_writes_bytes_and_text_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    assert write_atomically(path, b"\x00\x01old") == path
    assert path.read_bytes() == b"\x00\x01old"
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    text = tmp_path / "a.csv"
    write_atomically(text, "x,y\r\n1,2\n")  # written as given: no newline translation
    assert text.read_bytes() == b"x,y\r\n1,2\n"
    assert _names(tmp_path) == ["a.bin", "a.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_atomically(path, '{"old": 1}\n')
    with pytest.raises(UnicodeEncodeError):  # the data cannot be written: it raises mid-write
        write_atomically(path, "new " + "\udc80", unique=False)
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "new " + "\udc80")
    assert path.read_text() == '{"old": 1}\n'
    assert _names(tmp_path) == ["report.json"]


def test_atomic_path_replaces_on_success_and_removes_the_temporary_on_failure(tmp_path):
    path = tmp_path / "table.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as temporary:
            assert temporary.parent == tmp_path and temporary.name.startswith(".table.parquet.")
            assert temporary.name.endswith(".tmp") and temporary.is_file()
            temporary.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["table.parquet"]
    with atomic_path(path, unique=False) as temporary:
        assert temporary == tmp_path / ".table.parquet.tmp" and not temporary.exists()
        temporary.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert _names(tmp_path) == ["table.parquet"]


def test_the_temporary_name_and_mode_follow_the_keywords(tmp_path):
    path = tmp_path / "entry.npz"
    with atomic_path(path, prefix=".entry.", suffix=".npz") as temporary:
        assert temporary.name.startswith(".entry.") and temporary.name.endswith(".npz")
        assert temporary.name != ".entry.npz"
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o600  # as mkstemp makes it
        temporary.write_bytes(b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomically(path, b"y", suffix="", mode=0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"y"
    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "state.json", "{}\n", unique=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o644  # open()'s mode
    with pytest.raises(ValueError, match="unique=False takes none"):
        with atomic_path(path, prefix=".x.", unique=False):
            pass
    assert _names(tmp_path) == ["entry.npz", "state.json"]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 10_000])
def test_sha256_file_is_hashlib_digest_of_the_bytes(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=4096) == expected  # read in several chunks
    assert sha256_file(str(path), chunk=7) == expected
