"""Evaluation at the paper's test-set scale: matching, FAUC-1 and FAUC-1+
with 2,000-replicate bootstrap CIs, the 1 FP/image threshold, and the report's paired
bootstrap of two models on the same images, on synthetic detections for 370,000 images (about
3% with lesions, a few detections per image: about what evaluation matches and resamples
after pruning, 2.5 per image in ``bench_scale.py``, which times the whole path from the
writer's files at 32 per image).

    .venv/bin/python bench/bench_eval.py [--images 370000] [--n-boot 2000] [--repeats 3]

Writes ``bench/results/eval.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import summary, write_result  # noqa: E402

from metrics.froc import (  # noqa: E402
    bootstrap_fauc,
    match_detections,
    paired_bootstrap_fauc,
    threshold_at_fp,
)


def synthetic_case(
    n_images: int, positive_share: float, detections_per_image: float, seed: int = 0
):
    """Mammogram-sized images (3328 x 4096 px); ``positive_share`` of them hold one or two
    lesions; each image gets a Poisson number of background detections, and most lesions a
    nearby detection that tends to score higher. Two models share the lesions and the images:
    model b's scores are model a's with noise, as two detectors of the same set would be."""
    rng = np.random.default_rng(seed)
    width, height = 3328.0, 4096.0
    two = positive_share * 0.15
    counts = rng.choice([0, 1, 2], size=n_images, p=[1 - positive_share, positive_share - two, two])
    lesion_image = np.repeat(np.arange(n_images), counts)
    centre = rng.uniform([200, 200], [width - 200, height - 200], size=(lesion_image.size, 2))
    half = rng.uniform(20, 150, size=(lesion_image.size, 2))
    lesion_boxes = np.hstack([centre - half, centre + half])

    n_background = rng.poisson(detections_per_image, size=n_images)
    background_image = np.repeat(np.arange(n_images), n_background)
    background_centre = rng.uniform([0, 0], [width, height], size=(background_image.size, 2))
    near = rng.random(lesion_image.size) < 0.7
    near_centre = centre[near] + rng.normal(0, 40, size=(int(near.sum()), 2))
    detection_image = np.concatenate([background_image, lesion_image[near]])
    detection_centre = np.vstack([background_centre, near_centre])
    detection_half = rng.uniform(20, 120, size=(detection_image.size, 2))
    detection_boxes = np.hstack(
        [detection_centre - detection_half, detection_centre + detection_half]
    )
    scores_a = np.concatenate(
        [rng.beta(2, 5, size=background_image.size), rng.beta(5, 2, size=int(near.sum()))]
    )
    scores_b = np.clip(scores_a + rng.normal(0, 0.05, size=scores_a.size), 1e-4, 1 - 1e-4)
    order = np.argsort(detection_image, kind="stable")
    shared = (detection_image[order], detection_boxes[order])
    return (
        shared,
        scores_a[order].astype(np.float32),
        scores_b[order].astype(np.float32),
        lesion_image,
        lesion_boxes,
    )


def run_once(case, n_images: int, n_boot: int) -> dict:
    (detection_image, detection_boxes), scores_a, scores_b, lesion_image, lesion_boxes = case
    timings = {}
    start = time.perf_counter()
    matched_a = match_detections(
        detection_image, detection_boxes, scores_a, lesion_image, lesion_boxes, n_images=n_images
    )
    timings["match_s"] = time.perf_counter() - start

    mark = time.perf_counter()
    overall = bootstrap_fauc(matched_a, max_fp=1.0, n_boot=n_boot, seed=0)
    timings["fauc_bootstrap_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    positive = bootstrap_fauc(matched_a.positive_images(), max_fp=1.0, n_boot=n_boot, seed=0)
    timings["fauc_positive_bootstrap_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    threshold = threshold_at_fp(matched_a, 1.0)
    timings["threshold_s"] = time.perf_counter() - mark
    timings["one_model_s"] = time.perf_counter() - start

    mark = time.perf_counter()
    matched_b = match_detections(
        detection_image, detection_boxes, scores_b, lesion_image, lesion_boxes, n_images=n_images
    )
    paired = paired_bootstrap_fauc(matched_b, matched_a, max_fp=1.0, n_boot=n_boot, seed=0)
    timings["paired_bootstrap_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return {
        "timings": timings,
        "n_detections": matched_a.n_detections,
        "n_lesions": matched_a.n_lesions,
        "n_positive_images": int(np.unique(lesion_image).size),
        "fauc": overall.estimate,
        "fauc_ci95": [overall.low, overall.high],
        "fauc_positive": positive.estimate,
        "fauc_positive_ci95": [positive.low, positive.high],
        "threshold_at_1_fp": threshold,
        "paired_difference": paired.difference,
        "paired_ci95": [paired.low, paired.high],
        "paired_p_value": paired.p_value,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=370_000)
    parser.add_argument("--positive-share", type=float, default=0.03)
    parser.add_argument("--detections-per-image", type=float, default=3.0)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    case = synthetic_case(args.images, args.positive_share, args.detections_per_image)
    runs = [run_once(case, args.images, args.n_boot) for _ in range(args.repeats)]
    names = runs[0]["timings"]
    result = {
        "settings": {
            "n_images": args.images,
            "positive_share": args.positive_share,
            "detections_per_image": args.detections_per_image,
            "n_boot": args.n_boot,
            "repeats": args.repeats,
        },
        "timings": {name: summary([run["timings"][name] for run in runs]) for name in names},
        "budget_s": 15.0,
        "runs": runs,
    }
    path = write_result("eval", result)
    last, total = runs[-1], result["timings"]["total_s"]
    print(
        f"{args.images} images ({last['n_positive_images']} with lesions), "
        f"{last['n_detections']} detections, {args.n_boot} replicates: median "
        f"{total['median']:.2f} s (range {total['min']:.2f}-{total['max']:.2f}, "
        f"{args.repeats} runs) for FAUC-1, FAUC-1+, the threshold and a paired bootstrap; "
        f"FAUC-1 {last['fauc']:.4f}; wrote {path}"
    )
    for name, timing in result["timings"].items():
        print(f"  {name}: {timing['median']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
