"""Diebold-Mariano test of equal predictive accuracy, one-sided, for per-bar loss differences.

d_t = loss_model_t - loss_baseline_t (Brier losses on the same bars). The long-run variance of
d is the Newey-West (Bartlett) HAC estimate with `lag` autocovariances; overlapping labels
(a horizon of h bars) make d autocorrelated up to lag h - 1 at least, and the default lag is the
larger of that and the Newey-West rule floor(4 (n/100)^(2/9)). The statistic gets the
Harvey-Leybourne-Newbold (1997) small-sample correction and is compared with Student's t with
n - 1 degrees of freedom. H1: the model's expected loss is lower (d < 0); the p-value is small
when the model is better.
"""

from __future__ import annotations

import math

import numpy as np


def newey_west_lag(n: int, horizon_bars: int) -> int:
    return max(int(horizon_bars) - 1, int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))))


def hac_variance(d: np.ndarray, lag: int) -> float:
    """Newey-West long-run variance of the series d (Bartlett weights 1 - k/(lag+1))."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    e = d - d.mean()
    v = float(e @ e) / n
    for k in range(1, min(lag, n - 1) + 1):
        v += 2.0 * (1.0 - k / (lag + 1.0)) * float(e[k:] @ e[:-k]) / n
    return v


def diebold_mariano(
    loss_model: np.ndarray, loss_base: np.ndarray, horizon_bars: int, lag: int | None = None
) -> dict[str, float]:
    """{stat, pvalue, mean_diff, lag, n}: one-sided test that the model's loss is lower."""
    from scipy.stats import t as student_t

    d = np.asarray(loss_model, dtype=np.float64) - np.asarray(loss_base, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 10:
        return {"stat": math.nan, "pvalue": math.nan, "mean_diff": math.nan, "lag": 0, "n": n}
    lag = newey_west_lag(n, horizon_bars) if lag is None else int(lag)
    v = hac_variance(d, lag)
    mean = float(d.mean())
    if v <= 0:
        stat = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(v / n)
        h = lag + 1
        stat *= math.sqrt(max((n + 1 - 2 * h + h * (h - 1) / n) / n, 0.0))
    pvalue = float(student_t.cdf(stat, df=n - 1))
    return {"stat": float(stat), "pvalue": pvalue, "mean_diff": mean, "lag": lag, "n": n}
