"""Calibrators: stored JSON parameters reproduce scikit-learn; calibration fixes what it should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phat.errors import ConfigError
from phat.evaluation.metrics import ece
from phat.models.calibration import Calibrator, fit_calibrator, fit_sklearn, sigmoid

RNG = np.random.default_rng(3)
TRUE_LOGIT = RNG.normal(0, 1, 6000)
Y = (RNG.random(6000) < sigmoid(TRUE_LOGIT)).astype(int)
OVERCONFIDENT = 3.0 * TRUE_LOGIT + 0.4  # too sharp and biased
FRESH = np.r_[RNG.normal(0, 4, 2000), [-50, -10, 0, 10, 50]]


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_stored_params_reproduce_sklearn(method: str) -> None:
    cal = fit_calibrator(method, OVERCONFIDENT, Y)
    ref = fit_sklearn(method, OVERCONFIDENT, Y).predict_proba(FRESH.reshape(-1, 1))[:, 1]
    np.testing.assert_allclose(cal.predict(FRESH), ref, rtol=1e-10, atol=1e-12)
    again = Calibrator.from_dict(json.loads(cal.to_json()))  # through JSON, no pickle
    np.testing.assert_array_equal(again.predict(FRESH), cal.predict(FRESH))


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_calibration_lowers_ece_of_an_overconfident_model(method: str) -> None:
    fit_idx, test_idx = np.arange(3000), np.arange(3000, 6000)
    cal = fit_calibrator(method, OVERCONFIDENT[fit_idx], Y[fit_idx])
    raw_ece = ece(Y[test_idx], sigmoid(OVERCONFIDENT[test_idx]))
    cal_ece = ece(Y[test_idx], cal.predict(OVERCONFIDENT[test_idx]))
    assert raw_ece > 0.08
    assert cal_ece < raw_ece / 2


def test_temperature_recovers_the_scale() -> None:
    cal = fit_calibrator("temperature", 3.0 * TRUE_LOGIT, Y)
    # p = sigmoid(2*beta*z) with z = 3*logit: 2*beta*3 ~ 1.
    assert 2 * cal.params["beta"] * 3.0 == pytest.approx(1.0, abs=0.1)
    assert cal.params["temperature"] == pytest.approx(1 / (2 * cal.params["beta"]))


def test_none_is_sigmoid_and_not_promotable() -> None:
    cal = fit_calibrator("none", OVERCONFIDENT, Y)
    np.testing.assert_array_equal(cal.predict(FRESH), sigmoid(FRESH))
    assert not cal.promotable and fit_calibrator("platt", OVERCONFIDENT, Y).promotable


def test_isotonic_is_monotone_and_bounded() -> None:
    cal = fit_calibrator("isotonic", OVERCONFIDENT, Y)
    z = np.sort(FRESH)
    p = cal.predict(z)
    assert (np.diff(p) >= 0).all() and p.min() >= 0 and p.max() <= 1


def test_bad_method_and_one_class_refused() -> None:
    with pytest.raises(ConfigError, match="calibration='beta'"):
        fit_calibrator("beta", OVERCONFIDENT, Y)
    with pytest.raises(ConfigError, match="one outcome only"):
        fit_calibrator("platt", OVERCONFIDENT[:10], np.ones(10))


def test_sigmoid_is_stable_at_extremes() -> None:
    p = sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert np.isfinite(p).all() and p[0] == 0.0 and p[2] == 0.5 and p[-1] == 1.0


def test_platt_never_inverts_the_model() -> None:
    anti = -OVERCONFIDENT  # a model whose ranking is backwards on the calibration span
    assert fit_sklearn("platt", anti, Y).calibrated_classifiers_[0].calibrators[0].a_ > 0
    cal = fit_calibrator("platt", anti, Y)
    assert cal.params["a"] == 0.0 and cal.params["clamped_from_a"] > 0
    np.testing.assert_allclose(cal.predict(FRESH), Y.mean(), rtol=1e-12)  # the base rate
    ok = fit_calibrator("platt", OVERCONFIDENT, Y)
    assert ok.params["a"] < 0 and "clamped_from_a" not in ok.params
