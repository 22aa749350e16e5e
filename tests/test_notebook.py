"""The notebook a user opens after a few runs executes top to bottom (nbclient, a real kernel)
against a store this fixture fills, including a FAILED run it must skip; and `mlflow run`
works for real on the MLproject, logging into the run it created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import nbformat
import pytest
from mlflow.tracking import MlflowClient

from conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"
SMALL = ("data.synthetic.periods=3000", "metrics.bootstrap_n=5")


def test_committed_notebook_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_filled_store(tmp_path: Path, monkeypatch) -> None:
    from nbclient import NotebookClient

    from phat.lifecycle.training import run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = run(make_cfg(tmp_path / "a", *SMALL, "calibration=platt", uri=uri))
    run(make_cfg(tmp_path / "b", *SMALL, "calibration=isotonic", "seed=3", uri=uri))
    client = MlflowClient(uri)
    client.set_registered_model_alias(a["model_name"], "production", a["model_version"])
    exp = client.get_experiment_by_name("phat")
    failed = client.create_run(exp.experiment_id, run_name="crashed")
    client.set_terminated(failed.info.run_id, "FAILED")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        str(o.get("text", "")) + json.dumps(o.get("data", {}))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "2 finished runs in experiment 'phat'" in text  # the FAILED run is skipped
    assert "2 reliability curves" in text
    assert "2 versions, 0 promotion events" in text
    assert "production" in text and "crashed" not in text


def test_notebook_refuses_to_invent_an_empty_store(tmp_path: Path, monkeypatch) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(CellExecutionError, match="no MLflow store"):
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_mlflow_run_logs_into_the_run_it_created(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)  # set by in-process MLflow calls of earlier tests
    overrides = f"data.synthetic.periods=3000 metrics.bootstrap_n=5 out_dir={tmp_path / 'out'}"
    r = subprocess.run(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "run",
            str(ROOT),
            "-e",
            "train",
            "--env-manager",
            "local",
            "--experiment-name",
            "phat",
            "-P",
            "model=logistic",
            "-P",
            "horizon=15m",
            "-P",
            f"overrides={overrides}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("phat").experiment_id])
    assert len(runs) == 1  # the run mlflow created is the one phat logged into
    (only,) = runs
    assert only.info.status == "FINISHED" and only.info.run_name == "logistic-15m-SYNTH-platt-s42"
    assert only.data.metrics["test_brier"] > 0 and only.data.tags["phat.model_hash"]
    assert (
        only.data.params["horizon"] == "15m"
        and only.data.params["data.synthetic.periods"] == "3000"
    )
    mlflow.set_tracking_uri(uri)
    versions = client.search_model_versions("name='phat-synth-15m'")
    assert [v.run_id for v in versions] == [only.info.run_id]
