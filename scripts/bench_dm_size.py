"""Size and power of the walk-forward Diebold-Mariano test (model vs climatology, 5%).

    .venv/bin/python scripts/bench_dm_size.py [--seeds 40] [--periods 35040]

No signal: the synthetic generator with planted_strength=0, trend_bias=0 and
revert_strength=0 (every bar's direction is a fair coin; planted_strength=0 alone still leaves
the regimes' drift, which a model can learn). The share of seeds where the one-sided test
rejects at 5% estimates the test's size; it should be near 5%. With the planted signal it
should reject on every seed (power). Monthly refits of the default logistic model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

NO_SIGNAL = (
    "data.synthetic.planted_strength=0",
    "data.synthetic.trend_bias=0",
    "data.synthetic.revert_strength=0",
)


def pvalue(overrides: list[str], tmp: str) -> float:
    from phat.cli.config import compose, validate
    from phat.evidence.walkforward import run_folds, summarize

    cfg = validate("walkforward", compose("walkforward", [f"out_dir={tmp}/o", *overrides]))
    return summarize(run_folds(cfg), 15, 96, 5, 0)["dm_pvalue_vs_climatology"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--periods", type=int, default=35040)
    ap.add_argument("--power-seeds", type=int, default=5)
    a = ap.parse_args()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data.synthetic.periods={a.periods}", "walkforward.step=30d"]
        null = [
            pvalue([*base, *NO_SIGNAL, f"data.synthetic.seed={1000 + s}"], tmp)
            for s in range(a.seeds)
        ]
        power = [
            pvalue([*base, f"data.synthetic.seed={2000 + s}"], tmp) for s in range(a.power_seeds)
        ]
    rej = sum(p < 0.05 for p in null)
    print(f"no signal: {rej} of {a.seeds} seeds reject at 5% = {rej / a.seeds:.1%} "
          f"(p-values: min {min(null):.3f}, median {sorted(null)[len(null) // 2]:.3f})")  # fmt: skip
    print(f"planted signal: {sum(p < 0.01 for p in power)} of {a.power_seeds} seeds reject at 1% "
          f"(max p {max(power):.2e}); {time.perf_counter() - t:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
