"""The distribution statistics of a run's daily returns, exactly as quantstats 0.0.86 defines them.

Input: the daily returns ``r`` of the traded span (:func:`tradeloop.engine.metrics.performance.daily_returns`
after the warm-up is cut off), their days (int64 ns at 00:00) and the span's max drawdown. Every value
is what ``quantstats.stats.<fn>(returns)`` gives for a pandas Series of the same returns on the same
dates, with quantstats' defaults (risk-free 0, 252 periods a year, 95% confidence, compounded
periods, pandas' ``std`` with ddof 1 and its bias-corrected ``skew`` / ``kurtosis``), checked to
1e-9 relative by ``tests/test_quantstats.py`` and ``tests/test_traded_span.py``. Where quantstats gives
NaN or inf (undefined) the value here is None, so ``metrics.json`` never holds NaN.

Key                        quantstats (0.0.86)                         definition here (``n`` days)
-------------------------  ------------------------------------------  --------------------------------------------
``skew``                   ``stats.skew``                              ``n sqrt(n-1)/(n-2) * m3 / m2**1.5`` (m_k = sum of
                                                                       k-th powers of deviations); None if n < 3 or
                                                                       the returns are constant (pandas 3: NaN)
``kurtosis``               ``stats.kurtosis`` (excess)                 pandas' G2 excess kurtosis; None if n < 4 or
                                                                       constant
``var``                    ``stats.var`` (= ``value_at_risk``)         ``mean + std * z_0.05`` (normal, ddof 1); negative
                                                                       for a loss. quantstats' report prints ``-abs`` of it
``cvar``                   ``stats.cvar`` (= ``expected_shortfall``,   ``mean - std * pdf(z_0.05) / 0.05`` (parametric);
                           method "parametric")                        ``mean`` when std is 0
``omega``                  ``stats.omega`` (threshold 0)               ``sum(r > 0) / -sum(r < 0)``; None with no
                                                                       losing day or n < 2
``tail_ratio``             ``stats.tail_ratio`` (cutoff 0.95)          ``|q_0.95 / q_0.05|`` (linear quantiles); None
                                                                       when ``q_0.05`` is 0
``payoff_ratio``           ``stats.payoff_ratio``                      mean of the up days / ``|mean of the down days|``;
                                                                       None without an up and a down day
``daily_profit_factor``    ``stats.profit_factor``                     ``sum(r >= 0) / |sum(r < 0)|``; None with no down
                                                                       day (quantstats: inf, or 0 with no up day either).
                                                                       (``profit_factor`` stays the TRADE profit factor.)
``win_days``               ``stats.win_rate``                          up days / non-zero days (0.0 with none)
``kelly``                  ``stats.kelly_criterion``                   ``(b p - (1 - p)) / b``, ``b`` payoff_ratio, ``p``
                                                                       win_days; None when ``b`` is None or 0
``recovery_factor``        ``stats.recovery_factor``                   ``|sum(r)| / max_drawdown``: quantstats SUMS the
                                                                       returns (not compounded); None if no drawdown
``ulcer_index``            ``stats.ulcer_index``                       ``sqrt(sum(dd**2) / (n - 1))``, ``dd`` the daily
                                                                       underwater series (start = first peak); None if n < 2
``time_in_market``         ``stats.exposure``                          ``ceil(100 * non-zero days / n) / 100`` (quantstats
                                                                       rounds UP to a whole percent). (``exposure`` stays
                                                                       the position-based share of bars.)
``best_month``             ``stats.best(aggregate="ME")``              max over calendar (year, month) of
``worst_month``            ``stats.worst(aggregate="ME")``             ``prod(1 + r) - 1`` / min of it
``best_year``/``worst_year`` ``stats.best/worst(aggregate="YE")``      the same per calendar year
``max_consecutive_winning_days`` ``stats.consecutive_wins``            longest run of days with ``r > 0``
(``max_consecutive_losing_days`` is ``stats.consecutive_losses``, ``best_day`` / ``worst_day`` are
``stats.best`` / ``stats.worst``; they live in :mod:`.performance`.)
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["RETURN_STATS_KEYS", "return_stats"]

RETURN_STATS_KEYS = (
    "skew", "kurtosis", "var", "cvar", "omega", "tail_ratio", "payoff_ratio", "daily_profit_factor",
    "win_days", "kelly", "recovery_factor", "ulcer_index", "time_in_market", "best_month", "worst_month",
    "best_year", "worst_year", "max_consecutive_winning_days",
)

_ZERO_SD = 1e-12   # a daily std at or below this is rounding noise of a constant series
_CONFIDENCE = 0.95
_Z = NormalDist().inv_cdf(1.0 - _CONFIDENCE)          # scipy.stats.norm.ppf(0.05) to ~1e-16
_ES = NormalDist().pdf(_Z) / (1.0 - _CONFIDENCE)


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None where it is missing, NaN or infinite (metrics.json holds no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def longest_run(mask: np.ndarray) -> int:
    """The length of the longest run of True in ``mask``."""
    if not mask.any():
        return 0
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return int(np.max(edges[1::2] - edges[::2]))


def _moments(r: np.ndarray) -> tuple[float, float, float]:
    """Sums of the 2nd, 3rd and 4th powers of the deviations from the mean."""
    d = r - float(np.mean(r))
    d2 = d * d
    return float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum())


def _skew(r: np.ndarray) -> float | None:
    """pandas' ``Series.skew`` (adjusted Fisher-Pearson G1); None (pandas: NaN) if n < 3 or constant."""
    n = len(r)
    if n < 3 or float(np.std(r)) <= _ZERO_SD:
        return None
    m2, m3, _ = _moments(r)
    return finite_or_none((n * (n - 1) ** 0.5 / (n - 2)) * (m3 / m2 ** 1.5))


def _kurtosis(r: np.ndarray) -> float | None:
    """pandas' ``Series.kurtosis`` (excess, G2); None (pandas: NaN) if n < 4 or constant."""
    n = len(r)
    if n < 4 or float(np.std(r)) <= _ZERO_SD:
        return None
    m2, _, m4 = _moments(r)
    adj = 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    return finite_or_none(n * (n + 1) * (n - 1) * m4 / ((n - 2) * (n - 3) * m2 ** 2) - adj)


def _compounded(days: np.ndarray, r: np.ndarray, unit: str) -> np.ndarray:
    """``prod(1 + r) - 1`` per calendar month ("M") or year ("Y") that holds a day, in time order."""
    period = np.asarray(days, np.int64).astype("datetime64[ns]").astype(f"datetime64[{unit}]").astype(np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(period)) + 1))
    return np.multiply.reduceat(1.0 + r, starts) - 1.0


def return_stats(days: np.ndarray, r: np.ndarray, max_drawdown: float | None,
                 underwater: np.ndarray) -> dict[str, float | int | None]:
    """Every key of :data:`RETURN_STATS_KEYS` for the daily returns ``r`` on ``days``.

    ``max_drawdown`` is the span's (positive fraction, the start the first peak) and ``underwater``
    its daily ``E_d / peak_d - 1`` series (:func:`tradeloop.engine.metrics.curves.underwater`).
    """
    r = np.asarray(r, np.float64)
    n = len(r)
    out: dict[str, float | int | None] = dict.fromkeys(RETURN_STATS_KEYS)
    out["max_consecutive_winning_days"] = longest_run(r > 0)
    if n == 0:
        out["win_days"] = 0.0
        out["time_in_market"] = 0.0
        return out
    up, down = r[r > 0], r[r < 0]
    out["skew"] = _skew(r)
    out["kurtosis"] = _kurtosis(r)
    if n >= 2:
        mu, sd = float(np.mean(r)), float(np.std(r, ddof=1))
        out["var"] = finite_or_none(mu + sd * _Z)
        out["cvar"] = finite_or_none(mu - sd * _ES) if sd != 0 else finite_or_none(mu)
        loss = -float(down.sum())
        out["omega"] = finite_or_none(float(up.sum()) / loss) if loss > 0 else None
        dd = np.nan_to_num(np.asarray(underwater, np.float64))
        out["ulcer_index"] = finite_or_none(math.sqrt(float((dd ** 2).sum()) / (n - 1)))
    lo, hi = np.quantile(r, 1.0 - _CONFIDENCE), np.quantile(r, _CONFIDENCE)
    out["tail_ratio"] = finite_or_none(abs(hi / lo)) if lo != 0 else None
    nonzero = int(np.count_nonzero(r))
    win = len(up) / nonzero if nonzero else 0.0
    out["win_days"] = win
    if len(up) and len(down):
        payoff = float(np.mean(up)) / abs(float(np.mean(down)))
        out["payoff_ratio"] = finite_or_none(payoff)
        if payoff != 0:
            out["kelly"] = finite_or_none((payoff * win - (1 - win)) / payoff)
    gains, losses = float(r[r >= 0].sum()), abs(float(down.sum()))
    out["daily_profit_factor"] = finite_or_none(gains / losses) if losses != 0 else None
    if max_drawdown:
        out["recovery_factor"] = finite_or_none(abs(float(r.sum())) / abs(max_drawdown))
    out["time_in_market"] = math.ceil(nonzero / n * 100) / 100
    months, years = _compounded(days, r, "M"), _compounded(days, r, "Y")
    out["best_month"], out["worst_month"] = finite_or_none(months.max()), finite_or_none(months.min())
    out["best_year"], out["worst_year"] = finite_or_none(years.max()), finite_or_none(years.min())
    return out
