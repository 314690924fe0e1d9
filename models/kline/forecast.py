"""Forecasts: sample paths of OHLCV + amount in price units, and the in-loop summary per window.

``Forecaster.forecast(history, horizon, samples, seed)`` normalises the last ``lookback`` bars of
``history`` (their own statistics), tokenizes them, generates ``samples`` continuations of
``horizon`` bars with the KV cache and decodes them back to price units: [samples, horizon, 6].
Paths are anchored: the tokenizer's error on the last context bar's close is removed from every
price of the path (an additive shift), so a path starts from the real last close.

``predict(windows)`` is what the registry, the engine and the prediction server call: windows
float32 [n, lookback, 6] -> float32 [n, 5] with the columns ``OUTPUTS`` (expected return of the
close over the horizon, q10/q50/q90 of it, P(up)). Each window's paths come from a generator
seeded by the model seed and the window's bytes, so a window gets the same paths whatever batch
it is in. A window with a non-finite value or a price <= 0 gets a row of NaN (the others are
unaffected); ``forecast`` refuses such a history with a FeatureError.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tradeloop.models.errors import FeatureError, ModelError
from tradeloop.models.kline.generate import generate, uniforms, window_seed
from tradeloop.models.kline.normalize import WindowStats, check_bars, denormalize, normalize, stats_of
from tradeloop.models.kline.spec import CLOSE, N_FIELDS, OUTPUTS, KlineSpec
from tradeloop.models.kline.tokenizer import KlineTokenizer
from tradeloop.models.kline.transformer import KlineTransformer
from tradeloop.models.runtime.base import as_windows

CHUNK = 256   # windows per generation call inside predict (bounds memory: chunk x samples rows)


@dataclass(frozen=True)
class ForecastSettings:
    """How the in-loop forecast samples: horizon (bars), paths per window, temperature, top-p, seed."""

    horizon: int = 5
    samples: int = 16
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("horizon", "samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ModelError(f"forecast settings: {k} must be an integer >= 1, got {v!r}")
        if not self.temperature >= 0:
            raise ModelError(f"forecast settings: temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ModelError(f"forecast settings: top_p must lie in (0, 1], got {self.top_p!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def summarize(paths: np.ndarray, last_close: np.ndarray) -> np.ndarray:
    """float32 [n, 5] (``OUTPUTS``) from paths [n, samples, horizon, 6] and each window's last close [n]."""
    r = paths[:, :, -1, CLOSE] / last_close[:, None] - 1.0
    q = np.quantile(r, [0.1, 0.5, 0.9], axis=1)
    return np.stack([r.mean(1), q[0], q[1], q[2], (r > 0).mean(1)], axis=1).astype(np.float32)


class Forecaster:
    """A trained tokenizer + transformer with its spec and sampling settings, on one device."""

    def __init__(self, tokenizer: KlineTokenizer, transformer: KlineTransformer, spec: KlineSpec,
                 settings: ForecastSettings | None = None, device: str = "cpu") -> None:
        self.spec = spec
        self.settings = settings or ForecastSettings()
        self.device = device
        self.tokenizer = tokenizer.to(device).eval()
        self.transformer = transformer.to(device).eval()
        if spec.lookback + self.settings.horizon > transformer.cfg.max_len:
            raise ModelError(f"forecaster: lookback {spec.lookback} + horizon {self.settings.horizon} exceed "
                             f"max_len {transformer.cfg.max_len}")

    # -- pieces ----------------------------------------------------------------------------
    def tokenize(self, context: np.ndarray) -> tuple[torch.Tensor, WindowStats]:
        """Token ids [n, T, 2] of checked raw context bars [n, T, 6], and their statistics."""
        stats = stats_of(context)
        z = torch.from_numpy(normalize(context, stats, self.spec.clip)).to(self.device)
        return self.tokenizer.encode(z), stats

    @torch.inference_mode()
    def decode(self, ids: torch.Tensor, stats: WindowStats) -> np.ndarray:
        """Bars in price units [n, ..., 6] of ids [n, ..., 2] in each window's frame."""
        z = self.tokenizer.decode(ids).double().cpu().numpy()
        return denormalize(z, stats)

    # -- forecasts -------------------------------------------------------------------------
    def forecast(self, history: np.ndarray, horizon: int | None = None, samples: int | None = None,
                 seed: int | None = None, *, temperature: float | None = None,
                 top_p: float | None = None) -> np.ndarray:
        """float64 [samples, horizon, 6]: sample paths after ``history`` (>= lookback bars; the last are the context)."""
        h = check_bars(history, "forecast history")
        if h.ndim != 2:
            raise FeatureError(f"forecast history: expected bars [T, {N_FIELDS}], got shape {list(h.shape)}")
        L = self.spec.lookback
        if len(h) < L:
            raise FeatureError(f"forecast history: {len(h)} bars, the model needs at least {L} (its lookback)")
        s = self.settings
        seed = s.seed if seed is None else int(seed)
        return self.forecast_batch(h[None, -L:], s.horizon if horizon is None else horizon,
                                   s.samples if samples is None else samples, [seed],
                                   temperature=temperature, top_p=top_p)[0]

    def forecast_batch(self, context: np.ndarray, horizon: int, samples: int, seeds: list[int], *,
                       temperature: float | None = None, top_p: float | None = None,
                       use_cache: bool = True) -> np.ndarray:
        """float64 [n, samples, horizon, 6] paths after each checked context [n, T, 6], one seed per context."""
        for k, v in (("horizon", horizon), ("samples", samples)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"forecast: {k} must be an integer >= 1, got {v!r}")
        temp = self.settings.temperature if temperature is None else float(temperature)
        p = self.settings.top_p if top_p is None else float(top_p)
        ids, stats = self.tokenize(context)
        u = uniforms(seeds, samples, horizon).to(self.device) if temp > 0 else None
        gen = generate(self.transformer, ids, int(horizon), samples=int(samples), temperature=temp, top_p=p,
                       u=u, use_cache=use_cache)
        n = len(context)
        paths = self.decode(gen.view(n, samples * horizon, 2), stats).reshape(n, samples, horizon, N_FIELDS)
        last = self.decode(ids[:, -1:], stats)[:, 0]                       # the tokenizer's last context bar
        paths[..., :4] += (context[:, -1, CLOSE] - last[:, CLOSE])[:, None, None, None]
        return paths

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """float32 [n, 5] (``OUTPUTS``) for windows float32 [n, lookback, 6]; NaN rows for invalid windows."""
        w = as_windows(windows, self.spec.lookback, N_FIELDS).astype(np.float64)
        out = np.full((len(w), len(OUTPUTS)), np.nan, np.float32)
        ok = np.isfinite(w).all(axis=(1, 2)) & (w[..., :4] > 0).all(axis=(1, 2)) & (w[..., 4:] >= 0).all(axis=(1, 2))
        idx = np.flatnonzero(ok)
        s = self.settings
        raw = np.asarray(windows, np.float32)
        for a in range(0, len(idx), CHUNK):
            i = idx[a:a + CHUNK]
            seeds = [window_seed(s.seed, raw[j]) for j in i]
            paths = self.forecast_batch(w[i], s.horizon, s.samples, seeds)
            out[i] = summarize(paths, w[i, -1, CLOSE])
        return out


class ForecastRuntime:
    """The registry's runtime for a forecaster: ``predict`` on ``device`` with ``threads`` intra-op threads."""

    def __init__(self, forecaster: Forecaster, name: str, threads: int = 1) -> None:
        self.forecaster = forecaster
        self.name = name
        self.device = forecaster.device
        self.threads = threads

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """float32 [n, len(OUTPUTS)]."""
        return self.forecaster.predict(windows)
