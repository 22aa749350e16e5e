"""The calibration monitor's e-process on replays (docs/monitoring.md, docs/results.md).

    .venv/bin/python scripts/bench_monitor.py [--replays 100] [--bars 20000] [--alpha 0.01]

Forecast: the generator's own Bayes probability (exactly calibrated) with trend_bias and
revert_strength 0, so the null "p_hat is calibrated" holds exactly:
- no drift: the share of replays that ever alarm (false alarms; Ville: at most alpha);
- drift: at bar `bars/2` the planted signal's sign flips (flip), or its strength halves
  (overconfident), while the forecast keeps the old formula (a stale model): the share
  detected and the delay in bars after the drift;
- online recalibration (monitor.recalibrate=online, defaults): Brier of the stale model and of
  its online recalibration, with a 95% interval of the mean difference over replays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def replay(seed: int, bars: int, alpha: float, drift: str | None) -> dict:
    """Bars after the drift (or from the start) until the alarm (None if none), and the Brier
    of the stale model and of its online recalibration over the bars after the drift."""
    import pandas as pd

    from phat.data.synthetic import SyntheticConfig, generate
    from phat.evidence.monitor import MonitorState, OnlineRecalibrator, update

    at = bars // 2 if drift else 0
    m = generate(SyntheticConfig(seed=seed, periods=bars, trend_bias=0, revert_strength=0,
                                 planted_flip_at=at if drift == "flip" else None))  # fmt: skip
    p_true = m.p_up.to_numpy()
    p = p_true.copy()
    if drift == "flip":
        p[at:] = 1.0 - p_true[at:]  # the stale model still uses the old sign
    elif drift == "overconfident":  # the signal halves; the stale model keeps its old scale
        z = np.log(p_true / (1 - p_true))
        p[at:] = 1 / (1 + np.exp(-2 * z[at:]))
    close = m.bars["close"].to_numpy()
    y = (close[1:] > close[:-1]).astype(float)
    if drift == "overconfident":  # outcomes follow the halved signal
        rng = np.random.default_rng(seed)
        y[at:] = (rng.uniform(size=len(y) - at) < p_true[at : len(y)]).astype(float)
    n = len(y)
    idx = m.bars.index[:n]
    st = MonitorState.new(1, 5)
    st.recal = OnlineRecalibrator(1, 500, 2000)
    update(st, idx, np.arange(n), p[:n], y, m.bars.index[1 : n + 1], alpha, n)
    rec = np.asarray(st.recent)[at:]
    delay = None
    if st.alarm is not None:
        delay = int(m.bars.index.get_loc(pd.Timestamp(st.alarm["time"]))) - 1 - at
    return {
        "delay": delay,
        "static": float(((rec[:, 1] - rec[:, 0]) ** 2).mean()),
        "online": float(((rec[:, 1] - rec[:, 2]) ** 2).mean()),
        "climatology": float(((rec[:, 1] - rec[:, 1].mean()) ** 2).mean()),
    }


def _brier_line(rows: list[dict], what: str) -> str:
    d = np.array([r["online"] - r["static"] for r in rows])
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return (f"  Brier {what}: static {np.mean([r['static'] for r in rows]):.5f}, online "
            f"{np.mean([r['online'] for r in rows]):.5f} (online - static {d.mean():+.5f} "
            f"[{d.mean() - half:+.5f}, {d.mean() + half:+.5f}] 95%), climatology "
            f"{np.mean([r['climatology'] for r in rows]):.5f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replays", type=int, default=100)
    ap.add_argument("--bars", type=int, default=20000)
    ap.add_argument("--alpha", type=float, default=0.01)
    a = ap.parse_args()
    t = time.perf_counter()
    null = [replay(s, a.bars, a.alpha, None) for s in range(a.replays)]
    n_false = sum(r["delay"] is not None for r in null)
    print(f"no drift: {n_false} of {a.replays} replays of {a.bars} bars ever alarmed at "
          f"alpha {a.alpha} (rate {n_false / a.replays:.1%}; bound {a.alpha:.1%})", flush=True)  # fmt: skip
    print(_brier_line(null, "over every bar, no drift"), flush=True)
    for drift, offset in (("flip", 1000), ("overconfident", 2000)):
        rows = [replay(offset + s, a.bars, a.alpha, drift) for s in range(a.replays)]
        found = sorted(r["delay"] for r in rows if r["delay"] is not None)
        early = sum(d < 0 for d in found)
        med = f"{np.median(found):.0f}" if found else "-"
        p90 = f"{np.percentile(found, 90):.0f}" if found else "-"
        print(f"drift ({drift}) at bar {a.bars // 2}: {len(found)} of {a.replays} detected "
              f"({early} before it); delay in bars: median {med}, 90th percentile {p90}",
              flush=True)  # fmt: skip
        print(_brier_line(rows, f"after the drift ({drift})"), flush=True)
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
