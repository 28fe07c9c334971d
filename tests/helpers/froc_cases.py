"""Hand-made FROC cases for tests/metrics/test_froc_*.py: boxes around a centre, and images
(lesions and scored detections) matched with ``metrics.froc.match_detections``."""

from __future__ import annotations

import numpy as np

from metrics.froc import match_detections

FAR = (3000.0, 3000.0)  # a detection centre far from every lesion below


def box(cx: float, cy: float, half: float = 10.0) -> list[float]:
    return [cx - half, cy - half, cx + half, cy + half]


def matched_from(images: list[dict], **options):
    """``images[i] = {"lesions": [box, ...], "detections": [(box, score), ...]}``."""
    detection_image, detection_boxes, scores, lesion_image, lesion_boxes = [], [], [], [], []
    for index, image in enumerate(images):
        for lesion in image.get("lesions", []):
            lesion_image.append(index)
            lesion_boxes.append(lesion)
        for detection, score in image.get("detections", []):
            detection_image.append(index)
            detection_boxes.append(detection)
            scores.append(score)
    return match_detections(
        np.array(detection_image, dtype=np.int64),
        np.array(detection_boxes, dtype=np.float64).reshape(-1, 4),
        np.array(scores, dtype=np.float64),
        np.array(lesion_image, dtype=np.int64),
        np.array(lesion_boxes, dtype=np.float64).reshape(-1, 4),
        n_images=len(images),
        **options,
    )


LESION = box(500, 500, 50)
