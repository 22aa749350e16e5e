"""Promotion gates and rollback: sign-safe limits, refusals, history, crash safety, races, and the
whole flow against a real `mlflow server` and the default local SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from conftest import RELAXED, make_cfg
from phat.cli.backtest import run as backtest
from phat.cli.config import validate
from phat.errors import ConfigError, ModelUnavailable, RegistryUnavailable
from phat.lifecycle.gates import allowed_limit
from phat.lifecycle.production import event_key, exclusive, move_production
from phat.lifecycle.promotion import (
    PromotionRefused,
    RegistryConflict,
    current_production,
    promote,
    read_history,
    rollback,
)
from phat.lifecycle.training import run as train_run

ROOT = Path(__file__).resolve().parents[1]
from phat.cli import CONF_DIR as CONF  # noqa: E402

DATA = "data.synthetic.periods=5000"
NAME = "phat-promo"


def _compose(name: str, uri: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            name, overrides=[f"tracking.uri={uri}", f"registry.model_name={NAME}", *overrides]
        )
    return validate(name, cfg)


def _train(tmp: Path, uri: str, *overrides: str) -> str:
    out = train_run(
        make_cfg(
            tmp, DATA, "metrics.bootstrap_n=10", f"registry.model_name={NAME}", *overrides, uri=uri
        )
    )
    return str(out["model_version"])


@given(
    baseline=st.floats(-1e3, 1e3, allow_nan=False),
    tol=st.floats(0, 2, allow_nan=False),
    higher=st.booleans(),
)
def test_allowed_limit_is_never_stricter_than_the_baseline(baseline, tol, higher) -> None:
    lim = allowed_limit(baseline, tol, higher_is_better=higher)
    assert (lim <= baseline) if higher else (lim >= baseline)


def test_sign_safety_on_negative_baselines() -> None:
    # A Sharpe of -1.0 with 10% tolerance: accept down to -1.1. The naive baseline*(1-tol) gives
    # -0.9, which would demand an *improvement* and refuse an equal candidate.
    assert allowed_limit(-1.0, 0.1, higher_is_better=True) == pytest.approx(-1.1)
    assert allowed_limit(-1.0, 0.1, higher_is_better=True) <= -1.0
    # A drawdown stored as a negative number (higher is better): -0.2 -> -0.22, not -0.18.
    assert allowed_limit(-0.2, 0.1, higher_is_better=True) == pytest.approx(-0.22)
    # Lower-is-better, positive: churn 2.0 -> 2.2; a zero baseline gets the absolute slack.
    assert allowed_limit(2.0, 0.1, higher_is_better=False) == pytest.approx(2.2)
    assert allowed_limit(0.0, 0.1, higher_is_better=False, min_slack=0.01) == 0.01


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("promo")
    uri = f"sqlite:///{d}/mlflow.db"
    versions = {
        "good": _train(d / "a", uri),
        "good2": _train(d / "b", uri, "seed=3", "model.params.C=0.05"),
        "uncal": _train(d / "c", uri, "calibration=none"),
    }
    mlflow.set_tracking_uri(uri)
    return uri, versions


def test_uncalibrated_candidate_is_refused_and_production_unchanged(local_store) -> None:
    uri, v = local_store
    client = MlflowClient(uri)
    before = current_production(client, NAME)
    with pytest.raises(PromotionRefused, match="failed gates \\['calibrated'"):
        promote(_compose("promote", uri, f"version={v['uncal']}", *RELAXED))
    assert current_production(client, NAME) == before
    tags = client.get_model_version(NAME, v["uncal"]).tags
    assert tags["phat.gate.status"] == "failed" and "calibrated" in tags["phat.gate.failed"]
    runs = client.search_runs([client.get_experiment_by_name("phat-promotion").experiment_id])
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"gate_report.json", "gate_report.md"} <= arts
    # Per gate: the outcome and the values compared (candidate, baseline, limit).
    m = runs[0].data.metrics
    assert m["gate_calibrated"] == 0.0 and m["gate_brier_vs_baseline"] in (0.0, 1.0)
    assert m["gate_brier_vs_baseline_candidate"] > 0 and m["gate_brier_vs_baseline_baseline"] > 0
    tol = float(runs[0].data.params["promotion.brier_tolerance"])
    assert m["gate_brier_vs_baseline_limit"] == pytest.approx(
        m["gate_brier_vs_baseline_baseline"] + tol
    )
    assert "gate_ece_max_baseline" not in m  # no baseline there: nothing made up


def test_dry_run_changes_nothing(local_store) -> None:
    uri, v = local_store
    client = MlflowClient(uri)
    before = current_production(client, NAME)
    tags_before = dict(client.get_model_version(NAME, v["good"]).tags)
    rep = promote(
        _compose("promote", uri, f"version={v['good']}", "promotion.dry_run=true", *RELAXED)
    )
    assert rep["promoted"] is False and current_production(client, NAME) == before
    assert dict(client.get_model_version(NAME, v["good"]).tags) == tags_before


def _promote_cli(uri: str, version: str, *extra: str) -> subprocess.CompletedProcess:
    args = [
        f"registry.model_name={NAME}",
        f"version={version}",
        f"tracking.uri={uri}",
        DATA,
        *RELAXED,
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "phat.promote", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )


def test_cli_exit_codes(local_store) -> None:
    uri, v = local_store
    r = _promote_cli(uri, v["uncal"], "--dry-run")
    assert (
        r.returncode == 0
        and "dry run: nothing changed" in r.stdout
        and "| calibrated |" in r.stdout
    )
    r = _promote_cli(uri, v["uncal"])
    assert r.returncode == 1 and "PromotionRefused" in r.stderr + r.stdout
    assert "failed gates ['calibrated']" in r.stderr + r.stdout


def test_registry_error_half_way_leaves_previous_state(local_store, monkeypatch) -> None:
    uri, v = local_store
    client = MlflowClient(uri)

    def previous_alias() -> str | None:
        try:
            return str(client.get_model_version_by_alias(NAME, "previous").version)
        except MlflowException:
            return None

    before, prev_before = current_production(client, NAME), previous_alias()
    hist_before = read_history(client, NAME)

    def boom(self, *a, **k):
        raise RuntimeError("registry down")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", boom)
    with pytest.raises(RegistryUnavailable, match="registry down.*nothing changed"):
        promote(_compose("promote", uri, f"version={v['good']}", *RELAXED))
    monkeypatch.undo()
    assert current_production(client, NAME) == before
    assert read_history(client, NAME).as_dict() == hist_before.as_dict()  # event undone
    assert previous_alias() == prev_before  # @previous as it was


def test_a_stale_decision_cannot_commit(local_store) -> None:
    """Compare-and-set inside the hold: a move decided against an old production refuses."""
    uri, v = local_store
    client = MlflowClient(uri)
    base = current_production(client, NAME)
    n_events = len(read_history(client, NAME).events)
    with exclusive(client, uri, NAME) as hold:
        move_production(
            hold,
            v["good"],
            expected_current=base,
            event={"action": "promote", "version": v["good"], "previous": base},
        )
        with pytest.raises(RegistryConflict, match="nothing changed"):
            move_production(
                hold,
                v["good2"],
                expected_current=base,
                event={"action": "promote", "version": v["good2"], "previous": base},
            )
    assert current_production(client, NAME) == v["good"]
    with_alias = [
        str(mv.version)
        for mv in client.search_model_versions(f"name='{NAME}'")
        if "production" in (client.get_model_version(NAME, mv.version).aliases or [])
    ]
    assert with_alias == [v["good"]]
    assert len(read_history(client, NAME).events) == n_events + 1  # one event, the winner's
    # put the store back as it was for the other tests
    for seq, _ in read_history(client, NAME).events[n_events:]:
        client.delete_registered_model_tag(NAME, event_key(seq))
    if base:
        client.set_registered_model_alias(NAME, "production", base)
    else:
        client.delete_registered_model_alias(NAME, "production")


def _flow(tmp: Path, uri: str) -> None:
    """Train, promote, backtest production, train+promote a second, roll back, backtest again."""
    client = MlflowClient(uri)
    v1 = _train(tmp / "t1", uri)
    promote(_compose("promote", uri, f"version={v1}", DATA, *RELAXED))
    assert current_production(client, NAME) == v1
    bt = backtest(
        _compose("backtest", uri, "signal_source=production", DATA, f"out_dir={tmp / 'bt1'}")
    )
    assert client.get_run(bt["run_id"]).data.tags["phat.binding.model_version"] == v1
    v2 = _train(tmp / "t2", uri, "seed=9", "model.params.C=0.2")
    promote(_compose("promote", uri, f"version={v2}", DATA, *RELAXED))
    assert current_production(client, NAME) == v2
    assert str(client.get_model_version_by_alias(NAME, "previous").version) == v1
    out = rollback(_compose("rollback", uri, "reason=e2e"))
    assert out == {"from": v2, "to": v1} and current_production(client, NAME) == v1
    bt = backtest(
        _compose("backtest", uri, "signal_source=production", DATA, f"out_dir={tmp / 'bt2'}")
    )
    assert client.get_run(bt["run_id"]).data.tags["phat.binding.model_version"] == v1
    hist = read_history(client, NAME)
    assert hist.stack == [v1] and [e["action"] for _, e in hist.events][-3:] == [
        "promote",
        "promote",
        "rollback",
    ]
    with pytest.raises(ConfigError, match="signal_source=proxy"):
        rollback(_compose("rollback", uri))


@pytest.mark.slow
def test_flow_on_local_sqlite(tmp_path) -> None:
    _flow(tmp_path, f"sqlite:///{tmp_path}/mlflow.db")


@pytest.mark.slow
def test_flow_on_a_real_mlflow_server(tmp_path, mlflow_server) -> None:
    _flow(tmp_path, mlflow_server)


@pytest.mark.slow
def test_flow_without_a_model_name(tmp_path) -> None:
    """train -> backtest production -> promote -> rollback, naming no model: every verb derives
    phat-<symbol>-<horizon> from the same data and horizon."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)

    def verb(name: str, *overrides: str) -> dict:
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose(name, overrides=[f"tracking.uri={uri}", DATA, *overrides])
        return validate(name, cfg)

    v1 = str(
        train_run(make_cfg(tmp_path / "t1", DATA, "metrics.bootstrap_n=10", uri=uri))[
            "model_version"
        ]
    )
    v2 = str(
        train_run(make_cfg(tmp_path / "t2", DATA, "metrics.bootstrap_n=10", "seed=9", uri=uri))[
            "model_version"
        ]
    )
    name = "phat-synth-15m"
    promote(verb("promote", f"version={v1}", *RELAXED))
    assert current_production(client, name) == v1
    bt = backtest(verb("backtest", "signal_source=production", f"out_dir={tmp_path / 'bt'}"))
    assert client.get_run(bt["run_id"]).data.tags["phat.binding.model_name"] == name
    proxy = backtest(verb("backtest", "signal_source=proxy", f"out_dir={tmp_path / 'bp'}"))
    window = json.loads(client.get_model_version(name, v1).tags["phat.training_window"])
    # A proxy run with no window compares like with like: production's test span.
    assert proxy["result"].decisions["timestamp"].iloc[0] >= pd.Timestamp(window["test"][0])
    promote(verb("promote", f"version={v2}", *RELAXED))
    out = rollback(verb("rollback", "reason=no-name"))
    assert out == {"from": v2, "to": v1}
    with pytest.raises(
        ModelUnavailable, match=r"phat-synth-1h.*registered models here: \['phat-synth-15m'\]"
    ):
        rollback(verb("rollback", "horizon=1h"))
