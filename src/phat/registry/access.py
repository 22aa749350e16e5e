"""Who may change what on a shared tracking server (make server; docs/scale.md).

A server started by scripts/mlflow_server.py requires users (MLflow's basic-auth) and, for a
registered model's aliases and lifecycle tags, MANAGE on that model (phat's rule on the server,
phat/registry/server_auth.py). The lifecycle verbs (promote, rollback, monitor) ask first, before
they change anything, so a user without MANAGE gets one line naming the permission, the model and
how to get it instead of a refusal halfway through. A local store (SQLite) and a server without
users have no such rule: nothing is asked.

Credentials are read the way MLflow's clients read them: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, else the [mlflow] section of ~/.mlflow/credentials.
"""

from __future__ import annotations

from phat.errors import PhatError

SET_CREDENTIALS = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                   "mlflow_tracking_username and mlflow_tracking_password under [mlflow] in "
                   "~/.mlflow/credentials)")  # fmt: skip


class AccessRefused(PhatError):
    """The tracking server refused the credentials, or the user lacks a permission."""

    reason = "access_refused"


def require_manage(uri: str, name: str, verb: str) -> None:
    """Refuse (AccessRefused) unless the signed-in user may manage registered model `name`: an
    admin, or MANAGE on it. Nothing is asked of a store that is not an HTTP server, nor of a
    server without users."""
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)

    def ask(endpoint: str, **params: str):
        return http_request(creds, endpoint, "GET", max_retries=0, timeout=30,
                            raise_on_status=False, params=params or None)  # fmt: skip

    me = ask("/api/2.0/mlflow/users/current")
    if me.status_code == 404:  # no users on this server (no basic-auth app)
        return
    if me.status_code == 401:
        raise AccessRefused(credentials_refused(uri, creds.username))
    if me.status_code != 200:
        raise AccessRefused(f"{uri} answered {me.status_code} when asked who is signed in")
    user = me.json()["user"]
    if user.get("is_admin"):
        return
    got = ask("/api/3.0/mlflow/users/permissions/get", username=user["username"],
              resource_type="registered_model", resource_id=name)  # fmt: skip
    permission = (
        got.json().get("permission", "NO_PERMISSIONS")
        if got.status_code == 200
        else (f"no answer ({got.status_code})")
    )
    if permission != "MANAGE":
        raise AccessRefused(
            f"phat {verb} needs MANAGE on registered model '{name}'; user '{user['username']}' "
            f"has {permission} (the server's admin grants it: python scripts/server_users.py "
            f"grant {user['username']} --role manager --model {name}); nothing was changed"
        )


def credentials_refused(uri: str, username: str | None) -> str:
    if not username:
        return f"the tracking server {uri} requires a user: {SET_CREDENTIALS}"
    return (
        f"the tracking server {uri} refused user '{username}' (wrong password?): {SET_CREDENTIALS}"
    )


def refusal(err: BaseException, uri: str | None = None) -> str | None:
    """The line for an MLflow error that is the server saying no (401, 403), else None."""
    code = getattr(err, "error_code", None)
    if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
        import os

        from mlflow.utils.credentials import read_mlflow_creds

        return credentials_refused(
            uri or os.environ.get("MLFLOW_TRACKING_URI", "the tracking server"),
            read_mlflow_creds().username,  # the environment's, else ~/.mlflow/credentials'
        )
    if code == "PERMISSION_DENIED":
        text = str(err).strip()
        first = text.splitlines()[0] if text else "permission denied"
        return f"the tracking server refused: {first[:300]}"
    return None
