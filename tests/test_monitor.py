"""The live calibration monitor: the e-process's validity under the null, resumption equal to an
uninterrupted run (which also proves that unmatured outcomes are never used), idempotence, and
the verb end to end on a replay whose planted signal flips at a known bar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phat.evidence.monitor import MonitorState, matured, update


def _feed(state: MonitorState, p: np.ndarray, y: np.ndarray, start: int = 0, alpha: float = 0.05):
    idx = pd.date_range("2025-01-01", periods=len(p), freq="15min", tz="UTC")
    pos = np.arange(start, len(p))
    return update(state, idx[pos], pos, p[pos], y[pos], idx[pos], alpha, 500)


def test_calibrated_forecasts_rarely_alarm() -> None:
    """40 calibrated replays of 2,000 bars at alpha 0.05: Ville's inequality bounds the share
    that ever alarm by 5%; allow some sampling slack, not a broken test."""
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(40):
        p = rng.uniform(0.3, 0.7, 2000)
        y = (rng.uniform(size=2000) < p).astype(float)
        st = MonitorState.new(1, 5)
        _feed(st, p, y)
        alarms += st.alarm is not None
    assert alarms <= 5


def test_a_miscalibrated_forecast_alarms() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.3, 0.7, 3000)
    y = (rng.uniform(size=3000) < np.clip(p + 0.1, 0, 1)).astype(float)  # truth 0.1 higher
    st = MonitorState.new(1, 5)
    _feed(st, p, y)
    assert st.alarm is not None and st.alarm["bars"] < 2000


@pytest.mark.parametrize("horizon", [1, 4])
def test_resuming_equals_one_run_and_a_second_pass_changes_nothing(horizon: int) -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.2, 0.8, 1500)
    y = (rng.uniform(size=1500) < p).astype(float)
    whole = MonitorState.new(horizon, 4)
    _feed(whole, p, y)
    part = MonitorState.new(horizon, 4)
    _feed(part, p[:700], y[:700])
    part = MonitorState.from_dict(json.loads(json.dumps(part.to_dict())))  # saved and loaded
    _feed(part, p, y)
    assert part.path == whole.path and part.log_wealth == whole.log_wealth
    before = json.dumps(whole.to_dict())
    assert _feed(whole, p, y) == [] and json.dumps(whole.to_dict()) == before


def test_only_matured_labels_count() -> None:
    idx = pd.date_range("2025-01-01", periods=10, freq="15min", tz="UTC")
    y = np.ones(10)
    assert matured(idx, y, 3).tolist() == [True] * 7 + [False] * 3


@pytest.mark.slow
def test_flip_replay_alarms_after_the_flip_and_fallback_reaches_the_backtest(tmp_path) -> None:
    """Train on the planted signal, make it production, then monitor a continuation where the
    signal's sign flips at bar 24,000: the alarm comes after the flip, not before; with
    on_alarm=fallback a backtest bound to production uses the proxy, reason calibration_alarm,
    on every bar from the alarm on (and on none before it). Resuming from saved state in two
    batches gives the same e-value path as one run."""
    from mlflow.tracking import MlflowClient

    from phat.cli.backtest import run as backtest
    from phat.cli.config import compose, validate
    from phat.data.synthetic import SyntheticConfig, generate

    phat_bin = str(Path(sys.executable).with_name("phat"))
    uri = f"sqlite:///{tmp_path}/m.db"
    bars = generate(
        SyntheticConfig(periods=30000, trend_bias=0, revert_strength=0, planted_flip_at=24000)
    ).bars
    for name, rows in (("train", 20000), ("head", 26000), ("all", 30000)):
        bars.iloc[:rows].to_parquet(tmp_path / f"{name}.parquet")
    data = ("data.symbol=SYNTH",)

    def verb(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [phat_bin, *args, *data, f"tracking.uri={uri}"], cwd=tmp_path, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r

    flip = (f"data.path={tmp_path}/all.parquet",)
    verb("train", f"data.path={tmp_path}/train.parquet", "metrics.bootstrap_n=5")
    MlflowClient(uri).set_registered_model_alias("phat-synth-15m", "production", "1")
    # Two batches (bars up to 26,000, then all 30,000), resumed from saved state...
    for path in ("head", "all"):
        verb("monitor", f"data.path={tmp_path}/{path}.parquet", f"monitor.state={tmp_path}/s.json",
             "monitor.on_alarm=fallback")  # fmt: skip
    # ... equal one uninterrupted run (in another state file, alarm action: log).
    verb("monitor", *flip, f"monitor.state={tmp_path}/one.json")
    a = json.loads((tmp_path / "s.json").read_text())
    b = json.loads((tmp_path / "one.json").read_text())
    assert a["path"] == b["path"] and a["alarm"] == b["alarm"]
    flip_time = pd.Timestamp("2025-01-01T00:00:00Z") + 24000 * pd.Timedelta("15min")
    alarm = pd.Timestamp(a["alarm"]["time"])
    assert flip_time < alarm < flip_time + pd.Timedelta(days=30)
    assert max(e for t, e in a["path"] if pd.Timestamp(t) < flip_time) < 100  # none before
    mv = MlflowClient(uri).get_model_version("phat-synth-15m", "1")
    assert pd.Timestamp(mv.tags["phat.alarm.time"]) == alarm and "phat.alarm.e_value" in mv.tags
    cfg = validate(
        "backtest",
        compose("backtest", ["signal_source=production", *data, *flip, f"tracking.uri={uri}",
                             f"out_dir={tmp_path}/bt"]),
    )  # fmt: skip
    d = backtest(cfg)["result"].decisions
    after = d["timestamp"] >= alarm
    assert (d.loc[after, "fallback_reason"] == "calibration_alarm").all() and after.any()
    assert (d.loc[after, "signal_source"] == "proxy").all()
    assert not (d.loc[~after, "fallback_reason"] == "calibration_alarm").any()
    # Clearing is explicit.
    verb("monitor", "monitor.clear=true")
    assert "phat.alarm.time" not in MlflowClient(uri).get_model_version("phat-synth-15m", "1").tags
