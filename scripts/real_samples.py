"""Train on real exchange samples and print what phat reports, whatever it shows.

    python scripts/real_samples.py [--data-dir ../shared/data] [--models logistic,tree]

For each sample and calibration method: calibrated Brier with its 95% block-bootstrap interval,
climatology, log loss against ln 2, AUC, the share of p_hat at the bounds, the calendar that
`auto` chose, and whether the model is promotable. No MLflow: the pipeline is run directly.
The samples are short: figures for docs/results.md, not claims of an edge.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CASES = [
    ("BTC-1m-sample.feather", "1m", []),
    ("BTC-1m-sample.feather", "5m", ["data.resample_min_coverage=0.8"]),
    ("ETH_BTC-5m-sample.feather", "5m", []),
    ("ETH_BTC-5m-sample.feather", "15m", []),
    ("GOOG-1d-sample.csv", "1d", ["metrics.bootstrap_block=20"]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--models", default="logistic")
    ap.add_argument("--calibrations", default="platt,isotonic,auto")
    args = ap.parse_args()

    from conftest import make_cfg
    from phat.errors import PhatError
    from phat.pipeline import train

    print(
        "| data | horizon | model | calibration | calendar | test n | Brier [95% CI] | "
        "climatology | log loss (ln2=0.69315) | AUC | p at 0/1 | promotable |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, horizon, extra in CASES:
        path = Path(args.data_dir) / name
        if not path.exists():
            print(f"| {name} | missing | | | | | | | | | | |")
            continue
        for model in args.models.split(","):
            for cal in args.calibrations.split(","):
                with tempfile.TemporaryDirectory() as d:
                    cfg = make_cfg(
                        Path(d),
                        f"data.path={path}",
                        f"horizon={horizon}",
                        f"model={model}",
                        f"calibration={cal}",
                        "split.min_samples=100",
                        *extra,
                    )
                    t = time.perf_counter()
                    try:
                        r = train(cfg, d)
                    except PhatError as e:
                        print(f"| {name} | {horizon} | {model} | {cal} | refused: {e} |")
                        continue
                    m = r.metrics
                    p = r.predictions["test"].p_hat
                    chosen = r.calibrator.method + (
                        " (auto)" if r.calibrator.params.get("selected_by") else ""
                    )
                    print(
                        f"| {name} | {horizon} | {model} | {chosen} | {r.bars.calendar} | "
                        f"{int(m['test_n'])} | {m['test_brier']:.5f} [{m['test_brier_ci_low']:.5f}, "
                        f"{m['test_brier_ci_high']:.5f}] | {m['test_brier_climatology']:.5f} | "
                        f"{m['test_log_loss']:.5f} | {m['test_auc']:.3f} | "
                        f"{int(((p <= 1e-6) | (p >= 1 - 1e-6)).sum())} | "
                        f"{r.tags['phat.promotable']} |",
                        flush=True,
                    )
                    del t
    print(f"\nln 2 = {math.log(2):.5f}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
