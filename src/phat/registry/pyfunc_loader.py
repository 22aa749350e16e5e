"""The MLflow pyfunc loader of a phat model (`loader_module` of the logged model).

The logged model ships phat's own code (`code/phat`, MLflow's `code_paths`); its loader module
is the shipped verifier (`code/phat_verify.py`, registry/verify_shipped.py), which checks every
shipped file before importing this module from the model's copy (in a fresh environment; from the
same code in the project's environment) and calling `_load_pyfunc(data_path)`: the artifact (data only: safetensors weights
and JSON) is verified (phat.registry.artifact.load_artifact: every file hashed, foreign files
refused) before anything else happens, and when a tracking store is configured
(MLFLOW_TRACKING_URI) its hash is compared with the one recorded on the training run, so a
self-consistent rewrite of the files is refused too. `mlflow.pyfunc.load_model(...)` and
`mlflow models serve` both come through here.

Input (what `mlflow models serve` hands over after its schema enforcement): OHLCV columns and
the time either as the `timestamp` text column or, when that column is absent, as the frame's
index (a `dataframe_split` body's "index"); both are read by phat's own timestamp rules (ISO 8601
with or without an offset, naive = UTC; epoch s/ms/us/ns by magnitude).
Output: one row per input bar, `timestamp` (UTC), `p_hat_raw` and `p_hat`, with None (JSON null)
where no full window exists yet (a request where no bar gets one is refused). A refusal (another timeframe, a gap, bars in the calendar's
closure, bad values) is an MlflowException carrying phat's one-line reason, which the scoring
server answers as HTTP 400 with that message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from phat.tagnames import Tag


class PHatPyfunc:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from phat.errors import PhatError

        try:
            frame = serving_frame(model_input)
            out = self.model.predict(frame)
            if len(out) and not out["p_hat"].notna().any():
                from phat.errors import DataValidationError

                raise DataValidationError(
                    f"no bar scored: {len(out)} bars given, and the model needs "
                    f"{self.model.feature_spec.bars_read} consecutive bars before its first p_hat "
                    "(send more history)"
                )
        except PhatError as e:
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(str(e)) from None
        return serving_output(out)


def serving_frame(model_input: Any) -> pd.DataFrame:
    """The input as phat's loader reads it: time in a `timestamp` column (or a DatetimeIndex),
    taken from the `timestamp` column when it has values, else from the index (a JSON body's
    "index")."""
    from phat.errors import DataValidationError

    if not isinstance(model_input, pd.DataFrame):
        raise DataValidationError(
            f"expected a table of bars (OHLCV columns and a timestamp), got {type(model_input).__name__}"
        )
    frame = model_input
    has_column = "timestamp" in frame.columns and frame["timestamp"].notna().any()
    if has_column:
        stamps = frame["timestamp"]
        text = stamps.astype(str).str.strip()
        if text.str.fullmatch(r"\d+(\.\d+)?").all():  # epoch digits, as a CSV body gives them
            stamps = pd.to_numeric(text)
        return frame.assign(timestamp=stamps).reset_index(drop=True)
    if "timestamp" in frame.columns:
        frame = frame.drop(columns="timestamp")
    if isinstance(frame.index, pd.RangeIndex):
        raise DataValidationError(
            "no timestamps: give a 'timestamp' column (ISO 8601, UTC) or, in a dataframe_split "
            "body, an 'index' of ISO 8601 or epoch timestamps"
        )
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame
    return frame.rename_axis("timestamp").reset_index()


def serving_output(out: pd.DataFrame) -> pd.DataFrame:
    """p_hat per bar keyed by its UTC timestamp; None, not NaN, where there is no p_hat (NaN is
    not JSON)."""
    result = pd.DataFrame({"timestamp": pd.DatetimeIndex(out.index)})
    if "symbol" in out.columns:  # a universe model's rows
        result["symbol"] = out["symbol"].to_numpy()
    for col in ("p_hat_raw", "p_hat"):
        values = out[col].to_numpy(dtype="float64")
        result[col] = pd.Series(
            [float(v) if v == v else None for v in values], dtype=object, index=result.index
        )
    return result


def _load_pyfunc(data_path: str, model_config: Any = None) -> PHatPyfunc:
    from phat.errors import HashMismatch
    from phat.registry.artifact import load_artifact

    model = load_artifact(data_path)
    here = Path(data_path).resolve()
    from phat.registry.store import recorded_tags

    recorded = recorded_tags(here.parent.parent) or recorded_tags(here.parent)  # data/model
    if recorded is not None and recorded[1].get(Tag.MODEL_HASH, "") != model.model_hash:
        raise HashMismatch(
            f"{data_path}: training run {recorded[0]} recorded phat.model_hash "
            f"{recorded[1].get(Tag.MODEL_HASH, '')} but the files hash to {model.model_hash}; "
            "refusing to load"
        )
    return PHatPyfunc(model)
