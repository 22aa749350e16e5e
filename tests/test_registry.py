"""Registered artifacts: round trip by version/alias/run/dir, tamper and mismatch refusals,
batch scoring, the pyfunc, and a registration failure that leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import phat
from conftest import make_cfg
from phat.cli.train import run
from phat.data.synthetic import SyntheticConfig, generate
from phat.errors import ContractError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("data.synthetic.periods=5000", "metrics.bootstrap_n=10")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('reg')}/mlflow.db"
    out_dir = tmp_path_factory.mktemp("regrun")
    out = run(make_cfg(out_dir, *SMALL, "registry.model_name=phat-test-15m", uri=uri))
    mlflow.set_tracking_uri(uri)
    MlflowClient(uri).set_registered_model_alias(
        "phat-test-15m", "production", str(out["model_version"])
    )
    return out, uri, out_dir


def test_version_carries_the_runs_contract(registered) -> None:
    out, uri, _ = registered
    client = MlflowClient(uri)
    mv = client.get_model_version("phat-test-15m", str(out["model_version"]))
    run_tags = client.get_run(out["run_id"]).data.tags
    phat_tags = {
        k: v
        for k, v in run_tags.items()
        if k.startswith("phat.")
        # the run's own bookkeeping, not the model's contract
        and k not in ("phat.registered_model", "phat.model_version", "phat.host", "phat.pid")
    }
    assert {k: mv.tags[k] for k in phat_tags} == phat_tags
    assert mv.run_id == out["run_id"]
    assert f"Brier {out['metrics']['test_brier']:.5f}" in mv.description
    assert mv.tags["phat.model_hash"][:16] in mv.description


@pytest.mark.parametrize("form", ["version", "alias", "run", "local"])
def test_round_trip_equals_in_run_test_predictions(registered, form) -> None:
    out, _, out_dir = registered
    uri = {
        "version": f"models:/phat-test-15m/{out['model_version']}",
        "alias": "models:/phat-test-15m@production",
        "run": f"runs:/{out['run_id']}/model",
        "local": str(out_dir / "model"),
    }[form]
    model = phat.load(uri, horizon_id="15m")
    assert model.model_hash == out["model_hash"]
    in_run = pd.read_parquet(out_dir / "test_predictions.parquet")
    bars = generate(SyntheticConfig(periods=5000)).bars
    got = model.predict(bars).loc[in_run.index]
    np.testing.assert_array_equal(got["p_hat"].to_numpy(), in_run["p_hat"].to_numpy())
    np.testing.assert_array_equal(got["p_hat_raw"].to_numpy(), in_run["p_hat_raw"].to_numpy())


def test_tampered_download_refused(registered, tmp_path) -> None:
    out, _, _ = registered
    path = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/phat-test-15m/{out['model_version']}", dst_path=str(tmp_path)
        )
    )
    w = next(path.rglob("weights.safetensors"))
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="model_hash mismatch"):
        phat.load(str(path))


def test_registry_tag_disagreeing_with_files_refused(registered) -> None:
    out, uri, _ = registered
    client = MlflowClient(uri)
    v = str(out["model_version"])
    client.set_model_version_tag("phat-test-15m", v, "phat.model_hash", "0" * 64)
    try:
        with pytest.raises(ContractError, match="the registry recorded phat.model_hash 0000"):
            phat.load(f"models:/phat-test-15m/{v}")
    finally:
        client.set_model_version_tag("phat-test-15m", v, "phat.model_hash", out["model_hash"])


def test_missing_version_and_wrong_horizon_refused(registered) -> None:
    with pytest.raises(Exception, match="999"):
        phat.load("models:/phat-test-15m/999")
    with pytest.raises(ContractError, match="horizon mismatch"):
        phat.load("models:/phat-test-15m@production", horizon_id="4x15m")


def test_pyfunc_predicts_the_same(registered) -> None:
    out, _, _ = registered
    pf = mlflow.pyfunc.load_model(f"models:/phat-test-15m/{out['model_version']}")
    bars = generate(SyntheticConfig(periods=600, seed=3)).bars
    a = pf.predict(bars)
    b = phat.load(f"models:/phat-test-15m/{out['model_version']}").predict(bars)
    np.testing.assert_array_equal(a["p_hat"].to_numpy(), b["p_hat"].to_numpy())
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/phat-test-15m/{out['model_version']}")
    )
    flavor = __import__("yaml").safe_load((local / "MLmodel").read_text())["flavors"][
        "python_function"
    ]
    # Installed code loads it; the logged model holds data only (nothing pickled, no code).
    assert flavor["loader_module"] == "phat.registry.pyfunc_loader" and not flavor.get("code")
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.py"))


def test_batch_scoring_cli(registered, tmp_path) -> None:
    out, uri, _ = registered
    bars = generate(SyntheticConfig(periods=700, seed=4)).bars
    bars.to_csv(tmp_path / "bars.csv")
    dst = tmp_path / "p.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "phat.predict",
            "model_uri=models:/phat-test-15m@production",
            f"data.path={tmp_path / 'bars.csv'}",
            f"out={dst}",
            f"tracking.uri={uri}",
            "horizon_id=15m",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=os.environ.copy(),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = pd.read_parquet(dst)
    ref = phat.load("models:/phat-test-15m@production").predict(bars)
    np.testing.assert_array_equal(got["p_hat"].to_numpy(), ref["p_hat"].to_numpy())
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(dst).metadata[b"phat"])
    assert meta["phat.model_hash"] == out["model_hash"] and meta["registry.version"] == str(
        out["model_version"]
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "phat.predict",
            "model_uri=models:/phat-test-15m@production",
            f"data.path={tmp_path / 'bars.csv'}",
            f"out={tmp_path / 'q.parquet'}",
            f"tracking.uri={uri}",
            "horizon_id=1h",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and "horizon mismatch" in bad.stderr + bad.stdout
    assert not (tmp_path / "q.parquet").exists()


def test_failed_registration_leaves_no_version(tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run(make_cfg(tmp_path / "a", *SMALL, "registry.model_name=phat-fail", uri=uri))
    client = MlflowClient(uri)
    before = [v.version for v in client.search_model_versions("name='phat-fail'")]
    real = mlflow.set_tags

    def flaky(tags):
        if "phat.model_version" in tags:
            raise RuntimeError("registry went away")
        return real(tags)

    monkeypatch.setattr(mlflow, "set_tags", flaky)
    with pytest.raises(RuntimeError, match="registry went away"):
        run(make_cfg(tmp_path / "b", *SMALL, "registry.model_name=phat-fail", "seed=5", uri=uri))
    assert [v.version for v in client.search_model_versions("name='phat-fail'")] == before
    runs = client.search_runs(
        [client.get_experiment_by_name("phat").experiment_id],
        order_by=["attributes.start_time DESC"],
    )
    assert runs[0].info.status == "FAILED" and runs[1].info.status == "FINISHED"


def test_store_keeps_artifacts_beside_the_database(registered) -> None:
    out, uri, _ = registered
    db = Path(uri[len("sqlite:///") :])
    art = MlflowClient(uri).get_run(out["run_id"]).info.artifact_uri
    assert art.startswith((db.parent / "mlruns").as_uri())


def test_default_model_name() -> None:
    from phat.registry.client import default_model_name

    assert default_model_name("BTC/USDT", "4x15m") == "phat-btc-usdt-4x15m"
    _ = shutil


def test_identical_training_registers_nothing_new_and_says_which(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = run(make_cfg(tmp_path / "a", *SMALL, uri=uri))
    b = run(make_cfg(tmp_path / "b", *SMALL, uri=uri))  # same data, config and seed
    c = run(make_cfg(tmp_path / "c", *SMALL, "calibration=isotonic", uri=uri))
    client = MlflowClient(uri)
    assert a["model_hash"] == b["model_hash"] != c["model_hash"]
    assert b["model_version"] == a["model_version"] and b["duplicate_of"] == a["model_version"]
    versions = sorted(int(v.version) for v in client.search_model_versions("name='phat-synth-15m'"))
    assert versions == [a["model_version"], c["model_version"]]
    tags = client.get_run(b["run_id"]).data.tags
    assert tags["phat.duplicate_of"] == f"phat-synth-15m/v{a['model_version']}"
    assert "nothing new: the model_hash equals" in tags["mlflow.note.content"]  # description
    # Runs that differ only in calibration or seed have different names.
    names = {client.get_run(x["run_id"]).info.run_name for x in (a, c)}
    assert names == {"logistic-15m-SYNTH-platt-s42", "logistic-15m-SYNTH-isotonic-s42"}
    logged = client.get_logged_model(a["model_uri"].split("/")[-1])  # models:/<model id>
    assert logged.name == "phat-synth-15m"
