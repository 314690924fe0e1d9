"""Specification of models.nets and models.train: the networks' shapes and sizes; training is
seeded (bit-identical weights on a CPU rerun), validates after training in time, reports test
accuracy next to naive baselines, supports QAT, stores the model and returns NAME@VERSION."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tradeloop.models.errors import TrainingError
from tradeloop.models.nets import NetConfig, build_net
from tradeloop.models.registry import Registry
from tradeloop.models.train import TrainConfig, fit, load_series
from tests.test_models_support import TINY_NET, qbot, tiny_config, trained

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")


# -- networks ------------------------------------------------------------------------------------

def test_default_conv_transformer_has_the_specified_shape():
    net = build_net(NetConfig(), 16, 64)
    assert net.conv.in_channels == 16 and net.conv.out_channels == 64 and net.conv.kernel_size == (3,)
    assert len(net.blocks) == 4 and net.blocks[0].heads == 8 and net.blocks[0].qkv.in_features == 64
    assert net.head.out_features == 2
    assert net.eval()(torch.zeros(5, 64, 16)).shape == (5, 2)


@pytest.mark.parametrize("config", [
    NetConfig("conv_transformer", {"d_model": 32, "layers": 2, "heads": 4, "ff": 64, "kernel": 5}),
    NetConfig("lstm", {"hidden": 24, "layers": 2}),
])
def test_networks_take_configurable_sizes(config):
    net = build_net(config, 16, 20).eval()
    assert net(torch.randn(3, 20, 16)).shape == (3, 2)


@pytest.mark.parametrize("config, words", [
    (NetConfig("conv_transformer", {"d_model": 30, "heads": 4}), "multiple of heads"),
    (NetConfig("conv_transformer", {"widht": 3}), "bad size parameter"),
])
def test_bad_network_sizes_are_clear_errors(config, words):
    with pytest.raises((TrainingError, ValueError), match=words):
        build_net(config, 16, 64)


def test_unknown_network_kind_is_a_clear_error():
    with pytest.raises(TrainingError, match="unknown network 'gru'"):
        NetConfig("gru")


# -- training --------------------------------------------------------------------------------------

def _weights(net) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in net.state_dict().values()]


def test_training_is_bit_identical_on_a_cpu_rerun():
    cfg = TrainConfig.from_dict(tiny_config("det", epochs=1, train_end="2012-01-01", val_end="2012-07-01",
                                            test_end=None))
    series = load_series(cfg)
    a, b = fit(cfg, series), fit(cfg, series)
    assert all(np.array_equal(x, y) for x, y in zip(_weights(a.net), _weights(b.net)))
    assert a.history == b.history
    c = fit(TrainConfig.from_dict({**cfg.to_dict(), "seed": 7}), series)
    assert not all(np.array_equal(x, y) for x, y in zip(_weights(a.net), _weights(c.net)))


def test_train_stores_a_version_with_metrics_next_to_naive_baselines():
    root, ref = trained("tiny")
    info = Registry(root).info(ref)
    m = info.metadata["metrics"]
    for split in ("train", "val", "test"):
        assert {"n", "accuracy", "baseline_majority", "baseline_previous_sign", "up_share"} <= set(m[split])
        assert 0.0 <= m[split]["accuracy"] <= 1.0
    assert m["val"]["n"] > 0 and m["test"]["n"] > 0
    meta = info.metadata
    assert meta["training_window"] == {"train_start": "2010-01-01", "train_end": "2013-01-01",
                                       "val_end": "2013-07-01", "test_end": "2014-07-01"}
    assert [d["symbol"] for d in meta["data"]] == ["600519.SH", "000858.SZ"]
    assert all(len(d["sha256"]) == 64 for d in meta["data"])
    assert meta["label"] == {"horizon": 5, "threshold": 0.0}
    assert json.loads((info.path / "train_config.json").read_text())["net"] == TINY_NET
    assert meta["created_at"].endswith("+00:00")


def test_validation_split_lies_after_training_and_early_stopping_keeps_the_best_epoch():
    cfg = TrainConfig.from_dict(tiny_config("es", epochs=6, patience=1, lr=3e-2, test_end=None))
    res = fit(cfg)
    losses = [h["val_loss"] for h in res.history]
    stop = next((i for i in range(1, len(losses)) if losses[i] >= min(losses[:i])), None)
    assert len(losses) == (stop + 1 if stop is not None else 6)  # patience 1: stop at the first non-improvement
    assert res.metrics["val"]["loss"] == pytest.approx(min(losses), rel=1e-6)  # the best epoch's weights


def test_quantization_aware_training_leaves_7_bit_grid_weights():
    """The grid ONNX Runtime's quantizer (int8, reduce_range: models/export.py) finds again:
    max|w| / 64 steps, every weight on one."""
    cfg = TrainConfig.from_dict(tiny_config("qat", epochs=1, qat=True, qat_epochs=1, test_end=None))
    res = fit(cfg)
    assert [h["phase"] for h in res.history] == ["train", "qat"]
    w = res.net.blocks[0].ff1.weight.detach()
    scale = w.abs().max() / 64
    assert torch.allclose(w / scale, torch.round(w / scale), atol=1e-3)  # on the symmetric 7-bit grid
    assert not any("parametriz" in k for k in res.net.state_dict())


@pytest.mark.parametrize("over, words", [
    ({"train_end": "2014-01-01", "val_end": "2013-01-01"}, "train_end must be before val_end"),
    ({"val_end": "2013-07-01", "test_end": "2013-01-01"}, "val_end must be before test_end"),
    ({"train_end": "next year"}, "not a date"),
    ({"epochs": 0}, "epochs"),
    ({"device": "tpu"}, "device"),
    ({"data": ["/nonexistent/bars.csv"]}, "does not exist"),
    ({"data": []}, "no bar files"),
    ({"train_start": "2012-12-20"}, "training split has .* labelled windows"),
    ({"threshold": 5.0}, "training split has"),
])
def test_bad_training_configs_are_clear_errors(over, words):
    cfg = TrainConfig.from_dict(tiny_config("bad", **over))
    with pytest.raises(TrainingError, match=words):
        fit(cfg)


def test_training_without_torch_says_how_to_install_it(monkeypatch):
    from tradeloop.models.errors import ModelError

    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(ModelError, match=r"training needs torch.*pip install -e '\.\[models\]'"):
        fit(TrainConfig.from_dict(tiny_config("x")))


def test_train_config_names_unknown_and_missing_keys():
    with pytest.raises(TrainingError, match="unknown key.*epoch_count"):
        TrainConfig.from_dict({**tiny_config("x"), "epoch_count": 3})
    with pytest.raises(TrainingError, match="missing val_end"):
        TrainConfig.from_dict({"name": "x", "data": [str(qbot())], "train_end": "2012-01-01"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: AMP training not run here")
def test_training_with_amp_on_cuda():
    res = fit(TrainConfig.from_dict(tiny_config("amp", epochs=1, device="cuda", test_end=None)))
    assert res.metrics["val"]["n"] > 0
