"""Calibrators that map a model's raw logit to p_hat, stored as explicit JSON parameters.

Fitting is scikit-learn's (`CalibratedClassifierCV` over a `FrozenEstimator`, so only the
calibrator is fitted, on the calibration span); the fitted state is then read out into plain
numbers and applied here with numpy, so an artifact never needs a pickle:

- platt:       p = 1 / (1 + exp(a * z + b))                (Platt 1999; sklearn "sigmoid");
               a <= 0 is enforced: a fit that would invert the model's ranking (a > 0) is
               replaced by the slope-0 fit, the calibration span's base rate
- temperature: p = sigmoid(2 * beta * z)                   (Guo et al. 2017; sklearn treats a
               binary decision value z as the logit pair (-z, z), hence the 2; T = 1/(2 beta))
- isotonic:    p = interp(clip(z, x_min, x_max), x_thresholds, y_thresholds), where each
               PAV block's rate is the posterior mean under a Beta prior of strength
               `ISOTONIC_PRIOR` = 2 pseudo-samples at the calibration base rate pi,
               (k + 2 pi) / (n + 2), re-made monotone by weighted PAV: a block of 3 "all up"
               bars says 0.6-0.8, not 1.0, and small blocks shrink toward climatology
- none:        p = sigmoid(z)   (research only: tagged phat.promotable=false)
- a universe's per-asset map (`with_asset_correction`): any of these, then
               p = sigmoid(slope * logit(p) + intercept), a Platt correction fitted on the
               asset's calibration bars and shrunk toward the identity by n / (n + shrink)
- auto:        fits none, platt, temperature and isotonic on the first 2/3 of the calibration
               span (time order), scores each by log loss on the last 1/3 (after a purge of
               the horizon), and keeps Platt (two parameters, able to fall back to the base
               rate) unless another method beats it by more than one standard error of the
               per-sample loss difference (the one-standard-error rule); refits the choice on
               the whole span and records the losses

Every output is clipped to [P_MIN, 1 - P_MIN] (1e-6): no calibrated p_hat is exactly 0 or 1,
so one bar can never cost an infinite log loss. A calibrator whose output on its own span is
near-constant (standard deviation under `MIN_RESOLUTION_SD` = 0.001, a tenth of a percentage
point) has no resolution: it is reported so and the model is not promotable.

tests/test_calibration.py checks that the stored parameters reproduce scikit-learn's
`predict_proba` on fresh inputs (isotonic: with the prior set to 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phat.errors import ConfigError
from phat.hashing import canonical_json
from phat.settings import CALIBRATION_METHODS

METHODS = CALIBRATION_METHODS  # declared with the calibration.method setting (settings)
FITTED = ("none", "platt", "temperature", "isotonic")  # what `auto` chooses among
P_MIN = 1e-6
ISOTONIC_PRIOR = 2.0
MIN_RESOLUTION_SD = 1e-3
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
        """Calibrated on purpose (not the research `none`, unless `auto` chose it on held-out
        data) and with resolution (not a constant)."""
        chosen = self.method != "none" or self.params.get("selected_by") == "auto"
        return chosen and self.params.get("resolution", "ok") != "none"

    def predict(self, logits: np.ndarray) -> np.ndarray:
        p = np.clip(self._map(np.asarray(logits, dtype=np.float64)), P_MIN, 1.0 - P_MIN)
        fix = self.params.get("asset_correction")
        if fix is None:
            return p
        q = sigmoid(fix["slope"] * np.log(p / (1.0 - p)) + fix["intercept"])
        return np.clip(q, P_MIN, 1.0 - P_MIN)

    def with_asset_correction(self, correction: dict[str, float] | None) -> Calibrator:
        """This map followed by an asset's correction (`fit_asset_correction`); None: as is."""
        if correction is None:
            return self
        return Calibrator(self.method, {**self.params, "asset_correction": dict(correction)})

    def _map(self, z: np.ndarray) -> np.ndarray:
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


def fit_calibrator(
    method: str, logits: np.ndarray, y: np.ndarray, purge: int = 1, identity_first: bool = False
) -> Calibrator:
    """Fit on the calibration span's raw logits and labels (in time order); returns explicit
    parameters, with `resolution: none` recorded when the fitted map is constant there.
    `purge`: samples dropped between auto's inner fit and evaluation parts (the horizon).
    `identity_first` (the ladder): Platt keeps the identity map unless its fit is significant
    (`platt_or_identity`)."""
    if method not in METHODS:
        raise ConfigError(f"calibration={method!r}: expected one of {list(METHODS)}")
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    cal = _fit_auto(z, y, purge) if method == "auto" else _fit(method, z, y)
    if identity_first:
        cal = platt_or_identity(cal, z, y, purge)
    p = cal.predict(z)
    if len(p) and float(np.std(p)) < MIN_RESOLUTION_SD:
        cal = Calibrator(cal.method, {**cal.params, "resolution": "none"})
    return cal


def _fit(method: str, z: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "none":
        return Calibrator("none")
    if len(np.unique(y)) < 2:
        raise ConfigError("calibration span holds one outcome only; cannot fit a calibrator")
    if method == "isotonic":
        return Calibrator("isotonic", fit_isotonic(z, y, ISOTONIC_PRIOR))
    cal = fit_sklearn(method, z, y).calibrated_classifiers_[0].calibrators[0]
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
    beta = float(np.asarray(cal.beta_))
    return Calibrator("temperature", {"beta": beta, "temperature": 1.0 / (2.0 * beta)})


# Chi-square with 2 degrees of freedom, 5%: Platt's two parameters against the identity map.
IDENTITY_LR_CRITICAL = 5.991


def platt_or_identity(
    cal: Calibrator, z: np.ndarray, y: np.ndarray, horizon_bars: int
) -> Calibrator:
    """Platt nests the identity map (a = -1, b = 0: p = sigmoid(z)), the simpler calibrator
    for a model fitted by log loss (every model here is). The fitted Platt map is kept only
    when it raises the calibration span's log likelihood significantly: the likelihood-ratio
    statistic, divided by `horizon_bars` (overlapping labels share information), against
    chi-square(2) at 5%. Otherwise the identity is kept, still as method platt (a fitted
    outcome of it), with the statistic recorded. On noisy signals Platt's slope fitted on a
    few thousand bars shrinks or stretches a model that was right (docs/results.md)."""
    if cal.method != "platt":
        return cal
    yy = np.asarray(y, dtype=np.float64)
    ident = Calibrator("platt", {"a": -1.0, "b": 0.0})
    nll_platt = float(log_losses(yy, cal.predict(z)).sum())
    nll_ident = float(log_losses(yy, ident.predict(z)).sum())
    lr = 2.0 * (nll_ident - nll_platt) / max(int(horizon_bars), 1)
    if lr > IDENTITY_LR_CRITICAL:
        return Calibrator("platt", {**cal.params, "identity_lr": round(lr, 6)})
    # (a slope-0 fit, clamped from an inverting one, is judged the same way: on a constant
    # forecast it is the calibration span's base rate against the train span's)
    return Calibrator(
        "platt", {"a": -1.0, "b": 0.0, "identity_lr": round(lr, 6), "fitted_a": cal.params["a"],
                  "fitted_b": cal.params["b"]},
    )  # fmt: skip


def fit_asset_correction(p: np.ndarray, y: np.ndarray, shrink_bars: float) -> dict[str, float]:
    """One asset's correction of the pooled map: Platt on logit(p) over the asset's calibration
    bars (slope s, intercept c; sklearn's fit, a ranking-inverting slope clamped to 0), shrunk
    toward the identity (1, 0) with weight w = n / (n + shrink_bars): an asset with few bars
    keeps the pooled map, one with many gets its own."""
    y = np.asarray(y)
    n = len(y)
    w = n / (n + float(shrink_bars)) if n else 0.0
    if n < 2 or len(np.unique(y)) < 2:
        s, c, w = 1.0, 0.0, 0.0
    else:
        z = np.log(p / (1.0 - p))
        fit = _fit("platt", z, y).params
        s, c = -float(fit["a"]), -float(fit["b"])
    return {
        "slope": 1.0 + w * (s - 1.0),
        "intercept": w * c,
        "weight": round(w, 6),
        "n": float(n),
        "fitted_slope": s,
        "fitted_intercept": c,
    }


def fit_isotonic(z: np.ndarray, y: np.ndarray, prior: float) -> dict[str, Any]:
    """Isotonic (PAV, scikit-learn's IsotonicRegression) with each block's rate shrunk to
    (k + prior * pi) / (n + prior), then weighted PAV again so the map stays non-decreasing.
    prior = 0 gives scikit-learn's isotonic calibration exactly."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(z, y.astype(np.float64))
    x_thr = np.asarray(iso.X_thresholds_, dtype=np.float64)
    y_thr = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if prior > 0:
        fitted = iso.predict(z)
        values = np.unique(y_thr)  # one per block, increasing
        block = np.searchsorted(values, fitted)
        n = np.bincount(block, minlength=len(values)).astype(np.float64)
        k = np.bincount(block, weights=y.astype(np.float64), minlength=len(values))
        pi = float(np.mean(y))
        rate = (k + prior * pi) / (n + prior)
        smooth = IsotonicRegression().fit(values, rate, sample_weight=n + prior).predict(values)
        y_thr = smooth[np.searchsorted(values, y_thr)]
    return {
        "x_thresholds": [float(v) for v in x_thr],
        "y_thresholds": [float(v) for v in y_thr],
        "prior": float(prior),
    }


def log_losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-sample log loss; p is clipped to [1e-12, 1 - 1e-12] (a raw model's or a rule's
    probability may round to 0 or 1; calibrated p_hat never does: P_MIN)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _fit_auto(z: np.ndarray, y: np.ndarray, purge: int) -> Calibrator:
    n = len(z)
    cut = (2 * n) // 3
    fit_part, eval_part = slice(0, cut), slice(min(cut + max(purge, 0), n), n)
    if cut < 20 or n - eval_part.start < 20:
        raise ConfigError(
            f"calibration=auto needs more calibration samples than {n} to choose on a held-out "
            "part; choose a method (calibration=platt)"
        )
    per_sample: dict[str, np.ndarray] = {}
    for m in FITTED:
        try:
            c = _fit(m, z[fit_part], y[fit_part])
        except ConfigError:
            continue
        per_sample[m] = log_losses(y[eval_part], c.predict(z[eval_part]))
    losses = {m: float(v.mean()) for m, v in per_sample.items()}
    best = "platt" if "platt" in per_sample else min(losses, key=losses.get)

    def beats_best_by_one_se(m: str) -> bool:
        diff = per_sample[m] - per_sample[best]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        return bool(diff.mean() < -se)

    challengers = [m for m in per_sample if m != best and beats_best_by_one_se(m)]
    if challengers:
        best = min(challengers, key=lambda m: losses[m])
    chosen = _fit(best, z, y)
    return Calibrator(
        best,
        {
            **chosen.params,
            "selected_by": "auto",
            "inner_log_loss": {m: round(v, 8) for m, v in losses.items()},
        },
    )
