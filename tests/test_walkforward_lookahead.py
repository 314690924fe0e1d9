"""Specification: a walk-forward cannot look ahead.

A window's model is trained from bars before its training end only, and a test span's fills
depend on no bar after the span: editing the future (shuffling bars among later dates, or scaling
their prices) changes nothing before it, bit for bit. Each test also checks that the edit does
change what comes after, so it could fail.
"""
from __future__ import annotations

import pytest

from tradeloop.engine.research.walkforward import WalkForwardResult, run_walkforward
from tradeloop.engine.research.windows import iso
from tests.test_walkforward_support import (
    SPEC,
    edited_files,
    model_config,
    needs_models,
    qbot_files,
    tiny_train,
)


def _walk(files, registry) -> WalkForwardResult:
    wf, _ = run_walkforward(model_config(files), SPEC, tiny_train(registry), executor="serial", write=False,
                            progress=False)
    assert [o.error for o in wf.windows] == [None, None, None]
    return wf


def _weights(wf: WalkForwardResult, k: int, registry) -> dict:
    from tradeloop.models.registry import Registry
    return Registry(registry).info(wf.windows[k].model).load_net().state_dict()


def _same_weights(a: dict, b: dict) -> bool:
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _fills(wf: WalkForwardResult, k: int) -> list:
    span = wf.windows[k].span
    return list(span.result.fills) + list(span.handoff)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    needs_models()
    reg = tmp_path_factory.mktemp("reg-original")
    return _walk(qbot_files(), reg), reg


@pytest.mark.parametrize("how", ["shuffle", "change"])
def test_bars_after_a_training_end_leave_that_windows_weights_bit_identical(original, tmp_path, how):
    base, base_reg = original
    second = base.windows[1].window                       # train on 2010-07-01 .. ~2011-06-23, test from 2011-07-01
    files = edited_files(tmp_path / "data", iso(second.train_end), how)
    wf = _walk(files, tmp_path / "reg")
    for k in (0, 1):                                      # windows whose training ended before the edit
        assert _same_weights(_weights(wf, k, tmp_path / "reg"), _weights(base, k, base_reg)), k
    # the third window trains on the edited bars: its weights differ, so the comparison above can fail
    assert not _same_weights(_weights(wf, 2, tmp_path / "reg"), _weights(base, 2, base_reg))


def test_bars_after_a_test_span_leave_that_spans_fills_identical(original, tmp_path):
    base, base_reg = original
    second = base.windows[1].window                       # tests 2011-07-01 .. 2012-01-01
    files = edited_files(tmp_path / "data", iso(second.test_end), "change")
    wf = _walk(files, tmp_path / "reg")
    for k in (0, 1):
        assert _fills(base, k), k
        assert _fills(wf, k) == _fills(base, k), k
        assert wf.windows[k].span.metrics() == base.windows[k].span.metrics(), k
    # the third window's model saw no edited bar (it trained before 2012), yet its test span did: fills differ
    assert _same_weights(_weights(wf, 2, tmp_path / "reg"), _weights(base, 2, base_reg))
    assert _fills(wf, 2) != _fills(base, 2)
    assert wf.result.fills[: len(_fills(base, 0)) + len(_fills(base, 1))] == _fills(base, 0) + _fills(base, 1)
