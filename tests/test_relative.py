"""label=relative on a universe (issue #38): its refusal on one asset, its baselines (the
relative climatology and last-return rule) in the training's ladder, and the market-neutral
reference book (policy=neutral) in a backtest: net exposure near zero, said beside the P&L."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from conftest import make_cfg
from phat.cli import CONF_DIR
from phat.cli.config import validate

ROOT = Path(__file__).resolve().parents[1]
UNIVERSE = ("data.synthetic.assets=4", "data.synthetic.periods=2500", "metrics.bootstrap_n=20")


def test_label_relative_on_one_asset_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "phat.train", "label=relative", "data.synthetic.periods=600", "data.calendar=24x7",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"out_dir={tmp_path}/out"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in r.stderr.strip().splitlines() if "Error" in ln]
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines == [lines[-1]] and "one asset has nothing to compare with" in lines[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no store, no run: refused before either


def test_a_relative_model_is_scored_against_the_relative_rules(tmp_path: Path) -> None:
    """The run's labels are relative (half the rows up at each timestamp, about), and its
    last-return baseline reads the asset's last return minus the universe's: it differs from
    the absolute rule fitted on the same rows."""
    from phat.contract.labels import cross_section
    from phat.models.rules import score_rules
    from phat.pipeline import train

    cfg = make_cfg(tmp_path, *UNIVERSE, "label=relative")
    res = train(cfg, tmp_path / "run")
    assert (
        res.label_spec.kind == "relative"
        and '"kind":"relative"' in res.tags["phat.label_definition"]
    )
    y = res.predictions["test"].y
    assert 0.4 < y.mean() < 0.6 and "dm_pvalue_vs_last_return" in res.metrics
    clock = res.bars.timeline()[0]
    ends = res.predictions["train"].ends
    labels = np.full(len(res.bars), np.nan)
    for pr in res.predictions.values():
        labels[pr.ends] = pr.y
    # the rows of one timestamp: about half beat the others
    share, n = cross_section(labels, clock)
    assert np.nanmax(np.abs(share[n >= 4] - 0.5)) <= 0.5
    rel = score_rules(labels, res.bars, ends, res.spans["test"], 0.5, None, relative=True)
    ab = score_rules(labels, res.bars, ends, res.spans["test"], 0.5, None, relative=False)
    assert not np.allclose(rel["last_return"], ab["last_return"])
    assert "bayes" not in " ".join(res.metrics)  # the planted P(up) is no relative optimum


def _backtest(tmp_path: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    from phat.cli.backtest import run

    out = tmp_path / "bt"
    ov = [*UNIVERSE[:2], f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "signal_source=proxy",
          f"out_dir={out}", *overrides]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        res = run(validate("backtest", compose("backtest", overrides=ov)))
    return res, pd.read_parquet(out / "exposure.parquet")


def test_the_neutral_book_holds_net_exposure_near_zero(tmp_path: Path) -> None:
    neutral, held = _backtest(tmp_path / "n", "policy=neutral")
    reference, ref_held = _backtest(tmp_path / "r")
    m, r = neutral["metrics"], reference["metrics"]
    assert held["assets"].max() == 4 and len(held) == len(ref_held)
    # the same signal traded long-only-or-short by trend vs demeaned across the assets
    assert m["net_exposure_mean_abs"] < 0.25 * m["gross_exposure_mean"]
    assert r["net_exposure_mean_abs"] > 0.5 * r["gross_exposure_mean"]
    assert np.isclose(held["net"].abs().mean(), m["net_exposure_mean_abs"])
