"""Fixtures for the crawler tests (helpers live in crawl_helpers.py, the board in mock_board.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The crawler tests and bench/crawl_speed.py import mock_board and crawl_helpers by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "raw" / "anime"
