"""A universe's evidence: one row per asset, tests corrected for many assets, pooled tests that
respect cross-asset correlation (phat.evaluation.significance).

`per_asset_table` scores each asset's test samples: n, Brier of p_hat, of climatology (the
universe's train base rate, models.rules.rule_forecasts) and of the best one-feature rule (the 1-bar
return in units of the asset's volatility, fitted on all assets), ECE, a one-sided Diebold-Mariano p-value against
climatology, Spiegelhalter's calibration p-value, and each p-value adjusted by Benjamini-Hochberg
over the assets (`*_bh`). An asset beats climatology when its adjusted DM p-value is below
`alpha`; it is miscalibrated when its adjusted calibration p-value is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from phat.confdefaults import conf_defaults

COLUMNS = (
    "symbol", "n", "brier", "brier_climatology", "brier_last_return", "ece",
    "dm_pvalue_vs_climatology", "dm_pvalue_vs_climatology_bh", "calibration_pvalue",
    "calibration_pvalue_bh", "beats_climatology", "miscalibrated",
)  # fmt: skip

# The level of the per-asset verdicts in training and walk-forward reports: the promotion
# gate's default (conf/promotion/default.yaml), so a report reads as the gate would.
REPORT_FDR = float(conf_defaults("promotion/default")["per_asset_fdr"])


def per_asset_table(
    symbols: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    p_climatology: np.ndarray,
    p_rule: np.ndarray,
    horizon_bars: int,
    n_bins: int,
    alpha: float,
    folds: np.ndarray | None = None,
) -> pd.DataFrame:
    """`alpha`: the Benjamini-Hochberg level of the table's verdicts (promotion: its
    promotion.per_asset_fdr; training and walk-forward reports: REPORT_FDR, that setting's
    default). `folds`: a walk-forward record's fold of each row (the calibration test's
    variance is then clustered by fold: significance.spiegelhalter)."""
    from phat.evaluation.metrics import brier, ece
    from phat.evaluation.significance import benjamini_hochberg, diebold_mariano, spiegelhalter

    rows: list[dict[str, Any]] = []
    for sym in sorted(set(symbols.tolist())):
        m = symbols == sym
        yy, pp, pc, pr = y[m], p[m], p_climatology[m], p_rule[m]
        fm = None if folds is None else np.asarray(folds)[m]
        ok = np.isfinite(pr)
        rows.append(
            {
                "symbol": sym,
                "n": int(m.sum()),
                "brier": brier(yy, pp),
                "brier_climatology": brier(yy, pc),
                "brier_last_return": brier(yy[ok], pr[ok]) if ok.any() else np.nan,
                "ece": ece(yy, pp, n_bins=n_bins),
                "dm_pvalue_vs_climatology": diebold_mariano(
                    (pp - yy) ** 2, (pc - yy) ** 2, horizon_bars
                )["pvalue"],
                "calibration_pvalue": spiegelhalter(yy, pp, horizon_bars, fm)["pvalue"],
            }
        )
    table = pd.DataFrame(rows)
    for col in ("dm_pvalue_vs_climatology", "calibration_pvalue"):
        table[f"{col}_bh"] = benjamini_hochberg(table[col].to_numpy())
    table["beats_climatology"] = table["dm_pvalue_vs_climatology_bh"] < alpha
    table["miscalibrated"] = table["calibration_pvalue_bh"] < alpha
    return table[list(COLUMNS)]


def universe_metrics(
    table: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    baselines: dict[str, np.ndarray],
    clock: np.ndarray,
    horizon_bars: int,
) -> dict[str, float]:
    """Counts from the per-asset table and the pooled tests on per-timestamp means:
    universe_dm_pvalue_vs_<rule> (one-sided, model better), assets_beat_climatology,
    assets_miscalibrated, assets_scored, mean per-asset ECE."""
    from phat.evaluation.significance import universe_diebold_mariano

    out: dict[str, float] = {
        "assets_scored": float(len(table)),
        "assets_beat_climatology": float(table["beats_climatology"].sum()),
        "assets_miscalibrated": float(table["miscalibrated"].sum()),
        "asset_mean_ece": float(table["ece"].mean()),
        "asset_mean_brier": float(table["brier"].mean()),
    }
    loss = (p - y) ** 2
    for name, pb in baselines.items():
        ok = np.isfinite(pb)
        dm = universe_diebold_mariano(loss[ok], (pb[ok] - y[ok]) ** 2, clock[ok], horizon_bars)
        out[f"universe_dm_pvalue_vs_{name}"] = dm["pvalue"]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown (numbers to 5 significant digits, p-values to 4)."""

    def cell(col: str, v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, float) and not np.isfinite(v):
            return "n/a"
        if isinstance(v, (float, np.floating)):
            return f"{v:.4f}" if "pvalue" in col else f"{v:.5f}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def skill_intervals(
    symbols: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    p_climatology: np.ndarray,
    clock: np.ndarray,
    horizon_bars: int,
) -> pd.DataFrame:
    """Brier skill against climatology, 1 - Brier / Brier(climatology), per asset and pooled,
    with 95% intervals: the mean loss differential's Newey-West standard error (overlapping
    labels), divided by climatology's mean loss; the pooled row (symbol `pooled`) on the
    per-timestamp means, as the universe's DM test reads it. Columns symbol, n, skill, low,
    high."""
    from phat.evaluation.significance import hac_variance, newey_west_lag, per_time_mean

    def row(sym: str, d: np.ndarray, base: float, n: int) -> dict[str, Any]:
        se = float(np.sqrt(hac_variance(d, newey_west_lag(len(d), horizon_bars)) / len(d)))
        mean = float(np.mean(d))
        return {"symbol": sym, "n": n, "skill": mean / base,
                "low": (mean - 1.96 * se) / base, "high": (mean + 1.96 * se) / base}  # fmt: skip

    loss, clim = (p - y) ** 2, (p_climatology - y) ** 2
    rows = []
    for sym in sorted(set(symbols.tolist())):
        m = symbols == sym
        rows.append(row(sym, clim[m] - loss[m], float(np.mean(clim[m])), int(m.sum())))
    d = per_time_mean(clim - loss, clock)
    rows.append(row("pooled", d, float(np.mean(clim)), len(y)))
    return pd.DataFrame(rows)


def universe_evidence(
    symbols: np.ndarray,
    y: np.ndarray,
    p_hat: np.ndarray,
    rules: dict[str, np.ndarray],
    clock: np.ndarray,
    horizon_bars: int,
    n_bins: int,
    p_pooled: np.ndarray | None = None,
    p_bayes: np.ndarray | None = None,
) -> dict[str, Any]:
    """A universe's test-span evidence: the per-asset table, the pooled tests on per-timestamp
    means (`clock`: each row's timeline slot), with per-asset calibration the same span under
    the pooled map alone (`p_pooled`: test_brier_pooled_map, test_ece_pooled_map) to compare,
    and on synthetic data each asset's Brier over the planted p's (`p_bayes`)."""
    from phat.evaluation.metrics import brier, ece

    h = horizon_bars
    table = per_asset_table(
        symbols, y, p_hat, rules["climatology"], rules["last_return"], h, n_bins, REPORT_FDR
    )
    metrics = universe_metrics(
        table, y, p_hat,
        {"climatology": rules["climatology"], "last_return": rules["last_return"]}, clock, h,
    )  # fmt: skip
    if p_pooled is not None:
        metrics["test_brier_pooled_map"] = brier(y, p_pooled)
        metrics["test_ece_pooled_map"] = ece(y, p_pooled, n_bins=n_bins)
    if p_bayes is not None:
        per = [
            (brier(y[m], p_hat[m]), brier(y[m], p_bayes[m]))
            for m in (symbols == s for s in np.unique(symbols))
        ]
        metrics["asset_mean_brier_over_bayes"] = float(np.mean([a / b for a, b in per]))
    return {"table": table, "symbols": symbols, "metrics": metrics}
