"""A shared MLflow tracking server: PostgreSQL behind it, artifacts proxied, users required.

    python scripts/mlflow_server.py --dir ~/phat-server --host 10.0.0.5 --port 5000 \\
        --pg-port 5432 --allow mlflow.example.internal,10.0.0.0/8         (= make server)

Creates (once) a PostgreSQL 15 cluster under DIR/pg and starts it on --pg-port, with three
databases: `mlflow` (runs and the Model Registry), `mlflow_auth` (MLflow's users and grants) and
`optuna` (shared Optuna studies, its tables created here so that workers starting together do not
race to create them). Every role has a scram-sha-256 password, generated once into DIR/secrets
(owner-only files, never printed); `pg_hba.conf` is rewritten at every start: the local socket,
loopback, this host's address and the networks in --allow, all with passwords, nothing else.
Then `mlflow server --app-name phat-auth` (MLflow's basic-auth plus phat's rule that only MANAGE
on a registered model moves its aliases; phat/registry/server_auth.py) on --host/--port, with
`--allowed-hosts` and `--cors-allowed-origins` built from --host, this machine's names and
--allow, so clients that reach it by those names or addresses are let in and no others.

The admin's password comes from PHAT_SERVER_ADMIN_PASSWORD, else from --admin-password-file (a
file only its owner can read), else it is generated into DIR/secrets/admin-password. Users and
their grants (reader, trainer, manager): scripts/server_users.py. What each role can do, TLS,
backups: docs/scale.md.

A failure at any step is one line and exit 2, and leaves nothing running (a cluster this command
started is stopped). Runs until interrupted: Ctrl-C or SIGTERM stops the server and the cluster
(also when started as a background job, where Ctrl-C is ignored). `initdb` refuses to run as
root; as root the cluster belongs to the `postgres` user (runuser). `start()` is the same thing
as a library (tests/test_sweeps.py starts a throwaway one).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "admin"
ADMIN_ENV = "PHAT_SERVER_ADMIN_PASSWORD"
AUTH_CACHE_S = 60
ROLES = ("phat", "optuna")  # PostgreSQL roles: the server's own (superuser), the workers'


class ServerError(Exception):
    """A step of the set-up failed: one line for the user, exit 2."""


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


def _give_to_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- secrets -----------------------------------------------------------------------------------


def owner_only(path: Path) -> Path:
    """`path` if no one but its owner can read it; else a ServerError naming the fix."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerError(
            f"{path} can be read by others (mode {stat.S_IMODE(mode):o}); chmod 600 {path}"
        )
    return path


def secret(path: Path) -> str:
    """The secret in `path` (owner-only), generated there first if missing."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    value = owner_only(path).read_text().strip()
    if not value:
        raise ServerError(f"{path} is empty; put a password in it or delete it to generate one")
    return value


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass
class Secrets:
    """DIR/secrets: one file per password, and a libpq passfile for each side."""

    dir: Path
    admin_source: str = ""  # where the admin password came from (said, never printed)

    def pg(self, role: str) -> str:
        return secret(self.dir / f"pg-{role}")

    def admin(self, given_file: Path | None) -> str:
        if os.environ.get(ADMIN_ENV):
            self.admin_source = f"the environment variable {ADMIN_ENV}"
            return os.environ[ADMIN_ENV]
        if given_file is not None:
            if not given_file.exists():
                raise ServerError(f"--admin-password-file {given_file}: no such file")
            self.admin_source = str(given_file)
            value = owner_only(given_file).read_text().strip()
            if not value:
                raise ServerError(f"--admin-password-file {given_file} is empty")
            return value
        path = self.dir / "admin-password"
        self.admin_source = f"{path} (generated; owner-only)"
        return secret(path)

    def passfiles(self, pg_port: int) -> tuple[Path, Path]:
        """(the server's passfile: every role; the workers' passfile: `optuna` alone)."""
        server, workers = self.dir / "pgpass", self.dir / "pgpass-optuna"
        _write_private(server, "".join(f"*:{pg_port}:*:{r}:{self.pg(r)}\n" for r in ROLES))
        _write_private(workers, f"*:{pg_port}:optuna:optuna:{self.pg('optuna')}\n")
        return server, workers


# --- who may connect ---------------------------------------------------------------------------


def parse_allow(allow: str) -> tuple[list[str], list[str]]:
    """--allow: comma-separated names, addresses and networks (CIDR). Returns (names and
    addresses for MLflow's Host check, networks for pg_hba.conf); a bad entry is a ServerError."""
    names: list[str] = []
    nets: list[str] = []
    for raw in (a.strip() for a in allow.split(",")):
        if not raw:
            continue
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            if "/" in raw or not all(c.isalnum() or c in "-._*" for c in raw):
                raise ServerError(
                    f"--allow entry {raw!r}: expected a host name, an address or a network "
                    "such as 10.0.0.0/8"
                ) from None
            names.append(raw)
            continue
        nets.append(str(net))
        names.extend(host_patterns(net))
    return names, nets


def host_patterns(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """MLflow's Host check matches shell patterns: a network as the patterns covering it (an
    IPv4 network on an octet boundary is one pattern, `10.*`; one between boundaries is the
    patterns of its sub-networks on the next one). An IPv6 network must be one address."""
    if net.version == 6:
        if net.num_addresses != 1:
            raise ServerError(f"--allow {net}: give IPv6 clients as single addresses")
        return [f"[{net.network_address}]"]
    if net.prefixlen == 32:
        return [str(net.network_address)]
    if net.prefixlen == 0:
        raise ServerError("--allow 0.0.0.0/0 would admit every address; name the networks")
    boundary = -(-net.prefixlen // 8) * 8
    out = []
    for sub in net.subnets(new_prefix=boundary):
        octets = str(sub.network_address).split(".")[: boundary // 8]
        out.append(".".join(octets) + (".*" if boundary < 32 else ""))
    return out


def allowed_hosts(host: str, names: list[str]) -> list[str]:
    """What `--allowed-hosts` gets: loopback, this machine's names, --host, --allow; each also
    with any port (the Host header carries one)."""
    mine = ["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()]
    if host not in ("0.0.0.0", "::"):
        mine.append(host)
    out: list[str] = []
    for h in [*mine, *names]:
        for p in (h, h if h.endswith("*") else f"{h}:*"):
            if p not in out:
                out.append(p)
    return out


def hba(host: str, nets: list[str]) -> str:
    """pg_hba.conf: passwords (scram-sha-256) for the socket, loopback, this host's address and
    the allowed networks; any other address has no entry, so it is refused."""
    rules = ["local all all scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256",
             "host all all ::1/128 scram-sha-256"]  # fmt: skip
    if host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
        with contextlib.suppress(ValueError):  # a name: its clients are in the allowed networks
            rules.append(f"host all all {ipaddress.ip_network(host)} scram-sha-256")
    rules += [f"host all all {n} scram-sha-256" for n in nets]
    return "# written by scripts/mlflow_server.py at every start\n" + "\n".join(rules) + "\n"


def client_host(host: str, names: list[str]) -> str:
    """The address to print for other machines: --host, or (listening on every address) the
    first allowed name, else this machine's name."""
    if host not in ("0.0.0.0", "::"):
        return host
    plain = [n for n in names if "*" not in n and not n.startswith("[")]
    return plain[0] if plain else socket.getfqdn()


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    tracking_uri: str
    optuna_uri: str
    backend_uri: str
    pg_dir: Path
    mlflow: subprocess.Popen | None
    root: Path = field(default_factory=Path)
    admin_source: str = ""
    workers_passfile: Path | None = None

    def admin_password(self) -> str:
        """The admin's password, read where the set-up put it (for scripts and tests)."""
        if os.environ.get(ADMIN_ENV):
            return os.environ[ADMIN_ENV]
        return owner_only(self.root / "secrets" / "admin-password").read_text().strip()

    def stop(self) -> None:
        if self.mlflow is not None:
            try:
                os.killpg(self.mlflow.pid, signal.SIGTERM)
                self.mlflow.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.mlflow.pid, signal.SIGKILL)
        ctl = [pg_bin("pg_ctl"), "-D", str(self.pg_dir)]
        for mode in ("fast", "immediate"):  # fast ends sessions cleanly; a stuck one: immediate
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(_as_owner([*ctl, "-m", mode, "-w", "-t", "60", "stop"]),
                               capture_output=True, timeout=90)  # fmt: skip
            status = subprocess.run(_as_owner([*ctl, "status"]), capture_output=True, timeout=30)
            if status.returncode != 0:  # 3: no server running
                return


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


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if r.returncode != 0:
        said = (r.stderr or r.stdout).strip().splitlines()
        raise ServerError(f"{what} failed: {said[-1] if said else f'exit {r.returncode}'}")
    return r


def _psql(sock: Path, pg_port: int, env: dict, sql: str, db: str = "postgres") -> str:
    """SQL on the cluster through its socket as `phat`, given on stdin (a password in it never
    appears in a process list)."""
    cmd = [pg_bin("psql"), "-h", str(sock), "-p", str(pg_port), "-U", "phat", "-d", db,
           "-v", "ON_ERROR_STOP=1", "-tAq"]  # fmt: skip
    return _run(cmd, "psql", input=sql, env=env).stdout.strip()


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _databases(sock: Path, pg_port: int, env: dict, keys: Secrets) -> None:
    """Roles with their passwords, the three databases, and who may connect to which."""
    for role in ROLES:
        _psql(sock, pg_port, env, (
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='{role}') "
            f"THEN CREATE ROLE {role} LOGIN; END IF; END$$;\n"
            f"ALTER ROLE {role} PASSWORD {_sql_text(keys.pg(role))};"
        ))  # fmt: skip
    for db, owner in (("mlflow", "phat"), ("mlflow_auth", "phat"), ("optuna", "optuna")):
        if _psql(sock, pg_port, env, f"SELECT 1 FROM pg_database WHERE datname='{db}'") != "1":
            _psql(sock, pg_port, env, f"CREATE DATABASE {db} OWNER {owner}")
        _psql(sock, pg_port, env, f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;"
                                  f"GRANT CONNECT ON DATABASE {db} TO {owner};")  # fmt: skip


def start(
    root: Path,
    port: int,
    pg_port: int,
    host: str = "127.0.0.1",
    allow: str = "",
    admin_password_file: Path | None = None,
) -> Server:
    """Set up (once) and start the cluster and the server; a ServerError after the cluster
    started stops it first."""
    root = Path(root).resolve()
    names, nets = parse_allow(allow)
    pg_dir, sock = root / "pg", root / "pg-socket"
    root.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    _give_to_owner(root)
    _give_to_owner(sock)
    keys = Secrets(root / "secrets")
    (root / "secrets").mkdir(mode=0o700, exist_ok=True)
    os.chmod(root / "secrets", 0o700)
    admin_password = keys.admin(admin_password_file)
    server_pass, workers_pass = keys.passfiles(pg_port)
    env = {**os.environ, "PGPASSFILE": str(server_pass)}
    if not (pg_dir / "PG_VERSION").exists():
        pw = root / ".initdb-password"  # read by initdb as the cluster's owner, then removed
        _write_private(pw, keys.pg("phat") + "\n")
        _give_to_owner(pw)
        try:
            _run(_as_owner([pg_bin("initdb"), "-D", str(pg_dir), "-U", "phat",
                            "-A", "scram-sha-256", f"--pwfile={pw}", "-E", "UTF8",
                            "--no-instructions"]), "initdb")  # fmt: skip
        finally:
            pw.unlink(missing_ok=True)
    listen = "*" if host in ("0.0.0.0", "::") else host
    _run(_as_owner([pg_bin("pg_ctl"), "-D", str(pg_dir), "-w", "-l", str(root / "pg.log"),
                    "-o", f"-p {pg_port} -k {sock} -c listen_addresses='{listen}'", "start"]),
         f"starting PostgreSQL on {host}:{pg_port} (log: {root / 'pg.log'})")  # fmt: skip
    server = Server("", "", "", pg_dir, None, root, keys.admin_source, workers_pass)
    try:
        _databases(sock, pg_port, env, keys)
        (pg_dir / "pg_hba.conf").write_text(hba(host, nets))
        _give_to_owner(pg_dir / "pg_hba.conf")
        _psql(sock, pg_port, env, "SELECT pg_reload_conf()")
        return _serve(server, root, sock, host, port, pg_port, names, env, admin_password)
    except BaseException:
        server.stop()
        raise


def _serve(server: Server, root: Path, sock: Path, host: str, port: int, pg_port: int,
           names: list[str], env: dict, admin_password: str) -> Server:  # fmt: skip
    def local(db: str) -> str:  # the server reaches its databases through the socket
        return f"postgresql+psycopg://phat@/{db}?host={sock}&port={pg_port}"

    backend = local("mlflow")
    auth_ini = root / "auth.ini"
    _write_private(auth_ini, (
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {local('mlflow_auth')}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A checked password is remembered for a minute (per worker): without it every request
        # pays a PBKDF2 hash, and a training's hundreds of requests take several times longer.
        # A changed or revoked password may then still work on a worker for up to that minute.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    ))  # fmt: skip
    env = {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(root / "secrets" / "flask-key"),
    }
    # The admin is created once, here, where a refusal (a password MLflow finds too weak) is one
    # line instead of workers that crash and restart.
    _run([sys.executable, "-c", "from mlflow.server.auth import bootstrap_admin_user as b; b()"],
         "creating MLflow's admin user", env=env)  # fmt: skip
    art = root / "artifacts"
    art.mkdir(exist_ok=True)
    public = client_host(host, names)
    hosts = allowed_hosts(host, names + ([public] if public not in names else []))
    origins = [f"http://{h}:{port}" for h in hosts if "*" not in h and not h.startswith("[")]
    log = open(root / "mlflow-server.log", "a")  # noqa: SIM115 - lives as long as the server
    server.mlflow = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "phat-auth",
         "--backend-store-uri", backend, "--artifacts-destination", str(art), "--serve-artifacts",
         "--host", host, "--port", str(port), "--workers", "2",
         "--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if not wait_healthy(f"http://{probe}:{port}", server.mlflow, 180):
        tail = (root / "mlflow-server.log").read_text().strip().splitlines()[-1:]
        raise ServerError(f"mlflow server did not start on {host}:{port}: "
                          f"{tail[0] if tail else 'no output'} (log: {root / 'mlflow-server.log'})")  # fmt: skip
    server.tracking_uri = f"http://{public}:{port}"
    server.backend_uri = backend
    server.optuna_uri = f"postgresql+psycopg://optuna@{public}:{pg_port}/optuna"
    # Optuna creates its tables (and PostgreSQL enum types) on first use; two workers doing that
    # at once collide ("duplicate key ... pg_type"). Create them here, once, before any worker.
    import optuna

    os.environ["PGPASSFILE"] = env["PGPASSFILE"]
    optuna.storages.RDBStorage(f"postgresql+psycopg://optuna@/optuna?host={sock}&port={pg_port}")
    return server


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="phat-server", help="cluster, artifacts, secrets, logs")
    ap.add_argument("--port", type=int, default=5000, help="MLflow server port")
    ap.add_argument("--pg-port", type=int, default=5432, help="PostgreSQL port")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    ap.add_argument("--allow", default="", help="names, addresses and networks (CIDR) that "
                    "clients use or come from, comma-separated")  # fmt: skip
    ap.add_argument("--admin-password-file", type=Path, default=None,
                    help=f"the admin's password (owner-only file); or set {ADMIN_ENV}")  # fmt: skip
    a = ap.parse_args()
    # Ctrl-C and a service manager's stop (SIGTERM) both stop MLflow and PostgreSQL, also
    # when started where SIGINT is ignored (a background job of a script): both started in
    # sessions of their own, a signal to this process group alone would leave them running.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        server = start(Path(a.dir), a.port, a.pg_port, a.host, a.allow, a.admin_password_file)
    except (ServerError, FileNotFoundError, subprocess.TimeoutExpired) as e:
        print(f"ServerError: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    print(f"MLflow tracking server: {server.tracking_uri}  (users required; PostgreSQL behind it)")
    print(f"  admin user '{ADMIN}', password from {server.admin_source}")
    print("  add users: python scripts/server_users.py add NAME --role reader|trainer|manager")
    print("On every machine:")
    print(f"  export MLFLOW_TRACKING_URI={server.tracking_uri}")
    print("  export MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<its password>")
    print(f"  Optuna storage for shared studies: hydra.sweeper.storage={server.optuna_uri}")
    print(f"  with PGPASSFILE=<a copy of {server.workers_passfile}, mode 600>")
    print("Ctrl-C (or SIGTERM) stops the server and the database.", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
