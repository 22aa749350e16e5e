"""Tests on forecasts: Diebold-Mariano (equal accuracy), Spiegelhalter (calibration), and the
universe's versions (per-timestamp means, Benjamini-Hochberg across assets).

Diebold-Mariano test of equal predictive accuracy, one-sided, for per-bar loss differences.

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


def spiegelhalter(
    y: np.ndarray, p: np.ndarray, horizon_bars: int = 1, clusters: np.ndarray | None = None
) -> dict[str, float]:
    """Spiegelhalter's (1986) test that p is calibrated: u_t = (y_t - p_t)(1 - 2 p_t) has mean 0
    when it is (Brier's reliability term then has its expected value). Two-sided p-value of
    mean(u) / sqrt(HAC variance / n), the Newey-West variance of the DM test (overlapping
    labels make u autocorrelated); with horizon 1 and lag 0 this is the textbook statistic
    with the variance estimated from the data.

    `clusters` (a walk-forward record's fold of each row): each fold's forecast is one fit, so
    its error is shared by the fold's rows far beyond any Newey-West lag. The variance is then
    the larger of the HAC one and the cluster-robust one over folds (G/(G-1) sum_g S_g^2 / n^2,
    S_g the fold's sum of centred u), and the reference a t with G-1 degrees of freedom when the
    cluster variance is the larger: the test is as sure as the number of fits allows, not the
    number of rows. {stat, pvalue, n}."""
    from scipy.stats import norm
    from scipy.stats import t as student

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    u = (y - p) * (1.0 - 2.0 * p)
    ok = np.isfinite(u)
    u = u[ok]
    n = len(u)
    if n < 10:
        return {"stat": math.nan, "pvalue": math.nan, "n": n}
    v = hac_variance(u, newey_west_lag(n, horizon_bars)) / n
    dof = None
    if clusters is not None:
        g_of = np.unique(np.asarray(clusters)[ok], return_inverse=True)[1]
        g = int(g_of.max()) + 1
        if g >= 2:
            sums = np.bincount(g_of, weights=u - u.mean(), minlength=g)
            v_cluster = g / (g - 1) * float(sums @ sums) / n**2
            if v_cluster > v:
                v, dof = v_cluster, g - 1
    if v <= 0:
        return {"stat": 0.0, "pvalue": 1.0, "n": n}
    stat = float(u.mean() / math.sqrt(v))
    tail = norm.sf(abs(stat)) if dof is None else student.sf(abs(stat), dof)
    return {"stat": stat, "pvalue": float(2.0 * tail), "n": n}


def per_time_mean(values: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """Mean of `values` per distinct `clock` slot, in slot order (a universe's cross-section
    at each timestamp: assets that move together are one observation, not many)."""
    slots, inverse = np.unique(np.asarray(clock), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64), minlength=len(slots))
    return sums / np.bincount(inverse, minlength=len(slots))


def universe_diebold_mariano(
    loss_model: np.ndarray, loss_base: np.ndarray, clock: np.ndarray, horizon_bars: int
) -> dict[str, float]:
    """Diebold-Mariano on the per-timestamp mean loss differential across assets: respects the
    correlation of assets at the same timestamp (a pooled per-bar test would count N
    correlated bars as N independent ones)."""
    d = np.asarray(loss_model, dtype=np.float64) - np.asarray(loss_base, dtype=np.float64)
    ok = np.isfinite(d)
    mean_d = per_time_mean(d[ok], np.asarray(clock)[ok])
    return diebold_mariano(mean_d, np.zeros_like(mean_d), horizon_bars)


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy's false_discovery_control) over the finite
    entries; NaN stays NaN (an asset too short to test is not a test)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def versus_rules(
    y: np.ndarray,
    p: np.ndarray,
    rules: dict[str, np.ndarray],
    horizon_bars: int,
    clock: np.ndarray | None,
) -> dict[str, float]:
    """A forecast `p` of the outcomes `y` scored against the split's baselines (`rules`, each
    on the same rows): test_brier_<rule> and a one-sided Diebold-Mariano p-value of `p`
    against each (dm_pvalue_vs_<rule>; small = `p` is better); a universe's (`clock`: each
    row's timeline slot) on the per-timestamp mean loss differential. One asset's climatology
    Brier is test_brier_climatology of evaluate_split, so it is not repeated."""
    loss = (p - y) ** 2
    out: dict[str, float] = {}
    for name, pr in rules.items():
        good = np.isfinite(pr)
        lb = (pr[good] - y[good]) ** 2
        if name != "climatology" or clock is not None:
            out[f"test_brier_{name}"] = float(np.mean(lb)) if good.any() else float("nan")
        out[f"dm_pvalue_vs_{name}"] = (
            diebold_mariano(loss[good], lb, horizon_bars)["pvalue"]
            if clock is None
            else universe_diebold_mariano(loss[good], lb, clock[good], horizon_bars)["pvalue"]
        )
    return out
