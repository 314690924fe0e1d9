"""Shared pytest fixtures, and where the real market data lives.

The real data is the read-only folder ``../shared/data`` beside the clone; ``TRADELOOP_SHARED_DATA``
names another place (``TRADELOOP_SHARED_DATA=/nonexistent pytest`` shows what a clone without it
runs: every test that needs a real file skips, naming the file). ``SHARED`` is the folder above it
(``../shared``: DESIGN.md, bench/). Tests name real files through ``SHARED_DATA`` or ``ORCL`` and
call ``need(path)`` (or take the ``shared_data`` fixture) before they read one, never at import or
parametrize time, so that a missing file is a skip and not an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("TRADELOOP_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")
SHARED = SHARED_DATA.parent
# backtrader's daily ORCL bars, 1995-2014: the reference file of ../shared/bench and most CLI tests
ORCL = SHARED_DATA / "backtrader" / "orcl-1995-2014.txt"


def need(path: Path | str) -> Path:
    """``path``, or a skip of the calling test (or fixture) naming it where it is absent."""
    path = Path(path)
    if not path.exists():
        pytest.skip(f"real data {path} not found (set TRADELOOP_SHARED_DATA or put ../shared beside the clone)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real market data folder (../shared/data); skips the test where it is absent."""
    return need(SHARED_DATA)


@pytest.fixture(scope="session")
def orcl_file() -> Path:
    """backtrader's ORCL daily file (``ORCL``); skips the test where it is absent."""
    return need(ORCL)
