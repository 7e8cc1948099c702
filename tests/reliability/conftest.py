"""Fixtures for the reliability tests: API keys for four kinds of caller."""

from __future__ import annotations

import pytest
from reliability_support import Keys, make_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))
