"""Shared builders for the models tests (no tests here): random bars and models trained once.

Models are trained once per test session, at tiny sizes apart from one default-size
Conv1d+Transformer used for the runtime-agreement figures; every model test file imports the
builders it needs.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tradeloop.data.schema import NS_PER_DAY, BarSeries

from tests.conftest import SHARED_DATA  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)

QBOT = SHARED_DATA / "qbot"
TINY_NET = {"kind": "conv_transformer", "sizes": {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}}
TINY_FEATURES = {"lookback": 16}
_CACHE: dict[str, object] = {}


def random_bars(seed: int, n: int, *, intraday: bool = False, amount: str = "yes", zero_volume: float = 0.05,
                symbol: str = "X") -> BarSeries:
    """A random but valid bar series: a log random walk, OHLC consistent, some zero volumes.

    ``amount``: 'yes' (price x volume with noise), 'no' (no column) or 'gaps' (NaN in places).
    """
    rng = np.random.default_rng(seed)
    c = 10.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = c * np.exp(rng.normal(0, 0.01, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    l = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    c, o, h, l = (np.round(x, 2) for x in (c, o, h, l))
    h, l = np.maximum.reduce([h, o, c]), np.minimum.reduce([l, o, c])
    v = np.round(rng.lognormal(8, 1, n))
    v[rng.random(n) < zero_volume] = 0.0
    step = 300 * 10**9 if intraday else NS_PER_DAY
    ts = np.int64(1_500_000_000) * 10**9 + step * np.arange(n, dtype=np.int64)
    extra = {}
    if amount != "no":
        a = v * (l + (h - l) * rng.random(n)) / 1000.0
        if amount == "gaps":
            a[rng.random(n) < 0.2] = math.nan
        extra["amount"] = a
    return BarSeries(symbol, ts, o, h, l, c, v, extra)


def qbot(name: str = "600519.SH") -> Path:
    """A real A-share daily file from ../shared/data/qbot (skips the test where it is absent)."""
    p = QBOT / f"{name}.csv"
    if not p.is_file():
        pytest.skip(f"real data file {p} not found")
    return p


def _root() -> Path:
    if "root" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="tradeloop-models-"))
        _CACHE["root"] = root
        import atexit

        atexit.register(shutil.rmtree, root, True)
    return _CACHE["root"]  # type: ignore[return-value]


def tiny_config(name: str, **over) -> dict:
    """A training config of a tiny network on two qbot files, 2010-2014, one thread."""
    cfg = {"name": name, "data": [str(qbot("600519.SH")), str(qbot("000858.SZ"))], "registry": str(_root() / "reg"),
           "train_start": "2010-01-01", "train_end": "2013-01-01", "val_end": "2013-07-01",
           "test_end": "2014-07-01", "epochs": 2, "batch_size": 128, "threads": 1, "progress": False,
           "net": TINY_NET, "features": TINY_FEATURES}
    cfg.update(over)
    return cfg


def needs_models_extra() -> None:
    """Skip the calling test unless the ``models`` extra (torch, onnx, onnxruntime, onnxscript) is installed."""
    for module in ("torch", "onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} not installed (pip install -e '.[models]')")


def trained(key: str) -> tuple[str, str]:
    """(registry root, reference) of a model trained once per session.

    tiny: tiny Conv1d+Transformer, saved twice (v0001 primary, v0002 backup) · lstm: tiny LSTM ·
    default: the default-size Conv1d+Transformer (64 wide, 4 layers, 8 heads), one epoch plus one
    epoch of quantization-aware training (the int8 deployment path).
    """
    needs_models_extra()
    if key not in _CACHE:
        from tradeloop.models.train import train

        if key == "tiny":
            ref = train(tiny_config("tiny"))
            train(tiny_config("tiny", seed=1, set_latest=False))
        elif key == "lstm":
            ref = train(tiny_config("lstm", net={"kind": "lstm", "sizes": {"hidden": 16, "layers": 1}}))
        elif key == "default":
            ref = train(tiny_config("default", net={"kind": "conv_transformer", "sizes": {}}, features={},
                                    epochs=1, qat=True, qat_epochs=1, train_start="2011-01-01"))
        else:
            raise KeyError(key)
        _CACHE[key] = ref
    return str(_root() / "reg"), _CACHE[key]  # type: ignore[return-value]
