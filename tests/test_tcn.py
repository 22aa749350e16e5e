"""The TCN: causal, reproducible, batch-invariant, calibrated, tracked in one MLflow run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import make_cfg
from phat.models.tcn import build_net, receptive_field
from phat.pipeline import train
from phat.registry.artifact import load_artifact

ROOT = Path(__file__).resolve().parents[1]
SMALL_TCN = (
    "model=tcn",
    "data.synthetic.periods=5000",
    "model.params.channels=8",
    "model.params.levels=3",
    "trainer.max_epochs=2",
    "metrics.bootstrap_n=10",
    "threads=1",
)


def test_net_is_causal_and_receptive_field_is_as_documented() -> None:
    torch.manual_seed(0)
    net = build_net(12, channels=8, levels=3, kernel_size=3, dropout=0.0).eval()
    x = torch.randn(1, 12, 64, requires_grad=True)
    net(x).sum().backward()
    touched = np.flatnonzero(x.grad.abs().sum(dim=1)[0].numpy() > 0)
    rf = receptive_field(3, 3)
    assert rf == 1 + 2 * 2 * 7
    assert touched.min() == 64 - rf and touched.max() == 63
    blocks = net.blocks.eval()
    with torch.no_grad():
        y1 = blocks(x.detach())
        x2 = x.detach().clone()
        x2[:, :, 40:] += 5.0  # the future of step 39
        y2 = blocks(x2)
    assert torch.equal(y1[:, :, :40], y2[:, :, :40])


def test_default_size_is_tens_of_thousands_of_parameters() -> None:
    net = build_net(12, channels=24, levels=5, kernel_size=3, dropout=0.1)
    n = sum(p.numel() for p in net.parameters())
    assert 10_000 <= n <= 50_000
    assert receptive_field(5, 3) >= 64


@pytest.fixture(scope="module")
def tcn_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("tcn")
    return train(make_cfg(out, *SMALL_TCN), out), out


@pytest.mark.slow
def test_validation_tail_is_inside_train_span_and_purged(tcn_result) -> None:
    res, _ = tcn_result
    tr, va, cal = res.spans["train"], res.spans["validation"], res.spans["calibration"]
    assert tr[-1] + 1 < va[0] - res.feature_spec.bars_read + 1
    assert va[-1] + 1 < cal[0] - res.feature_spec.bars_read + 1
    window = json.loads(res.tags["phat.training_window"])
    assert set(window) == {"train", "validation", "calibration", "test"}


@pytest.mark.slow
def test_same_seed_same_model_hash_across_processes(tcn_result, tmp_path) -> None:
    res, _ = tcn_result
    again = train(make_cfg(tmp_path / "again", *SMALL_TCN), tmp_path / "again")
    assert again.tags["phat.model_hash"] == res.tags["phat.model_hash"]
    code = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import make_cfg; from pathlib import Path;"
        "from phat.pipeline import train;"
        f"r = train(make_cfg(Path({str(tmp_path / 'proc')!r}), *{SMALL_TCN!r}), {str(tmp_path / 'proc')!r});"
        "print('HASH', r.tags['phat.model_hash'])"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert f"HASH {res.tags['phat.model_hash']}" in p.stdout, p.stderr[-2000:]
    other = train(make_cfg(tmp_path / "seed", *SMALL_TCN, "seed=1"), tmp_path / "seed")
    assert other.tags["phat.model_hash"] != res.tags["phat.model_hash"]


@pytest.mark.slow
def test_inference_is_bitwise_identical_across_processes_and_batches(tcn_result, tmp_path) -> None:
    res, out = tcn_result
    pm = load_artifact(out / "model")
    frame = res.bars.frame.iloc[:900]
    full = pm.predict_bars(frame)["p_hat"].to_numpy()
    in_run = res.predictions["train"]
    got = pm.predict_bars(res.bars.frame)["p_hat"].to_numpy()[in_run.ends]
    np.testing.assert_array_equal(got, in_run.p_hat)  # equals the in-run predictions exactly
    for t in (200, 333, 899):  # a live consumer scoring one bar from a short history
        assert pm.predict_bars(frame.iloc[t - 130 : t + 1])["p_hat"].iloc[-1] == full[t]
    frame.to_parquet(tmp_path / "bars.parquet")
    code = (
        "import numpy as np, pandas as pd; from phat.registry.artifact import load_artifact;"
        f"pm = load_artifact({str(out / 'model')!r});"
        f"p = pm.predict_bars(pd.read_parquet({str(tmp_path / 'bars.parquet')!r}))['p_hat'].to_numpy();"
        f"np.save({str(tmp_path / 'p.npy')!r}, p)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
    other = np.load(tmp_path / "p.npy")
    assert other.tobytes() == full.tobytes()


@pytest.mark.slow
def test_overfit_tcn_is_miscalibrated_raw_and_calibration_repairs_it(tmp_path) -> None:
    cfg = make_cfg(
        tmp_path,
        "model=tcn",
        "data.synthetic.periods=3000",
        "data.synthetic.planted_strength=0.3",
        "model.params.channels=32",
        "model.params.dropout=0.0",
        "trainer.max_epochs=25",
        "trainer.patience=100",
        "trainer.restore_best=false",
        "trainer.lr=0.01",
        "trainer.weight_decay=0",
        "calibration=temperature",
        "metrics.bootstrap_n=10",
        "split.min_samples=150",
        "threads=1",
        "model.ladder=off",  # the subject is this overfit TCN (the ladder would decline it)
    )
    res = train(cfg, tmp_path)
    m = res.metrics
    assert m["test_ece_raw"] > 0.1  # memorized the train span: overconfident
    assert m["test_ece"] < m["test_ece_raw"] / 2
    assert m["test_log_loss"] < m["test_log_loss_raw"]


@pytest.mark.slow
def test_lightning_metrics_land_in_the_one_training_run(tmp_path, mlflow_uri) -> None:
    from phat.lifecycle.training import run

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("phat")
    before = len(client.search_runs([exp.experiment_id])) if exp else 0
    out = run(
        # the ladder off: the subject is the TCN's own training run, whatever it would keep
        make_cfg(
            tmp_path,
            *SMALL_TCN,
            "trainer.max_epochs=3",
            "trainer.patience=5",
            "model.ladder=off",
            uri=mlflow_uri,
        )  # fmt: skip
    )
    exp = client.get_experiment_by_name("phat")
    assert len(client.search_runs([exp.experiment_id])) == before + 1
    hist = client.get_metric_history(out["run_id"], "tcn_train_loss")
    assert len(hist) == 3
    run_ = client.get_run(out["run_id"])
    assert run_.info.status == "FINISHED"
    assert "tcn_val_loss" in run_.data.metrics and "test_brier" in run_.data.metrics
    assert run_.data.tags["phat.model_kind"] == "tcn" and run_.data.tags["phat.threads"] == "1"
    assert 1_000 < run_.data.metrics["model_parameters"] < 5_000
