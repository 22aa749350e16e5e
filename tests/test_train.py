"""End to end through the real Hydra config and a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import make_cfg
from phat.data.synthetic import random_walk
from phat.errors import ConfigError, DataValidationError
from phat.lifecycle.training import run

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("data.synthetic.periods=6000", "metrics.bootstrap_n=30")
TAGS = (
    "phat.model_hash",
    "phat.feature_version",
    "phat.label_definition",
    "phat.horizon_id",
    "phat.horizon_bars",
    "phat.timeframe",
    "phat.calibration",
    "phat.training_window",
    "phat.data_hash",
    "phat.model_kind",
    "phat.seed",
    "phat.git_sha",
    "phat.threads",
)


def _runs(uri: str) -> int:
    client = MlflowClient(uri)
    exps = client.search_experiments()
    return sum(len(client.search_runs([e.experiment_id])) for e in exps)


@pytest.mark.slow
def test_run_logs_everything_a_reader_needs(tmp_path, mlflow_uri, capsys) -> None:
    cfg = make_cfg(tmp_path / "o", *SMALL, "horizon=4x15m", uri=mlflow_uri)
    out = run(cfg)
    run_ = MlflowClient(mlflow_uri).get_run(out["run_id"])
    for t in TAGS:
        assert t in run_.data.tags, t
    assert run_.data.tags["phat.model_hash"] == out["model_hash"]
    assert json.loads(run_.data.tags["phat.label_definition"])["horizon_bars"] == 4
    window = json.loads(run_.data.tags["phat.training_window"])
    assert window["train"][1] < window["calibration"][0] < window["test"][0]
    m = run_.data.metrics
    every = json.loads((tmp_path / "o" / "metrics.json").read_text())  # also a run artifact
    for split in ("calibration", "test"):
        for k in ("brier", "ece", "ece_mass", "log_loss", "auc"):
            for suffix in ("", "_raw"):
                assert f"{split}_{k}{suffix}" in m
                lo, hi = f"{split}_{k}{suffix}_ci_low", f"{split}_{k}{suffix}_ci_high"
                assert every[lo] <= every[hi]
                # intervals on the run for the test span only (the calibration slice's are
                # in metrics.json), so the run's metric list is not a screen of them
                assert (lo in m) == (split == "test")
        assert f"{split}_brier_climatology" in m and f"{split}_brier_skill" in m
    assert run_.data.params["model.kind"] == "logistic"
    assert run_.data.params["horizon"] == "4x15m"
    arts = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(out["run_id"])}
    assert {
        "config.yaml",
        "metrics.json",
        "training_window.json",
        "label_spec.json",
        "feature_spec.json",
        "plots",
        "reliability",
        "model",
    } <= arts
    rel = MlflowClient(mlflow_uri).list_artifacts(out["run_id"], "reliability")
    assert {Path(a.path).name for a in rel} == {
        "calibration.csv",
        "calibration.json",
        "test.csv",
        "test.json",
    }
    printed = capsys.readouterr().out
    assert out["run_id"] in printed and f"mlflow ui --backend-store-uri {mlflow_uri}" in printed


@pytest.mark.slow
def test_uncalibrated_model_is_tagged_not_promotable(tmp_path, mlflow_uri) -> None:
    out = run(
        make_cfg(
            tmp_path / "o",
            *SMALL,
            "calibration=none",
            "model=tree",
            "model.params.max_iter=20",
            uri=mlflow_uri,
        )
    )
    tags = MlflowClient(mlflow_uri).get_run(out["run_id"]).data.tags
    assert tags["phat.promotable"] == "false" and tags["phat.model_kind"] == "tree"
    assert out["metrics"]["test_brier"] == out["metrics"]["test_brier_raw"]


@pytest.mark.slow
def test_bad_data_fails_before_any_run_exists(tmp_path, mlflow_uri) -> None:
    bad = random_walk(3000, seed=1)
    bad.iloc[1500, bad.columns.get_loc("close")] = -1.0
    path = tmp_path / "bad.csv"
    bad.to_csv(path)
    before = _runs(mlflow_uri)
    with pytest.raises(
        DataValidationError, match="column 'close' has 1 non-positive values, first at row 1500"
    ):
        run(make_cfg(tmp_path / "o", f"data.path={path}", uri=mlflow_uri))
    short = random_walk(300, seed=1)
    short.to_csv(path)
    # Three days: too short for auto to see a weekend, and too short to train.
    with pytest.raises(DataValidationError, match="less than a week of bars.*data.calendar=24x7"):
        run(make_cfg(tmp_path / "o", f"data.path={path}", uri=mlflow_uri))
    with pytest.raises(DataValidationError, match="too little history"):
        run(make_cfg(tmp_path / "o", f"data.path={path}", "data.calendar=24x7", uri=mlflow_uri))
    assert _runs(mlflow_uri) == before


@pytest.mark.slow
def test_same_config_same_model_hash(tmp_path, mlflow_uri) -> None:
    a = run(
        make_cfg(tmp_path / "a", *SMALL, "model=tree", "model.params.max_iter=20", uri=mlflow_uri)
    )
    b = run(
        make_cfg(tmp_path / "b", *SMALL, "model=tree", "model.params.max_iter=20", uri=mlflow_uri)
    )
    c = run(
        make_cfg(
            tmp_path / "c",
            *SMALL,
            "model=tree",
            "model.params.max_iter=20",
            "seed=7",
            "data.synthetic.seed=8",
            uri=mlflow_uri,
        )
    )
    assert a["model_hash"] == b["model_hash"] != c["model_hash"]


@pytest.mark.slow
def test_default_year_logistic_reaches_quality_bars(tmp_path, mlflow_uri) -> None:
    """Issue #2 bar: calibrated test ECE <= 0.02, Brier within 2% of the Bayes-optimal Brier."""
    out = run(make_cfg(tmp_path / "o", "metrics.bootstrap_n=20", uri=mlflow_uri))
    m = out["metrics"]
    assert m["test_ece"] <= 0.02
    assert m["test_brier"] <= 1.02 * m["test_brier_bayes"]
    assert m["test_brier"] < m["test_brier_climatology"]


@pytest.mark.slow
def test_random_walk_has_no_edge_leakage_canary(tmp_path, mlflow_uri) -> None:
    path = tmp_path / "rw.parquet"
    random_walk(35040, seed=5).to_parquet(path)
    out = run(
        make_cfg(tmp_path / "o", f"data.path={path}", "metrics.bootstrap_n=20", uri=mlflow_uri)
    )
    m = out["metrics"]
    assert abs(m["test_auc"] - 0.5) <= 0.03
    assert m["test_brier"] <= m["test_brier_climatology"] + 0.002


@pytest.mark.slow
def test_resampled_user_file_and_hourly_horizon(tmp_path, mlflow_uri) -> None:
    path = tmp_path / "m5.csv"
    m5 = random_walk(12 * 24 * 60, seed=2, timeframe="5m").reset_index()
    m5.columns = [c.upper() for c in m5.columns]
    m5["TIMESTAMP"] = (
        m5["TIMESTAMP"] - m5["TIMESTAMP"].iloc[0]
    ).dt.total_seconds() * 1000 + 1_699_999_200_000  # epoch ms, on the hour
    m5.to_csv(path, index=False)
    cfg = make_cfg(
        tmp_path / "o",
        f"data.path={path}",
        "data.symbol=TEST",
        "horizon=1h",
        "split.min_samples=100",
        "metrics.bootstrap_n=20",
        uri=mlflow_uri,
    )
    out = run(cfg)
    tags = MlflowClient(mlflow_uri).get_run(out["run_id"]).data.tags
    assert tags["phat.timeframe"] == "1h" and tags["phat.symbol"] == "TEST"
    assert out["metrics"]["data_bars"] == 12 * 24 * 60 / 12


def test_config_errors_are_refused_before_data() -> None:
    cfg = make_cfg(Path("/nonexistent"), "split.purge_bars=0")
    with pytest.raises(ConfigError, match="purge_bars=0 is less than"):
        run(cfg)


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "phat.train", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_cli_help_and_config_error_answer_without_heavy_imports(tmp_path) -> None:
    r = _cli("--help")
    assert r.returncode == 0 and "model        logistic, tcn, tree" in r.stdout
    assert "phat train model=tcn horizon=4x15m" in r.stdout
    r = _cli("model=nope")
    assert r.returncode != 0 and "nope" in r.stderr
    r = _cli("split.embargo_bars=3", f"tracking.uri=sqlite:///{tmp_path}/x.db")
    assert r.returncode == 2 and "embargo_bars=3 is less than" in (r.stderr + r.stdout)
    assert not (tmp_path / "x.db").exists()  # no MLflow store touched
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, phat.train, phat.pipeline; print(sorted(m for m in ('torch','mlflow','lightning','sklearn') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]"


def test_tracking_uri_default_and_env(monkeypatch) -> None:
    from phat.registry.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    _ = mlflow, np


def test_git_sha_is_phats_own_commit_from_any_working_directory(tmp_path, monkeypatch) -> None:
    import re

    from phat.pipeline import git_sha

    expected = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    monkeypatch.chdir(tmp_path)  # not a git repository
    sha = git_sha()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", sha) and sha.startswith(expected)
