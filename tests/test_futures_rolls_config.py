"""Futures rolls from the run config (``[[rolls]]``), checked key by key, carried into the manifest and the run
folder's rolls.parquet, through the CLI. The second contract is IF1706 shifted (as in tests/test_futures_rules.py):
"IF1709" = IF1706's prices + 25.0, with an open interest that passes IF1706's at bar 120."""
from __future__ import annotations

import csv
import json

import numpy as np
import polars as pl
import pytest

from tests.conftest import need
from tests.test_futures import IF_FILE
from tests.test_futures_rules import ROLL_BAR, SHIFT
from tradeloop.data.loaders import load_bars
from tradeloop.engine.config.run import RunConfig
from tradeloop.errors import ConfigError

INST = ('[[instruments]]\npattern = "IF*"\nasset_class = "future"\nmultiplier = 300\nmargin = 0.2\n'
        'qty_step = 1\ntick = 0.2\ncommission = { kind = "per_share", per_share = 2.3 }\n')


def _shifted(tmp_path):
    rows = list(csv.DictReader(open(need(IF_FILE), newline="")))
    out = tmp_path / "IF1709.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for i, r in enumerate(rows):
            r = dict(r)
            for k in ("OpeningPx", "HighPx", "LowPx", "ClosingPx", "LowLimitPx", "HighLimitPx"):
                r[k] = repr(float(r[k]) + SHIFT)
            r["OpenInterest"] = str(int(float(r["OpenInterest"])) + (1 if i >= ROLL_BAR else -1))
            w.writerow(r)
    return out


@pytest.mark.parametrize("how", ["date", "open_interest"])
def test_rolls_from_config_via_cli(tmp_path, how):
    from tradeloop.engine.cli.main import main
    near = load_bars(need(IF_FILE), "IF1706")
    when = str(np.datetime64(int(near.ts[ROLL_BAR]), "ns").astype("datetime64[s]"))
    roll = f'date = "{when}"' if how == "date" else 'by = "open_interest"'
    cfg = tmp_path / "run.toml"
    cfg.write_text(INST + f'[[data]]\npath = "{IF_FILE}"\nsymbol = "IF1706"\n'
                   f'[[data]]\npath = "{_shifted(tmp_path)}"\nsymbol = "IF1709"\n'
                   f'[[rolls]]\nfrom = "IF1706"\nto = "IF1709"\n{roll}\n')
    out = tmp_path / "run"
    assert main(["backtest", "sma_cross", "--config", str(cfg), "--param", "size=1", "--cash", "2000000",
                 "--out", str(out), "--quiet"]) == 0
    rolls = pl.read_parquet(out / "rolls.parquet")
    assert rolls["old"].to_list() == ["IF1706"] and rolls["new"].to_list() == ["IF1709"]
    assert rolls["ts"][0] == str(np.datetime64(int(near.ts[ROLL_BAR]), "ns"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["rolls"][0]["from"] == "IF1706"
    (done,) = m["details"]["rolls"]
    assert done["old"] == "IF1706" and done["qty"] == rolls["qty"][0]
    orders = pl.read_parquet(out / "orders.parquet")
    if done["qty"]:
        tagged = orders.filter(pl.col("tag") == "roll") if "tag" in orders.columns else orders
        assert len(tagged) == 2


@pytest.mark.parametrize("row, msg", [
    ({"from": "IF1706", "to": "IF1709"}, r"rolls #1: give either date"),
    ({"from": "IF1706", "to": "IF1709", "date": "2016-11-08", "by": "open_interest"}, r"rolls #1: give either"),
    ({"from": "IF1706", "to": "IF1709", "by": "volume"}, r"rolls #1\.by must be 'open_interest'"),
    ({"from": "IF1706", "to": "IF1709", "date": "soon"}, r"rolls #1\.date"),
    ({"from": "IF1706", "date": "2016-11-08"}, r"rolls #1\.to: a contract symbol is required"),
    ({"from": "IF1706", "to": "IF1706", "date": "2016-11-08"}, r"rolls #1\.to: the same contract"),
    ({"from": "IF1706", "to": "IF1709", "date": "2016-11-08", "when": 1}, r"rolls #1: unknown key 'when'"),
])
def test_rolls_config_errors_name_the_key(row, msg):
    cfg = RunConfig.from_dict({"rolls": [row]})
    with pytest.raises(ConfigError, match=msg):
        cfg.validate()


def test_rolls_contract_not_among_inputs():
    from tradeloop.engine.assembly.build import build_rolls
    cfg = RunConfig.from_dict({"rolls": [{"from": "IF1706", "to": "IF1712", "date": "2016-11-08"}]})
    with pytest.raises(ConfigError, match=r"rolls #1\.to: 'IF1712' is not among the inputs"):
        build_rolls(cfg, [load_bars(need(IF_FILE), "IF1706")])
