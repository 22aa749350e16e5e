"""A universe on this machine (issue #23): time and peak memory of pooled training, and the cost
per asset as the universe grows.

    python scripts/bench_universe.py [--quick] [--tcn] [--sizes 10,50,200]

Synthetic universes (phat.data.synthetic.generate_universe: a common factor, per-asset
volatility, the planted signal) are written once as Parquet files, one per asset, under
--cache (default /tmp/phat-bench-universe), then each run is `phat train`'s pipeline
(read, validate, features, purged inner CV, fit, calibration, per-asset evidence; no MLflow) in
a fresh process, whose peak RSS it reads from the OS at its end (its own ru_maxrss).

1. headline: 50 assets x 1 year of 15m bars (1.75M bars), pooled logistic (targets: < 3 min,
   < 4 GiB); with --tcn the pooled TCN on the same data for one epoch (target: < 4 GiB; windows
   are cut from the per-asset feature matrices per batch, never all materialised);
2. scaling: --sizes assets x a quarter year each; seconds per asset printed as a ratio to the
   smallest universe's, measured in the same run.
3. size (--size SEEDS): the universe test under no signal. Walk-forward (monthly-style windows
   shrunk to the data) on SEEDS synthetic universes of 10 assets with nothing to learn
   (planted_strength=0, no regime bias; directions correlated across assets at 0.3): the share
   of one-sided DM rejections at 5% vs climatology, on per-timestamp means (the universe test)
   and, for contrast, on the pooled rows as if assets were independent. A fitted model is
   worse than climatology under no signal, so that share should be near 0; the test's own size
   is checked on an equal-accuracy pair: on the same null universes' labels, p = 0.5 + e_t
   against 0.5 - e_t, e_t ~ N(0, 0.05^2) shared by every asset at bar t (a common factor of
   pure noise): equal expected Brier, so a test of the right size rejects 5% of the time.
--quick: 10 assets x 2 months, sizes 4,8 (a smoke run, minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, tempfile
sys.path.insert(0, sys.argv[1])
from conftest import make_cfg
from phat.pipeline import fit_evaluate
from phat.recipe.series import prepare
out = tempfile.mkdtemp()
cfg = make_cfg(out, *json.loads(sys.argv[3]))
cfg["data"]["path"] = sys.argv[2]
t = time.perf_counter()
res = fit_evaluate(prepare(cfg), out)
m = res.metrics
print(json.dumps({"seconds": time.perf_counter() - t, "bars": res.counts["bars"],
                  "test_brier": m["test_brier"], "assets_scored": m["assets_scored"],
                  "beat": m["assets_beat_climatology"], "timings": res.timings,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def universe_dir(cache: Path, assets: int, periods: int) -> Path:
    """Parquet files of a synthetic universe, written once per (assets, periods)."""
    from phat.data.synthetic import SyntheticConfig, generate_universe

    d = cache / f"u{assets}x{periods}"
    if (d / "done").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for sym, m in generate_universe(SyntheticConfig(periods=periods, seed=3), assets).items():
        m.bars.rename_axis("timestamp").reset_index().to_parquet(d / f"{sym}-15m.parquet")
    (d / "done").write_text("")
    print(f"  (generated {assets} x {periods} bars in {time.perf_counter() - t:.0f} s)")
    return d


def run(d: Path, overrides: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "tests"), str(d), json.dumps(overrides)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # peak_gib: the child's own


def size(seeds: int) -> None:
    """Section 3 of the module docstring, in this process (no MLflow)."""
    import numpy as np

    from phat.cli.config import compose, validate
    from phat.evaluation.significance import diebold_mariano
    from phat.evidence.walkforward import run_folds, summarize

    null = ["data.synthetic.assets=10", "data.synthetic.periods=4000",
            "data.synthetic.planted_strength=0", "data.synthetic.trend_bias=0",
            "data.synthetic.revert_strength=0", "walkforward.train=14D",
            "walkforward.calibration=7D", "walkforward.step=7D"]  # fmt: skip
    for recipe in (["model.ladder=off"], []):
        uni, pooled = [], []
        t = time.perf_counter()
        for seed in range(seeds):
            ov = ["out_dir=/tmp/phat-bench-size", *null, *recipe, f"data.synthetic.seed={seed}"]
            rec = run_folds(validate("walkforward", compose("walkforward", ov)))
            m = summarize(rec, 10, 50, 50, 0)
            uni.append(m["dm_pvalue_vs_climatology"])
            f = rec.frame
            y = f["label"].to_numpy()
            pooled.append(diebold_mariano((f["p_hat"] - y) ** 2, (f["p_climatology"] - y) ** 2,
                                          rec.horizon_bars)["pvalue"])  # fmt: skip
        u, p = np.array(uni), np.array(pooled)
        name = "ladder off (the model kept)" if recipe else "default recipe (ladder on)"
        print(f"  {name}: {seeds} null universes ({time.perf_counter() - t:.0f} s): rejections "
              f"at 5% per-timestamp {np.mean(u < 0.05):.1%}, pooled rows {np.mean(p < 0.05):.1%}; "
              f"median p {np.median(u):.3f} / {np.median(p):.3f}")  # fmt: skip


def equal_pair(seeds: int) -> None:
    """Size of the DM tests on an equal-accuracy pair over null universes' labels."""
    import numpy as np

    from phat.data.synthetic import SyntheticConfig, generate_universe
    from phat.evaluation.significance import diebold_mariano, universe_diebold_mariano

    uni, pooled = [], []
    t = time.perf_counter()
    for seed in range(seeds):
        cfg = SyntheticConfig(periods=2000, seed=seed, planted_strength=0.0, trend_bias=0.0,
                              revert_strength=0.0)  # fmt: skip
        markets = generate_universe(cfg, 10)
        e = np.random.default_rng(seed).normal(0.0, 0.05, cfg.periods - 1)
        la, lb, clock = [], [], []
        for m in markets.values():
            c = m.bars["close"].to_numpy()
            y = (c[1:] > c[:-1]).astype(float)
            la.append((0.5 + e - y) ** 2)
            lb.append((0.5 - e - y) ** 2)
            clock.append(np.arange(len(y)))
        a, b, k = np.concatenate(la), np.concatenate(lb), np.concatenate(clock)
        uni.append(universe_diebold_mariano(a, b, k, 1)["pvalue"])
        order = np.argsort(k, kind="stable")  # pooled rows in time order, as a record holds them
        pooled.append(diebold_mariano(a[order], b[order], 1)["pvalue"])
    u, p = np.array(uni), np.array(pooled)
    print(f"  equal-accuracy pair: {seeds} null universes ({time.perf_counter() - t:.0f} s): "
          f"rejections at 5% per-timestamp {np.mean(u < 0.05):.1%}, pooled rows "
          f"{np.mean(p < 0.05):.1%}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=0, help="only section 3, over this many seeds")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tcn", action="store_true")
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--cache", default="/tmp/phat-bench-universe")
    a = ap.parse_args()
    if a.size:
        print("3. size of the universe test under no signal")
        equal_pair(max(a.size, 100))
        size(a.size)
        return
    cache = Path(a.cache)
    year = 35040
    head_assets, head_periods = (10, 5760) if a.quick else (50, year)
    sizes = [4, 8] if a.quick else [int(s) for s in a.sizes.split(",")]
    scale_periods = 5760 if a.quick else year // 4

    print(f"1. headline: {head_assets} assets x {head_periods} bars of 15m, pooled")
    d = universe_dir(cache, head_assets, head_periods)
    r = run(d, [])
    print(f"  logistic  {r['seconds']:7.1f} s  peak RSS {r['peak_gib']:.2f} GiB  {r['bars']} bars  "
          f"test Brier {r['test_brier']:.5f}  {int(r['beat'])}/{int(r['assets_scored'])} assets "
          f"beat climatology  ({r['seconds'] / 180:.2f} of the 3-min target)")  # fmt: skip
    if a.tcn:
        r = run(d, ["model=tcn", "trainer.max_epochs=1", "trainer.patience=0"])
        print(f"  tcn 1 ep  {r['seconds']:7.1f} s  peak RSS {r['peak_gib']:.2f} GiB "
              f"({r['peak_gib'] / 4:.2f} of the 4-GiB target)")  # fmt: skip

    print(f"2. cost per asset as the universe grows ({scale_periods} bars each, pooled logistic)")
    base = None
    for n in sizes:
        r = run(universe_dir(cache, n, scale_periods), [])
        per = r["seconds"] / n
        base = base or per
        print(f"  {n:4d} assets  {r['seconds']:7.1f} s  {per:6.2f} s/asset  ratio {per / base:.2f}"
              f"  peak RSS {r['peak_gib']:.2f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
