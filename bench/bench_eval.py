"""Benchmark of the FROC core at test-set scale: matching, FAUC-1, FAUC-1+ and their 2,000-replicate
bootstrap CIs, the 1 FP/image threshold, on synthetic detections (issue 5 asks for 100,000
images with about 2 detections each under about 15 s on the 2-core development machine).

    .venv/bin/python bench/bench_fauc.py [--images 100000] [--n-boot 2000] [--repeats 3]

Writes ``bench/results/bench_fauc.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics.froc import (  # noqa: E402
    bootstrap_fauc,
    match_detections,
    threshold_at_fp,
)

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_case(n_images: int, seed: int = 0):
    """Mammogram-sized images (3328 x 4096 px); 15% hold one or two lesions; each image gets a
    Poisson(2) number of detections, and most lesions a nearby detection that tends to score
    higher than the background ones."""
    rng = np.random.default_rng(seed)
    width, height = 3328.0, 4096.0
    n_lesions_per_image = rng.choice([0, 1, 2], size=n_images, p=[0.85, 0.13, 0.02])
    lesion_image = np.repeat(np.arange(n_images), n_lesions_per_image)
    centre = rng.uniform([200, 200], [width - 200, height - 200], size=(lesion_image.size, 2))
    half = rng.uniform(20, 150, size=(lesion_image.size, 2))
    lesion_boxes = np.hstack([centre - half, centre + half])

    n_background = rng.poisson(2.0, size=n_images)
    background_image = np.repeat(np.arange(n_images), n_background)
    background_centre = rng.uniform([0, 0], [width, height], size=(background_image.size, 2))
    background_score = rng.beta(2, 5, size=background_image.size)
    near = rng.random(lesion_image.size) < 0.7
    near_centre = centre[near] + rng.normal(0, 40, size=(int(near.sum()), 2))
    near_score = rng.beta(5, 2, size=int(near.sum()))

    detection_image = np.concatenate([background_image, lesion_image[near]])
    detection_centre = np.vstack([background_centre, near_centre])
    detection_half = rng.uniform(20, 120, size=(detection_image.size, 2))
    detection_boxes = np.hstack(
        [detection_centre - detection_half, detection_centre + detection_half]
    )
    detection_scores = np.concatenate([background_score, near_score]).astype(np.float32)
    return detection_image, detection_boxes, detection_scores, lesion_image, lesion_boxes


def run_once(n_images: int, n_boot: int) -> dict:
    case = synthetic_case(n_images)
    timings = {}
    start = time.perf_counter()
    matched = match_detections(*case, n_images=n_images)
    timings["match_s"] = time.perf_counter() - start

    mark = time.perf_counter()
    overall = bootstrap_fauc(matched, max_fp=1.0, n_boot=n_boot, seed=0)
    timings["fauc_bootstrap_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    positive = bootstrap_fauc(matched.positive_images(), max_fp=1.0, n_boot=n_boot, seed=0)
    timings["fauc_positive_bootstrap_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    threshold = threshold_at_fp(matched, 1.0)
    timings["threshold_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return {
        "timings": timings,
        "n_images": n_images,
        "n_detections": matched.n_detections,
        "n_lesions": matched.n_lesions,
        "fauc": overall.estimate,
        "fauc_ci95": [overall.low, overall.high],
        "fauc_positive": positive.estimate,
        "fauc_positive_ci95": [positive.low, positive.high],
        "threshold_at_1_fp": threshold,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    runs = [run_once(args.images, args.n_boot) for _ in range(args.repeats)]
    totals = [run["timings"]["total_s"] for run in runs]
    result = {
        "benchmark": "fauc",
        "n_images": args.images,
        "n_boot": args.n_boot,
        "repeats": args.repeats,
        "total_s_median": float(np.median(totals)),
        "total_s_all": totals,
        "runs": runs,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_fauc.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    last = runs[-1]
    print(
        f"{args.images} images, {last['n_detections']} detections, {last['n_lesions']} lesions, "
        f"{args.n_boot} replicates: median {result['total_s_median']:.2f} s over "
        f"{args.repeats} runs ({', '.join(f'{t:.2f}' for t in totals)}); "
        f"FAUC-1 {last['fauc']:.4f} {last['fauc_ci95']}; wrote {path}"
    )
    for name, seconds in last["timings"].items():
        print(f"  {name}: {seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
