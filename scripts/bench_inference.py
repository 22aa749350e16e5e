"""Load time and single-bar latency of registered models (logistic and TCN).

    python scripts/bench_inference.py [--repeats 200] [--tcn-epochs 3]

Trains and registers both models into a temporary SQLite store, then for each:
- `phat.load("models:/NAME/1")`: download, hash verification and rebuild (median of 10);
- single-bar latency: what a live consumer does each bar, `model.predict(last 130 bars)` and
  read the last p_hat (bar validation + features + one window + calibration); p50 and p99;
- reference in the same run: the bare model call on one prepared window (`model.logits`),
  so `single_bar_over_bare` is what the validated path costs on top of the network.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--tcn-epochs", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import phat
    from conftest import make_cfg
    from phat.data.synthetic import generate
    from phat.lifecycle.training import run
    from phat.models.baselines import WindowData

    bars = generate().bars
    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{d}/mlflow.db"
        for kind, extra in (("logistic", []), ("tcn", [f"trainer.max_epochs={args.tcn_epochs}"])):
            out = run(
                make_cfg(
                    Path(d) / kind,
                    f"model={kind}",
                    "model.ladder=off",  # the speed of this kind, not of a rung it might keep
                    f"registry.model_name=bench-{kind}",
                    "metrics.bootstrap_n=10",
                    *extra,
                    uri=uri,
                )
            )
            model_uri = f"models:/bench-{kind}/{out['model_version']}"
            loads = []
            for _ in range(10):
                t = time.perf_counter()
                model = phat.load(model_uri)
                loads.append(time.perf_counter() - t)
            need = model.feature_spec.bars_read + 2
            lat, bare = [], []
            for i in range(args.repeats):
                hist = bars.iloc[len(bars) - need - i : len(bars) - i]
                t = time.perf_counter()
                p = model.predict(hist)["p_hat"].iloc[-1]
                lat.append((time.perf_counter() - t) * 1e3)
                assert np.isfinite(p)
            fs = model.feature_spec
            wd = WindowData(fs.normalize(fs.compute_raw(bars.iloc[-need:])), fs.window)
            for _ in range(args.repeats):
                t = time.perf_counter()
                model.model.logits(wd, np.array([need - 1]))
                bare.append((time.perf_counter() - t) * 1e3)
            p50, p99 = np.percentile(lat, [50, 99])
            print(
                f"{kind}: load_median_s={np.median(loads):.3f}  single_bar_ms p50={p50:.2f} p99={p99:.2f}  "
                f"bare_model_ms p50={np.median(bare):.3f}  single_bar_over_bare={p50 / np.median(bare):.1f}  "
                f"params={int(out['metrics']['model_parameters'])}"
            )


if __name__ == "__main__":
    main()
