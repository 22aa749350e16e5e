"""The universe monitor on replays (issue #24 item 4; docs/monitoring.md, docs/results.md).

    .venv/bin/python scripts/bench_monitor_universe.py [--replays 50] [--assets 20]
        [--drifting 3] [--bars 6000] [--alpha 0.01]

Each replay: a synthetic universe (phat.data.synthetic.generate_universe: common regime path,
directions correlated 0.3, per-asset volatility) with trend_bias and revert_strength 0, so each
asset's Bayes probability is exactly calibrated; in `--drifting` of the assets the planted
signal's sign flips at bar bars/2 while the forecast keeps the old formula (a stale model). The
monitor runs as `phat monitor` runs it on a universe: one e-process per asset
(evidence.monitor.update) and the universe's (evidence.monitor.universe_update). Printed: the
share of drifting assets detected and their median delay in bars after the flip, false alarms
on the calm assets (count over all replays, and the share of replays with any: Ville bounds
each asset's at alpha), and the universe alarm's share and median delay.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def replay(seed: int, assets: int, drifting: int, bars: int, alpha: float) -> dict:
    import pandas as pd

    from phat.data.synthetic import SyntheticConfig, generate_universe
    from phat.evidence.monitor import MonitorState, universe_update, update

    at = bars // 2
    base = SyntheticConfig(seed=seed, periods=bars, trend_bias=0, revert_strength=0)
    calm = generate_universe(base, assets)
    flip = generate_universe(SyntheticConfig(**{**base.__dict__, "planted_flip_at": at}), assets)
    drift = sorted(calm)[:drifting]
    index = next(iter(calm.values())).bars.index
    n = bars - 1
    last = {s: 1.0 for s in calm}
    points = []
    delays, false_alarms = [], 0
    for sym, m in calm.items():
        market = flip[sym] if sym in drift else m
        close = market.bars["close"].to_numpy()
        y = (close[1:] > close[:-1]).astype(float)
        p = m.p_up.to_numpy()[:n]  # the stale model: the calm generator's formula
        st = MonitorState.new(1, 5)
        new = update(st, index[:n], np.arange(n), p, y, index[1 : n + 1], alpha, 10)
        points += [(t, sym, e) for t, e in new]
        if st.alarm is not None:
            bar = int(index.get_loc(pd.Timestamp(st.alarm["time"]))) - 1
            if sym in drift:
                delays.append(bar - at)
            else:
                false_alarms += 1
    _, alarm = universe_update(last, points, alpha, None)
    uni_delay = None
    if alarm is not None:
        uni_delay = int(index.get_loc(pd.Timestamp(alarm["time"]))) - 1 - at
    return {"delays": delays, "false": false_alarms, "universe": uni_delay}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--assets", type=int, default=20)
    ap.add_argument("--drifting", type=int, default=3)
    ap.add_argument("--bars", type=int, default=6000)
    ap.add_argument("--alpha", type=float, default=0.01)
    a = ap.parse_args()
    t = time.perf_counter()
    rows = [replay(s, a.assets, a.drifting, a.bars, a.alpha) for s in range(a.replays)]
    delays = [d for r in rows for d in r["delays"]]
    detected = len(delays) / (a.replays * a.drifting)
    false = sum(r["false"] for r in rows)
    calm = a.replays * (a.assets - a.drifting)
    uni = [r["universe"] for r in rows if r["universe"] is not None]
    print(f"{a.replays} replays of {a.assets} assets x {a.bars} bars, {a.drifting} flipping at "
          f"bar {a.bars // 2}, alpha {a.alpha} ({time.perf_counter() - t:.0f} s)")  # fmt: skip
    print(f"  drifting assets detected {detected:.0%}, delay after the flip: median "
          f"{np.median(delays) if delays else float('nan'):.0f} bars (p10 "
          f"{np.percentile(delays, 10) if delays else float('nan'):.0f}, p90 "
          f"{np.percentile(delays, 90) if delays else float('nan'):.0f})")  # fmt: skip
    early = sum(d < 0 for d in delays)
    print(
        f"  calm assets: {false} false alarms in {calm} asset-replays ({false / calm:.2%}; "
        f"Ville: at most {a.alpha:.0%} each); drifting assets alarmed before the flip: {early}"
    )
    print(
        f"  universe alarm in {len(uni)} of {a.replays} replays"
        + (f", median delay {np.median(uni):.0f} bars" if uni else "")
        + f" (each alarmed asset counts as its alarm level: {a.drifting} of {a.assets} "
        f"stopped at {1 / a.alpha:.0f} give a mean of about "
        f"{(a.drifting / a.alpha + a.assets - a.drifting) / a.assets:.0f})"
    )


if __name__ == "__main__":
    main()
