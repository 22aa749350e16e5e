"""The tracking server's app: MLflow's basic-auth, plus phat's lifecycle rule.

    mlflow server --app-name phat-auth ...      (scripts/mlflow_server.py = make server)

MLflow's basic-auth lets anyone with EDIT on a registered model move its aliases (setting an
alias is an update there), so a trainer who may register versions could also move `production`
under a trading policy. phat's lifecycle asks more: only a user with MANAGE on the registered
model (or an admin) may move its aliases (promote, roll back), write its registered-model tags
(the production history, the lease) or write a version's lifecycle tags (alarms, excluded
assets, the recalibration). Everything else is MLflow's own rule, unchanged.

The hook runs after basic-auth's own (registered after it), so a request reaching it is
authenticated and allowed by MLflow; a refusal is a 403 whose message names the rule.
This module is imported only by the server (`mlflow.app` entry point in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from phat.tagnames import Tag

# (method, path after /api/2.0/mlflow or /ajax-api/2.0/mlflow) -> whether the request's tag key
# matters (False: every such request needs MANAGE).
_GUARDED = {
    ("POST", "/registered-models/alias"): False,
    ("DELETE", "/registered-models/alias"): False,
    ("POST", "/registered-models/set-tag"): False,
    ("DELETE", "/registered-models/delete-tag"): False,
    ("POST", "/model-versions/set-tag"): True,
    ("DELETE", "/model-versions/delete-tag"): True,
}
_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")


def lifecycle_tag(key: str) -> bool:
    """A version tag only a manager writes: what the policy trades on or is warned by."""
    return key.startswith(Tag.ALARM_PREFIX) or key in (Tag.EXCLUDED_ASSETS, Tag.RECALIBRATION)


def route(method: str, path: str) -> bool | None:
    """None: not a route phat guards; else whether the request's tag key decides."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            return _GUARDED.get((method, path[len(prefix) :]))
    return None


def _needs_manage() -> Any:
    from flask import jsonify, request
    from mlflow.server import auth

    by_key = route(request.method, request.path)
    if by_key is None or (by_key and not lifecycle_tag(str(auth._get_request_param("key")))):
        return None
    if auth.sender_is_admin():
        return None
    name = auth._get_request_param("name")
    if auth._get_registered_model_permission(name).can_manage:
        return None
    user = auth.authenticate_request().username
    res = jsonify({
        "error_code": "PERMISSION_DENIED",
        "message": f"phat: user '{user}' needs MANAGE on registered model '{name}' to move its "
        "aliases or lifecycle tags",
    })  # fmt: skip
    res.status_code = 403
    return res


def create_app(app: Any = None) -> Any:
    """MLflow's basic-auth app with phat's rule added after its own check."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth

    flask_app = app or flask_app
    served = basic_auth(flask_app)
    flask_app.before_request(_needs_manage)
    return served
