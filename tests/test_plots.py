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
        y, {"raw": np.clip(p * 1.3 - 0.15, 0, 1), "calibrated": p}, tmp_path / "r.png"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
