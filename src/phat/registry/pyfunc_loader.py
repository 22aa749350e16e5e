"""The MLflow pyfunc loader of a phat model (`loader_module` of the logged model).

MLflow imports this module from the installed phat, never from the model's files, and calls
`_load_pyfunc(data_path)`: the artifact (data only: safetensors weights and JSON) is verified
(phat.registry.artifact.load_artifact: every file hashed, foreign files refused) before anything
else happens, and when a tracking store is configured (MLFLOW_TRACKING_URI) its hash is compared
with the one recorded on the training run, so a self-consistent rewrite of the files is refused
too. `mlflow.pyfunc.load_model("models:/...")` and `mlflow models serve` both come through here.

Input: an OHLCV frame indexed by a DatetimeIndex (MLflow's schema enforcement drops columns the
signature does not name, so the time is the index here; `phat.load(...).predict` also takes a
timestamp column). Output: `p_hat_raw` and `p_hat` per bar on the same index (NaN where the
window is incomplete). Bars of another timeframe or calendar are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd


class PHatPyfunc:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.model.predict(model_input)


def recorded_hash(model_dir: Path) -> tuple[str, str] | None:
    """(run_id, phat.model_hash recorded on the training run) for a logged MLflow model
    directory, when a tracking store is configured; None when none is."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not os.environ.get("MLFLOW_TRACKING_URI") or not mlmodel.exists():
        return None
    run_id = (yaml.safe_load(mlmodel.read_text()) or {}).get("run_id")
    if not run_id:
        return None
    from mlflow.tracking import MlflowClient

    from phat.registry.client import registry_error

    try:
        tags = MlflowClient().get_run(run_id).data.tags
    except Exception as e:
        raise registry_error(e, f"run {run_id} of the model at {model_dir}") from None
    return run_id, tags.get("phat.model_hash", "")


def _load_pyfunc(data_path: str, model_config: Any = None) -> PHatPyfunc:
    from phat.errors import HashMismatch
    from phat.registry.artifact import load_artifact

    model = load_artifact(data_path)
    here = Path(data_path).resolve()
    recorded = recorded_hash(here.parent.parent) or recorded_hash(here.parent)  # data/model
    if recorded is not None and recorded[1] != model.model_hash:
        raise HashMismatch(
            f"{data_path}: training run {recorded[0]} recorded phat.model_hash {recorded[1]} but "
            f"the files hash to {model.model_hash}; refusing to load"
        )
    return PHatPyfunc(model)
