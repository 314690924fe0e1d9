"""Specification of models.labels and models.dataset: binary labels of the h-bar move beyond a
threshold; no sample's label reads a bar at or after the end of its split; splits follow in time."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloop.models.dataset import SeriesFeatures, split_samples
from tradeloop.models.errors import TrainingError
from tradeloop.models.features import FeatureSpec
from tradeloop.models.labels import NO_LABEL, forward_returns, make_labels, previous_sign
from tests.test_models_support import random_bars


def test_labels_are_the_sign_of_the_next_h_bar_move_beyond_the_threshold():
    close = np.array([10.0, 11.0, 10.5, 10.5, 12.0, 9.0])
    # h=1 moves: +, -, 0, +, -   (last bar has no next bar)
    assert make_labels(close, 1).tolist() == [1, 0, NO_LABEL, 1, 0, NO_LABEL]
    # h=2 moves: 10->10.5 (+4.9%), 11->10.5, 10.5->12, 10.5->9
    assert make_labels(close, 2, threshold=0.045).tolist() == [1, 0, 1, 0, NO_LABEL, NO_LABEL]
    assert make_labels(close, 2, threshold=0.05).tolist() == [NO_LABEL, NO_LABEL, 1, 0, NO_LABEL, NO_LABEL]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 80), h=st.integers(1, 10), end=st.integers(0, 90), seed=st.integers(0, 1000))
def test_no_label_reaches_past_the_end_of_its_window(n, h, end, seed):
    """Labels computed with end=E are unchanged by any change to bars at or after E, and none at t >= E - h."""
    close = random_bars(seed, n).close
    labels = make_labels(close, h, 0.0, end=end)
    assert (labels[max(0, min(end, n) - h):] == NO_LABEL).all()
    changed = close.copy()
    changed[min(end, n):] *= 3.0
    assert np.array_equal(labels, make_labels(changed, h, 0.0, end=end))


def test_forward_returns_and_previous_sign():
    close = np.array([1.0, 2.0, 4.0, 2.0])
    np.testing.assert_allclose(forward_returns(close, 1)[:3], np.log([2, 2, 0.5]))
    assert np.isnan(forward_returns(close, 1)[3])
    assert previous_sign(close, 1).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("h, thr, words", [(0, 0.0, "horizon"), (1.5, 0.0, "horizon"), (1, -0.1, "threshold")])
def test_bad_label_parameters_are_clear_errors(h, thr, words):
    with pytest.raises(TrainingError, match=words):
        make_labels(np.ones(10), h, thr)


def test_splits_take_windows_inside_and_labels_from_before_their_end():
    spec = FeatureSpec(lookback=8)
    s = random_bars(11, 400)
    items = [SeriesFeatures.of(s, spec)]
    t1, t2 = int(s.ts[200]), int(s.ts[300])
    h = 5
    train = split_samples(items, spec, h, 0.0, None, t1)
    val = split_samples(items, spec, h, 0.0, t1, t2)
    assert train.ts.max() < val.ts.min()                              # validation after training
    assert train.ts.max() <= int(s.ts[200 - h - 1])                   # its labels end before the split end
    assert val.ts.min() >= t1 and val.ts.max() <= int(s.ts[300 - h - 1])
    assert train.x.shape[1:] == (8, 16) and train.x.dtype == np.float32
    assert train.ts.min() == int(s.ts[spec.min_bars - 1])             # the first full window
    # a sample's label is the move of its own bar
    i = 10
    row = int(np.searchsorted(s.ts, train.ts[i]))
    assert train.y[i] == int(s.close[row + h] > s.close[row])


def test_split_samples_of_too_little_data_is_empty():
    spec = FeatureSpec()
    items = [SeriesFeatures.of(random_bars(1, 50), spec)]
    assert len(split_samples(items, spec, 5, 0.0, None, None)) == 0
