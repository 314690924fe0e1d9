"""Real market data that an installed package ships, read where it lies: ``--data sample:GOOG``.

tradeloop carries no market data of its own. The ``backtesting`` wheel (backtesting.py 0.6.6,
installed with ``pip install -e '.[samples]'``) carries three real price files in its install
folder, ``backtesting/test/``; ``sample:NAME`` names one of them and resolves to its path there.
Nothing is copied: the run's manifest records that path and the file's sha256 like any input.

=========  ========================================  ======================
name       what                                      span
=========  ========================================  ======================
``GOOG``   NASDAQ:GOOG daily bars (2,148)            2004-08-19 .. 2013-03-01
``EURUSD`` EUR/USD hourly bars (5,000)               2017-04-19 .. 2018-02-07
``BTCUSD`` BTC/USD monthly bars (156)                2012-01-31 .. 2024-12-31
=========  ========================================  ======================

The files are pandas' ``to_csv`` layout (header ``,Open,High,Low,Close,Volume``, the dates in an
unnamed first column), which ``tradeloop.data.loaders.load_bars`` reads as it is; the symbol is
the name (the file stem). The package is located with ``importlib.util.find_spec``, which does
not import it (backtesting would import pandas and bokeh).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tradeloop.errors import ConfigError

PREFIX = "sample:"
PACKAGE = "backtesting"
INSTALL_HINT = "install the samples extra: pip install -e '.[samples]' (it brings backtesting==0.6.6)"
# name -> (file inside the package, what it holds)
SAMPLES: dict[str, tuple[str, str]] = {
    "GOOG": ("test/GOOG.csv", "NASDAQ:GOOG daily bars, 2004-08-19 .. 2013-03-01"),
    "EURUSD": ("test/EURUSD.csv", "EUR/USD hourly bars, 2017-04-19 .. 2018-02-07"),
    "BTCUSD": ("test/BTCUSD.csv", "BTC/USD monthly bars, 2012-01 .. 2024-12"),
}


def is_sample(path: str | Path) -> bool:
    """Whether ``path`` is a ``sample:NAME`` reference rather than a file path."""
    return isinstance(path, str) and path.startswith(PREFIX)


def package_folder() -> Path | None:
    """The install folder of the backtesting package, or None where it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_path(name: str) -> Path:
    """The installed file of sample ``name`` (``GOOG``, ``EURUSD``, ``BTCUSD``; any case).

    A ConfigError (one line) where the name is unknown, the backtesting package is not installed,
    or it lacks the file.
    """
    key = name.strip().upper()
    if key not in SAMPLES:
        raise ConfigError(f"unknown sample {name!r}: the samples are {', '.join(f'{PREFIX}{n}' for n in SAMPLES)}")
    folder = package_folder()
    if folder is None:
        raise ConfigError(f"{PREFIX}{key} is read from the backtesting package, which is not installed: {INSTALL_HINT}")
    path = folder / SAMPLES[key][0]
    if not path.is_file():
        raise ConfigError(f"{PREFIX}{key}: {path} is missing from the installed backtesting package: {INSTALL_HINT}")
    return path


def resolve(path: str) -> str:
    """``path`` itself, or for ``sample:NAME`` the installed file's path (see ``sample_path``)."""
    if not is_sample(path):
        return path
    return str(sample_path(path[len(PREFIX):]))
