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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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


def last_return(close: np.ndarray) -> np.ndarray:
    """log(close_t / close_(t-1)); NaN at the first bar."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(len(lc), np.nan)
    out[1:] = np.diff(lc)
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
