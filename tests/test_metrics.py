"""Metrics cross-checked against scikit-learn and torchmetrics; ECE on p(up), not top-label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss
from torchmetrics.functional.classification import binary_calibration_error

from phat.evaluation.metrics import (
    block_bootstrap_ci,
    brier,
    ece,
    evaluate_split,
    log_loss,
    reliability_curve,
    roc_auc,
)

RNG = np.random.default_rng(0)
P = RNG.uniform(0.05, 0.95, 5000)
Y = (RNG.random(5000) < P).astype(float)


def test_brier_logloss_auc_match_sklearn() -> None:
    q = np.clip(P + RNG.normal(0, 0.1, len(P)), 0.01, 0.99)
    assert brier(Y, q) == pytest.approx(brier_score_loss(Y, q), abs=1e-12)
    assert log_loss(Y, q) == pytest.approx(sk_log_loss(Y, q), abs=1e-10)
    assert roc_auc(Y, q) == pytest.approx(roc_auc_score(Y, q), abs=1e-12)
    ties = np.round(q, 1)
    assert roc_auc(Y, ties) == pytest.approx(roc_auc_score(Y, ties), abs=1e-12)


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_torchmetrics_binary(n_bins: int) -> None:
    q = np.clip(P * 0.8 + 0.15, 0, 1)  # deliberately miscalibrated
    tm = binary_calibration_error(
        torch.tensor(q), torch.tensor(Y, dtype=torch.long), n_bins=n_bins, norm="l1"
    )
    assert ece(Y, q, n_bins=n_bins) == pytest.approx(float(tm), abs=1e-6)


def test_binary_ece_sees_a_bias_that_top_label_ece_hides() -> None:
    # Half the samples: p=0.6 but up 80% of the time; half: p=0.4 but up 60% of the time.
    # The model is biased 0.2 low everywhere. Top-label confidence is 0.6 in both groups and
    # its accuracy averages to 0.6, so top-label ECE is 0; binary ECE on p(up) is 0.2.
    n = 10000
    p = np.r_[np.full(n, 0.6), np.full(n, 0.4)]
    y = np.r_[(np.arange(n) % 5 != 0), (np.arange(n) % 5 < 3)].astype(float)
    conf = np.maximum(p, 1 - p)
    correct = ((p > 0.5) == (y == 1)).astype(float)
    top_label = abs(correct.mean() - conf.mean())
    assert top_label < 1e-9
    assert ece(y, p, n_bins=15) == pytest.approx(0.2, abs=1e-9)


def test_equal_mass_ece_and_reliability_curve() -> None:
    assert ece(Y, P, n_bins=15, strategy="quantile") < 0.03  # calibrated by construction
    rc = reliability_curve(Y, P, n_bins=10, strategy="quantile")
    assert rc["count"].sum() == len(P) and rc["count"].max() - rc["count"].min() <= 1
    rc_u = reliability_curve(Y, P, n_bins=15)
    np.testing.assert_allclose(rc_u["observed_freq"], rc_u["mean_p"], atol=0.06)
    shifted = np.clip(P + 0.1, 0, 1)
    assert ece(Y, shifted, n_bins=15, strategy="quantile") > 0.08


def test_block_bootstrap_interval_covers_truth_and_is_seeded() -> None:
    ci = block_bootstrap_ci(Y, P, {"brier": brier}, block=50, n_boot=300, seed=1)
    truth = float(np.mean(P * (1 - P)))  # expected Brier of a calibrated forecast
    lo, hi = ci["brier"]
    assert lo < truth < hi and hi - lo < 0.02
    assert ci == block_bootstrap_ci(Y, P, {"brier": brier}, block=50, n_boot=300, seed=1)
    small = block_bootstrap_ci(Y[:500], P[:500], {"brier": brier}, block=50, n_boot=300, seed=1)
    assert small["brier"][1] - small["brier"][0] > hi - lo


def test_evaluate_split_names_and_skill() -> None:
    m = evaluate_split(
        "test", Y, np.clip(P * 1.2 - 0.1, 0, 1), P, base_rate=0.5, n_bins=15, block=96, n_boot=20
    )
    for k in ("brier", "ece", "ece_mass", "log_loss", "auc"):
        assert f"test_{k}" in m and f"test_{k}_raw" in m
        assert m[f"test_{k}_ci_low"] <= m[f"test_{k}_ci_high"]
    assert m["test_brier_climatology"] == pytest.approx(brier(Y, np.full(len(Y), 0.5)))
    assert m["test_brier_skill"] == pytest.approx(1 - m["test_brier"] / m["test_brier_climatology"])
    assert m["test_brier_skill"] > 0


def test_debiased_ece_interval_contains_its_estimate_and_removes_bias() -> None:
    """On perfectly calibrated forecasts (true ECE 0) the plug-in ECE is biased upwards; the
    bootstrap-debiased estimate is smaller on average, and its interval contains it."""
    from phat.evaluation.metrics import debiased_ci, ece

    rng = np.random.default_rng(5)
    plug, deb = [], []
    for _ in range(20):
        p = rng.uniform(0.3, 0.7, 3000)
        y = (rng.uniform(size=3000) < p).astype(float)
        fn = lambda yy, pp: ece(yy, pp, n_bins=15)  # noqa: E731
        est, lo, hi = debiased_ci(y, p, fn, block=50, n_boot=100, seed=1)
        assert lo <= est <= hi
        plug.append(fn(y, p))
        deb.append(est)
    assert np.mean(deb) < 0.8 * np.mean(plug)  # measured: 0.0135 vs 0.0205 (first-order only)
