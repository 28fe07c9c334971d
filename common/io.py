"""Files written atomically and files' SHA-256: the one way every part of the package does both.

A reader of a file written here sees the old file or the new one, never half of either: the
data goes into a temporary file in the same folder, which then replaces the file by
``os.replace``. Nothing is fsynced: a crash of the machine may lose the new file, not the
atomicity of the replacement.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    suffix: str = ".tmp",
    prefix: str | None = None,
    unique: bool = True,
    mode: int | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``,
    on any exception it is removed and the exception goes on (``path`` is left as it was).

    ``unique``: the temporary file is ``<prefix><random><suffix>`` (``prefix`` defaults to
    ``.<name>.``), made empty by ``tempfile.mkstemp``, so with mode 0600; two writers of one
    path never share it. ``unique=False``: it is ``.<name><suffix>``, not made here, so the
    writer creates it with the umask's mode; for a path only one process writes. ``mode``:
    the file's mode, set before it replaces ``path``.
    """
    path = Path(path)
    if unique:
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix
        )
        os.close(handle)
        temporary = Path(name)
    else:
        if prefix is not None:
            raise ValueError("prefix names a unique temporary file; unique=False takes none")
        temporary = path.parent / f".{path.name}{suffix}"
    try:
        yield temporary
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(
    path: str | os.PathLike,
    data: bytes | str,
    *,
    suffix: str = ".tmp",
    prefix: str | None = None,
    unique: bool = True,
    mode: int | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path` for the keywords);
    return ``path``. A ``str`` is written as it is (no newline translation) in the locale's
    encoding, as ``open`` writes text."""
    path = Path(path)
    with atomic_path(path, suffix=suffix, prefix=prefix, unique=unique, mode=mode) as temporary:
        if isinstance(data, str):
            with open(temporary, "w", newline="") as stream:
                stream.write(data)
        else:
            with open(temporary, "wb") as stream:
                stream.write(data)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of the file at ``path``, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()
