"""What the MLflow store's answers mean, and what a training run recorded: the small part of
the registry side that the pyfunc loader needs too (so it does not import the client)."""

from __future__ import annotations

import os
from pathlib import Path

from phat.errors import ModelUnavailable, RegistryUnavailable


def is_absent(err: Exception) -> bool:
    """The store answered, and the model, version, alias or run is not there (as opposed to:
    the store could not answer). MLflow says INVALID_PARAMETER_VALUE for a missing alias."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and err.error_code in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
        "NOT_FOUND",
    )


def registry_error(err: Exception, what: str) -> Exception:
    """An MLflow exception -> ModelUnavailable (the store answered: no such thing) or
    RegistryUnavailable (the store could not answer), with the existing names where useful."""
    from phat.registry.access import AccessRefused, refusal

    if said := refusal(err):  # the server said no to this user: not an absence, not an outage
        return AccessRefused(said)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if is_absent(err):
        return ModelUnavailable(f"{what}: {first}{_known_names()}")
    return RegistryUnavailable(f"{what}: the registry did not answer ({first})")


def _known_names() -> str:
    from mlflow.tracking import MlflowClient

    try:
        names = sorted(m.name for m in MlflowClient().search_registered_models(max_results=50))
    except Exception:
        return ""
    return f"; registered models here: {names}" if names else "; no model is registered here"


def recorded_tags(model_dir: Path) -> tuple[str, dict[str, str]] | None:
    """(run_id, the training run's tags) for a logged MLflow model directory, when a tracking
    store is configured; None when none is."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not os.environ.get("MLFLOW_TRACKING_URI") or not mlmodel.exists():
        return None
    run_id = (yaml.safe_load(mlmodel.read_text()) or {}).get("run_id")
    if not run_id:
        return None
    from mlflow.tracking import MlflowClient

    try:
        tags = MlflowClient().get_run(run_id).data.tags
    except Exception as e:
        raise registry_error(e, f"run {run_id} of the model at {model_dir}") from None
    return run_id, dict(tags)
