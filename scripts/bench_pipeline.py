"""End-to-end `phat.train` and CLI start-up, each against a reference measured in the same run.

    python scripts/bench_pipeline.py [--repeats 3]

- `phat.train model=logistic horizon=15m` on one year of 15m bars (fresh MLflow store per run),
  against a bare scikit-learn LogisticRegression fit on the same design matrix: the ratio is
  what the pipeline (validation, features, calibration, bootstrap, plots, tracking) costs on top
  of the model itself. Target: end to end under 60 s on 2 cores.
- `phat.train --help` and a config error, against `python -c pass`. Target: under 3 s.
Medians over `--repeats` runs, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - t


def bare_logistic_fit() -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from phat.contract.features import FeatureSpec
    from phat.contract.labels import LabelSpec, make_labels
    from phat.data.synthetic import generate
    from phat.models.baselines import WindowData

    bars = generate().bars
    spec = FeatureSpec()
    raw = spec.compute_raw(bars)
    seg = np.zeros(len(bars), dtype=np.int64)
    y = make_labels(bars["close"].to_numpy(), seg, LabelSpec("15m", 1, "15m"))
    ends = np.flatnonzero(spec.valid_end_mask(raw, seg) & ~np.isnan(y))[:21000]
    spec = spec.fit_normalization(raw, np.arange(len(raw)))
    X = WindowData(spec.normalize(raw), spec.window).tabular(ends, 4)
    t = time.perf_counter()
    LogisticRegression(C=0.1, max_iter=1000).fit(X, y[ends].astype(int))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    e2e, ref, helps, errs, bare = [], [], [], [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            e2e.append(
                timed(
                    [
                        py,
                        "-m",
                        "phat.train",
                        "model=logistic",
                        "horizon=15m",
                        f"tracking.uri=sqlite:///{d}/mlflow.db",
                        f"out_dir={d}/out",
                    ],
                    Path(d),
                )
            )
        ref.append(bare_logistic_fit())
        helps.append(timed([py, "-m", "phat.train", "--help"], ROOT))
        errs.append(timed([py, "-m", "phat.train", "split.purge_bars=0"], ROOT))
        bare.append(timed([py, "-c", "pass"], ROOT))
        print(
            f"repeat {i}: train {e2e[-1]:.2f} s, bare fit {ref[-1]:.2f} s, --help {helps[-1]:.2f} s, "
            f"config error {errs[-1]:.2f} s, python -c pass {bare[-1]:.2f} s"
        )
    med = statistics.median
    print(f"train_logistic_s={med(e2e):.2f} (target < 60)")
    print(f"help_s={med(helps):.2f} config_error_s={med(errs):.2f} (target < 3)")
    print(f"help_over_bare_python={med(helps) / med(bare):.2f}")
    print(f"train_over_bare_fit={med(e2e) / med(ref):.2f}")


if __name__ == "__main__":
    main()
