"""Deterministic synthetic OHLCV with switching regimes and a planted, known-probability signal.

Each bar t has a close-location value `clv_t = (2*close - high - low) / (high - low)`, drawn
uniformly in [-clv_max, clv_max] and observable from bar t alone. The direction of the next bar
is drawn with a probability the generator knows exactly:

    P(close[t+1] > close[t] | state_t) = sigmoid(planted_strength * clv_t + regime_bias_t)

where `regime_bias_t` is +-`trend_bias` in the trending regimes, `-revert_strength * dev_t` in
the mean-reverting regime (dev_t = z-scored distance of log price from its 32-bar mean) and 0 in
the high-volatility regime. The magnitude of every log return is half-normal with the regime's
volatility and independent of its sign, so `p_up` is the Bayes-optimal probability of the 1-bar
`sign` label given everything the generator knows. Tests use it to check that a model learns
and that its calibration is right; `bayes_brier` is the best Brier any model can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phat.confdefaults import conf_defaults, from_conf
from phat.data import parse_timeframe
from phat.errors import ConfigError

REGIMES = ("trend_up", "trend_down", "mean_revert", "high_vol")
_UNIVERSE = conf_defaults("data/_base", "synthetic")  # a universe's defaults, as in conf/


@dataclass(frozen=True)
@from_conf("data/_base", "synthetic")  # the defaults: conf/data/_base.yaml
class SyntheticConfig:
    seed: int
    start: str
    periods: int
    timeframe: str
    start_price: float
    base_vol: float  # per-bar log-return scale in calm regimes
    high_vol_mult: float
    mean_regime_bars: int  # mean bars per regime
    planted_strength: float
    planted_flip_at: int | None  # drift: from this bar on the planted signal's sign flips
    clv_max: float
    trend_bias: float
    revert_strength: float
    base_volume: float
    with_funding: bool
    with_spread: bool


@dataclass
class SyntheticMarket:
    bars: pd.DataFrame  # OHLCV (+ funding_rate, spread), UTC DatetimeIndex
    p_up: pd.Series  # Bayes-optimal P(close[t+1] > close[t]) known at bar t
    regime: pd.Series

    def bayes_brier(self, index: pd.Index | None = None) -> float:
        """Expected Brier of the oracle: mean of p(1-p) (the label's irreducible noise)."""
        p = self.p_up if index is None else self.p_up.loc[index]
        p = p.to_numpy()
        return float(np.mean(p * (1.0 - p)))


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


# Longer than 80 lines on purpose: the draws happen in one fixed order (regimes, volatility,
# directions, then the bars' ranges) that the same-bytes-on-any-machine promise rests on;
# kept in one function so that order is read, and changed, in one place.
def generate(
    cfg: SyntheticConfig | None = None,
    *,
    regime_path: np.ndarray | None = None,
    direction_u: np.ndarray | None = None,
    **overrides: object,
) -> SyntheticMarket:
    """Generate `cfg.periods` bars. Same config gives the same bytes, on any machine.

    `regime_path` / `direction_u` (a universe's shared parts, `generate_universe`) replace the
    regime chain and the uniforms that draw each bar's direction; the draws they replace are
    still made, so every other stream of the generator is unchanged."""
    cfg = cfg or SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig(**{**cfg.__dict__, **overrides})  # type: ignore[arg-type]
    if cfg.periods < 10:
        raise ConfigError(f"data.synthetic.periods={cfg.periods}: expected at least 10")
    rng = np.random.default_rng(cfg.seed)
    n = cfg.periods
    tf = parse_timeframe(cfg.timeframe)
    index = pd.date_range(pd.Timestamp(cfg.start), periods=n, freq=tf, name="timestamp")

    # Regime path: a Markov chain with geometric durations, switching to a different regime.
    regime = np.empty(n, dtype=np.int64)
    switch = rng.random(n) < 1.0 / cfg.mean_regime_bars
    jumps = rng.integers(1, len(REGIMES), size=n)
    r = int(rng.integers(len(REGIMES)))
    for t in range(n):
        if switch[t]:
            r = (r + int(jumps[t])) % len(REGIMES)
        regime[t] = r
    if regime_path is not None:
        regime = np.asarray(regime_path, dtype=np.int64)
    vol = np.where(regime == 3, cfg.base_vol * cfg.high_vol_mult, cfg.base_vol)

    clv = rng.uniform(-cfg.clv_max, cfg.clv_max, size=n)
    mag = np.abs(rng.standard_normal(n)) * vol
    u_dir = rng.random(n)
    if direction_u is not None:
        u_dir = np.asarray(direction_u, dtype=np.float64)
    range_noise = np.abs(rng.standard_normal(n)) * 0.8 + 0.6

    log_close = np.empty(n)
    p_up = np.empty(n)
    log_close[0] = np.log(cfg.start_price)
    window = 32
    csum = 0.0
    csum2 = 0.0
    hist: list[float] = []
    for t in range(n):
        # p_up[t] is known at the end of bar t and governs the move from t to t+1.
        lc = log_close[t]
        hist.append(lc)
        csum += lc
        csum2 += lc * lc
        if len(hist) > window:
            old = hist[len(hist) - window - 1]
            csum -= old
            csum2 -= old * old
        k = min(len(hist), window)
        mean = csum / k
        dev = (lc - mean) / (cfg.base_vol * np.sqrt(window))
        bias = {0: cfg.trend_bias, 1: -cfg.trend_bias, 2: -cfg.revert_strength * dev, 3: 0.0}[
            int(regime[t])
        ]
        strength = cfg.planted_strength
        if cfg.planted_flip_at is not None and t >= cfg.planted_flip_at:
            strength = -strength
        p_up[t] = _sigmoid(strength * clv[t] + bias)
        if t + 1 < n:
            up = u_dir[t] < p_up[t]
            log_close[t + 1] = lc + (mag[t + 1] if up else -mag[t + 1])

    close = np.exp(log_close)
    open_ = np.concatenate(
        [[close[0] * np.exp(-mag[0] * (1 if u_dir[0] < 0.5 else -1))], close[:-1]]
    )
    # Choose the bar's range so that its close-location value is exactly clv[t] and the
    # high/low enclose open and close: R >= 2|o-c| / (1 -+ clv) on the side the open lies.
    body = close - open_
    need_hi = np.where(body < 0, 2 * (-body) / (1 - clv), 0.0)  # open above close
    need_lo = np.where(body > 0, 2 * body / (1 + clv), 0.0)  # open below close
    base_range = close * vol * range_noise
    rng_w = np.maximum(base_range, np.maximum(need_hi, need_lo)) * (1 + 1e-9)
    high = close + (1 - clv) * rng_w / 2
    low = close - (1 + clv) * rng_w / 2

    vol_mult = np.array([1.0, 1.1, 0.8, 2.5])[regime]
    volume = (
        cfg.base_volume
        * vol_mult
        * np.exp(0.4 * rng.standard_normal(n))
        * (1 + np.abs(body) / (close * vol))
    )
    data = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if cfg.with_funding:
        f = np.empty(n)
        f[0] = 1e-4
        eps = rng.standard_normal(n) * 2e-6
        for t in range(1, n):
            f[t] = 0.999 * f[t - 1] + 0.001 * 1e-4 + eps[t]
        data["funding_rate"] = f
    if cfg.with_spread:
        data["spread"] = close * (0.5e-4 + 0.2 * vol * np.abs(rng.standard_normal(n)) * 0.01)
    bars = pd.DataFrame(data, index=index)
    return SyntheticMarket(
        bars=bars,
        p_up=pd.Series(p_up, index=index, name="p_up"),
        regime=pd.Series(np.array(REGIMES)[regime], index=index, name="regime"),
    )


def generate_universe(
    cfg: SyntheticConfig,
    assets: int,
    vol_spread: float = _UNIVERSE["vol_spread"],
    correlation: float = _UNIVERSE["correlation"],
) -> dict[str, SyntheticMarket]:
    """`assets` series over the same bars: a common market factor (one regime path for all,
    and directions drawn through a Gaussian copula with pairwise correlation `correlation`),
    per-asset volatility (base_vol times a factor spread log-evenly over [1/sqrt(vol_spread),
    sqrt(vol_spread)]) and the planted signal of `generate` per asset. Each direction's
    uniform is still exactly uniform, so each asset's `p_up` stays its Bayes-optimal
    probability. Symbols A00, A01, ...; asset k draws from seed + 1000 * (k + 1)."""
    from scipy.stats import norm

    if assets < 1:
        raise ConfigError(f"data.synthetic.assets={assets}: expected at least 1")
    if not 0 <= correlation < 1:
        raise ConfigError(f"data.synthetic.correlation={correlation}: expected 0 <= it < 1")
    common = generate(cfg)  # the market: its regime path is everyone's
    rng = np.random.default_rng([cfg.seed, assets, 2024])
    z_market = rng.standard_normal(cfg.periods)
    spread = np.sqrt(vol_spread) ** np.linspace(-1.0, 1.0, assets) if assets > 1 else [1.0]
    regime = pd.Series(common.regime).map({r: i for i, r in enumerate(REGIMES)}).to_numpy()
    out: dict[str, SyntheticMarket] = {}
    for k in range(assets):
        z = np.sqrt(correlation) * z_market + np.sqrt(1 - correlation) * rng.standard_normal(
            cfg.periods
        )
        out[f"A{k:02d}"] = generate(
            cfg,
            regime_path=regime,
            direction_u=norm.cdf(z),
            seed=cfg.seed + 1000 * (k + 1),
            base_vol=cfg.base_vol * float(spread[k]),
        )
    return out


def random_walk(
    n: int, seed: int = 0, timeframe: str = _UNIVERSE["timeframe"], vol: float = 0.002
) -> pd.DataFrame:
    """A pure random walk with no predictable component: the leakage canary's input."""
    rng = np.random.default_rng(seed)
    tf = parse_timeframe(timeframe)
    index = pd.date_range("2024-01-01", periods=n, freq=tf, tz="UTC", name="timestamp")
    lc = np.log(100.0) + np.cumsum(rng.standard_normal(n) * vol)
    close = np.exp(lc)
    open_ = np.concatenate([[close[0]], close[:-1]])
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(n)) * vol * 0.5)
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n)) * vol * 0.5)
    volume = 100 * np.exp(0.3 * rng.standard_normal(n))
    return pd.DataFrame(
        {"open": open_, "high": hi, "low": lo, "close": close, "volume": volume}, index=index
    )
