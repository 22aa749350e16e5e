"""Sweep throughput: the same 4-job multirun with the basic launcher (one job at a time) and
the joblib launcher (2 processes), on fresh SQLite stores; prints seconds and the ratio.

    .venv/bin/python scripts/bench_sweeps.py [--periods 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHAT = str(Path(sys.executable).with_name("phat"))


def sweep(root: Path, *extra: str, periods: int) -> float:
    root.mkdir(parents=True)
    t = time.perf_counter()
    subprocess.run(
        [PHAT, "train", "-m", "model=logistic,tree", "seed=1,2",
         f"data.synthetic.periods={periods}", "metrics.bootstrap_n=50",
         f"tracking.uri=sqlite:///{root}/mlflow.db", f"hydra.sweep.dir={root}/multirun", *extra],
        cwd=root, check=True, capture_output=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PHAT_"))},
    )  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--periods", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        basic = sweep(Path(d) / "basic", periods=a.periods)
        joblib = sweep(
            Path(d) / "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "threads=1", periods=a.periods,
        )  # fmt: skip
    print(f"4 jobs, {a.periods} bars: basic launcher {basic:.1f} s, joblib n_jobs=2 (threads=1) "
          f"{joblib:.1f} s, ratio basic/joblib {basic / joblib:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
