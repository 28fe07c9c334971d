"""Fixtures the EMBED test files share; the copies are built by tests/helpers/embed_copies.py."""

import pytest
from embed_copies import write_embed_copy


@pytest.fixture(scope="module")
def embed_copy(tmp_path_factory):
    return write_embed_copy(tmp_path_factory.mktemp("embed"))
