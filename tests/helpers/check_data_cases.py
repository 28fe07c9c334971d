"""What tests/data_tools/test_check_data_*.py share: the image size, a pair's DICOM path, a
``check_data`` run on a folder, the one problem of a kind, and an edit of a table in place."""

from __future__ import annotations

import pandas as pd

from data_tools.check import check_data
from datamodules.preflight import CheckSettings

SIZE = (64, 48)


def image(folder, pair: str, modality: str):
    return folder / "images" / f"{pair}_{modality}.dcm"


def run(folder, **settings) -> list:
    settings.setdefault("image_size", SIZE)
    return check_data(
        CheckSettings(manifest=str(folder), **settings), workers=0, progress=False
    ).problems


def only(problems, kind):
    """The one problem of ``kind``, and no problem of another kind."""
    assert [p.kind for p in problems] == [kind], "\n".join(map(str, problems))
    return problems[0]


def edit_table(folder, name: str, edit) -> None:
    path = folder / name
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)
