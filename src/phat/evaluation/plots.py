"""Reliability diagram: computation lives in phat.metrics, drawing lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def wilson_interval(
    freq: np.ndarray, n: np.ndarray, z: float = 1.96
) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a binomial frequency: wide for the sparse edge bins, so a
    reader can tell a few-sample swing from real miscalibration."""
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    freq = np.asarray(freq, dtype=np.float64)
    centre = (freq + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(freq * (1 - freq) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # In exact arithmetic lo <= freq <= hi; at freq 0 or 1 rounding can put the bound a hair
    # on the wrong side (n = 6, 11, 21, ...), which matplotlib refuses as a negative error bar.
    return np.minimum(centre - half, freq), np.maximum(centre + half, freq)


def _saved(fig: Any, path: str | Path, dpi: int, keep: bool) -> Any:
    """Lay out and save `fig` as PNG; the open Figure with `keep` (for mlflow.log_figure; the
    caller closes it), else the path (the figure closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    if keep:
        return fig
    plt.close(fig)
    return path


def _reliability_curve(ax: Any, y: np.ndarray, p: np.ndarray, n_bins: int, **style: Any) -> None:
    """Observed frequency against mean p per bin, with 95% Wilson intervals, on `ax`."""
    from phat.evaluation.metrics import reliability_curve

    rc = reliability_curve(y, p, n_bins=n_bins)
    freq = rc["observed_freq"].to_numpy()
    lo, hi = wilson_interval(freq, rc["count"].to_numpy())
    ax.errorbar(
        rc["mean_p"], freq, yerr=[np.maximum(freq - lo, 0.0), np.maximum(hi - freq, 0.0)], **style
    )


def reliability_diagram(
    y: np.ndarray,
    curves: dict[str, np.ndarray],
    path: str | Path,
    *,
    n_bins: int,
    title: str = "Reliability",
    keep: bool = False,
) -> Any:
    """Raw and calibrated reliability curves on one figure (95% Wilson intervals per bin), with
    a histogram of p below, saved as PNG at `path`.

    `curves` maps a label ("raw", "calibrated") to its p_hat array over the same samples.
    Returns the path, or with `keep=True` the open matplotlib Figure (for mlflow.log_figure;
    the caller closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phat.evaluation.metrics import ece

    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    for (label, p), color in zip(
        curves.items(), ("tab:orange", "tab:blue", "tab:green"), strict=False
    ):
        _reliability_curve(
            ax, y, p, n_bins, marker="o", capsize=2, color=color,
            label=f"{label} (ECE {ece(y, p, n_bins=n_bins):.4f})",
        )  # fmt: skip
        axh.hist(p, bins=np.linspace(0, 1, 4 * n_bins + 1), alpha=0.5, color=color, label=label)
    ax.set_ylabel("observed frequency of up")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    axh.set_xlabel("p_hat")
    axh.set_ylabel("count")
    axh.set_yscale("log")
    return _saved(fig, path, 100, keep)


def reliability_panels(
    y: np.ndarray,
    p: np.ndarray,
    symbols: np.ndarray,
    path: str | Path,
    *,
    n_bins: int = 10,
    title: str = "Reliability per asset",
    max_panels: int = 48,
    keep: bool = False,
) -> Any:
    """Small multiples: one reliability panel per asset (calibrated p_hat, 95% Wilson
    intervals), at most `max_panels` on one page (the assets with the most samples first; the
    title says how many are left out), saved as PNG. Returns the path, or with `keep=True`
    the open Figure (as reliability_diagram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phat.evaluation.metrics import ece

    names, counts = np.unique(symbols, return_counts=True)
    order = sorted(zip(names.tolist(), counts.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    shown = sorted(name for name, _ in order[:max_panels])
    cols = int(np.ceil(np.sqrt(len(shown))))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, sym in zip(axes.ravel(), shown, strict=False):
        m = symbols == sym
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        _reliability_curve(ax, y[m], p[m], n_bins, marker="o", ms=2, lw=0.8, capsize=1,
                           color="tab:blue")  # fmt: skip
        ax.set_title(f"{sym} n={int(m.sum())} ECE {ece(y[m], p[m], n_bins=n_bins):.3f}", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    left_out = len(names) - len(shown)
    fig.suptitle(title + (f" ({left_out} assets not shown)" if left_out else ""), fontsize=9)
    return _saved(fig, path, 90, keep)


def rolling_scores_plot(
    losses: dict[str, Any], fold_ece: Any, path: str | Path, window: str = "30D"
) -> Path:
    """Rolling mean Brier loss over time per forecaster (`losses`: name -> per-bar Series on a
    DatetimeIndex), with each fold's ECE of the model as steps on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, series in losses.items():
        ax.plot(series.rolling(window).mean(), lw=1.2, label=f"{name} (rolling {window} Brier)")
    ax.set_ylabel("Brier")
    ax2 = ax.twinx()
    ax2.step(
        fold_ece.index,
        fold_ece.to_numpy(),
        where="post",
        color="grey",
        ls=":",
        label="model ECE per fold",
    )
    ax2.set_ylabel("ECE")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title("Walk-forward: out-of-sample scores over time")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def monitor_plot(
    times: Any, e_values: Any, alpha: float, recent: Any, alarm_time: Any, window: int = 500
) -> Any:
    """The monitor's record: the e-value path (log scale, alarm line at 1/alpha) and, over the
    last matured bars, the rolling Brier of the model, of climatology and (when on) of the
    online recalibration; `recent` rows are (p, y[, q]) aligned with the last times. Returns
    the Figure (for mlflow.log_figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    times = pd.DatetimeIndex(times)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax.semilogy(times, np.maximum(np.asarray(e_values, dtype=float), 1e-12), lw=1, label="e-value")
    ax.axhline(1.0 / alpha, color="red", ls="--", lw=1, label=f"alarm (1/alpha = {1 / alpha:g})")
    if alarm_time is not None:
        for a in (ax, bx):
            a.axvline(pd.Timestamp(alarm_time), color="red", lw=0.8)
    ax.set_ylabel("e-value")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Calibration monitor: anytime-valid e-value and rolling Brier (matured bars)")
    arr = np.asarray(recent, dtype=float)
    arr = arr[len(arr) - min(len(arr), len(times)) :]  # the path may keep fewer points
    if len(arr):
        t = times[-len(arr) :]
        y = pd.Series(arr[:, 1], index=t)
        w = min(window, len(arr))
        clim = y.rolling(w).mean().shift(1)  # the base rate known before each bar
        bx.plot(t, ((y - arr[:, 0]) ** 2).rolling(w).mean(), lw=1, label=f"model (rolling {w})")
        bx.plot(t, ((y - clim) ** 2).rolling(w).mean(), lw=1, label="climatology")
        if arr.shape[1] == 3:
            bx.plot(t, ((y - arr[:, 2]) ** 2).rolling(w).mean(), lw=1, label="online recalibrated")
        bx.legend(loc="upper left", fontsize=8)
    bx.set_ylabel("Brier")
    fig.tight_layout()
    return fig


def universe_monitor_plot(
    asset_paths: dict[str, Any], universe_path: Any, alpha: float, worst: int = 6
) -> Any:
    """A universe monitor's record: the e-value paths (log scale) of the `worst` assets (the
    highest last e-values) and of the universe (the mean of the assets' stopped e-values),
    with the alarm line at 1/alpha. Paths are [(time, e)]. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ranked = sorted(asset_paths, key=lambda s: -(asset_paths[s][-1][1] if asset_paths[s] else 0))
    for sym in ranked[:worst]:
        if asset_paths[sym]:
            t, e = zip(*asset_paths[sym], strict=True)
            ax.semilogy(pd.DatetimeIndex(t), np.maximum(e, 1e-12), lw=0.8, label=sym)
    if universe_path:
        t, e = zip(*universe_path, strict=True)
        ax.semilogy(pd.DatetimeIndex(t), np.maximum(e, 1e-12), lw=2, color="black",
                    label="universe (mean)")  # fmt: skip
    ax.axhline(1.0 / alpha, color="red", ls="--", lw=1, label=f"alarm (1/alpha = {1 / alpha:g})")
    ax.set_ylabel("e-value")
    ax.set_title(f"Universe calibration monitor: the {min(worst, len(ranked))} worst assets and "
                 f"the universe ({len(asset_paths)} assets)")  # fmt: skip
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def asset_skill_plot(skill: Any, named: dict[str, str], title: str, path: str | Path) -> Any:
    """The universe's promotion decision in one picture: each asset's Brier skill against
    climatology with its 95% interval (evaluation.universe.skill_intervals), the pooled
    estimate last, the assets a gate named in red with the gate beside them. Returns the open
    figure (for mlflow.log_figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(skill.itertuples(index=False))
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(rows) + 1.6))
    for i, r in enumerate(rows):
        pooled = r.symbol == "pooled"
        color = "tab:red" if r.symbol in named else ("black" if pooled else "tab:blue")
        ax.errorbar(r.skill, i, xerr=[[r.skill - r.low], [r.high - r.skill]], fmt="D" if pooled
                    else "o", color=color, capsize=3)  # fmt: skip
        if r.symbol in named:
            ax.annotate(named[r.symbol], (r.high, i), xytext=(4, -3), textcoords="offset points",
                        fontsize=7, color="tab:red")  # fmt: skip
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [f"{r.symbol} (n={r.n})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Brier skill vs climatology (95% interval)")
    ax.set_title(title, fontsize=9)
    return _saved(fig, path, 110, keep=True)
