"""LabelSpec and labels: sign, threshold with explicit neutral band, horizon, gaps."""

from __future__ import annotations

import numpy as np
import pytest

from phat.contract.labels import LabelSpec, make_labels
from phat.errors import ConfigError

CLOSE = np.array([100.0, 101.0, 101.0, 100.99, 100.0, 100.2, 100.2])
SEG = np.zeros(len(CLOSE), dtype=np.int64)


def test_sign_label_next_bar() -> None:
    y = make_labels(CLOSE, SEG, LabelSpec("15m", 1, "15m"))
    np.testing.assert_array_equal(y[:-1], [1, 0, 0, 0, 1, 0])  # unchanged close is not up
    assert np.isnan(y[-1])


def test_multi_bar_horizon_uses_close_h_ahead() -> None:
    y = make_labels(CLOSE, SEG, LabelSpec("15m", 3, "3x15m"))
    expected = (CLOSE[3:] > CLOSE[:-3]).astype(float)
    np.testing.assert_array_equal(y[:-3], expected)
    assert np.isnan(y[-3:]).all()


def test_threshold_neutral_drop_and_down() -> None:
    close = np.array([100.0, 100.2, 100.2, 99.9, 100.0])  # +20bps, 0, -30bps, +10bps
    drop = make_labels(close, np.zeros(5, np.int64), LabelSpec("15m", 1, "15m", "threshold", 15.0))
    down = make_labels(
        close, np.zeros(5, np.int64), LabelSpec("15m", 1, "15m", "threshold", 15.0, neutral="down")
    )
    np.testing.assert_array_equal(drop[:4], [1, np.nan, 0, np.nan])
    np.testing.assert_array_equal(down[:4], [1, 0, 0, 0])


def test_label_spanning_a_gap_is_unavailable() -> None:
    seg = np.array([0, 0, 0, 1, 1, 1, 1])
    y = make_labels(CLOSE, seg, LabelSpec("15m", 2, "2x15m"))
    assert not np.isnan(y[0])  # bars 0..2 in segment 0
    assert np.isnan(y[1]) and np.isnan(y[2])  # reach into segment 1
    assert not np.isnan(y[3])


def test_label_reads_nothing_beyond_its_horizon() -> None:
    spec = LabelSpec("15m", 2, "2x15m")
    y = make_labels(CLOSE, SEG, spec)
    changed = CLOSE.copy()
    changed[4:] *= 1.5  # bars after t+h for t <= 1
    y2 = make_labels(changed, SEG, spec)
    np.testing.assert_array_equal(y[:2], y2[:2])


def test_spec_is_canonical_and_hashed() -> None:
    a = LabelSpec("15m", 4, "4x15m")
    b = LabelSpec.from_dict(a.to_dict())
    assert a.canonical() == b.canonical() and a.hash == b.hash
    assert a.hash != LabelSpec("15m", 4, "4x15m", neutral="down").hash
    assert '"horizon_bars":4' in a.canonical()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon_bars": 0}, "horizon_bars=0"),
        ({"kind": "magnitude"}, "kind='magnitude'"),
        ({"kind": "threshold"}, "threshold_bps > 0"),
        ({"neutral": "up"}, "neutral='up'"),
        ({"threshold_bps": 3.0}, "kind=sign takes no threshold_bps"),
    ],
)
def test_invalid_specs_refused(kwargs, message) -> None:
    base = {"timeframe": "15m", "horizon_bars": 1, "horizon_id": "15m"}
    with pytest.raises(ConfigError, match=message):
        LabelSpec(**{**base, **kwargs})
