"""Reading model versions from the Model Registry: the one place outside the recorder where an
MlflowClient is made, with MLflow's answers turned into phat's (absent -> None where absence is
an answer, else ModelUnavailable / RegistryUnavailable / AccessRefused: store.registry_error)."""

from __future__ import annotations

from typing import Any

from phat.registry.store import is_absent, registry_error


def registry_client() -> Any:
    """An MlflowClient on the configured tracking and registry store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def registered(name: str) -> bool:
    """Whether the registry holds a model `name` (an unreachable store answers as phat's
    errors do: RegistryUnavailable, AccessRefused)."""
    try:
        registry_client().get_registered_model(name)
    except Exception as e:
        if is_absent(e):
            return False
        raise registry_error(e, name) from None
    return True


def get_version(client: Any, name: str, version: str | int, what: str | None = None) -> Any:
    """Version `version` of `name`; absent or unreachable -> one phat error naming `what`."""
    try:
        return client.get_model_version(name, str(version))
    except Exception as e:
        raise registry_error(e, what or f"{name} v{version}") from None


def window_version(name: str, version: str | int | None) -> Any | None:
    """The version whose windows a comparison reads: `version` when given, else the one in
    production, else the newest; None when the model or version does not exist."""
    client = registry_client()
    try:
        if version:
            return client.get_model_version(name, str(version))
        try:
            return client.get_model_version_by_alias(name, "production")
        except Exception as e:
            if not is_absent(e):
                raise
        versions = client.search_model_versions(f"name='{name}'")
        return max(versions, key=lambda v: int(v.version)) if versions else None
    except Exception as e:
        if is_absent(e):
            return None
        raise registry_error(e, f"{name}: reading the evaluation window") from None
