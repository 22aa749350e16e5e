"""The calibration monitor's e-process on replays (docs/monitoring.md, docs/results.md).

    .venv/bin/python scripts/bench_monitor.py [--replays 100] [--bars 20000] [--alpha 0.01]

Forecast: the generator's own Bayes probability (exactly calibrated) with trend_bias and
revert_strength 0, so the null "p_hat is calibrated" holds exactly:
- no drift: the share of replays that ever alarm (false alarms; Ville: at most alpha);
- drift: the planted signal's sign flips at bar `bars/2` while the forecast keeps the old
  formula (a stale model): the share detected and the delay in bars after the flip.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def replay(seed: int, bars: int, alpha: float, flip: int | None) -> int | None:
    """Bars after the flip (or from the start) until the alarm; None if none."""
    from phat.data.synthetic import SyntheticConfig, generate
    from phat.evidence.monitor import MonitorState, update

    m = generate(SyntheticConfig(seed=seed, periods=bars, trend_bias=0, revert_strength=0,
                                 planted_flip_at=flip))  # fmt: skip
    p_true = m.p_up.to_numpy()
    p = p_true.copy()
    if flip is not None:
        p[flip:] = 1.0 - p_true[flip:]  # the stale model still uses the old sign
    close = m.bars["close"].to_numpy()
    y = (close[1:] > close[:-1]).astype(float)
    n = len(y)
    idx = m.bars.index[:n]
    pos = np.arange(n)
    st = MonitorState.new(1, 5)
    update(st, idx, pos, p[:n], y, m.bars.index[1 : n + 1], alpha, 500)
    if st.alarm is None:
        return None
    at = int(m.bars.index.get_loc(__import__("pandas").Timestamp(st.alarm["time"]))) - 1
    return at - (flip or 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replays", type=int, default=100)
    ap.add_argument("--bars", type=int, default=20000)
    ap.add_argument("--alpha", type=float, default=0.01)
    a = ap.parse_args()
    t = time.perf_counter()
    false = [replay(s, a.bars, a.alpha, None) for s in range(a.replays)]
    n_false = sum(x is not None for x in false)
    print(f"no drift: {n_false} of {a.replays} replays of {a.bars} bars ever alarmed at "
          f"alpha {a.alpha} (rate {n_false / a.replays:.1%}; bound {a.alpha:.1%})", flush=True)  # fmt: skip
    flip = a.bars // 2
    delays = [replay(1000 + s, a.bars, a.alpha, flip) for s in range(a.replays)]
    found = sorted(d for d in delays if d is not None)
    early = sum(d < 0 for d in found)
    print(f"drift at bar {flip}: {len(found)} of {a.replays} detected ({early} before the flip); "
          f"delay after the flip in bars: median {np.median(found):.0f}, 90th percentile "
          f"{np.percentile(found, 90):.0f}; {time.perf_counter() - t:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
