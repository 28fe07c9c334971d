"""Fixtures of tests/data_tools/: ``pristine``, the folder that ``data`` (tests/conftest.py)
copies for each test of a module to break."""

from __future__ import annotations

import pytest
from dicom_factory import write_paired_folder

# write_paired_folder(6 pairs, 2 per patient): pair p000i is manifest row i + 2; p0000 (L CC)
# has a malignant and a benign lesion in each modality, p0003 (R MLO) a malignant one; the
# others are negative. p0000/p0001 are patient0000, p0002/p0003 patient0001, p0004/p0005
# patient0002 (their exam ids follow the same numbering).


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    write_paired_folder(folder, pairs=6, pairs_per_patient=2)
    return folder
