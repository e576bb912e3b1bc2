"""Fixtures of the unit tests beyond the suite's shared ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import tiny_hf_model_dir


@pytest.fixture
def tiny_hf_dir(tmp_path) -> Path:
    return tiny_hf_model_dir(tmp_path)
