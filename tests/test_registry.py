"""Registered artifacts: round trip by version/alias/run/dir, tamper and mismatch refusals,
batch scoring, the pyfunc, and a registration failure that leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import phat
from conftest import make_cfg
from phat.data.synthetic import SyntheticConfig, generate
from phat.errors import ContractError
from phat.lifecycle.training import run

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
    a = pf.predict(bars)  # time as the index
    b = phat.load(f"models:/phat-test-15m/{out['model_version']}").predict(bars)
    p_hat = a["p_hat"].map(lambda v: np.nan if v is None else v).to_numpy(dtype=float)
    np.testing.assert_array_equal(p_hat, b["p_hat"].to_numpy())
    assert a["p_hat"].iloc[0] is None  # None, not NaN: JSON null in a serving response
    assert (pd.DatetimeIndex(a["timestamp"]) == b.index).all()
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/phat-test-15m/{out['model_version']}")
    )
    mlmodel = __import__("yaml").safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    # The model ships phat's code (no pickles), so it loads without any installed phat.
    # the shipped verifier first (it checks every shipped file), then phat's own loader
    assert flavor["loader_module"] == "phat_verify" and flavor["code"] == "code"
    assert (local / "code" / "phat" / "registry" / "pyfunc_loader.py").exists()
    assert (local / "code" / "phat_verify.py").exists()
    assert (local / "code" / "phat_manifest.json").exists()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("__pycache__"))
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert inputs[0] == {"type": "string", "name": "timestamp", "required": False}
    assert (local / "serving_input_example.json").exists()


def test_requirements_are_pinned_and_name_no_stranger(registered) -> None:
    out, _, _ = registered
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/phat-test-15m/{out['model_version']}")
    )
    reqs = [r for r in (local / "requirements.txt").read_text().splitlines() if r.strip()]
    pins = [r for r in (local / "constraints.txt").read_text().splitlines() if r.strip()]
    assert reqs[-1] == "-c constraints.txt"
    for line in reqs[:-1] + pins:
        name, sep, version = line.partition("==")
        assert sep and version and not any(c in version for c in "<>=*,"), line
        # phat travels as code inside the model, never as a package to look up in an index
        assert name.lower().replace("_", "-") not in ("phat", "phat-ohlcv"), line
    assert {r.split("==")[0] for r in reqs[:-1]} <= {p.split("==")[0] for p in pins}


def _wait_ping(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"server did not answer: {log.read_text()[-3000:]}")


def _post(url: str, body: str, content_type: str = "application/json") -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{url}/invocations", data=body.encode(), headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.slow
def test_mlflow_models_serve_answers_json_and_csv_like_phat_load(registered, tmp_path) -> None:
    """The real `mlflow models serve`, started by `phat serve` (as `make serve` does) after it
    verified the registered version:
    dataframe_split (timestamp column, ISO index, epoch index), dataframe_records and CSV give
    the p_hat phat.load gives on the same bars, with timestamps and JSON nulls; refusals are
    400s carrying phat's one-line reason."""
    import signal

    from conftest import _free_port

    out, uri, _ = registered
    model = f"models:/phat-test-15m/{out['model_version']}"
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("phat")), "serve", f"model_uri={model}",
             "host=127.0.0.1", f"port={port}"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ping(url, proc, log)
        bars = generate(SyntheticConfig(periods=400, seed=9)).bars.iloc[:200]
        want = phat.load(model).predict(bars)
        iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in bars.index]
        cols = ["open", "high", "low", "close", "volume"]
        frame = bars[cols].reset_index(drop=True)
        bodies = {
            "split+column": json.dumps(
                {
                    "dataframe_split": frame.assign(timestamp=iso).to_dict(
                        orient="split", index=False
                    )
                }
            ),
            "split+iso index": json.dumps(
                {"dataframe_split": {"columns": cols, "index": iso, "data": frame.values.tolist()}}
            ),
            "split+epoch index": json.dumps(
                {
                    "dataframe_split": {
                        "columns": cols,
                        "index": [int(t.timestamp() * 1000) for t in bars.index],
                        "data": frame.values.tolist(),
                    }
                }
            ),  # fmt: skip
            "records": json.dumps(
                {"dataframe_records": frame.assign(timestamp=iso).to_dict(orient="records")}
            ),
        }
        answers = {k: _post(url, b) for k, b in bodies.items()}
        answers["csv"] = _post(url, frame.assign(timestamp=iso).to_csv(index=False), "text/csv")
        for form, (status, text) in answers.items():
            assert status == 200, (form, text[-500:])
            assert "NaN" not in text and "null" in text, form  # strict JSON, warm-up as null
            got = pd.DataFrame(json.loads(text)["predictions"])
            assert list(got.columns) == ["timestamp", "p_hat_raw", "p_hat"], form
            assert (pd.to_datetime(got["timestamp"], utc=True) == want.index).all(), form
            p = got["p_hat"].astype(float).to_numpy()  # null -> NaN
            np.testing.assert_array_equal(p, want["p_hat"].to_numpy(), err_msg=form)
        # Refusals: phat's reason in a 400.
        hourly = frame.assign(
            timestamp=[t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in
                       pd.date_range("2025-01-01", periods=len(frame), freq="1h", tz="UTC")]
        )  # fmt: skip
        status, text = _post(
            url, json.dumps({"dataframe_split": hourly.to_dict(orient="split", index=False)})
        )
        assert status == 400 and "data is 1h bars but timeframe 15m" in json.loads(text)["message"]
        short = frame.assign(timestamp=iso).iloc[:20]
        status, text = _post(
            url, json.dumps({"dataframe_split": short.to_dict(orient="split", index=False)})
        )
        assert status == 400 and "no bar scored: 20 bars given" in json.loads(text)["message"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_model_environment_builds_from_its_own_requirements(registered, tmp_path) -> None:
    """A fresh virtualenv (no phat installed, nothing from this project) built from the logged
    model's requirements.txt + constraints.txt, from this machine's package mirror, loads the
    model through MLflow and gives the same p_hat as phat.load here."""
    out, _, _ = registered
    model = f"models:/phat-test-15m/{out['model_version']}"
    local = Path(mlflow.artifacts.download_artifacts(model, dst_path=str(tmp_path / "m")))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
        cwd=local, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    bars = generate(SyntheticConfig(periods=400, seed=9)).bars.iloc[:200]
    bars.to_parquet(tmp_path / "bars.parquet")
    script = (
        "import sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "import phat; print('PHAT_FROM', phat.__file__)\n"
        "out = m.predict(pd.read_parquet(sys.argv[2]))\n"
        "out['p_hat'] = out['p_hat'].astype(float)\n"
        "out.to_parquet(sys.argv[3])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    res = subprocess.run(
        [str(py), "-c", script, str(local), str(tmp_path / "bars.parquet"), str(tmp_path / "o.pq")],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"PHAT_FROM {local / 'code' / 'phat'}" in res.stdout  # the model's own code
    got = pd.read_parquet(tmp_path / "o.pq")
    np.testing.assert_array_equal(
        got["p_hat"].to_numpy(), phat.load(model).predict(bars)["p_hat"].to_numpy()
    )


def test_version_and_logged_model_are_linked(registered) -> None:
    out, uri, _ = registered
    client = MlflowClient(uri)
    mv = client.get_model_version("phat-test-15m", str(out["model_version"]))
    logged = client.get_logged_model(mv.source.split("/")[-1])
    assert logged.name == "phat-test-15m" and logged.source_run_id == out["run_id"]
    links = json.loads(logged.tags["mlflow.modelVersions"])  # the UI's "Registered versions"
    assert {"name": "phat-test-15m", "version": int(out["model_version"])} in [
        {"name": x["name"], "version": int(x["version"])} for x in links
    ]


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
    real = MlflowClient.log_batch

    def flaky(self, run_id, *a, tags=(), **k):  # the run's tag naming its new version
        if any(t.key == "phat.model_version" for t in tags):
            raise RuntimeError("registry went away")
        return real(self, run_id, *a, tags=tags, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
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


@pytest.mark.slow  # the fast tier's heaviest; make test runs it
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


@pytest.mark.slow
def test_a_readable_record(tmp_path) -> None:
    """What the runs table and compare view show: names that tell calibration and seed apart,
    params that apply (no trainer.* on a logistic run, no paths of the run, no "None"), the data
    as a dataset input whose digest is phat.data_hash's, figures, system metrics on request,
    and an experiment that opens in the model-training view."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = run(make_cfg(tmp_path / "a", *SMALL, "tracking.system_metrics=true", uri=uri))
    b = run(make_cfg(tmp_path / "b", *SMALL, "seed=7", "registry.register=false", uri=uri))
    client = MlflowClient(uri)
    ra, rb = client.get_run(a["run_id"]), client.get_run(b["run_id"])
    assert ra.info.run_name == "logistic-15m-SYNTH-platt-s42"
    assert rb.info.run_name == "logistic-15m-SYNTH-platt-s7"
    params = ra.data.params
    assert params["model.kind"] == "logistic" and params["seed"] == "42"
    assert not [k for k in params if k.startswith(("trainer.", "tracking.", "out_dir"))]
    assert "None" not in params.values()
    assert params["features.list"].startswith("log_return(1),vol_return(1,48)")
    (dsi,) = ra.inputs.dataset_inputs
    data_hash = ra.data.tags["phat.data_hash"]
    assert len(dsi.dataset.digest) == 32 and data_hash.startswith(dsi.dataset.digest)
    tags = {t.key: t.value for t in dsi.tags}
    assert tags["phat.data_hash"] == data_hash and tags["mlflow.data.context"] == "training"
    assert dsi.dataset.name.startswith("SYNTH-15m 2025-01-01..")
    assert tags["phat.start"].startswith("2025-01-01T00:00:00")
    plots = {x.path for x in client.list_artifacts(a["run_id"], "plots")}
    assert plots == {"plots/reliability_calibration.png", "plots/reliability_test.png"}
    assert any(k.startswith("system/") for k in ra.data.metrics)  # tracking.system_metrics
    assert not any(k.startswith("system/") for k in rb.data.metrics)
    exp = client.get_experiment(ra.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # The summary is the run's description.
    assert "test metric" in ra.data.tags["mlflow.note.content"]
