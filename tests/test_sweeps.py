"""Sweeps through the real CLI (`phat train -m ...`): the basic sweeper, the Optuna sweeper
(single objective and a Pareto front), the joblib launcher on a fresh store, resumption, a
failing job, and honest selection (jobs are compared on the selection slice; the test span is
looked at once, for the chosen job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

SMALL = ("data.synthetic.periods=6000", "metrics.bootstrap_n=10")
PHAT = str(Path(sys.executable).with_name("phat"))


def _phat(tmp_path: Path, uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [PHAT, "train", "-m", *args, *SMALL, f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PHAT_"))},
    )  # fmt: skip
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _runs(uri: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phat")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def _artifact(uri: str, run_id: str, path: str) -> str:
    mlflow.set_tracking_uri(uri)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)).read_text()


@pytest.mark.slow
def test_multirun_is_one_parent_with_a_child_per_job_and_registers_nothing(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = _phat(tmp_path, uri, "model=logistic,tree", "seed=1,2")
    parent, kids = _runs(uri)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)
    names = sorted(k.info.run_name for k in kids)
    assert names[0] == "logistic-15m-SYNTH-platt-s1-j0" and len(set(names)) == 4
    assert MlflowClient(uri).search_registered_models() == []  # a sweep registers nothing
    # Jobs are compared on the selection slice; no test metric is in a job's run.
    for k in kids:
        assert "selection_log_loss" in k.data.metrics
        assert not [m for m in k.data.metrics if m.startswith("test_")]
    table = pd.read_csv(pd.io.common.StringIO(_artifact(uri, parent.info.run_id, "summary.csv")))
    assert len(table) == 4 and list(table["selection_log_loss"]) == sorted(
        table["selection_log_loss"]
    )
    assert set(table["overrides"]) == {
        f"model={m} seed={s}" for m in ("logistic", "tree") for s in (1, 2)
    }
    assert "| overrides |" in _artifact(uri, parent.info.run_id, "summary.md")
    # The chosen job's test span, reported once, on the parent (and printed once).
    best = table.iloc[0]
    assert parent.data.tags["phat.sweep.best_run"] == best["run_id"]
    assert parent.data.metrics["best_selection_log_loss"] == pytest.approx(
        best["selection_log_loss"]
    )
    assert "chosen_test_brier" in parent.data.metrics
    assert res.stdout.count("its test span, reported once") == 1
    assert res.stdout.count("| best so far") == 4  # one progress line per job


@pytest.mark.slow
def test_failing_job_is_a_failed_child_register_best_and_resume(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ("model=logistic,tree", "split.min_samples=200,5000", "sweep.name=s1")
    res = _phat(tmp_path, uri, *args, "sweep.register_best=true")
    parent, kids = _runs(uri)
    status = {k.data.tags["phat.sweep.overrides"]: k.info.status for k in kids}
    assert sorted(status.values()) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    failed = [k for k in kids if k.info.status == "FAILED"]
    assert all(
        "min_samples" in k.data.tags["phat.error"] or "samples" in k.data.tags["phat.error"]
        for k in failed
    )
    assert "FAILED" in res.stdout
    client = MlflowClient(uri)
    versions = client.search_model_versions("name='phat-synth-15m'")
    assert len(versions) == 1  # only the winner
    assert versions[0].run_id == parent.data.tags["phat.sweep.best_run"]
    assert parent.data.tags["phat.sweep.registered"] == "phat-synth-15m/v1"
    # Re-run with the same name: finished jobs are not trained again; the parent is reused.
    again = _phat(tmp_path, uri, *args)
    assert again.stdout.count("not trained again") == 2
    parent2, kids2 = _runs(uri)
    assert parent2.info.run_id == parent.info.run_id
    assert sum(k.info.status == "FINISHED" for k in kids2) == 2


@pytest.mark.slow
def test_optuna_single_objective_logs_best_and_resumes_its_study(tmp_path) -> None:
    import optuna

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = ("hparams_search=logistic_optuna", f"hydra.sweeper.storage={storage}")
    res = _phat(tmp_path, uri, *args, "hydra.sweeper.n_trials=6")
    parent, kids = _runs(uri)
    assert len(kids) == 6 and parent.info.run_name == "sweep-logistic-optuna"
    assert "model.params.C=" in parent.data.tags["phat.sweep.best_overrides"]
    study = optuna.load_study(study_name="logistic-optuna", storage=storage)
    assert parent.data.metrics["best_selection_log_loss"] == pytest.approx(study.best_value)
    assert res.stdout.count("its test span, reported once") == 1
    # Same study name again: the study continues (6 + 2 trials), the parent is reused. With
    # the same sampler seed its first (random) suggestions repeat; those are answered from the
    # finished runs, not trained again. A new sampler seed explores new points.
    again = _phat(tmp_path, uri, *args, "hydra.sweeper.n_trials=2")
    study = optuna.load_study(study_name="logistic-optuna", storage=storage)
    assert len(study.trials) == 8
    parent2, kids2 = _runs(uri)
    assert parent2.info.run_id == parent.info.run_id
    assert again.stdout.count("not trained again") == 2 and len(kids2) == 6
    _phat(tmp_path, uri, *args, "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=7")
    assert len(optuna.load_study(study_name="logistic-optuna", storage=storage).trials) == 10
    assert len(_runs(uri)[1]) == 8


@pytest.mark.slow
def test_optuna_goes_on_after_a_failed_trial(tmp_path) -> None:
    """A failing job is a FAIL trial (not a NaN value, which Optuna refuses and which stopped
    the whole search) and a FAILED child; the search goes on to the trials after it."""
    import optuna

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    res = _phat(tmp_path, uri, "hparams_search=logistic_optuna", f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.n_trials=5", "split.min_samples=choice(200,99999)")  # fmt: skip
    study = optuna.load_study(study_name="logistic-optuna", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 5
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.COMPLETE in states
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.params["split.min_samples"] == 99999 for t in failed)
    _, kids = _runs(uri)
    assert sum(k.info.status == "FAILED" for k in kids) == len(failed)
    lines = [x for x in res.stdout.splitlines() if x.startswith("[sweep") and ": FAILED " in x]
    assert len(lines) == len(failed)


@pytest.mark.slow
def test_optuna_two_objectives_log_a_pareto_front(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _phat(tmp_path, uri, "hparams_search=logistic_pareto", "hydra.sweeper.n_trials=4")
    parent, kids = _runs(uri)
    assert len(kids) == 4
    front = pd.read_csv(pd.io.common.StringIO(_artifact(uri, parent.info.run_id, "pareto.csv")))
    assert 1 <= len(front) <= 4
    vals = front[["selection_brier", "selection_ece"]].to_numpy()
    for i in range(len(vals)):  # nobody on the front is beaten on both objectives by another
        assert not (((vals <= vals[i]).all(axis=1)) & ((vals < vals[i]).any(axis=1))).any()


@pytest.mark.slow
def test_joblib_launcher_on_a_fresh_sqlite_store(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/fresh.db"
    assert not (tmp_path / "fresh.db").exists()
    _phat(tmp_path, uri, "model=logistic,tree", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    _, kids = _runs(uri)
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    assert len({k.data.tags["phat.pid"] for k in kids}) >= 1


def test_objectives_on_the_test_span_are_refused(tmp_path) -> None:
    res = subprocess.run(
        [PHAT, "train", "-m", "model=logistic", "sweep.objectives=[test_brier]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "a sweep never selects on the test span" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_sweep_whose_parent_run_cannot_open_trains_nothing(tmp_path) -> None:
    """Hydra only warns when a callback raises; the jobs would then train and register as
    plain runs outside the sweep. Here the store cannot be created: one line, exit 2, no run."""
    (tmp_path / "afile").write_text("")
    res = _phat(tmp_path, f"sqlite:///{tmp_path}/afile/mlflow.db", "model=logistic,tree",
                check=False)  # fmt: skip
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("SweepError: the sweep's parent run"), lines
    assert "afile" in lines[0] and "no job ran" in lines[0]
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("model.json"))


@pytest.mark.slow
def test_selection_metrics_never_see_the_test_span(tmp_path) -> None:
    """Two datasets equal up to the test span and different inside it: the selection_* values
    a sweep compares are identical, the test metrics are not."""
    from conftest import make_cfg
    from phat.data.synthetic import SyntheticConfig, generate
    from phat.lifecycle.training import run

    bars = generate(SyntheticConfig(periods=6000, seed=5)).bars
    test_start = bars.index[4800]
    other = bars.copy()
    after = other.index >= test_start
    rng = __import__("numpy").random.default_rng(0)
    flip = rng.permutation(int(after.sum()))  # the test span's bars in another order
    for col in other.columns:
        other.loc[after, col] = other.loc[after, col].to_numpy()[flip]
    other.loc[after, "high"] = other.loc[after, ["open", "high", "low", "close"]].max(axis=1)
    other.loc[after, "low"] = other.loc[after, ["open", "high", "low", "close"]].min(axis=1)
    results = []
    for name, frame in (("a", bars), ("b", other)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        cfg = make_cfg(
            tmp_path / name, f"data.path={tmp_path / name}.parquet", "data.symbol=X",
            "split=dates", f"split.calibration_start={bars.index[3600].isoformat()}",
            f"split.test_start={test_start.isoformat()}", "metrics.bootstrap_n=5",
            "registry.register=false", uri=f"sqlite:///{tmp_path}/mlflow.db",
        )  # fmt: skip
        results.append(run(cfg)["metrics"])
    a, b = results
    for k in ("selection_log_loss", "selection_brier", "selection_ece", "selection_n"):
        assert a[k] == b[k], k
    assert a["test_brier"] != b["test_brier"]


def test_concurrent_writes_retry_only_on_a_unique_key_conflict() -> None:
    """Two workers upserting one tag: the loser's insert hits the unique key (the row exists
    now) and the same write succeeds when retried; any other error is raised at once."""
    from phat.registry.tracking import retry_on_conflict

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates '
                               'unique constraint "experiment_tag_pk"')  # fmt: skip
        return "ok"

    assert retry_on_conflict(flaky) == "ok" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("connection refused")

    calls.clear()
    with pytest.raises(RuntimeError, match="connection refused"):
        retry_on_conflict(broken)
    assert len(calls) == 1


def test_a_job_refused_before_its_run_is_a_failed_child_with_its_reason(tmp_path) -> None:
    """A sweep job that fails before its run exists (a sampled value out of range, bad data)
    is recorded through the recorder as a FAILED child of the parent, carrying the error."""
    from phat.cli.sweep import record_failure
    from phat.registry.recorder import recorder

    tracking = {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "phat", "timeout": 5}
    rec = recorder(tracking)
    with rec.run("sweep-x") as parent:
        pass
    sweep = {"parent": parent.run_id, "key": "metrics.n_bins=1", "job": 3}
    record_failure(tracking, sweep, ValueError("metrics.n_bins=1: expected >= 2"))
    kids = MlflowClient(tracking["uri"]).search_runs(
        [parent.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    assert [(k.info.run_name, k.info.status) for k in kids] == [("job-3", "FAILED")]
    assert kids[0].data.tags["phat.error"] == "ValueError: metrics.n_bins=1: expected >= 2"
    assert kids[0].data.tags["phat.sweep.overrides"] == "metrics.n_bins=1"
