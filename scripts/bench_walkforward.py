"""Walk-forward speed: one year of 15m bars, monthly refits, against one `phat train` fit of
the same model on the same data (the reference, measured in the same run).

    .venv/bin/python scripts/bench_walkforward.py [--models logistic tree]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from phat.cli.config import compose, validate
    from phat.evidence.walkforward import run_folds
    from phat.pipeline import train

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["logistic", "tree"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models:
            ov = [f"model={model}", f"out_dir={tmp}/o", "metrics.bootstrap_n=50"]
            t = time.perf_counter()
            train(validate("train", compose("train", ov)), f"{tmp}/t")
            one = time.perf_counter() - t
            t = time.perf_counter()
            rec = run_folds(
                validate("walkforward", compose("walkforward", [*ov, "walkforward.step=30d"]))
            )
            total = time.perf_counter() - t
            n = len(rec.folds)
            print(f"{model}: {n} folds in {total:.1f} s ({total / n:.2f} s per fold, "
                  f"{60 * n / total:.0f} folds per minute); one phat train fit {one:.1f} s; "
                  f"ratio walk-forward / one fit {total / one:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
