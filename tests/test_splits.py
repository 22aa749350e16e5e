"""Leakage-safe splits: derived purge/embargo, refused when asked for less, and proven by
perturbing every price the later spans could own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec, make_labels
from phat.contract.splits import SplitConfig, carve_tail, make_splits, resolve_boundaries
from phat.data.synthetic import SyntheticConfig, generate
from phat.errors import ConfigError, DataValidationError

MARKET = generate(SyntheticConfig(periods=2500, seed=21))


def _setup(h: int, window: int, cfg: SplitConfig | None = None):
    fspec = FeatureSpec(window=window)
    lspec = LabelSpec("15m", h, f"{h}x15m")
    df = MARKET.bars
    seg = np.zeros(len(df), dtype=np.int64)
    raw = fspec.compute_raw(df)
    y = make_labels(df["close"].to_numpy(), seg, lspec)
    usable = fspec.valid_end_mask(raw, seg) & ~np.isnan(y)
    spans = make_splits(df.index, usable, y, cfg or SplitConfig(min_samples=50), h, fspec.bars_read)
    return fspec, lspec, spans, y


def test_boundaries_are_derived_from_specs() -> None:
    b = resolve_boundaries(SplitConfig(), horizon_bars=4, bars_read=128)
    assert (b.purge, b.embargo) == (4, 127)
    more = resolve_boundaries(SplitConfig(purge_bars=10, embargo_bars=200), 4, 128)
    assert (more.purge, more.embargo) == (10, 200)


def test_asking_for_less_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"purge_bars=3 is less than the label horizon needs \(4"):
        resolve_boundaries(SplitConfig(purge_bars=3), 4, 128)
    with pytest.raises(
        ConfigError, match=r"embargo_bars=10 is less than the feature window needs \(127"
    ):
        resolve_boundaries(SplitConfig(embargo_bars=10), 4, 128)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 12), window=st.integers(2, 64))
def test_spans_read_disjoint_bars(h: int, window: int) -> None:
    fspec, _, spans, _ = _setup(h, window)
    reads = {k: (int(v[0]) - fspec.bars_read + 1, int(v[-1]) + h) for k, v in spans.items()}
    assert reads["train"][1] < reads["calibration"][0]
    assert reads["calibration"][1] < reads["test"][0]
    assert spans["train"][-1] < spans["calibration"][0] < spans["test"][0]  # time order


@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 8), window=st.integers(2, 64), factor=st.floats(0.5, 2.0))
def test_no_training_label_or_feature_reads_a_later_span_price(
    h: int, window: int, factor: float
) -> None:
    fspec, lspec, spans, y = _setup(h, window)
    first_read = int(spans["calibration"][0]) - fspec.bars_read + 1  # first bar calibration owns
    changed = MARKET.bars.copy()
    changed.iloc[first_read:, :4] = changed.iloc[first_read:, :4].to_numpy() * factor
    seg = np.zeros(len(changed), dtype=np.int64)
    y2 = make_labels(changed["close"].to_numpy(), seg, lspec)
    tr = spans["train"]
    np.testing.assert_array_equal(y[tr], y2[tr])
    raw, raw2 = fspec.compute_raw(MARKET.bars), fspec.compute_raw(changed)
    lo = int(tr[0]) - window + 1
    np.testing.assert_array_equal(raw[lo : tr[-1] + 1], raw2[lo : tr[-1] + 1])


def test_dates_method_and_ordering() -> None:
    idx = MARKET.bars.index
    cfg = SplitConfig(
        method="dates", calibration_start=str(idx[1200]), test_start=str(idx[1800]), min_samples=50
    )
    _, _, spans, _ = _setup(1, 64, cfg)
    embargo = FeatureSpec(window=64).bars_read - 1  # the window and the features' warm-up
    assert spans["train"][-1] <= 1200 - 2 and spans["calibration"][0] == 1200 + embargo
    assert spans["test"][0] == 1800 + embargo
    bad = SplitConfig(method="dates", calibration_start=str(idx[1800]), test_start=str(idx[1200]))
    with pytest.raises(ConfigError, match="must be before split.test_start"):
        _setup(1, 64, bad)


def test_bad_fractions_refused() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        _setup(1, 64, SplitConfig(train=0.7, calibration=0.2, test=0.2))


def test_too_little_history_names_the_numbers() -> None:
    idx = pd.date_range("2024-01-01", periods=600, freq="15min", tz="UTC")
    usable = np.zeros(600, bool)
    usable[127:599] = True
    y = np.tile([0.0, 1.0], 300)
    with pytest.raises(
        DataValidationError,
        match=r"too little history: the calibration span has 0 samples \(0 up\) but needs at least split.min_samples=200.*600 bars give 472 usable samples after a 128-bar window",
    ):
        make_splits(idx, usable, y, SplitConfig(), 1, 128)


def test_validation_tail_is_purged_and_embargoed() -> None:
    train = np.arange(200, 3000)
    fit, val = carve_tail(train, 0.2, horizon_bars=4, bars_read=128)
    assert fit[-1] + 4 < val[0] - 128 + 1
    assert len(val) > 0.1 * len(train)
