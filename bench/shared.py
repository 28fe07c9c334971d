"""What every benchmark shares: the machine and versions it ran on, robust summaries of repeated
timings, and the JSON result file under ``bench/results/``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def machine() -> dict[str, Any]:
    """Platform, CPU, and the versions of the libraries the figures depend on."""
    import importlib.metadata as metadata

    versions = {}
    for package in (
        "torch",
        "pytorch-lightning",
        "effdet",
        "timm",
        "numpy",
        "pydicom",
        "opencv-python-headless",
        "pylibjpeg-openjpeg",
        "pylibjpeg-libjpeg",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def summary(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of repeated measurements."""
    values = sorted(float(value) for value in values)
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {
        "median": statistics.median(values),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``bench/results/{name}.json`` with the machine and the time it was written."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _status_mib(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` in MiB (Linux; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since the last ``reset_peak_rss`` (Linux)."""
    return _status_mib("VmHWM")


def rss_mib() -> float | None:
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``/proc/self/clear_refs``, Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
