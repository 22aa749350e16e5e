"""FeatureSpec: causality, start-independence, fingerprint per code version, missing data."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ohlcv
from phat.contract.features import FEATURE_CODE_VERSION, FEATURES, FeatureSpec, windows
from phat.data.synthetic import SyntheticConfig, generate, random_walk
from phat.errors import ConfigError, DataValidationError

SPEC = FeatureSpec()

# sha256 of each shipped feature set on random_walk(600, seed=3), rounded to 1e-9: the default
# (volatility-scaled) set and `classic` (the default until 2026-12-02, whose hash is the one
# recorded then: changing the default set changed no formula). A new entry is owed whenever
# FEATURE_CODE_VERSION is bumped; a formula change without a bump fails here.
FINGERPRINTS = {
    "1": {
        "classic": "083552f1dd4ee32e9a2cc5d6e0b7e249d0de0ead3e743c07be3ced65d898fc60",
        "default": "2f03021fcaf4bb8b740db3f6b9f81e3efbae1eefb265ec77402ba172a071ae1a",
    },
}


def fingerprint(raw: np.ndarray) -> str:
    r = np.round(np.nan_to_num(raw, nan=-999.0), 9) + 0.0  # +0.0 folds -0.0 into 0.0
    return hashlib.sha256(r.astype("<f8").tobytes()).hexdigest()


def test_default_spec_is_the_last_return_and_8_scaled_features_window_64() -> None:
    assert SPEC.n_features == 9 and SPEC.window == 64
    assert SPEC.lookback == 48 and SPEC.bars_read == 112  # volatility over the last 48 bars
    # the raw last return first: the ladder's last_return rung is the rule the gate compares with
    assert SPEC.names[:2] == ["log_return_1", "vol_return_1_48"]
    assert SPEC.required_columns == ["close", "high", "low", "volume"]  # no wick: no open


@pytest.mark.parametrize("name", ["default", "classic"])
def test_fingerprint_matches_code_version(name: str) -> None:
    from phat.cli.config import compose, validate
    from phat.recipe.specs import feature_spec_from_cfg

    spec = feature_spec_from_cfg(validate("train", compose("train", [f"features={name}"])))
    raw = spec.compute_raw(random_walk(600, seed=3))
    assert FEATURE_CODE_VERSION in FINGERPRINTS, "bumped FEATURE_CODE_VERSION needs a fingerprint"
    assert fingerprint(raw) == FINGERPRINTS[FEATURE_CODE_VERSION][name], (
        "feature output changed: bump FEATURE_CODE_VERSION and add its fingerprint"
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(k=st.integers(min_value=1, max_value=299), factor=st.floats(min_value=0.5, max_value=2.0))
def test_changing_future_bars_changes_no_past_feature(k: int, factor: float) -> None:
    df = generate(SyntheticConfig(periods=300, seed=2)).bars
    raw = SPEC.compute_raw(df)
    fut = df.copy()
    fut.iloc[k:, :4] = fut.iloc[k:, :4].to_numpy() * factor  # prices scaled, OHLC still valid
    fut.iloc[k:, 4] = fut.iloc[k:, 4].to_numpy() * 3.0
    raw2 = SPEC.compute_raw(fut)
    np.testing.assert_array_equal(raw[:k], raw2[:k])
    if factor != 1.0:
        assert not np.array_equal(raw[k:], raw2[k:], equal_nan=True)


def test_features_do_not_depend_on_history_before_their_lookback() -> None:
    df = generate(SyntheticConfig(periods=400, seed=4)).bars
    full = SPEC.compute_raw(df)
    for start in (1, 37, 150):
        part = SPEC.compute_raw(df.iloc[start:])
        np.testing.assert_array_equal(part[SPEC.lookback :], full[start + SPEC.lookback :])


def test_windows_are_the_rows_ending_at_t() -> None:
    f = np.arange(200 * 3, dtype=np.float32).reshape(200, 3)
    ends = np.array([9, 50, 199])
    w = windows(f, ends, 10)
    assert w.shape == (3, 10, 3)
    for i, t in enumerate(ends):
        np.testing.assert_array_equal(w[i], f[t - 9 : t + 1])


def test_valid_mask_needs_full_window_in_one_segment() -> None:
    df = ohlcv(300)
    raw = SPEC.compute_raw(df)
    seg = np.zeros(300, dtype=np.int64)
    seg[200:] = 1
    ok = SPEC.valid_end_mask(raw, seg)
    assert not ok[: SPEC.bars_read - 1].any() and ok[SPEC.bars_read - 1 : 200].all()
    assert not ok[200 : 200 + SPEC.bars_read - 1].any() and ok[200 + SPEC.bars_read - 1 :].all()


def test_normalization_fitted_on_given_rows_only() -> None:
    df = generate(SyntheticConfig(periods=600, seed=1)).bars
    raw = SPEC.compute_raw(df)
    rows = np.arange(100, 300)
    fitted = SPEC.fit_normalization(raw, rows)
    changed = raw.copy()
    changed[400:] *= 10  # later rows do not move the fitted mean/std
    assert fitted.norm_mean == SPEC.fit_normalization(changed, rows).norm_mean
    z = fitted.normalize(raw)[rows]
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    assert z.dtype == np.float32


def test_feature_version_tracks_definition_not_fitted_params() -> None:
    raw = SPEC.compute_raw(ohlcv(300))
    fitted = SPEC.fit_normalization(raw, np.arange(150, 300))
    assert fitted.feature_version == SPEC.feature_version
    assert FeatureSpec(window=32).feature_version != SPEC.feature_version
    assert FeatureSpec(code_version="999").feature_version != SPEC.feature_version
    again = FeatureSpec.from_dict(fitted.to_dict())
    assert again == fitted


def test_spec_refuses_tampered_version_and_foreign_code_version() -> None:
    d = SPEC.to_dict()
    d["window"] = 16
    with pytest.raises(ConfigError, match="definition hashes to"):
        FeatureSpec.from_dict(d)
    with pytest.raises(ConfigError, match="feature code version '0'"):
        FeatureSpec(code_version="0").compute_raw(ohlcv(100))


def test_optional_column_required_by_spec_is_never_zero_filled() -> None:
    spec = FeatureSpec(
        features=({"fn": "funding_rate", "params": {}}, {"fn": "clv", "params": {}}), window=4
    )
    with pytest.raises(DataValidationError, match="needs column 'funding_rate'.*never zero-filled"):
        spec.compute_raw(ohlcv(50))
    df = ohlcv(50)
    df["funding_rate"] = 1e-4
    df.iloc[10:15, df.columns.get_loc("funding_rate")] = np.nan  # 5 bars: within ffill limit 8
    raw = spec.compute_raw(df)
    assert (raw[10:15, 0] == 1e-4).all()
    df.iloc[20:40, df.columns.get_loc("funding_rate")] = np.nan  # 20 bars: beyond it
    with pytest.raises(
        DataValidationError,
        match=r"'funding_rate' is missing at 2024-01-01T07:00:00\+00:00 beyond the forward-fill limit of 8",
    ):
        spec.compute_raw(df)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ({"fn": "magic", "params": {}},)}, "unknown feature 'magic'"),
        ({"features": ({"fn": "rsi", "params": {}},)}, "takes params \\['n'\\]"),
        ({"window": 0}, "window=0"),
        ({"normalization": "minmax"}, "normalization='minmax'"),
    ],
)
def test_bad_feature_specs_refused(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        FeatureSpec(**kwargs)


def test_constant_bars_give_finite_features() -> None:
    idx = pd.date_range("2024-01-01", periods=200, freq="15min", tz="UTC")
    df = pd.DataFrame(
        {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 0.0}, index=idx
    )
    raw = SPEC.compute_raw(df)
    assert np.isfinite(raw[SPEC.lookback :]).all()


def test_rolling_std_in_blocks_changes_no_bit() -> None:
    """Rolling std runs in blocks of rows to bound memory (1M bars); every row is reduced
    alone, so the block size must not change a single value."""
    from phat.contract.features import _rolling_std

    x = np.random.default_rng(1).normal(size=5000) + 10.0
    np.testing.assert_array_equal(_rolling_std(x, 64, block=777), _rolling_std(x, 64, block=10**9))


@pytest.mark.parametrize("fn", sorted(FEATURES))
@settings(max_examples=8, deadline=None)
@given(data=st.data(), seed=st.integers(0, 10_000), n=st.integers(2, 160))
def test_every_registered_feature_streams_bit_for_bit(fn: str, data, seed: int, n: int) -> None:
    """The streaming path of every feature in the registry is its batch function on the last
    lookback + 1 bars (FeatureSpec.raw_at_last_bar): at every bar of a random history, from the
    first bar on (warm-up NaN included), it equals compute_raw bit for bit. A newly registered
    feature is covered here without a line of test."""
    params = {k: data.draw(st.integers(1, 24), label=k) for k in FEATURES[fn].params}
    df = ohlcv(n, seed=seed)
    rng = np.random.default_rng(seed)
    df["funding_rate"] = rng.normal(0, 1e-4, n)
    df["spread"] = df["close"] * rng.uniform(1e-5, 1e-3, n)
    df["vwap"] = (df["high"] + df["low"]) / 2
    df["universe_return"] = rng.normal(0, 1e-3, n)  # a universe's mean return (rel_* features)
    if n > 60:  # a timestamp where the asset was alone: no universe return
        df.iloc[n // 2, df.columns.get_loc("universe_return")] = np.nan
    if n > 10:  # flat stretches: zero ranges and zero volatility
        df.iloc[3:9, :4] = df["close"].iloc[2]
        df.iloc[5, 4] = 0.0
    spec = FeatureSpec(features=({"fn": fn, "params": params},), window=1)
    want = spec.compute_raw(df)[:, 0]
    width = spec.lookback + 1
    cols = {}
    for col in spec.required_columns:
        padded = np.concatenate([np.full(width - 1, np.nan), df[col].to_numpy(np.float64)])
        # one "series" per bar t: the width bars ending at t, NaN before the first bar
        cols[col] = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(padded, width))
    got = spec.raw_at_last_bar(cols, np.arange(1, n + 1))[:, 0]
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isfinite(want).any() or n <= spec.lookback


# Each shipped set as its own list was before sets were composed (2026-12-07): the composed
# variants read the same features in the same order, so their feature_version is unchanged.
_BEFORE = {
    "default": ["log_return(1)", "vol_return(1,48)", "vol_return(4,48)", "vol_return(16,48)",
                "vol_range(48)", "clv", "volume_z(48)", "vol_ratio(8,48)", "rsi(14)"],
    "classic": ["log_return(1)", "log_return(4)", "log_return(16)", "log_range", "clv",
                "upper_wick", "lower_wick", "volume_z(64)", "realized_vol(16)",
                "realized_vol(64)", "trend(32)", "rsi(14)"],
}  # fmt: skip
_BEFORE["no_volume"] = [f for f in _BEFORE["default"] if f != "volume_z(48)"]
_BEFORE["scaled"] = _BEFORE["default"][1:]
_BEFORE["with_funding"] = [*_BEFORE["default"], "funding_rate", "spread_bps"]


def _short(spec: FeatureSpec) -> list[str]:
    return [
        f["fn"] + (f"({','.join(str(v) for v in f['params'].values())})" if f["params"] else "")
        for f in spec.features
    ]


@pytest.mark.parametrize("name", sorted(_BEFORE))
def test_composed_feature_sets_keep_their_features_and_order(name: str) -> None:
    from phat.cli.config import compose, validate
    from phat.recipe.specs import feature_spec_from_cfg

    spec = feature_spec_from_cfg(validate("train", compose("train", [f"features={name}"])))
    assert _short(spec) == _BEFORE[name]


def test_a_feature_is_dropped_or_added_on_the_command_line() -> None:
    """A set is keyed by name: `features.set.<name>=null` drops one, `+features.set.<new>=...`
    adds one at the end, with no list repeated."""
    from phat.cli.config import compose, validate
    from phat.recipe.specs import feature_spec_from_cfg

    cfg = validate("train", compose("train", [
        "features.set.rsi_14=null", "+features.set.trend_32={fn: trend, params: {n: 32}}",
    ]))  # fmt: skip
    assert _short(feature_spec_from_cfg(cfg)) == [*_BEFORE["default"][:-1], "trend(32)"]
