"""Fixtures of tests/metrics/: ``csv_files``, the small evaluation CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluate_files import write


@pytest.fixture
def csv_files(tmp_path: Path) -> dict[str, Path]:
    """Four images: "001" and "1" are different images; "02" has no lesion and no detection."""
    images = write(tmp_path / "images.csv", "image_id,view\n001,CC\n1,MLO\n02,CC\n3,CC")
    truth = write(
        tmp_path / "truth.csv",
        "image_id,x1,y1,x2,y2,kind\n001,100,100,200,200,mass\n1,1000,1000,1600,1400,calc\n"
        "3,500,500,540,560,mass",
    )
    predictions = write(
        tmp_path / "predictions.csv",
        "image_id,x1,y1,x2,y2,score,label\n"
        "001,120,120,180,180,0.9,0\n"  # hits 001's lesion
        "001,130,110,170,150,0.4,0\n"  # a duplicate on it
        "1,100,100,150,150,0.8,0\n"  # far from 1's lesion: FP
        "1,1300,1450,1340,1490,0.6,0\n"  # 270 px below the large lesion's centre: hit (r=360)
        "3,2000,2000,2050,2050,0.7,0\n"  # FP
        "3,590,510,630,550,0.3,0",  # 90 px from 3's lesion: hit (100 px floor)
    )
    return {"predictions": predictions, "ground_truth": truth, "images": images}
