"""Users of the shared tracking server (make server) and what each may do.

    export MLFLOW_TRACKING_URI=http://10.0.0.5:5000
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$(cat phat-server/secrets/admin-password)
    python scripts/server_users.py add alice --role trainer --model phat-btc-15m
    python scripts/server_users.py add bob --role manager --model phat-btc-15m
    python scripts/server_users.py add carol --role reader
    python scripts/server_users.py grant alice --role manager --model phat-btc-15m

Run as the server's admin (MLFLOW_TRACKING_USERNAME/PASSWORD, or --admin-password-file). A new
user's password comes from PHAT_NEW_USER_PASSWORD, else it is generated into
`--password-dir/NAME` (owner-only) and the path is said, never the password.

The three roles (docs/scale.md), on the server's default of READ for every signed-in user:

- reader: nothing more. Loads and scores any model, reads every run; cannot log, register,
  promote or roll back.
- trainer: MANAGE on the training, walk-forward and backtest experiments (its runs; MANAGE
  because a sweep's duplicate parent run, made when machines start one sweep at once, deletes
  itself), EDIT on the named registered models: registers versions; cannot move an alias
  (phat's rule on the server needs MANAGE on the model for that) nor write alarms or exclusions.
- manager: EDIT on every phat experiment, MANAGE on the named registered models: promotes,
  rolls back, monitors (alarms, exclusions, recalibration), grants others on those models.

The registered models and experiments are created here by the admin when missing, so that no
trainer becomes their manager by creating them first (MLflow gives MANAGE to a creator).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "src" / "phat" / "conf" / "tracking"
TRAINER_VERBS = ("default", "walkforward", "backtest")  # the tracking/<verb>.yaml a trainer logs to


def experiments(verbs: tuple[str, ...] | None = None) -> list[str]:
    """phat's experiment names, read from its tracking configs (one home: conf/tracking)."""
    names = []
    for f in sorted(CONF.glob("*.yaml")):
        if verbs is None or f.stem in verbs:
            name = (yaml.safe_load(f.read_text()) or {}).get("experiment")
            if name and name not in names:
                names.append(str(name))
    return names


ROLES = {
    # role: (experiments and the permission on them, permission on the named models)
    "reader": ([], None),
    "trainer": ([(e, "MANAGE") for e in experiments(TRAINER_VERBS)], "EDIT"),
    "manager": ([(e, "EDIT") for e in experiments()], "MANAGE"),
}


def _password(name: str, folder: Path) -> tuple[str, str]:
    """(the new user's password, where it is): PHAT_NEW_USER_PASSWORD or a generated file."""
    if os.environ.get("PHAT_NEW_USER_PASSWORD"):
        return os.environ["PHAT_NEW_USER_PASSWORD"], "PHAT_NEW_USER_PASSWORD"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name
    value = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, f"{path} (owner-only)"


def grant(uri: str, user: str, role: str, models: list[str]) -> list[str]:
    """The role's grants for `user`, creating the experiments and models first when missing;
    returns what was granted, one line each."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    from phat.registry.tracking import EXPERIMENT_KIND

    client, auth = MlflowClient(uri), AuthServiceClient(uri)
    exps, model_permission = ROLES[role]
    if model_permission and not models:
        raise SystemExit(f"--role {role} needs --model NAME (the registered models it works on)")
    done = []
    for name, permission in exps:
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        if exp is None:
            client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
        auth.grant_user_permission(user, "experiment", exp_id, permission)
        done.append(f"{permission} on experiment {name}")
    for name in models if model_permission else []:
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=f"phat p_hat models, {name}")
        auth.grant_user_permission(user, "registered_model", name, model_permission)
        done.append(f"{model_permission} on registered model {name}")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("add", "grant"), help="add a user, or grant a role")
    ap.add_argument("name")
    ap.add_argument("--role", choices=tuple(ROLES), required=True)
    ap.add_argument("--model", action="append", default=[], help="a registered model (repeat)")
    ap.add_argument("--server", default=os.environ.get("MLFLOW_TRACKING_URI"))
    ap.add_argument("--admin-password-file", type=Path, default=None)
    ap.add_argument("--password-dir", type=Path, default=Path("phat-users"))
    a = ap.parse_args()
    if not a.server:
        raise SystemExit("set MLFLOW_TRACKING_URI (or --server) to the tracking server's URL")
    if a.admin_password_file is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = a.admin_password_file.read_text().strip()
    if not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise SystemExit("set MLFLOW_TRACKING_USERNAME/PASSWORD to the admin's (or pass "
                         "--admin-password-file)")  # fmt: skip
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    try:
        if a.action == "add":
            password, where = _password(a.name, a.password_dir)
            AuthServiceClient(a.server).create_user(a.name, password)
            print(f"user {a.name} created; password in {where}")
        for line in grant(a.server, a.name, a.role, a.model):
            print(f"  {a.name}: {line}")
    except MlflowException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"server_users: {first[:300]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
