"""Specification of models.health: rolling p99 latency and live accuracy of the active model; a
breach switches to the backup version and is recorded; no backup: recorded once, model kept."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tradeloop.data.schema import Bar
from tradeloop.models.errors import ModelError
from tradeloop.models.features import FeatureSpec
from tradeloop.models.health import HealthLimits, HealthMonitor
from tradeloop.models.predictor import Predictor, open_predictor
from tradeloop.models.registry import Registry
from tests.test_models_support import random_bars, trained


class Slow:
    """A real model made slow on purpose."""

    def __init__(self, model, seconds: float) -> None:
        self.model, self.seconds, self.spec = model, seconds, model.spec

    def predict(self, windows):
        time.sleep(self.seconds)
        return self.model.predict(windows)

    def __str__(self) -> str:
        return f"slow {self.model}"


class Fixed:
    """Always the same logits (e.g. always 'up')."""

    def __init__(self, logits, spec, name: str) -> None:
        self.logits, self.spec, self.name = np.asarray(logits, np.float32), spec, name

    def predict(self, windows):
        return np.tile(self.logits, (len(windows), 1))

    def __str__(self) -> str:
        return self.name


def bars_of(series, t: int) -> list[Bar]:
    return [series.bar(t)]


def test_a_slow_model_is_replaced_by_its_backup_and_the_switch_recorded():
    root, _ = trained("tiny")
    reg = Registry(root)
    primary, backup = reg.load("tiny@v0001", "onnx-cpu"), reg.load("tiny@v0002", "onnx-cpu")
    seen = []
    mon = HealthMonitor(Slow(primary, 0.06), backup, HealthLimits(p99_ms=30.0, min_latency_samples=10),
                        on_switch=seen.append)
    x = np.zeros((1, 16, 16), np.float32)
    for _ in range(9):
        mon.predict(x)
    assert str(mon.active).startswith("slow") and not mon.events  # too few samples to judge
    mon.predict(x, ts=123)
    assert mon.active is backup
    (event,) = mon.events
    assert seen == [event]
    assert event.metric == "p99_latency_ms" and event.value > 30.0 and event.limit == 30.0 and event.ts == 123
    assert event.from_model == "slow tiny@v0001 (onnx-cpu)" and event.to_model == "tiny@v0002 (onnx-cpu)"
    assert "switched slow tiny@v0001 (onnx-cpu) -> tiny@v0002 (onnx-cpu)" in str(event)
    for _ in range(20):
        mon.predict(x)  # the fast backup stays
    assert len(mon.events) == 1 and mon.p99_ms < 30.0


def test_the_predictor_through_open_predictor_falls_back_when_the_model_slows():
    root, _ = trained("tiny")
    # limits far from the backup's own latency (~0.1 ms), so a busy CI machine cannot make the backup breach too
    limits = HealthLimits(p99_ms=30.0, min_latency_samples=5)
    pred = open_predictor(root, "tiny@v0001", ["X"], backup="tiny@v0002", limits=limits)
    mon = pred.model
    mon.active = Slow(mon.active, 0.06)
    s = random_bars(4, 120)
    outs = [pred.step(bars_of(s, t)) for t in range(len(s))]
    assert sum(bool(o) for o in outs) == len(s) - FeatureSpec(lookback=16).min_bars + 1
    assert [e.to_model for e in mon.events] == ["tiny@v0002 (onnx-cpu)"]


def test_live_accuracy_below_its_limit_switches_to_the_backup():
    spec = FeatureSpec(lookback=8)
    up, down = Fixed([0.0, 5.0], spec, "always-up"), Fixed([5.0, 0.0], spec, "always-down")
    mon = HealthMonitor(up, down, HealthLimits(p99_ms=1000, min_accuracy=0.4, min_accuracy_samples=20))
    pred = Predictor(mon, ["X"], spec, horizon=3, threshold=0.0)
    s = random_bars(9, 200)
    falling = s.close[0] * np.exp(-0.01 * np.arange(200))  # every 3-bar move is down
    for t in range(200):
        c = falling[t]
        pred.update_bars([Bar("X", int(s.ts[t]), c, c * 1.01, c * 0.99, c, 1000.0)])
        pred.request("X")
        pred.run(int(s.ts[t]))
    (event,) = mon.events
    assert event.metric == "live_accuracy" and event.value == 0.0 and event.to_model == "always-down"
    assert mon.active is down and mon.accuracy == 1.0  # the backup calls the falling market right


def test_a_breach_without_backup_is_recorded_once_and_the_model_kept():
    spec = FeatureSpec(lookback=8)
    m = Fixed([0.0, 1.0], spec, "only")
    mon = HealthMonitor(m, None, HealthLimits(min_accuracy=0.9, min_accuracy_samples=5))
    for _ in range(4):
        mon.record_outcomes([1, 1, 1], [0, 0, 0])
    assert mon.active is m and len(mon.events) == 1
    assert mon.events[0].to_model is None and "no backup left" in str(mon.events[0])


def test_rolling_statistics():
    spec = FeatureSpec(lookback=8)
    ticks = iter(np.arange(0, 1000, 0.5))  # every call takes 0.5 clock units = 500 ms
    mon = HealthMonitor(Fixed([0, 1], spec, "m"), clock=lambda: float(next(ticks)),
                        limits=HealthLimits(p99_ms=1e9))
    assert np.isnan(mon.p99_ms) and np.isnan(mon.accuracy)
    mon.predict(np.zeros((1, 8, 16), np.float32))
    assert mon.p99_ms == pytest.approx(500.0)
    mon.record_outcomes([1, 0, 1, 1], [1, 0, 0, 1])
    assert mon.accuracy == 0.75


@pytest.mark.parametrize("kwargs, words", [({"p99_ms": 0}, "p99_ms"), ({"min_accuracy": 1.5}, "min_accuracy"),
                                           ({"latency_window": 0}, "latency_window")])
def test_bad_limits_are_clear_errors(kwargs, words):
    with pytest.raises(ModelError, match=words):
        HealthLimits(**kwargs)


def test_mismatched_outcome_counts_are_an_error():
    mon = HealthMonitor(Fixed([0, 1], FeatureSpec(), "m"))
    with pytest.raises(ModelError, match="3 predictions vs 2 outcomes"):
        mon.record_outcomes([1, 1, 1], [1, 0])


def test_a_backup_with_other_features_is_refused(tmp_path):
    import shutil

    from tradeloop.models.errors import CompatibilityError

    root, _ = trained("tiny")
    reg = Registry(shutil.copytree(root, tmp_path / "reg"))
    net = reg.info("tiny@v0001").load_net()
    other = reg.save("other", net, FeatureSpec(lookback=16, window=10), reg.info("tiny@v0001").net, onnx=False)
    with pytest.raises(CompatibilityError, match=r"other@v0001 cannot be loaded: .*window 10 \(model\) vs 20"):
        open_predictor(reg, "tiny@v0001", ["X"], runtime="torch-cpu", backup=str(other))
