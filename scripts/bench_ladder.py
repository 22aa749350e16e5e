"""Capacity on purged inner CV and the model ladder (issue #25), measured on data nobody tuned
to: pure AR(1) returns (coefficient 0.2 and 0.05), the synthetic planted year, and the real
samples beside the project (../shared/data, when present).

    python scripts/bench_ladder.py [--data-dir ../shared/data] [--quick] [--tree | --tcn]

Three recipes per series, each a full `phat train` pipeline (no MLflow): `before` (the old
default: logistic C=0.1, no ladder, default features), `default` (C=auto, ladder on, default
features) and `scaled` (the same with features=scaled). Per run: the test Brier of the kept
forecast, climatology's and the last-return rule's on the same test bars, one-sided DM p-values
of "the kept forecast is worse" than each (1 - the run's "better" p-value), the rung kept, the
chosen C, and the fit time as a ratio to `before` on the same series. `--tree`: the tree recipe
instead, `before` (15 leaves, no ladder), `ladder` (the default: 15 leaves, ladder on) and
`leaves=auto` (leaves per tree on the purged inner CV, ladder on); the C column then shows the leaves kept. `--tcn`: the TCN, `before` (no
ladder), `ladder` (today's default: fixed width and weight decay, ladder on), `width=auto`,
`decay=auto` and `both=auto` (`model.params.channels=auto`, `trainer.weight_decay=auto`, both:
3, 4 and 12 candidates x 5 inner folds, ladder on); the C column then shows the width and
weight decay kept. `--recipes a,b` runs only those (the TCN's searches cost minutes each).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RECIPES = {
    "before": ["model.params.C=0.1", "model.ladder=off"],
    "default": [],
    "scaled": ["features=scaled"],
}
TREE_RECIPES = {
    "before": ["model=tree", "model.ladder=off"],
    "ladder": ["model=tree"],  # today's default: 15 leaves, ladder on the inner CV (2026-12-07)
    "leaves=auto": ["model=tree", "model.params.max_leaf_nodes=auto"],
}
TCN_RECIPES = {
    "before": ["model=tcn", "model.ladder=off"],
    "ladder": ["model=tcn"],
    "width=auto": ["model=tcn", "model.params.channels=auto"],
    "decay=auto": ["model=tcn", "trainer.weight_decay=auto"],
    "both=auto": ["model=tcn", "model.params.channels=auto", "trainer.weight_decay=auto"],
}


def ar1(phi: float, n: int, seed: int, freq: str = "15min") -> pd.DataFrame:
    """OHLCV bars whose log returns follow r_t = phi r_(t-1) + e_t (e ~ N(0, 0.002^2)):
    the whole predictable signal is the last return."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, 0.002, n)
    r = np.empty(n)
    r[0] = e[0]
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.0007, (2, n)))
    idx = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": rng.uniform(50, 150, n),
        },
        index=idx,
    )


def cases(data_dir: Path, tmp: Path, quick: bool) -> list[tuple[str, list[str]]]:
    out = []
    for phi in (0.2, 0.05):
        p = tmp / f"ar1_{phi}.parquet"
        ar1(phi, 20_000, seed=1).to_parquet(p)
        out.append((f"AR(1) {phi}, 20k 15m bars", [f"data.path={p}", "horizon=15m"]))
    out.append(("synthetic planted year (15m)", []))
    if quick:
        return out
    real = [("BTC-1m-sample.feather", "1m", []), ("ETH_BTC-5m-sample.feather", "5m", []),
            ("GOOG-1d-sample.csv", "1d", ["metrics.bootstrap_block=20"])]  # fmt: skip
    real += [
        (f"universe-5m/{f.name}", "5m", [])
        for f in sorted((data_dir / "universe-5m").glob("*.feather"))
    ]
    for name, horizon, extra in real:
        if (data_dir / name).exists():
            out.append((f"{name} ({horizon})", [f"data.path={data_dir / name}", f"horizon={horizon}", *extra]))  # fmt: skip
    return out


def _capacity(m: dict, params: dict, trainer: dict) -> str:
    """What capacity the run kept: the chosen C, leaves or TCN width/weight decay, else the
    fixed one."""
    for chosen, fixed in (("selected_C", "C"), ("selected_max_leaf_nodes", "max_leaf_nodes")):
        if chosen in m:
            return f"{m[chosen]:g}"
        if fixed in params:
            return str(params[fixed])
    if "channels" in params:
        width = m.get("selected_channels", params["channels"])
        return f"{width:g} ch, wd {m.get('selected_weight_decay', trainer['weight_decay']):g}"
    return "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true", help="the synthetic series only")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--tree", action="store_true", help="the tree recipe, leaves=auto")
    kind.add_argument("--tcn", action="store_true", help="the TCN, width and weight decay auto")
    ap.add_argument(
        "--recipes", help="only these recipes, comma-separated (first: the ratio's base)"
    )
    args = ap.parse_args()
    recipes = TREE_RECIPES if args.tree else TCN_RECIPES if args.tcn else RECIPES
    if args.recipes:
        recipes = {k: recipes[k] for k in args.recipes.split(",")}

    from conftest import make_cfg
    from phat.errors import PhatError
    from phat.pipeline import train

    print("| series | recipe | kept | C | test Brier | climatology | last-return rule | "
          "p(worse than clim.) | p(worse than rule) | Bayes | fit time / before |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in cases(Path(args.data_dir), Path(tmp), args.quick):
            fit_before = None
            for recipe, extra in recipes.items():
                with tempfile.TemporaryDirectory() as d:
                    cfg = make_cfg(Path(d), *overrides, *extra, "metrics.bootstrap_n=20")
                    try:
                        r = train(cfg, d)
                    except PhatError as e:
                        print(f"| {name} | {recipe} | refused: {str(e)[:80]} |||||||||")
                        continue
                    fit = r.timings["fit_s"]
                    fit_before = fit if fit_before is None else fit_before
                    m = r.metrics
                    bayes = f"{m['test_brier_bayes']:.5f}" if "test_brier_bayes" in m else ""
                    print(
                        f"| {name} | {recipe} | {r.tags['phat.selected_rung']} | "
                        f"{_capacity(m, cfg['model']['params'], cfg['trainer'])} | "
                        f"{m['test_brier']:.5f} | {m['test_brier_climatology']:.5f} | "
                        f"{m['test_brier_last_return']:.5f} | "
                        f"{1 - m['dm_pvalue_vs_climatology']:.3f} | "
                        f"{1 - m['dm_pvalue_vs_last_return']:.3f} | {bayes} | "
                        f"{fit / fit_before:.1f}x ({fit:.2f} s) |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
