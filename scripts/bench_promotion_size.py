"""The size of the promotion decision under no signal: over many synthetic universes with no
planted signal, how often `phat train` then `phat promote version=1` (the default walk-forward
evidence, made by promote itself) promotes. Expected: at most about promotion.alpha.

    python scripts/bench_promotion_size.py [--universes 40] [--assets 4] [--periods 12000]

Each universe is a fresh store in a temporary folder; the commands run in process through the
verbs' own entry functions (phat.lifecycle.training.run, phat.cli.promote.run) with the
defaults, except the record's windows and min_history_days, which a short synthetic history
cannot meet (printed). Prints, per universe, the record gates' p-values and the decision, then
the promotion rate with its 95% Clopper-Pearson interval, and how often each significance gate
alone passed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

NO_SIGNAL = ("data.synthetic.planted_strength=0", "data.synthetic.trend_bias=0",
             "data.synthetic.revert_strength=0")  # fmt: skip
WINDOWS = ("walkforward.train=40d", "walkforward.calibration=15d", "walkforward.step=15d")
SHORT = ("promotion.min_history_days=20",)


def one(seed: int, assets: int, periods: int) -> dict[str, object]:
    from conftest import make_cfg
    from phat.cli.config import compose, validate
    from phat.cli.promote import run as promote
    from phat.lifecycle.promotion import PromotionRefused
    from phat.lifecycle.training import run as train

    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{d}/m.db"
        data = [f"data.synthetic.assets={assets}", f"data.synthetic.periods={periods}",
                f"data.synthetic.seed={seed}", *NO_SIGNAL]  # fmt: skip
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            out = train(make_cfg(Path(d) / "t", *data, "metrics.bootstrap_n=20", uri=uri))
            cfg = validate("promote", compose("promote", [
                f"version={out['model_version']}", f"tracking.uri={uri}", *data, *WINDOWS,
                *SHORT]))  # fmt: skip
            try:
                report = promote(cfg)
            except PromotionRefused:
                report = None
        if report is None:  # refused: the report is in the promotion run; read it back
            report = _last_report(uri)
    gates = {g["name"]: g for g in report["gates"]}
    return {
        "seed": seed,
        "promoted": bool(report["passed"]),
        "p_climatology": gates["wf_beats_climatology"]["candidate"],
        "p_rule": gates["wf_beats_rule"]["candidate"],
        "sig_climatology": gates["wf_beats_climatology"]["passed"],
        "sig_rule": gates["wf_beats_rule"]["passed"],
        "failed": [n for n, g in gates.items() if not g["passed"]],
    }


def _last_report(uri: str) -> dict:
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phat-promotion")
    (run,) = client.search_runs([exp.experiment_id], max_results=1)
    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="gate_report.json", dst_path=d
        )
        return json.loads(Path(path).read_text())


def main() -> None:
    import os

    from scipy.stats import beta

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    ap = argparse.ArgumentParser()
    ap.add_argument("--universes", type=int, default=40)
    ap.add_argument("--assets", type=int, default=4)
    ap.add_argument("--periods", type=int, default=12000)
    args = ap.parse_args()
    print(f"{args.universes} no-signal universes of {args.assets} assets x {args.periods} 15m "
          f"bars; overrides: {' '.join(WINDOWS + SHORT)}", flush=True)  # fmt: skip
    rows, t0 = [], time.perf_counter()
    for seed in range(args.universes):
        r = one(1000 + seed, args.assets, args.periods)
        rows.append(r)
        print(f"  seed {r['seed']}: p vs climatology {r['p_climatology']:.3g}, vs rule "
              f"{r['p_rule'] if isinstance(r['p_rule'], str) else format(r['p_rule'], '.3g')}"
              f" -> {'PROMOTED' if r['promoted'] else 'refused ' + ','.join(r['failed'])}",
              flush=True)  # fmt: skip
    n, k = len(rows), sum(r["promoted"] for r in rows)
    lo = beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    print(f"promoted {k} of {n} ({k / n:.3f}, 95% CI {lo:.3f} .. {hi:.3f}); "
          f"wf_beats_climatology passed {sum(r['sig_climatology'] for r in rows)}, "
          f"wf_beats_rule passed {sum(r['sig_rule'] for r in rows)}; "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
