"""Rule forecasts: the reference proxy that signal sources fall back to, and the one-feature
baselines every model is scored against (walk-forward ladder: docs/walkforward.md).

- `proxy_p_hat(close)`: 0.5 (1 + tanh(k z)), z the momentum's rolling z-score (no fitting).
- `last_sign_p(...)`: P(up | sign of the last bar's return), two frequencies from the fitting
  span (Beta(1, 1) prior).
- `last_return_logistic(...)`: a one-feature logistic regression of the label on the last
  bar's log return (its sign says reversal or momentum), fitted on the fitting span.

All of them read bar t and earlier only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from phat.data.bars import Bars
from phat.data.universe import StackedBars, cross_section, last_return
from phat.models.calibration import Calibrator, fit_asset_correction


def proxy_p_hat(close: np.ndarray, *, k: float, momentum: int, zscore_window: int) -> np.ndarray:
    """Rule-based p_hat (settings: conf/signal/default.yaml `proxy`); NaN until
    `momentum + zscore_window - 1` bars of history exist."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    mom = np.full(len(lc), np.nan)
    mom[momentum:] = lc[momentum:] - lc[:-momentum]
    out = np.full(len(lc), np.nan)
    if len(lc) >= momentum + zscore_window:
        win = sliding_window_view(mom[momentum:], zscore_window)
        mu, sd = win.mean(axis=1), win.std(axis=1)
        z = np.divide(
            mom[momentum + zscore_window - 1 :] - mu, sd, out=np.zeros_like(mu), where=sd > 0
        )
        out[momentum + zscore_window - 1 :] = 0.5 * (1.0 + np.tanh(k * z))
    return out


def last_sign_p(r_fit: np.ndarray, y_fit: np.ndarray, r: np.ndarray) -> np.ndarray:
    up = r_fit > 0
    p_up = (y_fit[up].sum() + 1.0) / (up.sum() + 2.0)
    p_down = (y_fit[~up].sum() + 1.0) / ((~up).sum() + 2.0)
    return np.where(r > 0, p_up, p_down)


def last_return_logistic(r_fit: np.ndarray, y_fit: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Newton's method on a two-parameter logistic (intercept, slope on the standardised last
    return); a tiny ridge keeps it finite on separable or constant input."""
    mu, sd = float(np.mean(r_fit)), float(np.std(r_fit)) or 1.0
    x = np.column_stack([np.ones(len(r_fit)), (r_fit - mu) / sd])
    w = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        g = x.T @ (p - y_fit) + 1e-6 * w
        h = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    z = w[0] + w[1] * (r - mu) / sd
    return 1.0 / (1.0 + np.exp(-z))


def last_returns(bars: Bars, fit: np.ndarray) -> np.ndarray:
    """The 1-bar log return per bar (the one-feature rules' input), each asset's on its own
    bars, in units of its volatility (its standard deviation over the rows `fit`, positions
    or a mask), so one rule fitted on all assets is not the loud ones' (one asset's rule is
    scale-free: its logistic standardizes the input)."""
    close = bars.frame["close"].to_numpy()
    r1 = np.concatenate([last_return(close[a.start : a.stop]) for a in bars.members()])
    groups = bars.asset_of_rows()
    rows = np.flatnonzero(fit) if np.asarray(fit).dtype == bool else np.asarray(fit)
    for g in np.unique(groups[rows]):
        sd = float(np.nanstd(r1[rows[groups[rows] == g]])) or 1.0
        r1[groups == g] /= sd
    return r1


RULES = ("climatology", "proxy", "last_sign", "last_return")


def score_rules(
    y: np.ndarray,
    bars: Bars,
    fit: np.ndarray,
    score: np.ndarray,
    base_rate: float,
    proxy: dict[str, Any] | None,
    relative: bool = False,
) -> dict[str, np.ndarray]:
    """The baseline ladder, for training, walk-forward and promotion alike: the rows `score`
    (positions) forecast by climatology (`base_rate`: the train span's), the proxy (its
    `signal.proxy` settings; left out when None), the last bar's sign and a logistic on the
    last return, both fitted on the rows `fit` (positions) where the label and the return are
    known.

    A universe's rules are pooled as its model is: climatology is the train span's base rate
    over all assets (a per-asset rate is noisier, and under no signal a pooled model beat it
    "significantly": docs/results.md), and the sign and return rules are fitted on all
    assets' rows of the last return in units of each asset's own volatility (its standard
    deviation over its fitting rows); the proxy is computed per asset. For a relative label
    (`relative`) the sign and return rules read the asset's last return minus the universe's
    mean last return at the same timestamp (in the same units): the relative last-return rule,
    like with like; climatology is the relative label's own base rate."""
    fit, score = np.asarray(fit), np.asarray(score)
    r1 = last_returns(bars, fit)
    if relative:
        r1 = r1 - cross_section(r1, bars.timeline()[0])[0]
    ok = np.isfinite(r1[fit]) & np.isfinite(y[fit])
    rf, yf = r1[fit][ok], y[fit][ok]
    out = {"climatology": np.full(len(score), base_rate)}
    if proxy is not None:
        close = bars.frame["close"].to_numpy()
        p_proxy = np.concatenate(
            [proxy_p_hat(close[a.start : a.stop], **proxy) for a in bars.members()]
        )
        out["proxy"] = p_proxy[score]
    out["last_sign"] = last_sign_p(rf, yf, r1[score])
    out["last_return"] = last_return_logistic(rf, yf, r1[score])
    return out


def rule_forecasts(
    y: np.ndarray,
    bars: Bars,
    spans: dict[str, np.ndarray],
    proxy: dict[str, Any] | None,
    shrink_bars: float | None = None,
    relative: bool = False,
) -> dict[str, np.ndarray]:
    """The test span scored by the simple forecasts a quant tries first (`RULES`), fitted on
    the train and calibration spans (phat train's and every walk-forward fold's): the one
    baseline ladder (`score_rules`) on spans. For a universe whose recipe corrects each
    asset's calibration (`shrink_bars`: its calibration.shrink_bars), climatology is corrected
    the same way (asset_climatology): base-rate differences alone never count as skill."""
    fit = np.concatenate(
        [spans["train"], spans.get("validation", spans["train"][:0]), spans["calibration"]]
    )
    base_rate = float(np.mean(y[spans["train"]]))
    out = score_rules(y, bars, fit, spans["test"], base_rate, proxy, relative)
    if shrink_bars is not None:  # the recipe corrects each asset's map (recipe.fit.corrects_assets)
        out["climatology"] = asset_climatology(y, bars, spans, base_rate, shrink_bars)
    return out


def asset_climatology(
    y: np.ndarray, bars: StackedBars, spans: dict[str, np.ndarray], base_rate: float, shrink: float
) -> np.ndarray:
    """Climatology as strong as a recipe with per-asset corrections: the train span's pooled
    base rate, then each asset's correction fitted on its calibration samples and shrunk by
    their number exactly as the recipe shrinks its own (fit_asset_correction), on the test
    span. A forecast that is climatology plus per-asset corrections equals it in expectation."""
    asset = bars.asset_of_rows()
    cal, test = spans["calibration"], spans["test"]
    z = float(np.log(base_rate / (1.0 - base_rate)))
    out = np.full(len(test), base_rate)
    for k in range(len(bars.members())):
        mine = cal[asset[cal] == k]
        known = mine[np.isfinite(y[mine])]
        fix = fit_asset_correction(np.full(len(known), base_rate), y[known], shrink)
        rows = asset[test] == k
        out[rows] = (
            Calibrator("none", {}).with_asset_correction(fix).predict(np.full(int(rows.sum()), z))
        )
    return out
