"""Integrity of the whole artifact: a change to any file is refused by every load path, also
when the attacker recomputes the hash in metadata.json (the registry's recorded hash catches
that), and `mlflow.pyfunc.load_model` runs no code dropped into the artifact (its data
directory) before verifying it. The phat code shipped beside it (`code/`) is what MLflow
imports; docs/mlflow.md says what that trusts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import phat
from conftest import make_cfg
from phat.cli.train import run
from phat.errors import HashMismatch, MalformedArtifact
from phat.registry.artifact import compute_model_hash

NAME = "phat-integrity-15m"


@pytest.fixture
def store(tmp_path: Path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run(
        make_cfg(
            tmp_path / "run",
            "data.synthetic.periods=3000",
            "metrics.bootstrap_n=5",
            f"registry.model_name={NAME}",
            uri=uri,
        )
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return out, tmp_path


def stored_model_dir(out: dict) -> Path:
    """The registry version's artifact directory inside the local artifact store."""
    mv = MlflowClient().get_model_version(NAME, str(out["model_version"]))
    root = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{mv.version}"))
    # Find the stored (not downloaded) copy: the logged model lives under mlruns/models/<id>.
    store_root = Path(mlflow.get_tracking_uri()[len("sqlite:///") :]).parent / "mlruns"
    (stored,) = [p for p in store_root.glob("models/*/artifacts") if (p / "MLmodel").exists()]
    assert (root / "MLmodel").read_text() == (stored / "MLmodel").read_text()
    return stored / "data" / "model"


def run_artifact_dir(out: dict) -> Path:
    store_root = Path(mlflow.get_tracking_uri()[len("sqlite:///") :]).parent / "mlruns"
    d = store_root / out["run_id"] / "artifacts" / "model"
    assert d.is_dir()
    return d


def flip_weight_and_rehash(model_dir: Path) -> None:
    """The attack of the issue: one weight byte flipped, metadata's hash recomputed to match."""
    from safetensors.numpy import load_file, save_file

    w = load_file(str(model_dir / "weights.safetensors"))
    key = sorted(w)[0]
    arr = w[key].copy()
    arr.reshape(-1)[0] = np.nextafter(arr.reshape(-1)[0], np.inf)
    w[key] = arr
    save_file(w, str(model_dir / "weights.safetensors"))
    rehash(model_dir)


def rehash(model_dir: Path) -> None:
    from safetensors.numpy import load_file

    read = {
        f: json.loads((model_dir / f).read_text())
        for f in (
            "model.json",
            "feature_spec.json",
            "label_spec.json",
            "calibration.json",
            "data_spec.json",
            "metadata.json",
        )
    }
    meta = read["metadata.json"]
    meta["phat.model_hash"] = compute_model_hash(
        read["model.json"],
        load_file(str(model_dir / "weights.safetensors")),
        read["feature_spec.json"],
        read["label_spec.json"],
        read["calibration.json"],
        read["data_spec.json"],
        meta,
    )
    (model_dir / "metadata.json").write_text(json.dumps(meta))


def test_untouched_model_loads_on_every_path(store) -> None:
    out, _ = store
    v = out["model_version"]
    h = out["model_hash"]
    assert phat.load(f"models:/{NAME}/{v}").model_hash == h
    assert phat.load(f"runs:/{out['run_id']}/model").model_hash == h
    assert phat.load(str(stored_model_dir(out).parent.parent)).model_hash == h
    assert mlflow.pyfunc.load_model(f"models:/{NAME}/{v}") is not None


def test_rehashed_weight_flip_is_refused_by_every_path(store) -> None:
    out, _ = store
    v = out["model_version"]
    flip_weight_and_rehash(stored_model_dir(out))
    flip_weight_and_rehash(run_artifact_dir(out))
    with pytest.raises(HashMismatch, match="the registry recorded"):
        phat.load(f"models:/{NAME}/{v}")
    with pytest.raises(HashMismatch, match=f"run {out['run_id']} recorded"):
        phat.load(f"runs:/{out['run_id']}/model")
    with pytest.raises(HashMismatch, match="training run .* recorded"):
        phat.load(str(stored_model_dir(out).parent.parent))  # a local MLflow model directory
    with pytest.raises(HashMismatch, match="training run .* recorded"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{v}")


@pytest.mark.parametrize(
    ("field", "value"),
    [("phat.feature_version", "0" * 64), ("phat.horizon_id", "1h"), ("phat.symbol", "ETHUSDT")],
)
def test_edited_metadata_fields_are_refused(store, field: str, value: str) -> None:
    out, _ = store
    d = stored_model_dir(out)
    meta = json.loads((d / "metadata.json").read_text())
    meta[field] = value
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(HashMismatch, match="model_hash mismatch"):
        phat.load(f"models:/{NAME}/{out['model_version']}")
    with pytest.raises(HashMismatch, match="model_hash mismatch"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{out['model_version']}")


def test_code_dropped_into_the_artifact_never_runs(store, tmp_path: Path) -> None:
    out, _ = store
    d = stored_model_dir(out)
    marker = tmp_path / "ran"
    (d / "pyfunc_model.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(HashMismatch, match=r"files no model_hash covers: \['pyfunc_model.py'\]"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{out['model_version']}")
    with pytest.raises(HashMismatch, match="files no model_hash covers"):
        phat.load(f"models:/{NAME}/{out['model_version']}")
    assert not marker.exists()


def test_malformed_metadata_names_the_file_and_the_uri(store, tmp_path: Path) -> None:
    out, _ = store
    local = tmp_path / "copy"
    shutil.copytree(run_artifact_dir(out), local)
    (local / "metadata.json").write_text("{not json")
    with pytest.raises(MalformedArtifact, match=rf"{local}.*metadata.json' is not valid JSON"):
        phat.load(str(local))
    d = stored_model_dir(out)
    (d / "metadata.json").write_text("[1, 2")
    uri = f"models:/{NAME}/{out['model_version']}"
    with pytest.raises(MalformedArtifact, match=rf"^{uri}: .*metadata.json' is not valid JSON"):
        phat.load(uri)


def test_shipped_code_changed_after_training_is_refused(store) -> None:
    """The model ships phat's code (MLflow imports it when serving); its hash is recorded as
    phat.code_hash, and phat.load refuses a model whose code/ was edited in the store."""
    out, _ = store
    v = out["model_version"]
    mv = MlflowClient().get_model_version(NAME, str(v))
    assert (
        mv.tags["phat.code_hash"]
        == MlflowClient().get_run(out["run_id"]).data.tags["phat.code_hash"]
    )
    code = stored_model_dir(out).parent.parent / "code" / "phat" / "registry" / "pyfunc_loader.py"
    code.write_text(code.read_text() + "\nimport os  # planted\n")
    with pytest.raises(HashMismatch, match="code/phat"):
        phat.load(f"models:/{NAME}/{v}")
