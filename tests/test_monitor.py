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

from phat.evidence.monitor import MIN_SLOPE, MonitorState, OnlineRecalibrator, matured, update


def _feed(state: MonitorState, p: np.ndarray, y: np.ndarray, keep: int = 500):
    idx = pd.date_range("2025-01-01", periods=len(p), freq="15min", tz="UTC")
    pos = np.arange(len(p))
    return update(state, idx[pos], pos, p[pos], y[pos], idx[pos], 0.05, keep)


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
    whole.recal = OnlineRecalibrator(horizon, 500, 2000)
    _feed(whole, p, y)
    part = MonitorState.new(horizon, 4)
    part.recal = OnlineRecalibrator(horizon, 500, 2000)
    _feed(part, p[:700], y[:700])
    part = MonitorState.from_dict(json.loads(json.dumps(part.to_dict())))  # saved and loaded
    _feed(part, p, y)
    assert part.path == whole.path and part.log_wealth == whole.log_wealth
    assert part.recal is not None and part.recal.to_dict() == whole.recal.to_dict()
    assert part.recent == whole.recent
    before = json.dumps(whole.to_dict())
    assert _feed(whole, p, y) == [] and json.dumps(whole.to_dict()) == before


def _recal_replay(p: np.ndarray, y: np.ndarray, h: int = 1, **kw: float) -> tuple:
    st = MonitorState.new(h, 5)
    st.recal = OnlineRecalibrator(h, kw.get("prior_bars", 500), kw.get("half_life", 2000))
    _feed(st, p, y, keep=len(p))
    return st, np.asarray(st.recent)[:, 2]


@pytest.mark.parametrize("h", [1, 3])
def test_online_recalibration_uses_only_matured_outcomes(h: int) -> None:
    """Changing bar k's outcome may change the recalibrated forecast of bars k + h and later
    (its label matured), never of an earlier bar."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0.2, 0.8, 600)
    y = (rng.uniform(size=600) < p).astype(float)
    k = 300
    y2 = y.copy()
    y2[k] = 1.0 - y2[k]
    _, q = _recal_replay(p, y, h)
    _, q2 = _recal_replay(p, y2, h)
    assert np.array_equal(q[: k + h], q2[: k + h]) and not np.array_equal(q[k + h :], q2[k + h :])


def test_online_recalibration_matches_a_batch_logistic_fit() -> None:
    """Without forgetting and with a faint prior, the online Newton recursion lands on the
    batch maximum-likelihood map (scikit-learn's unpenalised logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(6)
    p = rng.uniform(0.15, 0.85, 20000)
    z = np.log(p / (1 - p))
    truth = 1 / (1 + np.exp(-(0.6 * z + 0.2)))
    y = (rng.uniform(size=len(p)) < truth).astype(float)
    st, _ = _recal_replay(p, y, prior_bars=1.0, half_life=1e12)
    ref = LogisticRegression(C=np.inf).fit(z[:, None], y)
    assert st.recal is not None
    assert abs(st.recal.theta[0] - ref.coef_[0, 0]) < 0.02
    assert abs(st.recal.theta[1] - ref.intercept_[0]) < 0.02


def test_online_recalibration_costs_noise_without_drift_and_recovers_after_a_flip() -> None:
    rng = np.random.default_rng(7)
    n, flip = 12000, 6000
    p = rng.uniform(0.3, 0.7, n)
    y = (rng.uniform(size=n) < p).astype(float)  # calibrated: nothing to fix
    st, q = _recal_replay(p, y)
    assert abs(((y - q) ** 2).mean() - ((y - p) ** 2).mean()) < 0.001
    truth = np.where(np.arange(n) < flip, p, 1 - p)  # the signal's sign flips; the model is stale
    y = (rng.uniform(size=n) < truth).astype(float)
    st, q = _recal_replay(p, y)
    late = slice(flip + 2000, n)
    static, online = ((y[late] - p[late]) ** 2).mean(), ((y[late] - q[late]) ** 2).mean()
    climatology = ((y[late] - y[late].mean()) ** 2).mean()
    assert online < static - 0.01 and online < climatology + 0.003
    assert st.recal is not None and st.recal.theta[0] >= MIN_SLOPE  # never reverses the ranking


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
    one = verb("monitor", *flip, f"monitor.state={tmp_path}/one.json", "monitor.recalibrate=online")
    a = json.loads((tmp_path / "s.json").read_text())
    b = json.loads((tmp_path / "one.json").read_text())
    assert a["path"] == b["path"] and a["alarm"] == b["alarm"]  # recalibration: a layer beside
    assert "online recalibration: q = sigmoid(" in one.stdout
    flip_time = pd.Timestamp("2025-01-01T00:00:00Z") + 24000 * pd.Timedelta("15min")
    alarm = pd.Timestamp(a["alarm"]["time"])
    assert flip_time < alarm < flip_time + pd.Timedelta(days=30)
    assert max(e for t, e in a["path"] if pd.Timestamp(t) < flip_time) < 100  # none before
    client = MlflowClient(uri)
    mv = client.get_model_version("phat-synth-15m", "1")
    assert pd.Timestamp(mv.tags["phat.alarm.time"]) == alarm and "phat.alarm.e_value" in mv.tags
    recal = json.loads(mv.tags["phat.recalibration"])  # the map, versioned on the version
    assert recal["as_of"] == b["last_matured"] and recal["brier_online"] < recal["brier_static"]
    runs = client.search_runs([client.get_experiment_by_name("phat-monitor").experiment_id])
    assert all("monitor.png" in {f.path for f in client.list_artifacts(r.info.run_id)}
               for r in runs)  # fmt: skip
    from phat.lifecycle.production import read_history

    events = [e for _, e in read_history(client, "phat-synth-15m").events]
    alarms = [e for e in events if e["action"] == "alarm"]
    assert len(alarms) == 2 and alarms[0]["on_alarm"] == "fallback"  # two state files, two alarms
    assert pd.Timestamp(alarms[0]["alarm_time"]) == alarm
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
    events = [e for _, e in read_history(client, "phat-synth-15m").events]
    assert events[-1]["action"] == "alarm_cleared"
    assert read_history(client, "phat-synth-15m").stack == []  # alarms move nothing


@pytest.mark.slow
def test_a_state_is_bound_to_the_model_it_watched(tmp_path) -> None:
    """Two monitor calls share one state path while production moves from v1 to v2: the
    second starts a fresh e-process for v2 and says so (v1's state is kept beside it); the
    same state asked to resume for v1 afterwards is refused in one line naming both; a state
    written before states were bound is refused; monitor.state may hold {version}."""
    from mlflow.tracking import MlflowClient

    phat_bin = str(Path(sys.executable).with_name("phat"))
    uri = f"sqlite:///{tmp_path}/m.db"
    small = ("data.synthetic.periods=3000", f"tracking.uri={uri}")

    def verb(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        r = subprocess.run([phat_bin, *args, *small], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
        assert r.returncode == code, r.stdout[-2000:] + r.stderr[-2000:]
        return r

    verb("train", "metrics.bootstrap_n=5")
    verb("train", "metrics.bootstrap_n=5", "seed=7")  # another model_hash: v2
    client = MlflowClient(uri)
    client.set_registered_model_alias("phat-synth-15m", "production", "1")
    state = tmp_path / "s.json"
    verb("monitor", f"monitor.state={state}")
    first = json.loads(state.read_text())
    assert first["model"]["model_version"] == "1" and first["n_matured"] > 0
    client.set_registered_model_alias("phat-synth-15m", "production", "2")  # promoted
    r = verb("monitor", f"monitor.state={state}")
    assert "production moved from v1 to v2: a fresh e-process starts for v2" in r.stdout
    second = json.loads(state.read_text())
    assert second["model"]["model_version"] == "2"
    assert second["model"]["model_hash"] != first["model"]["model_hash"]
    assert json.loads((tmp_path / "s.v1.json").read_text()) == first  # v1's state kept
    r = verb("monitor", f"monitor.state={state}", "monitor.source=model_v1", code=2)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "watched phat-synth-15m v2" in lines[0], lines
    assert "not phat-synth-15m v1" in lines[0] and "Traceback" not in r.stderr
    assert json.loads(state.read_text()) == second  # the refused call changed nothing
    legacy = dict(first)
    legacy.pop("model")
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    r = verb("monitor", f"monitor.state={tmp_path / 'old.json'}", code=2)
    assert "records no model" in r.stderr
    verb("monitor", f'monitor.state="{tmp_path}/t-{{version}}.json"')  # quoted: Hydra's grammar
    assert json.loads((tmp_path / "t-2.json").read_text())["model"]["model_version"] == "2"


# The state file (issue #37): one writer at a time, always whole, a damaged file named and kept.
@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A trained model in production and two batches of bars (the second extends the first)."""
    from mlflow.tracking import MlflowClient

    from phat.data.synthetic import SyntheticConfig, generate

    d = tmp_path_factory.mktemp("state")
    uri = f"sqlite:///{d}/m.db"
    bars = generate(SyntheticConfig(periods=6000, seed=3)).bars
    bars.iloc[:3000].to_parquet(d / "train.parquet")
    bars.iloc[:4500].to_parquet(d / "head.parquet")
    bars.iloc[4300:5200].to_parquet(d / "b2.parquet")  # later batches, each with its history
    bars.iloc[5000:].to_parquet(d / "b3.parquet")
    bars.to_parquet(d / "all.parquet")
    r = _phat(d, uri, "train", f"data.path={d}/train.parquet", "metrics.bootstrap_n=5")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    MlflowClient(uri).set_registered_model_alias("phat-synth-15m", "production", "1")
    return d, uri


def _phat(cwd: Path, uri: str, verb: str, *args: str, env: dict | None = None, popen=False):
    import os

    cmd = [str(Path(sys.executable).with_name("phat")), verb, "data.symbol=SYNTH",
           f"tracking.uri={uri}", *args]  # fmt: skip
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=full, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def _monitor(d: Path, uri: str, batch: str, state: Path, *args: str, **kw):
    return _phat(d, uri, "monitor", f"data.path={d}/{batch}.parquet", f"monitor.state={state}",
                 *args, **kw)  # fmt: skip


@pytest.mark.slow
def test_two_monitors_at_once_equal_the_two_one_after_the_other(watched, tmp_path) -> None:
    """Two `phat monitor` processes resume one state file with two new batches, the second
    started 0.07 s after the first (as in the issue): no matured outcome is lost (the file
    counts the state's outcomes plus both runs' new ones) and, taken in that order, the file
    is what the two one after the other leave; it is valid JSON throughout."""
    import shutil
    import time

    def new_count(out: str) -> int:
        return int(out.split(" newly matured")[0].rsplit(" ", 1)[1])

    d, uri = watched
    start = tmp_path / "start.json"
    assert _monitor(d, uri, "head", start).returncode == 0
    n0 = json.loads(start.read_text())["n_matured"]
    one_by_one = tmp_path / "seq.json"
    shutil.copy(start, one_by_one)
    seq = [_monitor(d, uri, b, one_by_one) for b in ("b2", "b3")]
    assert all(r.returncode == 0 for r in seq), [r.stderr[-1000:] for r in seq]
    want = json.loads(one_by_one.read_text())
    assert want["n_matured"] == n0 + sum(new_count(r.stdout) for r in seq) > n0
    together = tmp_path / "par.json"
    shutil.copy(start, together)
    # the first holds the state it read for 2 s (a slow batch): a second writer would land there
    first = _monitor(d, uri, "b2", together, env={"PHAT_DELAY_AT": "monitor_state_read:2"},
                     popen=True)  # fmt: skip
    time.sleep(0.07)
    second = _monitor(d, uri, "b3", together, popen=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    got = json.loads(together.read_text())
    new = [new_count(o) for o, _ in outs]
    assert got["n_matured"] == n0 + sum(new), (got["n_matured"], n0, new)  # nothing lost
    if new == [new_count(r.stdout) for r in seq]:  # the lock went to the first-started one
        assert got["path"] == want["path"] and got["log_wealth"] == want["log_wealth"]


@pytest.mark.slow
def test_a_source_that_does_not_resolve_is_named_by_the_key_the_user_set(watched) -> None:
    d, uri = watched
    r = _phat(d, uri, "monitor", "monitor.source=model_v9")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "monitor.source=model_v9" in lines[0] and "signal_source" not in lines[0], lines


@pytest.mark.slow
def test_a_held_state_is_refused_after_the_wait_naming_the_holder(watched, tmp_path) -> None:
    import os

    from phat.files import hold

    d, uri = watched
    state = tmp_path / "s.json"
    assert _monitor(d, uri, "head", state).returncode == 0
    before = state.read_bytes()
    with hold(state.with_name("s.json.lock"), 0, "test"):
        r = _monitor(d, uri, "all", state, "monitor.lock_timeout=1")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"pid {os.getpid()} on " in lines[0] and "waited 1 s" in lines[0], lines
    assert state.read_bytes() == before


@pytest.mark.slow
def test_kill_9_while_the_state_is_written_leaves_it_as_before(watched, tmp_path) -> None:
    """kill -9 with the new state on disk but not yet renamed over the old one: the file is the
    old one, whole; the lock died with the process, and the next run ends where one run would."""
    import os
    import signal

    d, uri = watched
    state = tmp_path / "s.json"
    assert _monitor(d, uri, "head", state).returncode == 0
    before = state.read_bytes()
    p = _monitor(d, uri, "all", state, env={"PHAT_PAUSE_AT": "monitor_state"}, popen=True)
    for line in p.stdout:  # type: ignore[union-attr]
        if "PHAT_PAUSED monitor_state" in line:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert state.read_bytes() == before
    r = _monitor(d, uri, "all", state, "monitor.lock_timeout=0")  # the kernel freed the lock
    assert r.returncode == 0, r.stderr[-2000:]
    whole = tmp_path / "one.json"
    assert _monitor(d, uri, "all", whole).returncode == 0
    assert json.loads(state.read_text())["path"] == json.loads(whole.read_text())["path"]


@pytest.mark.slow
def test_a_damaged_state_is_named_kept_and_set_aside_only_when_asked(watched, tmp_path) -> None:
    d, uri = watched
    state = tmp_path / "s.json"
    assert _monitor(d, uri, "head", state).returncode == 0
    good = state.read_bytes()
    cases = {
        "truncated": (good[: len(good) // 2], "not valid JSON at byte"),
        "empty object": (b"{}", "no field"),
        "array": (b"[]", "got an array"),
        "null": (b"null", "got null"),
        "empty": (b"", "empty file"),
    }
    for what, (data, named) in cases.items():
        state.write_bytes(data)
        r = _monitor(d, uri, "all", state)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1, (what, r.stderr[-2000:])
        assert "StateDamaged" in lines[0] and named in lines[0] and str(state) in lines[0], what
        assert "monitor.clear=true" in lines[0] and state.read_bytes() == data, what
    # the remedy the message names works: the old file is kept aside, the next run starts afresh
    r = _phat(d, uri, "monitor", "monitor.clear=true", f"monitor.state={state}")
    assert r.returncode == 0 and "kept aside" in r.stdout, r.stdout + r.stderr
    (kept,) = tmp_path.glob("s.json.damaged-*")
    assert kept.read_bytes() == b"" and not state.exists()
    assert _monitor(d, uri, "all", state).returncode == 0
    fresh = tmp_path / "fresh.json"
    assert _monitor(d, uri, "all", fresh).returncode == 0
    assert json.loads(state.read_text())["path"] == json.loads(fresh.read_text())["path"]
    # a healthy state is left alone by clear; a directory or an unwritable place is refused
    # before any data is read
    r = _phat(d, uri, "monitor", "monitor.clear=true", f"monitor.state={state}")
    assert r.returncode == 0 and state.exists() and "kept aside" not in r.stdout
    for bad, named in ((tmp_path, "is a directory"), (Path("/proc/x/s.json"), "cannot write")):
        r = _monitor(d, uri, "all", bad)
        assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr, r.stderr
