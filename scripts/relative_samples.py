"""label=sign against label=relative on a real universe, walked forward, then the trained
relative model's test span traded by the neutral book against the directional reference book
(issue #38). Prints the rows whatever they show (docs/results/2026-12-07-relative-direction.md).

    .venv/bin/python scripts/relative_samples.py [--universe ../shared/data/universe-5m] \
        [--horizons 5m,12x5m] [--windows train=6d,calibration=3d,step=2d]

Each row is `phat walkforward data.path=<universe> horizon=<h> label=<label>` (no MLflow): the
record's Brier, the label's climatology and last-return rule (for label=relative: the relative
ones), one-sided DM p-values on per-timestamp means, AUC and how many assets beat climatology.
The book rows train the relative model once (`phat train ... label=relative`, no MLflow) and
run both books on each asset's test span with the model's p_hat: P&L, Sharpe and the book's
net and gross exposure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def record_row(
    universe: str, horizon: str, label: str, features: str, windows: list[str], tmp: str
) -> str:
    from phat.cli.config import compose, validate
    from phat.evidence.walkforward import run_folds, summarize

    cfg = validate("walkforward", compose("walkforward", [
        f"data.path={universe}", f"horizon={horizon}", f"label={label}", f"out_dir={tmp}/o",
        f"features={features}", *(f"walkforward.{w}" for w in windows),
    ]))  # fmt: skip
    rec = run_folds(cfg)
    m = summarize(rec, 15, int(cfg.metrics.bootstrap_block), 200, 0)
    return (
        f"| {horizon} | {label} | {features} | {len(rec.folds)} | {int(m['oos_n'])} | {m['oos_brier']:.5f} | "
        f"{m['oos_brier_climatology']:.5f} | {m['oos_brier_last_return']:.5f} | "
        f"{m['dm_pvalue_vs_climatology']:.2g} | {m['dm_pvalue_vs_last_return']:.2g} | "
        f"{m['oos_auc']:.3f} | {int(m['assets_beat_climatology'])}/{int(m['assets_scored'])} |"
    )


def book_rows(universe: str, horizon: str, features: str, tmp: str) -> list[str]:
    import numpy as np
    import pandas as pd

    from phat.cli.config import compose, validate
    from phat.confdefaults import conf_defaults
    from phat.pipeline import train
    from phat.trading.backtest import backtest_assets, build_policy, exposure
    from phat.trading.policy import ema_trend_triggers
    from phat.trading.signals import Binding

    cfg = validate("train", compose("train", [
        f"data.path={universe}", f"horizon={horizon}", "label=relative", f"out_dir={tmp}/t",
        f"features={features}",
    ]))  # fmt: skip
    res = train(cfg, f"{tmp}/t")
    test = res.predictions["test"]
    asset = res.bars.asset_of_rows()[test.ends]
    params = conf_defaults("policy/reference")["params"]
    trig = conf_defaults("policy/reference")["trigger"]
    binding = Binding("model_v1", "relative-sample", "1", res.tags["phat.model_hash"])
    rows = []
    for name, kind in (("neutral", "relative"), ("reference (directional)", None)):
        policy = build_policy(params, kind)
        inputs, costs = {}, {}
        for k, a in enumerate(res.bars.members()):
            ends = test.ends[asset == k]
            if len(ends) < 2:
                continue
            frame = res.bars.frame.iloc[ends]
            p = test.p_hat[asset == k]
            signal = pd.DataFrame({"p_hat": p, "p_hat_raw": p, "source": "model",
                                   "fallback_reason": ""}, index=frame.index)  # fmt: skip
            close = res.bars.frame["close"].to_numpy()
            trigger = ema_trend_triggers(close[a.start : a.stop], fast=int(trig["fast"]),
                                         slow=int(trig["slow"]))[ends - a.start]  # fmt: skip
            inputs[a.symbol] = (frame, signal, trigger)
            costs[a.symbol] = {"symbol": a.symbol, "fee_bps": 0.0, "slippage_bps": 0.0,
                               "timeframe": pd.Timedelta(res.label_spec.timeframe)}  # fmt: skip
        results = backtest_assets(inputs, policy, binding, costs)
        held = exposure(results)
        pnl = sum(r.metrics["pnl_net"] for r in results.values())
        sharpe = float(np.mean([r.metrics["sharpe"] for r in results.values()]))
        rows.append(
            f"| {horizon} | {features} | {name} | {pnl * 1e4:.1f} | {sharpe:.2f} | "
            f"{held['net'].abs().mean():.3f} | {held['net'].abs().max():.3f} | "
            f"{held['gross'].mean():.3f} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--universe", default=str(ROOT.parent / "shared" / "data" / "universe-5m"))
    ap.add_argument("--horizons", default="5m,12x5m")
    ap.add_argument("--windows", default="train=6d,calibration=3d,step=2d")
    ap.add_argument(
        "--records",
        default="sign:default,relative:default,relative:relative",
        help="label:features pairs, each one walk-forward record per horizon",
    )
    ap.add_argument("--books", default="default,relative", help="the relative model's features")
    args = ap.parse_args()
    windows = args.windows.split(",")
    print(
        "| horizon | label | features | folds | n | Brier | climatology | last-return rule | "
        "DM p vs climatology | DM p vs rule | AUC | assets beating climatology |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for h in args.horizons.split(","):
            for pair in args.records.split(","):
                label, feats = pair.split(":")
                print(record_row(args.universe, h, label, feats, windows, tmp), flush=True)
        print(
            "\n| horizon | features | book (relative model, test span, no costs) | P&L (bps, "
            "summed) | Sharpe (mean) | mean abs net | max abs net | mean gross |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for h in args.horizons.split(","):
            for feats in filter(None, args.books.split(",")):
                for line in book_rows(args.universe, h, feats, tmp):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
