"""Size and power of the walk-forward Diebold-Mariano test (one-sided, 5%).

    .venv/bin/python scripts/bench_dm_size.py [--seeds 40] [--periods 35040] [--horizons 15m 4x15m]

No signal: the synthetic generator with planted_strength=0, trend_bias=0 and
revert_strength=0: every bar's direction is a fair coin (planted_strength=0 alone still leaves
the regimes' drift, which a model can learn). Monthly refits of the default logistic model.

Two rates per horizon over the seeds:
- model vs climatology: with nothing to learn, the fitted model is *worse* than climatology
  (its p varies around the base rate), so E[d] > 0 and a valid one-sided test rejects less than
  5%: this checks the test does not invent skill.
- the test's size under an exact null: the model's p_hat against its mirror 1 - p_hat. With a
  fair coin both have the same expected Brier bar by bar, by symmetry, and d keeps the record's
  serial structure (overlapping labels for a multi-bar horizon), so the rejection rate should
  be near 5%.
With the planted signal the test should reject on every seed (power).
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


def pvalues(overrides: list[str], tmp: str) -> tuple[float, float]:
    from phat.cli.config import compose, validate
    from phat.evaluation.significance import diebold_mariano
    from phat.evidence.walkforward import run_folds, summarize

    cfg = validate("walkforward", compose("walkforward", [f"out_dir={tmp}/o", *overrides]))
    rec = run_folds(cfg)
    m = summarize(rec, 15, 96, 5, 0)
    y, p = rec.frame["label"].to_numpy(), rec.frame["p_hat"].to_numpy()
    mirror = diebold_mariano((p - y) ** 2, (1 - p - y) ** 2, rec.horizon_bars)["pvalue"]
    return m["dm_pvalue_vs_climatology"], mirror


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--periods", type=int, default=35040)
    ap.add_argument("--power-seeds", type=int, default=5)
    ap.add_argument("--horizons", nargs="+", default=["15m", "4x15m"])
    a = ap.parse_args()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data.synthetic.periods={a.periods}", "walkforward.step=30d"]
        for h in a.horizons:
            null = [
                pvalues([*base, f"horizon={h}", *NO_SIGNAL, f"data.synthetic.seed={1000 + s}"], tmp)
                for s in range(a.seeds)
            ]
            clim = sum(p < 0.05 for p, _ in null)
            size = sum(q < 0.05 for _, q in null)
            print(f"horizon {h}, no signal, {a.seeds} seeds: model vs climatology rejects "
                  f"{clim} ({clim / a.seeds:.1%}; median p {sorted(p for p, _ in null)[a.seeds // 2]:.3f}); "
                  f"exact null (p_hat vs 1 - p_hat) rejects {size} ({size / a.seeds:.1%})", flush=True)  # fmt: skip
        power = [
            pvalues([*base, f"data.synthetic.seed={2000 + s}"], tmp)[0]
            for s in range(a.power_seeds)
        ]
    print(f"planted signal: {sum(p < 0.01 for p in power)} of {a.power_seeds} seeds reject at 1% "
          f"(max p {max(power):.2e}); {time.perf_counter() - t:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
