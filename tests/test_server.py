"""The shared tracking server (make server = scripts/mlflow_server.py; docs/scale.md).

The end-to-end test is two machines on one: the server runs in a network namespace of its own
(a second host, joined to this one by a veth pair, addresses from TEST-NET-2, RFC 5737, which
are never routed anywhere) and every client connects through the server's address from outside
it, never through 127.0.0.1. Needs root and iproute2 (CI has both); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import mlflow_server as ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHAT = str(Path(sys.executable).with_name("phat"))
SERVER_IP, CLIENT_IP = "198.51.100.2", "198.51.100.1"  # TEST-NET-2: documentation addresses
NAME = "phat-synth-15m"


# --- the pieces, without a server ------------------------------------------------------------


def test_allowed_names_and_networks_become_host_patterns_and_pg_hba_rules() -> None:
    names, nets = ms.parse_allow("mlflow.example.internal, 10.0.0.0/8,172.16.0.0/12,192.0.2.7")
    assert nets == ["10.0.0.0/8", "172.16.0.0/12", "192.0.2.7/32"]
    assert names[:2] == ["mlflow.example.internal", "10.*"]
    assert names[2:18] == [f"172.{i}.*" for i in range(16, 32)] and names[18] == "192.0.2.7"
    hosts = ms.allowed_hosts("192.0.2.2", names)
    assert {"192.0.2.2", "192.0.2.2:*", "mlflow.example.internal:*", "10.*"} <= set(hosts)
    assert not any(h.startswith("192.168") for h in hosts)  # MLflow's private default is gone
    rules = ms.hba("192.0.2.2", nets).splitlines()
    assert "host all all 192.0.2.2/32 scram-sha-256" in rules
    assert "host all all 10.0.0.0/8 scram-sha-256" in rules
    assert all(r.endswith("scram-sha-256") for r in rules if not r.startswith("#"))
    assert not any("trust" in r for r in rules)


@pytest.mark.parametrize(
    ("allow", "said"),
    [
        ("10.0.0.0/33", "expected a host name, an address or a network"),
        ("bad name!", "expected a host name"),
        ("0.0.0.0/0", "would admit every address"),
        ("fd00::/8", "single addresses"),
    ],
)
def test_a_bad_allow_entry_is_named(allow: str, said: str) -> None:
    with pytest.raises(ms.ServerError, match=said):
        ms.parse_allow(allow)


def test_a_secret_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret-enough-for-a-test\n")
    os.chmod(f, 0o644)
    with pytest.raises(ms.ServerError, match=rf"chmod 600 {f}"):
        ms.secret(f)
    os.chmod(f, 0o600)
    assert ms.secret(f) == "s3cret-enough-for-a-test"
    made = ms.secret(tmp_path / "new")  # generated, owner-only
    assert len(made) >= 24 and (tmp_path / "new").stat().st_mode & 0o077 == 0


def test_the_server_rule_guards_aliases_and_lifecycle_tags_only() -> None:
    from phat.registry.server_auth import lifecycle_tag, route

    assert route("POST", "/api/2.0/mlflow/registered-models/alias") is False
    assert route("DELETE", "/ajax-api/2.0/mlflow/registered-models/alias") is False
    assert route("POST", "/api/2.0/mlflow/model-versions/set-tag") is True
    assert route("POST", "/api/2.0/mlflow/model-versions/create") is None
    assert route("GET", "/api/2.0/mlflow/registered-models/alias") is None
    assert lifecycle_tag("phat.alarm.time") and lifecycle_tag("phat.excluded_assets")
    assert not lifecycle_tag("phat.promotable")


# --- a failed start --------------------------------------------------------------------------


def _pg_running(pg_dir: Path) -> bool:
    r = subprocess.run(ms._as_owner([ms.pg_bin("pg_ctl"), "-D", str(pg_dir), "status"]),
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode == 0


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="phat-srv-", dir="/tmp"))  # reachable by postgres


@pytest.mark.slow
def test_a_failed_start_is_one_line_and_leaves_nothing_running() -> None:
    """MLflow cannot take its port (PostgreSQL has it): one line, exit 2, the cluster that the
    command started is stopped."""
    try:
        ms.pg_bin("initdb")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = _scratch()
    try:
        port = ms.free_port()
        r = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "mlflow_server.py"), "--dir", str(root),
             "--port", str(port), "--pg-port", str(port)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
        assert lines[0].startswith("ServerError: mlflow server did not start"), lines
        assert (root / "pg" / "PG_VERSION").exists() and not _pg_running(root / "pg")
        assert "Traceback" not in r.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- two machines on one ---------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def second_host() -> Iterator[str]:
    """A network namespace with SERVER_IP, reached from here (CLIENT_IP) over a veth pair;
    yields its name. Removed after (the pair goes with it)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a second host needs root and iproute2 (ip netns)")
    ns, here, there = f"phat{os.getpid()}", f"pa{os.getpid() % 100000}", f"pb{os.getpid() % 100000}"
    try:
        try:
            _ip("netns", "add", ns)
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", there, "netns", ns)
            _ip("addr", "add", f"{CLIENT_IP}/30", "dev", here)
            _ip("link", "set", here, "up")
            _ip("-n", ns, "addr", "add", f"{SERVER_IP}/30", "dev", there)
            _ip("-n", ns, "link", "set", there, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            pytest.skip(f"no second host here ({' '.join(e.cmd)}: {e.stderr.decode().strip()})")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Served:
    """`make server` running on the second host; `.printed` is what it told the user."""

    def __init__(self, ns: str, root: Path):
        self.ns, self.root = ns, root
        self.proc: subprocess.Popen | None = None
        self.printed: list[str] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PHAT_"))}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "make", "-s", "-C", str(REPO), "server",
             f"SERVER_DIR={self.root}", f"SERVER_HOST={SERVER_IP}", f"SERVER_ALLOW={CLIENT_IP}",
             "SERVER_PORT=5000", "PG_PORT=5432"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.printed = []
        deadline = time.monotonic() + 300
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.printed.append(line.rstrip())
            if line.startswith("Ctrl-C (or SIGTERM) stops"):
                return
            assert time.monotonic() < deadline, "\n".join(self.printed)
        raise AssertionError("make server ended:\n" + "\n".join(self.printed))

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Ctrl-C, as a user stops it (or `sig`: SIGTERM, as a service manager does), then
        wait until every process it started is gone: `make` may exit before the server
        script has stopped MLflow and PostgreSQL."""
        if self.proc and self.proc.poll() is None:
            group = self.proc.pid
            os.killpg(group, sig)
            try:
                self.proc.wait(timeout=240)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
            raise AssertionError(f"make server's processes (group {group}) did not stop")

    def said(self, start: str) -> str:
        """The value a printed `export X=...` or `key=value` line gives."""
        line = next(x.strip() for x in self.printed if start in x)
        return line.split(start, 1)[1].split()[0]


def _run_count(client) -> int:
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=10000))


def _anonymous(url: str, host: str | None = None) -> int:
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/registered-models/create", data=json.dumps({"name": "x"}).encode(),
        headers={"Content-Type": "application/json", **({"Host": host} if host else {})},
        method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_two_machines_share_a_server_that_asks_who_you_are(tmp_path: Path) -> None:
    """`make server` on the second host's address; from this host: anonymous requests are
    refused; a trainer's two sweep workers share one Optuna study over the network with the
    printed storage and a password file; a reader cannot promote (one line, exit 2, production
    unchanged) nor a trainer move an alias; a manager promotes and rolls back; the printed
    remedy makes a reader a manager; a restart keeps users, grants and data."""
    import optuna
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    import bench_races as races

    try:
        ms.pg_bin("initdb")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = _scratch()
    with second_host() as ns:
        server = Served(ns, root)
        try:
            server.start()
            uri = server.said("export MLFLOW_TRACKING_URI=")
            storage = server.said("hydra.sweeper.storage=")
            assert uri == f"http://{SERVER_IP}:5000" and f"@{SERVER_IP}:5432/" in storage
            printed = "\n".join(server.printed)
            admin_pw = (root / "secrets" / "admin-password").read_text().strip()
            assert admin_pw not in printed and "secrets/admin-password" in printed
            assert (root / "secrets" / "admin-password").stat().st_mode & 0o077 == 0

            # Nobody gets in without a user; a Host this server does not answer to is refused.
            assert _anonymous(uri) == 401
            assert _anonymous(uri, host="evil.example") == 403

            base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PHAT_"))}
            base["MLFLOW_TRACKING_URI"] = uri

            def as_user(user: str, password: str) -> dict[str, str]:
                return {
                    **base,
                    "MLFLOW_TRACKING_USERNAME": user,
                    "MLFLOW_TRACKING_PASSWORD": password,
                }

            admin = as_user("admin", admin_pw)

            def users(*args: str) -> subprocess.CompletedProcess:
                r = subprocess.run(
                    [sys.executable, str(REPO / "scripts" / "server_users.py"), *args,
                     "--password-dir", str(tmp_path / "users")],
                    capture_output=True, text=True, timeout=120, env=admin,
                )  # fmt: skip
                assert r.returncode == 0, r.stdout + r.stderr[-3000:]
                return r

            for user, role in (("carol", "reader"), ("alice", "trainer"), ("bob", "manager")):
                users("add", user, "--role", role, *(["--model", NAME] if role != "reader" else []))
            pw = {
                u: (tmp_path / "users" / u).read_text().strip() for u in ("carol", "alice", "bob")
            }
            carol, alice, bob = (as_user(u, pw[u]) for u in ("carol", "alice", "bob"))

            # A trainer's two sweep workers share one study in PostgreSQL, over the network.
            passfile = tmp_path / "pgpass"
            shutil.copy(server.said("with PGPASSFILE=<a copy of ").rstrip(","), passfile)
            os.chmod(passfile, 0o600)
            workers_env = {**alice, "PGPASSFILE": str(passfile)}
            os.environ["PGPASSFILE"] = str(passfile)
            try:
                optuna.create_study(study_name="shared", storage=storage, direction="minimize")
                common = ("hparams_search=logistic_optuna", f"hydra.sweeper.storage={storage}",
                          "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=1",
                          "data.synthetic.periods=3000", "metrics.bootstrap_n=10",
                          "tracking.timeout=120")  # fmt: skip
                workers = [
                    subprocess.Popen(
                        [
                            PHAT,
                            "train",
                            "-m",
                            *common,
                            f"hydra.sweeper.sampler.seed={seed}",
                            f"hydra.sweep.dir={tmp_path}/w{seed}",
                        ],
                        cwd=tmp_path,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        env=workers_env,
                    )  # fmt: skip
                    for seed in (1, 2)
                ]
                outs = [w.communicate(timeout=600)[0] for w in workers]
                bad = [
                    (w.returncode, o[-5000:])
                    for w, o in zip(workers, outs, strict=True)
                    if w.returncode
                ]
                if bad:
                    pytest.fail("\n".join(f"worker exit {rc}:\n{o}" for rc, o in bad))
                study = optuna.load_study(study_name="shared", storage=storage)
                done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                assert len(study.trials) == 2 and len(done) == 2, outs
            finally:
                os.environ.pop("PGPASSFILE", None)
            # Without the password file the database refuses the workers' role.
            r = subprocess.run(
                [sys.executable, "-c", f"import optuna; optuna.load_study(study_name='shared', "
                 f"storage='{storage}')"],
                capture_output=True, text=True, timeout=120,
                env={**base, "PGPASSFILE": str(tmp_path / "none")},
            )  # fmt: skip
            assert r.returncode != 0 and "password" in r.stderr.lower(), r.stderr[-2000:]

            def verb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
                return subprocess.run([PHAT, *args, races.DATA], cwd=tmp_path,
                                      capture_output=True, text=True, timeout=300, env=env)  # fmt: skip

            for seed in (1, 2):  # the trainer registers two versions
                r = verb(alice, "train", "metrics.bootstrap_n=5", f"seed={seed}")
                assert r.returncode == 0, r.stderr[-3000:]
            client = MlflowClient(uri)  # reads as the manager
            os.environ.update(MLFLOW_TRACKING_USERNAME="bob", MLFLOW_TRACKING_PASSWORD=pw["bob"])
            try:
                # A reader cannot promote: one line naming the permission, nothing changed.
                runs_before = _run_count(client)
                r = verb(carol, "promote", "version=1", *races.RELAXED)
                lines = r.stderr.strip().splitlines()
                assert r.returncode == 2 and len(lines) == 1, r.stdout[-2000:] + r.stderr[-2000:]
                assert lines[0].startswith(
                    f"AccessRefused: phat promote needs MANAGE on registered model '{NAME}'; "
                    "user 'carol' has READ"
                ), lines
                assert "production" not in client.get_registered_model(NAME).aliases
                assert _run_count(client) == runs_before
                # A trainer may register versions but not move an alias, even by hand.
                os.environ.update(
                    MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=pw["alice"]
                )
                with pytest.raises(MlflowException, match="needs MANAGE"):
                    MlflowClient(uri).set_registered_model_alias(NAME, "production", "1")
                os.environ.update(
                    MLFLOW_TRACKING_USERNAME="bob", MLFLOW_TRACKING_PASSWORD=pw["bob"]
                )
                # A wrong password, and none at all: one line naming what to set.
                r = verb(as_user("carol", "wrong"), "promote", "version=1", *races.RELAXED)
                assert r.returncode == 2 and r.stderr.strip().splitlines() == [
                    f"AccessRefused: the tracking server {uri} refused user 'carol' (wrong "
                    "password?): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                    "mlflow_tracking_username and mlflow_tracking_password under [mlflow] in "
                    "~/.mlflow/credentials)"
                ], r.stderr[-2000:]
                r = verb(base, "train", "metrics.bootstrap_n=5")
                assert r.returncode == 2, r.stderr[-2000:]
                assert (
                    r.stderr.strip()
                    .splitlines()[-1]
                    .startswith(
                        f"AccessRefused: the tracking server {uri} requires a user: set "
                        "MLFLOW_TRACKING_USERNAME"
                    )
                ), r.stderr[-2000:]

                # The manager promotes both and rolls back.
                for v in ("1", "2"):
                    r = verb(bob, "promote", f"version={v}", *races.RELAXED)
                    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
                assert client.get_model_version_by_alias(NAME, "production").version == "2"
                r = verb(bob, "rollback", "reason=test")
                assert r.returncode == 0, r.stderr[-2000:]
                assert client.get_model_version_by_alias(NAME, "production").version == "1"

                # The remedy a refusal names works: the admin runs it, the reader then may.
                r = verb(carol, "promote", "version=2", *races.RELAXED)
                remedy = r.stderr.split("(the server's admin grants it: ", 1)[1].split(")")[0]
                assert remedy.startswith("python scripts/server_users.py grant carol"), remedy
                users(*remedy.split()[2:])
                r = verb(carol, "promote", "version=2", *races.RELAXED)
                assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
                assert client.get_model_version_by_alias(NAME, "production").version == "2"

                # Artifacts went through the server (proxied), into its own store.
                assert list((root / "artifacts").rglob("model.json"))

                # A restart keeps users, grants and data.
                server.stop()
                assert not _pg_running(root / "pg")
                server.start()
                assert _anonymous(uri) == 401
                assert client.get_model_version_by_alias(NAME, "production").version == "2"
                r = verb(alice, "rollback", "reason=not yours")
                assert r.returncode == 2 and "user 'alice' has EDIT" in r.stderr, r.stderr[-2000:]
                r = verb(alice, "monitor")  # alarms and exclusions are a manager's too
                assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
                    "AccessRefused: phat monitor needs MANAGE"
                ), r.stderr[-2000:]
                # The manager's credentials from MLflow's credentials file instead of variables.
                home = tmp_path / "home"
                (home / ".mlflow").mkdir(parents=True)
                (home / ".mlflow" / "credentials").write_text(
                    f"[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = {pw['bob']}\n"
                )
                r = verb({**base, "HOME": str(home)}, "rollback", "reason=test")
                assert r.returncode == 0, r.stderr[-2000:]
                assert client.get_model_version_by_alias(NAME, "production").version == "1"
            finally:
                for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                    os.environ.pop(k, None)
            server.stop(signal.SIGTERM)  # a service manager's stop: the same clean stop
            assert not _pg_running(root / "pg")
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
