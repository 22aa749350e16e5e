"""Calibrators: stored JSON parameters reproduce scikit-learn; calibration fixes what it should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phat.errors import ConfigError
from phat.evaluation.metrics import ece
from phat.models.calibration import (
    P_MIN,
    Calibrator,
    fit_calibrator,
    fit_isotonic,
    fit_sklearn,
    sigmoid,
)

RNG = np.random.default_rng(3)
TRUE_LOGIT = RNG.normal(0, 1, 6000)
Y = (RNG.random(6000) < sigmoid(TRUE_LOGIT)).astype(int)
OVERCONFIDENT = 3.0 * TRUE_LOGIT + 0.4  # too sharp and biased
FRESH = np.r_[RNG.normal(0, 4, 2000), [-50, -10, 0, 10, 50]]


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_stored_params_reproduce_sklearn(method: str) -> None:
    cal = fit_calibrator(method, OVERCONFIDENT, Y)
    if method == "isotonic":  # scikit-learn's isotonic is ours with the prior set to 0
        cal = Calibrator("isotonic", fit_isotonic(OVERCONFIDENT, Y, prior=0.0))
    ref = fit_sklearn(method, OVERCONFIDENT, Y).predict_proba(FRESH.reshape(-1, 1))[:, 1]
    ref = np.clip(ref, P_MIN, 1 - P_MIN)  # phat never outputs exactly 0 or 1
    np.testing.assert_allclose(cal.predict(FRESH), ref, rtol=1e-10, atol=1e-12)
    again = Calibrator.from_dict(json.loads(cal.to_json()))  # through JSON, no pickle
    np.testing.assert_array_equal(again.predict(FRESH), cal.predict(FRESH))


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_calibration_lowers_ece_of_an_overconfident_model(method: str) -> None:
    fit_idx, test_idx = np.arange(3000), np.arange(3000, 6000)
    cal = fit_calibrator(method, OVERCONFIDENT[fit_idx], Y[fit_idx])
    raw_ece = ece(Y[test_idx], sigmoid(OVERCONFIDENT[test_idx]), n_bins=15)
    cal_ece = ece(Y[test_idx], cal.predict(OVERCONFIDENT[test_idx]), n_bins=15)
    assert raw_ece > 0.08
    assert cal_ece < raw_ece / 2


def test_temperature_recovers_the_scale() -> None:
    cal = fit_calibrator("temperature", 3.0 * TRUE_LOGIT, Y)
    # p = sigmoid(2*beta*z) with z = 3*logit: 2*beta*3 ~ 1.
    assert 2 * cal.params["beta"] * 3.0 == pytest.approx(1.0, abs=0.1)
    assert cal.params["temperature"] == pytest.approx(1 / (2 * cal.params["beta"]))


def test_none_is_sigmoid_and_not_promotable() -> None:
    cal = fit_calibrator("none", OVERCONFIDENT, Y)
    np.testing.assert_array_equal(cal.predict(FRESH), np.clip(sigmoid(FRESH), P_MIN, 1 - P_MIN))
    assert not cal.promotable and fit_calibrator("platt", OVERCONFIDENT, Y).promotable


def test_isotonic_is_monotone_and_never_reaches_0_or_1() -> None:
    cal = fit_calibrator("isotonic", OVERCONFIDENT, Y)
    z = np.sort(FRESH)
    p = cal.predict(z)
    assert (np.diff(p) >= 0).all() and p.min() > 0 and p.max() < 1
    # Plain PAV puts pure blocks at exactly 0 and 1 on the extremes; the prior pulls them in.
    plain = Calibrator("isotonic", fit_isotonic(OVERCONFIDENT, Y, prior=0.0))
    assert plain._map(z).min() == 0.0 and plain._map(z).max() == 1.0
    assert 0.0 < p.min() < 0.05 and 0.95 < p.max() < 1.0


def test_isotonic_prior_is_the_beta_posterior_mean_of_each_block() -> None:
    # Two separable blocks: 3 downs at low logits, 3 ups at high logits, base rate 1/2.
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    p = Calibrator("isotonic", fit_isotonic(z, y, prior=2.0)).predict(z)
    np.testing.assert_allclose(p, [1 / 5] * 3 + [4 / 5] * 3)  # (k + 2 * 0.5) / (n + 2)


@pytest.mark.parametrize("method", ["none", "platt", "temperature", "isotonic", "auto"])
def test_no_calibrated_output_is_exactly_0_or_1(method: str) -> None:
    extreme = np.r_[OVERCONFIDENT * 50, [-1e6, 1e6, np.finfo(float).max, -np.finfo(float).max]]
    cal = fit_calibrator(method, OVERCONFIDENT * 50, Y)
    p = cal.predict(extreme)
    assert (p > 0).all() and (p < 1).all()


def test_auto_picks_by_held_out_log_loss_and_records_it() -> None:
    # An over-sharp model: platt/temperature/isotonic all beat "none" on held-out data.
    cal = fit_calibrator("auto", OVERCONFIDENT, Y, purge=1)
    losses = cal.params["inner_log_loss"]
    assert set(losses) == {"none", "platt", "temperature", "isotonic"}
    assert cal.method == min(losses, key=losses.get) and cal.method != "none"
    assert cal.params["selected_by"] == "auto" and cal.promotable
    # A model that is already calibrated: "none" is a legitimate, promotable choice.
    good = fit_calibrator("auto", TRUE_LOGIT, Y)
    assert good.params["inner_log_loss"]["none"] <= good.params["inner_log_loss"]["platt"] + 0.01
    assert good.promotable


def test_a_constant_calibrator_has_no_resolution_and_is_not_promotable() -> None:
    anti = -OVERCONFIDENT  # Platt clamps to the base rate: a constant forecast
    cal = fit_calibrator("platt", anti, Y)
    assert cal.params["resolution"] == "none" and not cal.promotable
    assert fit_calibrator("platt", OVERCONFIDENT, Y).params.get("resolution", "ok") == "ok"


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
