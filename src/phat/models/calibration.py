"""Calibrators that map a model's raw logit to p_hat, stored as explicit JSON parameters.

Fitting is scikit-learn's (`CalibratedClassifierCV` over a `FrozenEstimator`, so only the
calibrator is fitted, on the calibration span); the fitted state is then read out into plain
numbers and applied here with numpy, so an artifact never needs a pickle:

- platt:       p = 1 / (1 + exp(a * z + b))                (Platt 1999; sklearn "sigmoid");
               a <= 0 is enforced: a fit that would invert the model's ranking (a > 0) is
               replaced by the slope-0 fit, the calibration span's base rate
- temperature: p = sigmoid(2 * beta * z)                   (Guo et al. 2017; sklearn treats a
               binary decision value z as the logit pair (-z, z), hence the 2; T = 1/(2 beta))
- isotonic:    p = interp(clip(z, x_min, x_max), x_thresholds, y_thresholds)
- none:        p = sigmoid(z)   (research only: tagged phat.promotable=false)

tests/test_calibration.py checks that the stored parameters reproduce scikit-learn's
`predict_proba` on fresh inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phat.errors import ConfigError
from phat.hashing import canonical_json

METHODS = ("platt", "temperature", "isotonic", "none")
_SKLEARN_METHOD = {"platt": "sigmoid", "temperature": "temperature", "isotonic": "isotonic"}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _passthrough_estimator() -> Any:
    """A fitted binary classifier whose decision_function is the first input column.

    Lets scikit-learn's calibration fit on logits that came from any model (torch included).
    """
    from sklearn.base import BaseEstimator, ClassifierMixin

    class LogitPassthrough(ClassifierMixin, BaseEstimator):
        def fit(self, X: Any, y: Any) -> LogitPassthrough:
            self.classes_ = np.array([0, 1])
            return self

        def decision_function(self, X: Any) -> np.ndarray:
            return np.asarray(X, dtype=np.float64)[:, 0]

        def predict(self, X: Any) -> np.ndarray:
            return (self.decision_function(X) > 0).astype(int)

    est = LogitPassthrough()
    est.classes_ = np.array([0, 1])
    return est


def fit_sklearn(method: str, logits: np.ndarray, y: np.ndarray) -> Any:
    """scikit-learn's CalibratedClassifierCV fitted on (logit, y) with the model frozen."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    clf = CalibratedClassifierCV(
        FrozenEstimator(_passthrough_estimator()), method=_SKLEARN_METHOD[method]
    )
    clf.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(y).astype(int))
    return clf


@dataclass(frozen=True)
class Calibrator:
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration={self.method!r}: expected one of {list(METHODS)}")

    @property
    def promotable(self) -> bool:
        return self.method != "none"

    def predict(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "none":
            return sigmoid(z)
        if self.method == "platt":
            return sigmoid(-(self.params["a"] * z + self.params["b"]))
        if self.method == "temperature":
            return sigmoid(2.0 * self.params["beta"] * z)
        x = np.asarray(self.params["x_thresholds"], dtype=np.float64)
        yv = np.asarray(self.params["y_thresholds"], dtype=np.float64)
        return np.interp(np.clip(z, x[0], x[-1]), x, yv)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(method=d["method"], params=dict(d.get("params") or {}))


def fit_calibrator(method: str, logits: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit on the calibration span's raw logits and labels; returns explicit parameters."""
    if method not in METHODS:
        raise ConfigError(f"calibration={method!r}: expected one of {list(METHODS)}")
    if method == "none":
        return Calibrator("none")
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ConfigError("calibration span holds one outcome only; cannot fit a calibrator")
    cal = fit_sklearn(method, logits, y).calibrated_classifiers_[0].calibrators[0]
    if method == "platt":
        a, b = float(cal.a_), float(cal.b_)
        if a > 0:
            # sklearn's Platt form is sigmoid(-(a z + b)): a > 0 would invert the model's
            # ranking (seen on short real samples where the calibration span happens to be
            # anti-correlated). A calibrator must be non-decreasing; the best slope-0 fit is
            # the calibration span's base rate.
            rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
            return Calibrator(
                "platt", {"a": 0.0, "b": float(-np.log(rate / (1 - rate))), "clamped_from_a": a}
            )
        return Calibrator("platt", {"a": a, "b": b})
    if method == "temperature":
        beta = float(np.asarray(cal.beta_))
        return Calibrator("temperature", {"beta": beta, "temperature": 1.0 / (2.0 * beta)})
    return Calibrator(
        "isotonic",
        {
            "x_thresholds": [float(v) for v in cal.X_thresholds_],
            "y_thresholds": [float(v) for v in cal.y_thresholds_],
        },
    )
