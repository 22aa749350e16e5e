"""An MLflow tracking server backed by PostgreSQL, with a proxied artifact store.

    python scripts/mlflow_server.py --dir ~/phat-server --port 5000      (= make server)

Creates (once) a PostgreSQL 15 cluster under DIR/pg with two databases, `mlflow` (runs and the
Model Registry) and `optuna` (shared Optuna studies, its tables created here so that workers
starting together do not race to create them), starts it on --pg-port, then runs
`mlflow server` on --port with `--artifacts-destination DIR/artifacts`: clients send artifacts
through the server (no shared filesystem needed). Prints the two URIs to give every machine:

    export MLFLOW_TRACKING_URI=http://<this host>:5000
    phat train -m hparams_search=logistic_optuna \\
        hydra.sweeper.storage=postgresql+psycopg://phat@<this host>:5432/optuna

`initdb` refuses to run as root; as root the cluster belongs to the `postgres` user (runuser).
Runs until interrupted (Ctrl-C stops the server and the cluster). `start()` is the same thing
as a library (tests/test_sweeps.py starts a throwaway one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def pg_bin(name: str) -> str:
    """A PostgreSQL program: from PATH, else Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed (apt install postgresql-15)")


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    tracking_uri: str
    optuna_uri: str
    backend_uri: str
    pg_dir: Path
    mlflow: subprocess.Popen

    def stop(self) -> None:
        try:
            os.killpg(self.mlflow.pid, signal.SIGTERM)
            self.mlflow.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.mlflow.pid, signal.SIGKILL)
        subprocess.run(
            _as_owner([pg_bin("pg_ctl"), "-D", str(self.pg_dir), "-m", "fast", "stop"]),
            capture_output=True,
            timeout=60,
        )


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll the server's /health until it answers 200 (True), or its process exits or the
    time runs out (False)."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.5)


def start(root: Path, port: int, pg_port: int, host: str = "127.0.0.1") -> Server:
    root = Path(root).resolve()
    pg_dir, sock = root / "pg", root / "pg-socket"
    root.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    if not (pg_dir / "PG_VERSION").exists():
        subprocess.run(
            _as_owner([pg_bin("initdb"), "-D", str(pg_dir), "-U", "phat", "-A", "trust",
                       "-E", "UTF8", "--no-instructions"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    subprocess.run(
        _as_owner([pg_bin("pg_ctl"), "-D", str(pg_dir), "-w", "-l", str(root / "pg.log"),
                   "-o", f"-p {pg_port} -k {sock} -c listen_addresses={host}", "start"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    for db in ("mlflow", "optuna"):
        have = subprocess.run(
            [pg_bin("psql"), "-h", host, "-p", str(pg_port), "-U", "phat", "-d", "postgres",
             "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{db}'"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        if have != "1":
            subprocess.run(
                [pg_bin("createdb"), "-h", host, "-p", str(pg_port), "-U", "phat", db],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
    backend = f"postgresql+psycopg://phat@{host}:{pg_port}/mlflow"
    art = root / "artifacts"
    art.mkdir(exist_ok=True)
    log = open(root / "mlflow-server.log", "a")  # noqa: SIM115 - lives as long as the server
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--backend-store-uri", backend, "--artifacts-destination",
         str(art), "--serve-artifacts", "--host", host, "--port", str(port), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    url = f"http://{host}:{port}"
    if not wait_healthy(url, proc, 180):
        Server(url, "", backend, pg_dir, proc).stop()
        raise RuntimeError(
            f"mlflow server did not start: {(root / 'mlflow-server.log').read_text()[-3000:]}"
        )
    optuna_uri = f"postgresql+psycopg://phat@{host}:{pg_port}/optuna"
    # Optuna creates its tables (and PostgreSQL enum types) on first use; two workers doing that
    # at once collide ("duplicate key ... pg_type"). Create them here, once, before any worker.
    import optuna

    optuna.storages.RDBStorage(optuna_uri)
    return Server(url, optuna_uri, backend, pg_dir, proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="phat-server", help="cluster, artifacts and logs live here")
    ap.add_argument("--port", type=int, default=5000, help="MLflow server port")
    ap.add_argument("--pg-port", type=int, default=5432, help="PostgreSQL port")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    a = ap.parse_args()
    server = start(Path(a.dir), a.port, a.pg_port, a.host)
    print(f"MLflow tracking server: {server.tracking_uri}  (backend {server.backend_uri})")
    print(f"  export MLFLOW_TRACKING_URI={server.tracking_uri}")
    print(f"  Optuna storage for shared studies: hydra.sweeper.storage={server.optuna_uri}")
    print("Ctrl-C stops the server and the database.", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
