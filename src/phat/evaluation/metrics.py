"""Probability metrics for p_hat = P(up), with block-bootstrap intervals.

ECE here is the *binary* expected calibration error of p_hat itself (the probability of "up"),
not the top-label confidence ECE, which folds p and 1-p together and hides a biased model:

    ECE = sum_b (n_b / N) * | mean(y in b) - mean(p in b) |

over `n_bins` equal-width bins of [0, 1] (bin b holds b/B <= p < (b+1)/B, the last bin closed),
or, for the equal-mass variant, over bins of (nearly) equal counts of sorted p. Empty bins count
zero. Brier = mean((p - y)^2); climatology Brier uses the train base rate as a constant
forecast; Brier skill = 1 - Brier / climatology Brier. Intervals are 95% percentile intervals of a
moving-block bootstrap over time (blocks keep serial dependence; resamples are seeded).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

_EPS = 1e-15


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(p, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bin_ids(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    if strategy == "quantile":
        order = np.argsort(p, kind="stable")
        ids = np.empty(len(p), dtype=np.int64)
        ids[order] = np.arange(len(p)) * n_bins // max(len(p), 1)
        return ids
    raise ValueError(f"bin strategy {strategy!r}: expected 'uniform' or 'quantile'")


def ece(y: np.ndarray, p: np.ndarray, *, n_bins: int, strategy: str = "uniform") -> float:
    """Expected calibration error over `n_bins` bins (metrics.n_bins: one setting everywhere)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ids = _bin_ids(p, n_bins, strategy)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / max(len(p), 1))


def reliability_curve(
    y: np.ndarray, p: np.ndarray, *, n_bins: int, strategy: str = "uniform"
) -> pd.DataFrame:
    """Per non-empty bin: mean predicted p, observed frequency of up, count."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ids = _bin_ids(p, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    nz = count > 0
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins)[nz],
            "mean_p": sum_p[nz] / count[nz],
            "observed_freq": sum_y[nz] / count[nz],
            "count": count[nz],
        }
    )


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "brier": brier,
    "log_loss": log_loss,
    "auc": roc_auc,
}  # and the ECEs, with their bins (span_metrics)


def _resample_index(n: int, block: int, n_boot: int, seed: int) -> np.ndarray:
    block = max(1, min(block, n))
    rng = np.random.default_rng(seed)
    n_blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    return (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)[:, :n]


def _boot_values(y: np.ndarray, p: np.ndarray, fn: Callable, idx: np.ndarray) -> np.ndarray:
    vals = np.array([fn(y[i], p[i]) for i in idx])
    return vals[np.isfinite(vals)]


def block_bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]],
    *,
    block: int,
    n_boot: int,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Moving-block bootstrap percentile intervals of each metric over a time-ordered sample."""
    idx = _resample_index(len(y), block, n_boot, seed)
    out: dict[str, tuple[float, float]] = {}
    alpha = (1 - level) / 2
    for name, fn in fns.items():
        vals = _boot_values(y, p, fn, idx)
        if len(vals) == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.quantile(vals, [alpha, 1 - alpha])
            out[name] = (float(lo), float(hi))
    return out


def debiased_ci(
    y: np.ndarray,
    p: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    *,
    block: int,
    n_boot: int,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(debiased estimate, low, high) for a biased statistic such as the plug-in ECE.

    The plug-in ECE is biased upwards (sampling noise in each bin's frequency adds to the gap),
    and the percentile bootstrap inherits the bias twice: its interval can lie entirely above
    the estimate. Bootstrap bias correction: estimate 2 t - mean(t*), interval
    [2 t - q_hi, 2 t - q_lo] (the basic bootstrap), both floored at 0 for a non-negative
    statistic. The interval contains the debiased estimate whenever mean(t*) lies between
    the bootstrap quantiles (docs/metrics.md)."""
    t = fn(y, p)
    vals = _boot_values(y, p, fn, _resample_index(len(y), block, n_boot, seed))
    if len(vals) == 0 or not np.isfinite(t):
        return float("nan"), float("nan"), float("nan")
    alpha = (1 - level) / 2
    q_lo, q_hi = np.quantile(vals, [alpha, 1 - alpha])
    est = max(2 * t - float(np.mean(vals)), 0.0)
    return est, max(2 * t - float(q_hi), 0.0), max(2 * t - float(q_lo), 0.0)


def evaluate_split(
    split: str,
    y: np.ndarray,
    p_raw: np.ndarray,
    p_cal: np.ndarray,
    base_rate: float,
    *,
    n_bins: int,
    block: int,
    n_boot: int,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics for one span, named `{split}_{metric}` (calibrated) and `..._raw`."""
    out: dict[str, float] = {}
    fns = dict(METRICS)
    fns["ece"] = lambda yy, pp: ece(yy, pp, n_bins=n_bins)
    fns["ece_mass"] = lambda yy, pp: ece(yy, pp, n_bins=n_bins, strategy="quantile")
    # ECEs get the bias-corrected estimate (`..._debiased`) and its interval; the others, whose
    # plug-in estimates are (nearly) unbiased, percentile intervals.
    biased = {k: fns.pop(k) for k in ("ece", "ece_mass")}
    for suffix, p in (("", p_cal), ("_raw", p_raw)):
        for name, fn in {**fns, **biased}.items():
            out[f"{split}_{name}{suffix}"] = fn(y, p)
        for name, (lo, hi) in block_bootstrap_ci(
            y, p, fns, block=block, n_boot=n_boot, seed=seed
        ).items():
            out[f"{split}_{name}{suffix}_ci_low"] = lo
            out[f"{split}_{name}{suffix}_ci_high"] = hi
        for name, fn in biased.items():
            est, lo, hi = debiased_ci(y, p, fn, block=block, n_boot=n_boot, seed=seed)
            out[f"{split}_{name}{suffix}_debiased"] = est
            out[f"{split}_{name}{suffix}_ci_low"] = lo
            out[f"{split}_{name}{suffix}_ci_high"] = hi
    clim = brier(y, np.full(len(y), base_rate))
    out[f"{split}_brier_climatology"] = clim
    out[f"{split}_brier_skill"] = 1.0 - out[f"{split}_brier"] / clim if clim > 0 else float("nan")
    out[f"{split}_brier_skill_raw"] = (
        1.0 - out[f"{split}_brier_raw"] / clim if clim > 0 else float("nan")
    )
    out[f"{split}_base_rate"] = float(np.mean(y))
    out[f"{split}_n"] = float(len(y))
    return out
