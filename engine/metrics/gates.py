"""Acceptance gates: thresholds a run declares on its metrics, so a failed run can block a deployment.

A gate is ``metric = "<op> <number>"`` in the ``[gates]`` table of a run's TOML (or
``--set gates.metric=">= 1"``), e.g. ``sharpe = ">= 2"``, ``max_drawdown = "<= 0.08"``,
``excess_return = ">= 15%"`` (a trailing ``%`` divides by 100). Operators: ``>= > <= < == !=``.
A gate on a metric that is None (undefined for the run, or a benchmark metric without a
benchmark) fails, and says why. Results go to ``metrics.json`` under ``gates``.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog

from tradeloop.engine.metrics.benchmark import BENCHMARK_KEYS
from tradeloop.errors import ConfigError
from tradeloop.engine.metrics.performance import METRIC_KEYS
from tradeloop.engine.metrics.signals import SIGNAL_KEYS

__all__ = ["Gate", "GATEABLE", "parse_gates", "evaluate_gates", "apply_gates", "failed_gates"]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
GATEABLE: frozenset[str] = frozenset(METRIC_KEYS) | frozenset(BENCHMARK_KEYS) | frozenset(SIGNAL_KEYS)
_RULE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True, slots=True)
class Gate:
    """One threshold: ``metric op threshold``, with the rule as the user wrote it."""

    metric: str
    op: str
    threshold: float
    rule: str

    def check(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """This gate against ``metrics``: ``{rule, value, passed, reason}``."""
        value = metrics.get(self.metric)
        if value is None:
            why = ("needs a benchmark (--benchmark PATH or run.benchmark)"
                   if self.metric in BENCHMARK_KEYS and "benchmark_return" not in metrics
                   else "needs predictions.parquet in the run folder" if self.metric in SIGNAL_KEYS
                   else "is undefined (None) for this run")
            return {"rule": self.rule, "value": None, "passed": False, "reason": f"{self.metric} {why}"}
        v = float(value)
        passed = math.isfinite(v) and OPS[self.op](v, self.threshold)
        verdict = "meets" if passed else "does not meet"
        return {"rule": self.rule, "value": v, "passed": bool(passed),
                "reason": f"{self.metric} = {v:.6g} {verdict} {self.op} {self.threshold:.6g}"}


def parse_gate(metric: str, rule: Any) -> Gate:
    """One ``metric = "<op> <number>"`` entry as a Gate; a ConfigError naming the key if malformed."""
    where = f"[gates] {metric}"
    if metric not in GATEABLE:
        raise ConfigError(f"{where}: unknown metric {metric!r} (known: {', '.join(sorted(GATEABLE))})")
    if not isinstance(rule, str):
        raise ConfigError(f"{where}: expected a string like \">= 1.5\" or \"<= 8%\", got {rule!r}")
    m = _RULE.match(rule)
    if m is None:
        raise ConfigError(f"{where}: cannot read {rule!r}; expected \"<op> <number>\" with op one of "
                          f"{' '.join(OPS)} (e.g. \">= 1.5\" or \"<= 8%\")")
    op, number, pct = m.groups()
    threshold = float(number) / (100.0 if pct else 1.0)
    return Gate(metric, op, threshold, " ".join(rule.split()))


def parse_gates(raw: Mapping[str, Any]) -> list[Gate]:
    """Every gate of a run's ``[gates]`` table, in key order (checked before the run starts)."""
    return [parse_gate(k, v) for k, v in sorted(raw.items())]


def evaluate_gates(gates: list[Gate], metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{metric: {rule, value, passed, reason}}`` for every gate."""
    return {g.metric: g.check(metrics) for g in gates}


def apply_gates(gates: list[Gate], metrics: dict[str, Any]) -> None:
    """Put the gate results into ``metrics["gates"]`` (only when the run declares gates) and log failures."""
    if not gates:
        return
    metrics["gates"] = evaluate_gates(gates, metrics)
    log = structlog.get_logger("tradeloop.gates")
    for name, g in metrics["gates"].items():
        if not g["passed"]:
            log.warning("gate_failed", metric=name, rule=g["rule"], reason=g["reason"])


def failed_gates(metrics: Mapping[str, Any]) -> list[str]:
    """The metrics whose gate failed, from a metrics dict that holds ``gates``."""
    return [k for k, g in (metrics.get("gates") or {}).items() if not g.get("passed")]
