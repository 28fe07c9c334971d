"""The preprocessing cache: every image of a manifest converted once to the model's input,
made by ``python cli.py prepare`` (`data_tools.prepare`) and read by the data set.

Layout: ``DIR/cache.json`` records the image size, window and margin the cache was made with;
``DIR/<modality>/<xx>/<pair id>.npz`` holds ``image`` (uint16, value = round(x * 65535)) and
``geometry`` (JSON text); ``xx`` is a hash prefix that keeps folders to a few thousand files.
uint16 rather than float16: the same two bytes, but uniform steps of 1/65535 keep 12-16 bit
mammograms' grey levels, where float16 has only 11 bits of precision near 1 (dense tissue).
Entries are zlib-compressed (``np.savez_compressed``): the zero padding and background shrink
well, which matters at 2.4 million images, and decompression costs little in a loader worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.io import atomic_path, write_atomically
from datamodules.dicom import DEFAULT_MARGIN, Geometry

CACHE_FORMAT = "mammofuse-image-cache/1"
CACHE_INFO = "cache.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _entry_name(pair_id: str) -> str:
    safe = _UNSAFE.sub("_", pair_id)[:120]
    if safe != pair_id or safe.startswith("."):
        # keep names unique when two ids differ only in replaced characters
        safe = f"{safe}-{hashlib.sha1(pair_id.encode()).hexdigest()[:10]}"
    return safe


def _entry_key(pair_id: str) -> str:
    """The entry's path below its modality folder: "<hash prefix>/<name>.npz"."""
    return f"{hashlib.sha1(pair_id.encode()).hexdigest()[:2]}/{_entry_name(pair_id)}.npz"


class CacheEntryError(ValueError):
    """A cache entry exists but cannot be read back (truncated, corrupt, or of another size);
    the message names the entry's file (``path``) and says why (``reason``)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


def _unreadable_entry(path: Path, error: Exception) -> CacheEntryError:
    return CacheEntryError(
        path,
        f"cannot read the cache entry ({type(error).__name__}: {error}): it is truncated or "
        "corrupt; `python cli.py prepare` writes it again",
    )


class ImageCache:
    """A cache folder made for one image size and window.

    ``ImageCache(folder, image_size, window, create=False)`` refuses a folder made for another
    size or window, and a folder that is not a cache (unless ``create``).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        image_size: Sequence[int],
        window: str = "dicom",
        margin: float = DEFAULT_MARGIN,
        create: bool = False,
    ):
        self.folder = Path(folder)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.window = window
        info_path = self.folder / CACHE_INFO
        wanted = {
            "format": CACHE_FORMAT,
            "image_size": list(self.image_size),
            "window": window,
            "margin": margin,
        }
        if not info_path.is_file():
            if not create:
                raise FileNotFoundError(
                    f"{self.folder} is not an image cache (no {CACHE_INFO}); make one with "
                    f"`python cli.py prepare --manifest ... --out {self.folder} --image-size "
                    f"{self.image_size[0]} {self.image_size[1]}` or leave cache_dir unset"
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(info_path, json.dumps(wanted, indent=2).encode())
        info = json.loads(info_path.read_text())
        made = (tuple(info.get("image_size", ())), info.get("window"))
        if info.get("format") != CACHE_FORMAT or made != (self.image_size, window):
            raise ValueError(
                f"the cache {self.folder} was made for image size {made[0]} (H, W) and window "
                f"{made[1]!r}, not for image size {self.image_size} and window {window!r}: "
                "point cache_dir to a cache made for this size, or make one with "
                "`python cli.py prepare`"
            )
        self.margin = info.get("margin", margin)

    def path(self, pair_id: str, modality: str) -> Path:
        return self.folder / modality / _entry_key(pair_id)

    def existing(self, modality: str) -> set[str]:
        """Relative paths ("xx/name.npz") of the finished entries of a modality: one directory
        listing per prefix folder, far cheaper than a stat per image on a cluster file system."""
        found: set[str] = set()
        root = self.folder / modality
        if not root.is_dir():
            return found
        with os.scandir(root) as prefixes:
            for prefix in prefixes:
                if prefix.is_dir():
                    with os.scandir(prefix.path) as entries:
                        found.update(
                            f"{prefix.name}/{entry.name}"
                            for entry in entries
                            if entry.name.endswith(".npz") and not entry.name.startswith(".")
                        )
        return found

    def read(self, pair_id: str, modality: str) -> tuple[np.ndarray, Geometry] | None:
        """(float32 [H, W] image, Geometry), or None when the entry is not there. Raises
        `CacheEntryError` naming the file when the entry cannot be read back."""
        path = self.path(pair_id, modality)
        try:
            with np.load(path, allow_pickle=False) as entry:
                stored = entry["image"]
                geometry = Geometry.from_dict(json.loads(str(entry["geometry"])))
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 - zip, zlib, npy and JSON errors alike
            raise _unreadable_entry(path, error) from error
        if geometry.input_size != self.image_size or stored.shape != self.image_size:
            raise CacheEntryError(path, f"entry of size {stored.shape}, expected {self.image_size}")
        return stored.astype(np.float32) * np.float32(1 / 65535), geometry

    def read_geometry(self, pair_id: str, modality: str) -> Geometry | None:
        """The entry's Geometry without its image (cheap), or None when the entry is not
        there; `CacheEntryError` naming the file when it cannot be read."""
        path = self.path(pair_id, modality)
        try:
            with np.load(path, allow_pickle=False) as entry:
                return Geometry.from_dict(json.loads(str(entry["geometry"])))
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 - zip, npy and JSON errors alike
            raise _unreadable_entry(path, error) from error

    def write(self, pair_id: str, modality: str, image: np.ndarray, geometry: Geometry) -> Path:
        path = self.path(pair_id, modality)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = np.rint(np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16)
        # the temporary entry starts with "." (which `existing` passes over) and ends in .npz
        with (
            atomic_path(path, prefix=f".{path.stem}.", suffix=".npz") as temporary,
            open(temporary, "wb") as stream,
        ):
            np.savez_compressed(
                stream, image=stored, geometry=np.array(json.dumps(geometry.to_dict()))
            )
        return path
