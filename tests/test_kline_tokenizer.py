"""The K-line tokenizer: per-window normalisation, BSQ coarse + fine codes, round trip, bits per bar."""
from __future__ import annotations

import numpy as np
import pytest

from tradeloop.models.errors import FeatureError, TrainingError
from tradeloop.models.kline.config import ModelSizes
from tradeloop.models.kline.normalize import EPS, check_bars, denormalize, normalize, stats_of
from tradeloop.models.kline.spec import KlineSpec, bar_matrix

from tests.conftest import SHARED_DATA, need
from tests.test_kline_support import TINY, market, needs_torch


def test_normalisation_uses_the_context_only_and_inverts_exactly_inside_the_clip():
    bars = bar_matrix(market(200)[0])[None, :80]
    stats = stats_of(bars[:, :64])
    z = normalize(bars, stats, clip=50.0)
    assert np.allclose(z[0, :64].mean(0), 0, atol=1e-5) and np.allclose(z[0, :64].std(0), 1, atol=1e-3)
    back = denormalize(z.astype(np.float64), stats)
    assert np.allclose(back, bars, rtol=1e-5)
    assert np.abs(normalize(bars * np.array([1, 1, 1, 1, 1e6, 1e6]), stats, clip=5.0)).max() <= 5.0
    flat = np.ones((1, 10, 6))
    assert np.isfinite(normalize(flat, stats_of(flat), 5.0)).all() and EPS > 0   # a flat window is 0, not NaN


def test_bad_bars_are_refused_naming_the_bar_and_field():
    bars = bar_matrix(market(50)[0])
    bad = bars.copy()
    bad[7, 3] = np.nan
    with pytest.raises(FeatureError, match="non-finite value at bar 7 field close"):
        check_bars(bad)
    bad = bars.copy()
    bad[3, 1] = 0.0
    with pytest.raises(FeatureError, match="price <= 0 at bar 3 field high"):
        check_bars(bad)
    with pytest.raises(FeatureError, match=r"expected bars \[\.\.\., T, 6\]"):
        check_bars(bars[:, :5])
    with pytest.raises(FeatureError, match="lookback must be an integer >= 8"):
        KlineSpec(4)


def test_sizes_name_unknown_keys_and_presets():
    assert ModelSizes.from_dict("tiny").tokenizer.bits == 20
    with pytest.raises(TrainingError, match="unknown preset 'huge'"):
        ModelSizes.from_dict("huge")
    with pytest.raises(TrainingError, match="unknown transformer key"):
        ModelSizes.from_dict({"transformer": {"width": 3}})
    with pytest.raises(TrainingError, match="not a multiple of heads"):
        ModelSizes.from_dict({"transformer": {"d_model": 30, "heads": 4}})


@pytest.fixture(scope="module")
def trained():
    needs_torch()
    from tradeloop.models.kline.train import cut_windows, normalised, train_tokenizer

    windows = cut_windows(market(600), None, None, 32, 2)
    z, _ = normalised(windows, 32, 5.0)
    tok = train_tokenizer(z.reshape(-1, 6), ModelSizes.from_dict(TINY), 300, batch=512, seed=0)
    return tok, windows


def test_round_trip_error_is_bounded_ids_are_in_range_and_the_fine_code_refines(trained):
    import torch

    from tradeloop.models.kline.train import normalised

    tok, windows = trained
    z, _ = normalised(windows[:200], 32, 5.0)
    x = torch.from_numpy(z)
    ids = tok.encode(x)
    assert ids.shape == (200, 32, 2) and ids.dtype == torch.int64
    assert 0 <= int(ids[..., 0].min()) and int(ids[..., 0].max()) < 32
    assert 0 <= int(ids[..., 1].min()) and int(ids[..., 1].max()) < 32
    rec = tok.decode(ids)
    full = float((rec - x).pow(2).mean())
    _, q = tok.quantize(x)
    with torch.no_grad():
        coarse = float((tok.decoder(tok.coarse_only(q)) - x).pow(2).mean())
    assert full < 0.35, full                 # z units (the data's variance is ~1)
    assert full < coarse                     # the fine token adds information
    assert torch.equal(tok.encode(x), ids)   # deterministic
    assert torch.equal(tok.encode(x[:1]), ids[:1])   # a window's codes do not depend on its batch-mates
    assert torch.equal(tok.decode(ids[:1]), rec[:1])


def test_the_report_gives_error_per_field_and_bits_per_bar(trained):
    from tradeloop.models.kline.train import tokenizer_report

    tok, windows = trained
    r = tokenizer_report(tok, windows[:300], 32, 5.0)
    assert set(r["fields"]) == {"open", "high", "low", "close", "volume", "amount"}
    assert all(f["rmse_z"] > 0 and f["mae_pct"] > 0 for f in r["fields"].values())
    assert r["fields"]["close"]["mae_pct"] < 5.0
    assert r["bits_per_bar_nominal"] == 10
    e = r["entropy"]
    assert 0 < e["coarse_bits"] <= 5 and 0 <= e["fine_given_coarse_bits"] <= 5
    assert e["bits"] == pytest.approx(e["coarse_bits"] + e["fine_given_coarse_bits"])
    assert e["codes_used"] > 32              # more codes than the coarse vocabulary alone


def test_on_real_a_share_bars_the_close_rebuilds_within_two_percent():
    needs_torch()
    from tradeloop.data.loaders import load_bars
    from tradeloop.models.kline.train import _ts, cut_windows, normalised, tokenizer_report, train_tokenizer

    s = load_bars(need(SHARED_DATA / "qbot" / "600519.SH.csv"))
    train = cut_windows([s], None, _ts("2015-01-01", ""), 64, 2)
    test = cut_windows([s], _ts("2015-01-01", ""), _ts("2016-01-01", ""), 64, 8)
    z, _ = normalised(train, 64, 5.0)
    tok = train_tokenizer(z.reshape(-1, 6), ModelSizes.from_dict({"tokenizer": {"hidden": 64}}), 250, batch=1024, seed=0)
    r = tokenizer_report(tok, test, 64, 5.0)
    assert r["fields"]["close"]["mae_pct"] < 2.0, r["fields"]["close"]
