"""The streaming scorer on real exchange samples: every row of the file, as read, one at a time,
against batch scoring of the same file (docs/results.md).

    python scripts/stream_samples.py [--data-dir ../shared/data] [--model logistic]

For each sample at its own timeframe: trains the model on the file (no MLflow), streams the
raw rows (gaps, closures and all) through `model.stream().update`, and prints the bars, the bars
scored, whether every value equals `model.predict(file)` bit for bit, and the time per bar.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

CASES = [
    ("BTC-1m-sample.feather", "1m", []),
    ("ETH_BTC-5m-sample.feather", "5m", []),
    ("GOOG-1d-sample.csv", "1d", ["metrics.bootstrap_block=20", "split.min_samples=40"]),
]


def main() -> None:
    from conftest import make_cfg
    from phat.data.io import read_table
    from phat.pipeline import train
    from phat.registry.artifact import load_artifact

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--model", default="logistic")
    a = ap.parse_args()
    for name, horizon, extra in CASES:
        path = Path(a.data_dir) / name
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_cfg(Path(tmp), f"data.path={path}", f"horizon={horizon}",
                           f"model={a.model}", "metrics.bootstrap_n=20", *extra)  # fmt: skip
            try:
                model = load_artifact(train(cfg, Path(tmp)).artifact_dir)
            except Exception as e:  # a sample too short for the defaults: say so, go on
                print(f"{name} {horizon}: not trained ({type(e).__name__}: {e})")
                continue
            raw = read_table(path)
            want = model.predict(raw)["p_hat"].to_numpy()
            scorer = model.stream()
            t = time.perf_counter()
            got = np.array([scorer.update(r) for _, r in raw.iterrows()])
            per_bar = (time.perf_counter() - t) / len(raw) * 1e3
            print(f"{name} {horizon}: {len(raw):,} rows, {int(np.isfinite(want).sum()):,} scored; "
                  f"stream == batch bit for bit: {np.array_equal(got, want, equal_nan=True)}; "
                  f"{per_bar:.3f} ms per row (row iteration included)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
