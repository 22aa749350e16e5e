"""One year of 15m bars through the policy and backtest engine, model inference excluded.

    python scripts/bench_backtest.py [--repeats 5]

Times `run_backtest` (policy per book, costs, decision records, trades, metrics) on 35,040 bars
with a precomputed proxy p_hat, against `prepare_bars` (validation of the same bars) measured in
the same run. Target: the backtest under 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from phat.data import prepare_bars
    from phat.data.synthetic import generate
    from phat.trading.backtest import run_backtest
    from phat.trading.policy import ReferencePolicy, ema_trend_triggers
    from phat.trading.signals import Binding, proxy_p_hat

    raw = generate().bars
    bars = prepare_bars(raw, timeframe="15m")
    from phat.cli.config import compose, validate

    cfg = validate("backtest", compose("backtest", []))
    proxy = cfg["signal"]["proxy"]
    p = proxy_p_hat(bars.frame["close"].to_numpy(), **proxy)
    sig = pd.DataFrame(
        {"p_hat_raw": p, "p_hat": p, "source": "proxy", "fallback_reason": ""}, index=bars.index
    )
    trigger = {k: v for k, v in cfg["policy"]["trigger"].items() if k != "rule"}
    trig = ema_trend_triggers(bars.frame["close"].to_numpy(), **trigger)
    pol = ReferencePolicy()
    bt, ref = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = run_backtest(
            bars.frame,
            sig,
            trig,
            pol,
            Binding("proxy"),
            symbol="SYNTH",
            fee_bps=2,
            slippage_bps=1,
            timeframe=pd.Timedelta("15min"),
        )
        bt.append(time.perf_counter() - t)
        t = time.perf_counter()
        prepare_bars(raw, timeframe="15m")
        ref.append(time.perf_counter() - t)
    assert np.isfinite(res.metrics["pnl_net"])
    print(f"bars={len(bars)} trades={int(res.metrics['trade_count'])}")
    print(
        f"backtest_s={statistics.median(bt):.3f} (target < 2)  validate_bars_s={statistics.median(ref):.3f}"
    )
    print(f"backtest_over_validation={statistics.median(bt) / statistics.median(ref):.2f}")


if __name__ == "__main__":
    main()
