"""The artifact: hash-verified, weights-only, horizon-checked, and prefix-consistent p_hat."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import make_cfg
from phat.errors import ContractError, DataValidationError
from phat.pipeline import train
from phat.registry.artifact import load_artifact


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    cfg = make_cfg(out, "data.synthetic.periods=4000", "metrics.bootstrap_n=20")
    return train(cfg, out)


def test_loaded_model_reproduces_in_run_predictions_exactly(trained) -> None:
    pm = load_artifact(trained.artifact_dir, horizon_id="15m")
    got = pm.predict_bars(trained.bars.frame, trained.bars.segment)
    for split, pr in trained.predictions.items():
        np.testing.assert_array_equal(got["p_hat"].to_numpy()[pr.ends], pr.p_hat, err_msg=split)
        np.testing.assert_array_equal(got["p_hat_raw"].to_numpy()[pr.ends], pr.p_raw, err_msg=split)
    assert pm.model_hash == trained.tags["phat.model_hash"]
    assert pm.metadata["phat.feature_version"] == trained.feature_spec.feature_version


def test_predict_accepts_loader_layouts_and_marks_incomplete_windows(trained) -> None:
    pm = load_artifact(trained.artifact_dir)
    frame = trained.bars.frame.iloc[:400]
    titled = frame.reset_index()
    titled.columns = [c.title() for c in titled.columns]
    a = pm.predict(frame)
    b = pm.predict(titled)
    pd.testing.assert_frame_equal(a, b)
    assert a["p_hat"].iloc[: trained.feature_spec.bars_read - 1].isna().all()
    assert a["p_hat"].iloc[trained.feature_spec.bars_read - 1 :].notna().all()


def test_p_hat_from_truncated_history_equals_full_history(trained) -> None:
    pm = load_artifact(trained.artifact_dir)
    frame = trained.bars.frame.iloc[:1200]
    full = pm.predict_bars(frame)["p_hat"].to_numpy()
    rng = np.random.default_rng(0)
    for t in sorted(rng.choice(np.arange(200, 1200), size=25, replace=False)):
        # what a live consumer sees at t: history up to t only (and even a short one)
        assert pm.predict_bars(frame.iloc[: t + 1])["p_hat"].iloc[-1] == full[t]
        assert pm.predict_bars(frame.iloc[t - 200 : t + 1])["p_hat"].iloc[-1] == full[t]


def test_wrong_timeframe_refused(trained) -> None:
    pm = load_artifact(trained.artifact_dir)
    hourly = trained.bars.frame.resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    with pytest.raises(DataValidationError, match="data is 1h bars but timeframe 15m"):
        pm.predict(hourly)
    m1 = trained.bars.frame.iloc[:10].copy()
    m1.index = pd.date_range("2024-01-01", periods=10, freq="1min", tz="UTC")
    with pytest.raises(DataValidationError, match="bars are 1m but this model takes 15m bars"):
        pm.predict(m1)


def test_tampered_weights_refused(trained, tmp_path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained.artifact_dir, copy)
    w = copy / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="model_hash mismatch"):
        load_artifact(copy)


def test_tampered_calibration_refused(trained, tmp_path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained.artifact_dir, copy)
    cal = json.loads((copy / "calibration.json").read_text())
    cal["params"]["a"] *= 1.01
    (copy / "calibration.json").write_text(json.dumps(cal))
    with pytest.raises(ContractError, match="model_hash mismatch"):
        load_artifact(copy)


def test_horizon_mismatch_refused(trained) -> None:
    with pytest.raises(
        ContractError,
        match="horizon mismatch: the caller expects horizon '1h' but the model predicts '15m'",
    ):
        load_artifact(trained.artifact_dir, horizon_id="1h")


def test_foreign_feature_code_refused(trained, tmp_path, monkeypatch) -> None:
    import phat.registry.artifact
    from phat.errors import FeatureVersionMismatch

    monkeypatch.setattr(phat.registry.artifact, "FEATURE_CODE_VERSION", "2")
    with pytest.raises(
        FeatureVersionMismatch,
        match="needs feature code version '1'.*installed phat computes version '2'",
    ):
        load_artifact(trained.artifact_dir)


def test_no_pickle_in_the_artifact(trained) -> None:
    names = sorted(p.name for p in trained.artifact_dir.iterdir())
    assert names == sorted(
        [
            "calibration.json",
            "data_spec.json",
            "feature_spec.json",
            "label_spec.json",
            "metadata.json",
            "model.json",
            "weights.safetensors",
        ]
    )
    for p in trained.artifact_dir.glob("*.json"):
        json.loads(p.read_text())
    # safetensors: an 8-byte little-endian header length, a JSON header, then raw tensor bytes
    raw = (trained.artifact_dir / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert set(header) - {"__metadata__"} == {"coef", "intercept"}
