"""``tradeloop models kline-train`` / ``kline-eval``: a forecaster from a TOML file; mistakes are one line, exit 2."""
from __future__ import annotations

import numpy as np

from tradeloop.engine.cli.models import cmd_models_kline

from tests.test_kline_support import TINY, market, needs_torch


def write_csv(path, s) -> None:
    dates = np.asarray(s.ts).astype("datetime64[ns]").astype("datetime64[D]").astype(str)
    rows = ["date,open,high,low,close,volume,amount"] + [
        f"{d},{float(o)!r},{float(h)!r},{float(l)!r},{float(c)!r},{float(v)!r},{float(a)!r}"
        for d, o, h, l, c, v, a in zip(dates, s.open, s.high, s.low, s.close, s.volume, s.extra["amount"])]
    path.write_text("\n".join(rows) + "\n")


def test_kline_train_registers_a_forecaster_from_a_toml_file(tmp_path, capsys):
    needs_torch()
    csv = tmp_path / "AAA.csv"
    write_csv(csv, market(400)[0])
    t = TINY["transformer"]
    conf = tmp_path / "k.toml"
    conf.write_text(f"""
name = "cli"
data = ["{csv}"]
registry = "{tmp_path / 'reg'}"
train_end = "2012-12-01"
lookback = 32
tokenizer_steps = 40
steps = 10
size = {{ tokenizer = {{ hidden = 16, coarse_bits = 4, fine_bits = 4 }}, transformer = {{ d_model = {t['d_model']}, heads = 2, layers = 1, ff = 32, max_len = 64 }} }}
""")
    assert cmd_models_kline(["kline-train", "--config", str(conf), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "cli@v0001"
    assert cmd_models_kline(["kline-train", "--config", str(conf), "--quiet", "--set", "steps=5"]) == 0
    assert capsys.readouterr().out.strip() == "cli@v0002"


def test_kline_train_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    conf = tmp_path / "k.toml"
    conf.write_text('name = "x"\ndata = ["a.csv"]\ntrain_end = "2012-01-01"\nepochs = 3\n')
    assert cmd_models_kline(["kline-train", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key(s) epochs" in err and str(conf) in err
    conf.write_text('name = "x"\ndata = ["nope.csv"]\ntrain_end = "2012-01-01"\n')
    assert cmd_models_kline(["kline-train", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.csv" in err
    conf.write_text('name = "x"\ndata = ["a.csv"]\ntrain_end = "2012-01-01"\nlookback = 2\n')
    assert cmd_models_kline(["kline-train", "--config", str(conf)]) == 2
    assert "lookback must be an integer >= 8" in capsys.readouterr().err
    assert cmd_models_kline(["kline-train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml not found" in capsys.readouterr().err
    assert cmd_models_kline(["kline-eval", "--data-dir", str(tmp_path), "--model", "x@v0001"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data file(s) not found" in err
