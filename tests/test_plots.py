"""The reliability diagram and its per-bin intervals."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from phat.evaluation.plots import reliability_diagram, wilson_interval


def test_wilson_interval_matches_scipy_and_widens_for_sparse_bins() -> None:
    for k, n in ((3, 4), (40, 100), (700, 1000)):
        lo, hi = wilson_interval(np.array([k / n]), np.array([n]))
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert abs(lo[0] - ci.low) < 1e-3 and abs(hi[0] - ci.high) < 1e-3
    lo, hi = wilson_interval(np.array([0.5, 0.5]), np.array([4, 4000]))
    assert (hi - lo)[0] > 10 * (hi - lo)[1]


def test_reliability_diagram_writes_a_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.8, 2000)
    y = (rng.random(2000) < p).astype(float)
    path = reliability_diagram(
        y, {"raw": np.clip(p * 1.3 - 0.15, 0, 1), "calibrated": p}, tmp_path / "r.png", n_bins=15
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_wilson_bounds_never_cross_an_all_up_or_all_down_bin() -> None:
    # n where rounding put the bound a hair past freq 0 or 1 (seen on real data): 6, 11, 21, ...
    n = np.arange(1, 400, dtype=float)
    for freq in (0.0, 1.0):
        lo, hi = wilson_interval(np.full(len(n), freq), n)
        assert (lo <= freq).all() and (hi >= freq).all()


def test_reliability_diagram_draws_all_up_and_all_down_bins(tmp_path) -> None:
    for n in (6, 11, 21, 22, 27, 31, 38):
        y = np.r_[np.zeros(n), np.ones(n)]
        p = np.r_[np.full(n, 0.03), np.full(n, 0.97)]
        reliability_diagram(y, {"calibrated": p}, tmp_path / f"r{n}.png", n_bins=15)
        assert (tmp_path / f"r{n}.png").stat().st_size > 0


def test_a_plot_failure_cannot_lose_the_run(tmp_path, mlflow_uri, monkeypatch) -> None:
    import mlflow

    import phat.evaluation.plots
    from conftest import make_cfg
    from phat.lifecycle.training import run

    def broken(*a, **k):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(phat.evaluation.plots, "reliability_diagram", broken)
    out = run(
        make_cfg(tmp_path, "data.synthetic.periods=3000", "metrics.bootstrap_n=5", uri=mlflow_uri)
    )
    assert out["model_version"] >= 1  # registered: the fit was not lost
    run_ = mlflow.MlflowClient(mlflow_uri).get_run(out["run_id"])
    assert "reliability plot (test) not drawn" in run_.data.tags["phat.warnings"]
    assert run_.data.metrics["test_brier"] > 0


def test_monitor_plot_draws_the_e_value_path_and_rolling_brier() -> None:
    """Drawn from a state whose kept path is shorter than its recent outcomes (the path is
    capped): the rolling panel uses the bars both have."""
    import pandas as pd

    from phat.evaluation.plots import monitor_plot

    times = pd.date_range("2025-01-01", periods=50, freq="15min", tz="UTC")
    recent = np.random.default_rng(0).uniform(size=(80, 3))
    fig = monitor_plot(times, np.linspace(1, 5, 50), 0.01, recent, times[30], window=10)
    e_axis, brier_axis = fig.axes
    assert e_axis.get_yscale() == "log" and len(brier_axis.get_lines()) == 4  # + alarm line
