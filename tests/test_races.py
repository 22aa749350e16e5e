"""Registry integrity with real processes and real faults: two OS processes racing to promote or
roll back, a registry error injected at every registry call of promote and rollback, a store
that does not answer, and `kill -9` of training followed by `phat doctor`."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from phat.errors import PhatError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_races", ROOT / "scripts" / "bench_races.py")
races = importlib.util.module_from_spec(_spec)
sys.modules["bench_races"] = races  # dataclasses look their module up by name
_spec.loader.exec_module(races)  # type: ignore[union-attr]
NAME = "phat-synth-15m"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("races")
    return d, races.train_versions(d, 3)


@pytest.mark.slow
def test_two_process_races_never_both_succeed(store) -> None:
    d, versions = store
    for kind, n in (("promote", 6), ("rollback", 5)):  # 11 races; the script runs 100
        tally, consistent = races.run_races(d, versions, n, kind)
        assert tally.races == n
        assert tally.double == 0, f"{kind}: {tally}"
        assert not tally.errors, tally.errors
        assert tally.single + tally.sequential == n  # someone always wins, the loser says why
        assert consistent, races.state(races.local_uri(d), NAME)


def _snapshot(d: Path) -> dict:
    return races.state(races.local_uri(d), NAME)


class Injected(MlflowException):
    def __init__(self) -> None:
        super().__init__("injected registry fault", error_code="TEMPORARILY_UNAVAILABLE")


def _count_and_fail(monkeypatch, fail_at: int | None) -> list[str]:
    """Wrap every public MlflowClient method: record each call; raise at call `fail_at`."""
    calls: list[str] = []
    for attr in dir(MlflowClient):
        fn = getattr(MlflowClient, attr)
        if attr.startswith("_") or not callable(fn) or isinstance(fn, type):
            continue

        def wrapper(self, *a, __fn=fn, __name=attr, **k):
            calls.append(__name)
            if fail_at is not None and len(calls) == fail_at:
                raise Injected()
            return __fn(self, *a, **k)

        monkeypatch.setattr(MlflowClient, attr, wrapper)
    return calls


@pytest.mark.slow
def test_a_fault_at_every_registry_call_leaves_production_unchanged(store, monkeypatch) -> None:
    from phat.lifecycle.promotion import promote, rollback

    d, (base, a, _) = store
    for verb, settle, cfg_args in (
        ("rollback", (a, base), ("reason=fault",)),
        ("promote", (base, None), (f"version={a}", *races.RELAXED)),
    ):
        uri = races.local_uri(d)
        races._settle(uri, NAME, settle[0], below=settle[1])
        cfg = races._verb(uri, verb, *cfg_args)
        fn = promote if verb == "promote" else rollback
        with monkeypatch.context() as m:  # count the calls of a clean run, then undo it
            calls = _count_and_fail(m, None)
            fn(cfg)
        total = len(calls)
        print(f"{verb}: {total} registry calls: {calls}")
        assert total >= 8, calls
        races._settle(uri, NAME, settle[0], below=settle[1])
        before = _snapshot(d)
        for k in range(1, total + 1):
            with monkeypatch.context() as m:
                _count_and_fail(m, k)
                with pytest.raises((PhatError, MlflowException)):
                    fn(cfg)
            after = _snapshot(d)
            assert after == before, f"{verb}: a fault at call {k} ({calls[k - 1]}) changed {after}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _phat(*args: str, cwd: Path, env: dict | None = None, timeout: int = 120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "phat", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=timeout,
    )


@pytest.mark.slow  # the fast tier's heaviest; make test runs it
def test_an_unreachable_store_costs_seconds_and_the_proxy_still_works(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t = time.perf_counter()
    r = _phat("promote", "version=1", f"tracking.uri={dead}", "tracking.timeout=3", cwd=tmp_path)
    took = time.perf_counter() - t
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and "RegistryUnavailable" in lines[0] and dead in lines[0], lines
    assert took < 30, took
    offline = [f"tracking.uri={dead}", "tracking.timeout=3", "data.synthetic.periods=3000"]
    r = _phat(
        "backtest", "signal_source=proxy", *offline, f"out_dir={tmp_path / 'bt'}", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NOTHING WAS LOGGED" in r.stdout + r.stderr
    assert (tmp_path / "bt" / "decisions.parquet").exists()
    assert (tmp_path / "bt" / "trades.parquet").exists()
    # A consumer bound to production that cannot reach the registry says so on every bar.
    bound = ["signal_source=production", "backtest.start=2025-01-20"]
    r = _phat("backtest", *bound, *offline, f"out_dir={tmp_path / 'bt2'}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    d = pd.read_parquet(tmp_path / "bt2" / "decisions.parquet")
    assert (d["fallback_reason"] == "registry_unavailable").all()
    assert (d["signal_source"] == "proxy").all()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["run_started", "model_logged", "version_registered"])
def test_kill_9_then_doctor_then_a_clean_train_and_promote(tmp_path: Path, point: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    small = ["data.synthetic.periods=3000", "metrics.bootstrap_n=5", f"tracking.uri={uri}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    p = subprocess.Popen(
        [sys.executable, "-m", "phat", "train", *small, f"out_dir={tmp_path / 'crash'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**env, "PHAT_PAUSE_AT": point},
    )
    deadline = time.time() + 120
    for line in p.stdout:  # type: ignore[union-attr]
        if f"PHAT_PAUSED {point}" in line or time.time() > deadline:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    client = MlflowClient(uri)
    (crashed,) = client.search_runs([client.get_experiment_by_name("phat").experiment_id])
    assert crashed.info.status == "RUNNING"  # what kill -9 leaves

    r = _phat("doctor", "--dry-run", f"tracking.uri={uri}", cwd=tmp_path)
    assert r.returncode == 0 and "stale_run" in r.stdout and "process" in r.stdout, r.stdout
    assert client.get_run(crashed.info.run_id).info.status == "RUNNING"  # dry run
    versions = client.search_model_versions(f"name='{NAME}'")
    if point == "version_registered":
        assert "unfinished_version" in r.stdout and len(versions) == 1
        r2 = _phat("promote", f"version={versions[0].version}", f"tracking.uri={uri}", cwd=tmp_path)
        assert r2.returncode != 0 and "not FINISHED" in r2.stderr, r2.stderr
    r = _phat("doctor", f"tracking.uri={uri}", cwd=tmp_path)
    assert r.returncode == 0 and "repaired" in r.stdout, r.stdout
    assert client.get_run(crashed.info.run_id).info.status == "KILLED"
    for mv in client.search_model_versions(f"name='{NAME}'"):
        assert mv.tags.get("phat.debris") and mv.tags["phat.promotable"] == "false"
    exp = client.get_experiment_by_name("phat").experiment_id
    # every logged model's status, read without the store's status filter (issue #37: on
    # MLflow 3.17 it answered nothing while a model was PENDING)
    assert all(not str(m.status).endswith("PENDING") for m in client.search_logged_models([exp]))
    killed = client.get_run(crashed.info.run_id)
    if "phat.promotable" in killed.data.tags:
        assert killed.data.tags["phat.promotable"] == "false"
    r = _phat("doctor", f"tracking.uri={uri}", cwd=tmp_path)
    assert "no crash debris found" in r.stdout
    if point != "version_registered":
        return  # the store is clean; one point (the worst) goes on to train and promote again

    r = _phat("train", *small, f"out_dir={tmp_path / 'clean'}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    good = max(int(v.version) for v in client.search_model_versions(f"name='{NAME}'"))
    r = _phat(
        "promote",
        f"version={good}",
        f"tracking.uri={uri}",
        "data.synthetic.periods=3000",
        *races.RELAXED,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(client.get_model_version_by_alias(NAME, "production").version) == str(good)


@pytest.mark.slow
def test_races_on_a_tracking_server_go_through_the_lease(tmp_path: Path, mlflow_server) -> None:
    """Several machines share one server: no file lock reaches them, the lease must hold."""
    client = MlflowClient(mlflow_server)
    if client.search_registered_models(filter_string=f"name='{NAME}'"):
        client.delete_registered_model(NAME)  # the session server is shared with other tests
    versions = races.train_versions(tmp_path, 3, uri=mlflow_server)
    for kind in ("promote", "rollback"):
        tally, consistent = races.run_races(tmp_path, versions, 1, kind, uri=mlflow_server)
        assert tally.double == 0 and not tally.errors, (kind, tally)
        assert consistent, races.state(mlflow_server, NAME)
    assert "phat.lease" not in (client.get_registered_model(NAME).tags or {})  # released


class _SlowRunsProxy:
    """A real HTTP server in front of the real tracking server: every request is forwarded,
    and `runs/get` answers only after `delay` seconds (a store that times out on one call)."""

    def __init__(self, upstream: str, delay: float):
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if "/runs/get" in self.path:
                    time.sleep(delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                req = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": self.headers.get(
                                                 "Content-Type", "application/json")})  # fmt: skip
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its timeout): nothing to answer

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        import urllib.error  # noqa: F401 - used in the handler

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.slow
def test_doctor_stops_on_a_store_error_and_tags_no_healthy_version(tmp_path, mlflow_server) -> None:
    """A run that cannot be read (a timeout) is not a missing run: the doctor stops with one
    line and changes nothing, instead of tagging a healthy version as debris."""
    client = MlflowClient(mlflow_server)
    exp = client.create_experiment(f"doctor-{tmp_path.name}")
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id, "FINISHED")
    name = f"phat-doctor-{tmp_path.name}".lower().replace("_", "-")
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    r = _phat("doctor", "--dry-run", f"tracking.uri={mlflow_server}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{name} v{mv.version}" not in r.stdout  # a FINISHED run: not debris
    proxy = _SlowRunsProxy(mlflow_server, delay=6)
    try:
        r = _phat("doctor", f"tracking.uri={proxy.url}", "tracking.timeout=2", cwd=tmp_path)
    finally:
        proxy.close()
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and "RegistryUnavailable" in lines[0], lines
    assert "nothing changed" in lines[0] and "repaired" not in r.stdout
    tags = client.get_model_version(name, mv.version).tags
    assert "phat.debris" not in tags and "phat.promotable" not in tags


@pytest.mark.slow
def test_a_logged_model_left_pending_by_kill_9_is_found_and_failed(tmp_path: Path) -> None:
    """A process killed while its logged model is PENDING (between MLflow's create and
    finalize): the doctor finds the model on the installed MLflow, whose SQLite store answers
    a `status = 'PENDING'` filter with nothing (issue #37), and marks it FAILED; the run is
    KILLED and its phat.promotable tag false."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    script = (
        "import os, socket, sys, time, mlflow\n"
        f"mlflow.set_tracking_uri({uri!r})\n"
        "exp = mlflow.set_experiment('phat').experiment_id\n"
        "run = mlflow.start_run(tags={'phat.host': socket.gethostname(), "
        "'phat.pid': str(os.getpid()), 'phat.promotable': 'true'})\n"
        "m = mlflow.initialize_logged_model(name='model', source_run_id=run.info.run_id, "
        "experiment_id=exp)\n"
        "print('PENDING', m.model_id, run.info.run_id, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         cwd=tmp_path, env=env)  # fmt: skip
    _, model_id, run_id = p.stdout.readline().split()  # type: ignore[union-attr]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phat").experiment_id
    assert str(client.get_logged_model(model_id).status).endswith("PENDING")
    assert not list(client.search_logged_models([exp], filter_string="status = 'PENDING'"))
    old = client.create_run(exp, tags={"phat.promotable": "true"})  # killed by an older doctor
    client.set_terminated(old.info.run_id, "KILLED")
    r = _phat("doctor", "--dry-run", f"tracking.uri={uri}", cwd=tmp_path)
    assert r.returncode == 0 and "pending_model" in r.stdout and model_id in r.stdout, r.stdout
    assert "promotable_debris" in r.stdout and old.info.run_id in r.stdout, r.stdout
    r = _phat("doctor", f"tracking.uri={uri}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(client.get_logged_model(model_id).status).endswith("FAILED")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["phat.promotable"] == "false"
    assert client.get_run(old.info.run_id).data.tags["phat.promotable"] == "false"
    r = _phat("doctor", "--dry-run", f"tracking.uri={uri}", cwd=tmp_path)
    assert "no crash debris found" in r.stdout, r.stdout
