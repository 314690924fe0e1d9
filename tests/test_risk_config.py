"""The [risk], [market] and [live] sections of a run's TOML, and their --set forms."""
from __future__ import annotations

import pytest

from tradeloop.errors import ConfigError

from tradeloop.engine.config.run import RunConfig
from tradeloop.risk.config import DrawdownSection, HaltSection, ReviewSection

TOML = """
[run]
strategy = "sma_cross"
market = "cn-a"

[risk]
max_position = 10000
collar = 0.05

[risk.review]
notional = 1_000_000
policy = "approve"

[risk.halt]
scope = "book"

[risk.drawdown]
max = 0.2
action = "flatten"

[market]
st = ["600001.SH"]
stamp_duty = 0.001

[live]
state = "live.db"
"""


def load(tmp_path, text: str) -> RunConfig:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return RunConfig.load(path)


def test_nested_tables_are_read_typed(tmp_path):
    cfg = load(tmp_path, TOML)
    assert cfg.risk.max_position == 10000.0 and isinstance(cfg.risk.max_position, float)
    assert cfg.risk.review == ReviewSection(notional=1_000_000.0, policy="approve", timeout=300.0)
    assert cfg.risk.halt == HaltSection(enabled=True, move=0.05, scope="book", cancel_working=False)  # present: on
    assert cfg.risk.drawdown == DrawdownSection(max=0.2, daily_loss=None, action="flatten")
    assert cfg.market.st == ["600001.SH"] and cfg.market.stamp_duty == 0.001 and cfg.market.lot_size == 100
    assert cfg.live.state == "live.db" and cfg.run.market == "cn-a"
    again = RunConfig.from_dict(cfg.to_dict())   # the manifest's config reads back to the same run
    assert (again.risk, again.market, again.live) == (cfg.risk, cfg.market, cfg.live)


def test_halts_are_off_unless_asked_for(tmp_path):
    assert RunConfig().risk.halt.enabled is False
    assert load(tmp_path, "[risk.halt]\nenabled = false\nmove = 0.07\n").risk.halt.enabled is False
    cfg = RunConfig()
    cfg.override("risk.halt.move=0.07")
    assert cfg.risk.halt.enabled is True and cfg.risk.halt.move == 0.07


def test_every_key_can_be_set_from_the_command_line():
    cfg = RunConfig()
    for item in ("risk.review.notional=1000000", "risk.review.policy=reject", "risk.review.timeout=60",
                 "risk.drawdown.daily_loss=0.03", "risk.max_orders_per_second=5", "market.st=600001.SH,000005.SZ",
                 "market.t_plus_1=false", "live.state=/tmp/x.db", "risk.drawdown.max=none"):
        cfg.override(item)
    assert cfg.risk.review == ReviewSection(notional=1e6, policy="reject", timeout=60.0)
    assert cfg.risk.drawdown.daily_loss == 0.03 and cfg.risk.drawdown.max is None
    assert cfg.risk.max_orders_per_second == 5
    assert cfg.market.st == ["600001.SH", "000005.SZ"] and cfg.market.t_plus_1 is False
    assert cfg.live.state == "/tmp/x.db"


@pytest.mark.parametrize("text, message", [
    ("[risk]\nmax_positon = 5\n", "[risk]: unknown key(s) max_positon (known: collar, drawdown, halt, max_gross, "
                                  "max_orders_per_second, max_position, review)"),
    ("[risk.review]\nnotionl = 5\n", "[risk.review]: unknown key(s) notionl (known: notional, policy, timeout)"),
    ("[risk.drawdown]\nmax = \"ten\"\n", "[risk.drawdown]: max: must be a number, got 'ten'"),
    ("[risk.halt]\ncancel_working = 1\n", "[risk.halt]: cancel_working: must be true or false, got 1"),
    ("[market]\nst = \"600001.SH\"\n", None),   # one symbol as text is a list of one
    ("[market]\nlot_size = 100.5\n", "[market]: lot_size: must be a whole number, got 100.5"),
    ("[live]\nstate = 3\n", "[live]: state: must be text, got 3"),
    ("[risk]\nreview = 5\n", "[risk.review]: expected a table, got 5"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, text, message):
    if message is None:
        assert load(tmp_path, text).market.st == ["600001.SH"]
        return
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert message in str(e.value)


@pytest.mark.parametrize("item, message", [
    ("risk.review.nope=1", "no key 'risk.review.nope' (known here: notional, policy, timeout)"),
    ("risk.halt=1", "risk.halt is a table; set one of its keys (risk.halt.KEY=VALUE)"),
    ("risk.review.notional=lots", "must be a number, got 'lots'"),
    ("market.transfer_fee=none", "must be a number, got 'none'"),   # only optional keys can be cleared
])
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig().override(item)
