"""The engines past one machine (issue #26), measured on this machine against the in-process run.

    python scripts/bench_engines.py [--quick] [--assets 50] [--periods 8760] [--cpus 2]

1. Scoring a universe: a pooled logistic trained on a synthetic universe (no MLflow; its
   artifact directory is the model), then the universe's Parquet files (one per asset) scored
   by in-process `phat predict` (read, validate, score, write) and by `phat predict
   engine=spark` (phat.engines.spark.score_universe, Spark `local[CPUS]`). The Spark session's
   start-up (JVM, first job) is timed apart from the scoring; the scoring is timed warm (second
   call) and cold (first call: Python workers start, the model ships and loads). Both outputs
   are compared bit for bit. Ratio: in-process bars/s over Spark bars/s.
2. Walk-forward: the same universe walk-forward (weekly refits, threads=1: each task reserves
   its thread count, so threads=1 runs one fold per CPU) serially and with engine=ray on a
   local cluster of CPUS CPUs; the cluster's start-up timed apart. The records are
   compared bit for bit. Ratio: serial seconds over Ray seconds.
--quick: 10 assets x 2,000 bars (a smoke run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def write_universe(root: Path, assets: int, periods: int) -> Path:
    from phat.data.synthetic import SyntheticConfig, generate_universe

    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    for sym, m in generate_universe(SyntheticConfig(periods=periods, seed=3), assets).items():
        m.bars.rename_axis("timestamp").reset_index().to_parquet(files / f"{sym}-15m.parquet")
    return files


def scoring(root: Path, files: Path, assets: int, periods: int, cpus: int) -> dict[str, float]:
    from conftest import make_cfg
    from phat.cli.config import compose, validate
    from phat.cli.predict import run as predict
    from phat.engines.spark import score_universe, session
    from phat.pipeline import fit_evaluate
    from phat.recipe.series import prepare

    cfg = make_cfg(root / "train", f"data.synthetic.assets={assets}",
                   f"data.synthetic.periods={periods}", "data.synthetic.seed=3",
                   "model.params.C=0.1", "metrics.bootstrap_n=10")  # fmt: skip
    res = fit_evaluate(prepare(cfg), root / "train")
    model = str(res.artifact_dir)
    pcfg = validate("predict", compose("predict", [
        f"model_uri={model}", f"data.path={files}", f"out={root}/local.parquet"]))  # fmt: skip
    t = time.perf_counter()
    predict(pcfg)
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    spark = session({"master": f"local[{cpus}]", "app_name": "phat-bench",
                     "conf": {"spark.ui.enabled": "false"}})  # fmt: skip
    spark.range(1).count()
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    score_universe(spark, model, files, root / "spark-cold")
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    report = score_universe(spark, model, files, root / "spark-warm")
    warm_s = time.perf_counter() - t
    spark.stop()
    assert not report["failed"], report["failed"]
    want = pd.read_parquet(root / "local.parquet").reset_index()
    got = pd.read_parquet(root / "spark-warm")
    got["symbol"] = got["symbol"].astype(str)
    want = want.sort_values(["symbol", "timestamp"], kind="stable")
    got = got.sort_values(["symbol", "timestamp"], kind="stable")
    same = all(
        np.array_equal(_bits(want[c].to_numpy()), _bits(got[c].to_numpy()))
        for c in ("p_hat_raw", "p_hat")
    )
    bars = len(want)
    return {"bars": bars, "local_s": local_s, "start_s": start_s, "cold_s": cold_s,
            "warm_s": warm_s, "identical": same}  # fmt: skip


def walkforward(root: Path, assets: int, periods: int, cpus: int) -> dict[str, float]:
    import ray

    from phat.cli.config import compose, validate
    from phat.evidence.walkforward import run_folds

    ov = [f"out_dir={root}/wf", f"data.synthetic.assets={assets}",
          f"data.synthetic.periods={periods}", "data.synthetic.seed=3",
          "walkforward.train=21d", "walkforward.calibration=7d", "walkforward.step=7d",
          "threads=1"]  # fmt: skip
    t = time.perf_counter()
    serial = run_folds(validate("walkforward", compose("walkforward", ov)))
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    on_ray = run_folds(validate("walkforward", compose("walkforward", [*ov, "engine=ray"])))
    ray_s = time.perf_counter() - t
    ray.shutdown()
    same = serial.frame.equals(on_ray.frame)
    return {"folds": len(serial.folds), "serial_s": serial_s, "start_s": start_s,
            "ray_s": ray_s, "identical": same}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--assets", type=int, default=50)
    ap.add_argument("--periods", type=int, default=8760)
    ap.add_argument("--cpus", type=int, default=2)
    a = ap.parse_args()
    assets, periods = (10, 2000) if a.quick else (a.assets, a.periods)
    root = Path(tempfile.mkdtemp(prefix="phat-bench-engines-"))
    try:
        files = write_universe(root, assets, periods)
        s = scoring(root, files, assets, periods, a.cpus)
        print(
            f"scoring {assets} assets x {periods} bars ({s['bars']:,} bars), Spark local[{a.cpus}]:"
        )
        print(
            f"  in-process phat predict   {s['local_s']:7.2f} s  {s['bars'] / s['local_s']:>10,.0f} bars/s"
        )
        print(
            f"  spark session start-up    {s['start_s']:7.2f} s  (JVM and first job; once per command)"
        )
        print(
            f"  spark scoring, first call {s['cold_s']:7.2f} s  {s['bars'] / s['cold_s']:>10,.0f} bars/s"
        )
        print(
            f"  spark scoring, warm       {s['warm_s']:7.2f} s  {s['bars'] / s['warm_s']:>10,.0f} bars/s"
        )
        print(f"  throughput ratio spark/in-process (warm): {s['local_s'] / s['warm_s']:.2f}; "
              f"with start-up: {s['local_s'] / (s['start_s'] + s['cold_s']):.2f}; "
              f"bit-identical: {s['identical']}")  # fmt: skip
        w = walkforward(root, 4 if a.quick else 10, 6000 if a.quick else 17520, a.cpus)
        print(
            f"walk-forward (threads=1), {4 if a.quick else 10} assets x {6000 if a.quick else 17520} bars, {w['folds']} weekly folds, Ray {a.cpus} CPUs:"
        )
        print(f"  serial                    {w['serial_s']:7.2f} s")
        print(f"  ray cluster start-up      {w['start_s']:7.2f} s  (once per command)")
        print(f"  ray                       {w['ray_s']:7.2f} s")
        print(f"  wall-time ratio serial/ray: {w['serial_s'] / w['ray_s']:.2f}; with start-up: "
              f"{w['serial_s'] / (w['start_s'] + w['ray_s']):.2f}; bit-identical: {w['identical']}")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
