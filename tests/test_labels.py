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


# label=relative (a universe): three assets at two timestamps, then one asset alone
REL = LabelSpec("15m", 1, "15m", "relative", min_assets=2)


def _universe_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three assets stacked asset-major, three bars each (the last has no label), clock slots
    0..2; asset C has no bar at slot 1 (its rows are slots 0 and 2)."""
    close = np.array(
        [
            100.0,
            101.0,
            102.0,  # A: +1.0%, +0.99%
            50.0,
            50.0,
            50.5,  # B: 0, +1.0%
            20.0,
            20.4,
        ]
    )  # C: slot 0 -> slot 2 spans a hole: its own segment
    segment = np.array([0, 0, 0, 1, 1, 1, 2, 3])  # C's hole splits it
    clock = np.array([0, 1, 2, 0, 1, 2, 0, 2])
    return close, segment, clock  # fmt: skip


def test_relative_label_compares_each_asset_with_the_assets_present() -> None:
    close, segment, clock = _universe_rows()
    y = make_labels(close, segment, REL, clock)
    # slot 0: A +0.995%, B 0 (C has no next bar in its segment): mean +0.4975% -> A up, B down
    # slot 1: A +0.985%, B +0.995%: B beats A
    np.testing.assert_array_equal(y, [1, 0, np.nan, 0, 1, np.nan, np.nan, np.nan])
    # min_assets: with 3 needed no timestamp has enough assets with a return
    assert np.isnan(
        make_labels(close, segment, LabelSpec("15m", 1, "15m", "relative"), clock)
    ).all()


def test_relative_label_to_the_median_and_a_tie_dropped_or_down() -> None:
    close = np.array([100.0, 101.0, 100.0, 102.0, 100.0, 110.0, 100.0, 101.0])
    segment = np.repeat(np.arange(4), 2)
    clock = np.tile([0, 1], 4)  # 4 assets: +1%, +2%, +10%, +1%
    med = LabelSpec("15m", 1, "15m", "relative", relative_to="median", min_assets=2)
    y = make_labels(close, segment, med, clock)[::2]
    # median of (1, 2, 10, 1)% is 1.5%: only the 2% and 10% assets beat it (the mean, 3.5%,
    # would leave the 2% asset below)
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    mean = make_labels(close, segment, LabelSpec("15m", 1, "15m", "relative", min_assets=2), clock)
    np.testing.assert_array_equal(mean[::2], [0, 0, 1, 0])
    tie = np.array([100.0, 101.0, 100.0, 101.0])  # two assets, equal returns
    seg2, clk2 = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    assert np.isnan(make_labels(tie, seg2, REL, clk2)[::2]).all()
    down = LabelSpec("15m", 1, "15m", "relative", neutral="down", min_assets=2)
    np.testing.assert_array_equal(make_labels(tie, seg2, down, clk2)[::2], [0, 0])


def test_relative_label_reads_no_bar_after_its_horizon() -> None:
    close, segment, clock = _universe_rows()
    y = make_labels(close, segment, REL, clock)
    later = close.copy()
    later[[2, 5]] *= 3.0  # the slot-2 bars: labels at slot 0 read slot 1 only
    np.testing.assert_array_equal(make_labels(later, segment, REL, clock)[[0, 3]], y[[0, 3]])


def test_relative_label_refuses_one_asset_and_keeps_other_contracts_as_they_were() -> None:
    with pytest.raises(ConfigError, match="one asset has nothing to compare with"):
        make_labels(CLOSE, SEG, REL)
    sign = LabelSpec("15m", 1, "15m")
    # the sign label's contract (the phat.label_definition of every model trained before) has
    # no relative settings; a relative label's has them
    assert sign.canonical() == (
        '{"aggregation":"log_return_sum","horizon_bars":1,"horizon_id":"15m","kind":"sign",'
        '"neutral":"drop","threshold_bps":0.0,"timeframe":"15m"}'
    )
    assert '"min_assets":2' in REL.canonical() and '"relative_to":"mean"' in REL.canonical()
    assert LabelSpec.from_dict(REL.to_dict()) == REL
    with pytest.raises(ConfigError, match="min_assets"):
        LabelSpec("15m", 1, "15m", "relative", min_assets=1)
    with pytest.raises(ConfigError, match="relative_to"):
        LabelSpec("15m", 1, "15m", "relative", relative_to="mode")
