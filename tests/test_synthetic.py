"""The embedded generator: deterministic, valid OHLCV, regimes, and a planted p that is right."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phat.contract.features import FeatureSpec
from phat.data import prepare_bars
from phat.data.synthetic import REGIMES, SyntheticConfig, generate


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a = generate(SyntheticConfig(periods=2000, seed=3))
    b = generate(SyntheticConfig(periods=2000, seed=3))
    c = generate(SyntheticConfig(periods=2000, seed=4))
    pd.testing.assert_frame_equal(a.bars, b.bars, check_exact=True)
    assert not np.allclose(a.bars["close"], c.bars["close"])


def test_bars_pass_validation_and_have_all_regimes(small_market) -> None:
    m = generate(SyntheticConfig(periods=20000, seed=5))
    bars = prepare_bars(m.bars, timeframe="15m")
    assert len(bars) == 20000 and bars.report["gaps"] == 0
    assert set(m.regime.unique()) == set(REGIMES)
    assert {"funding_rate", "spread"} <= set(bars.frame.columns)
    # high-vol regime really is more volatile
    r = np.log(m.bars["close"]).diff()
    assert r[m.regime == "high_vol"].std() > 2 * r[m.regime == "mean_revert"].std()


def test_planted_probability_is_the_observed_frequency() -> None:
    m = generate(SyntheticConfig(periods=60000, seed=9))
    up = (m.bars["close"].shift(-1) > m.bars["close"]).to_numpy()[:-1]
    p = m.p_up.to_numpy()[:-1]
    bins = np.digitize(p, [0.35, 0.45, 0.55, 0.65])
    for b in np.unique(bins):
        sel = bins == b
        # Binomial standard error at n >= 5000 is < 0.007; allow 4 of them.
        assert abs(up[sel].mean() - p[sel].mean()) < 4 * np.sqrt(0.25 / sel.sum()) + 1e-3
    # The signal is real: p spreads well beyond 0.5 and Bayes Brier beats climatology.
    assert m.bayes_brier() < 0.25 - 0.01


def test_clv_feature_recovers_the_planted_input() -> None:
    m = generate(SyntheticConfig(periods=500, seed=1, clv_max=0.8))
    raw = FeatureSpec(features=({"fn": "clv", "params": {}},), window=1).compute_raw(m.bars)
    p_from_clv = 1 / (1 + np.exp(-raw[:, 0]))  # strength 1, bias 0 in high_vol regime
    hv = (m.regime == "high_vol").to_numpy()
    if hv.any():
        np.testing.assert_allclose(p_from_clv[hv], m.p_up.to_numpy()[hv], atol=1e-6)
    assert np.abs(raw[:, 0]).max() <= 0.8 + 1e-6
