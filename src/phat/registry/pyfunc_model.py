"""MLflow models-from-code definition of the phat pyfunc (no cloudpickled Python object).

MLflow logs this file as the model's code; `load_context` reads the phat artifact directory
(`artifacts["phat_model"]`: safetensors weights + JSON contracts) through
`phat.artifact.load_artifact`, which verifies `phat.model_hash` before any prediction.

Input: an OHLCV frame indexed by a DatetimeIndex (MLflow's schema enforcement drops columns the
signature does not name, so the time must be the index here; `phat.load(...).predict` also
takes a timestamp column). Output: `p_hat_raw` and `p_hat` per bar on the same index (NaN where
the window is incomplete). Bars of another timeframe are refused.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class PHatPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from phat.registry.artifact import load_artifact

        self.model = load_artifact(context.artifacts["phat_model"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.model.predict(model_input)


mlflow.models.set_model(PHatPyfunc())
