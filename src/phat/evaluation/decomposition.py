"""The CORP decomposition of the Brier score (Dimitriadis, Gneiting & Jordan, PNAS 2021).

Recalibrate the forecasts with isotonic regression (the pool-adjacent-violators algorithm, ties
in p pooled first), then with S the mean Brier score:

    MCB = S(p) - S(p_recal)      miscalibration (>= 0; 0 for a calibrated record)
    DSC = S(clim) - S(p_recal)   discrimination (>= 0; 0 for a constant forecast)
    UNC = S(clim)                uncertainty (the climatology's score, clim = mean(y))

so that S(p) = MCB - DSC + UNC exactly (up to floating point). PAV is written here for speed
and checked against scikit-learn's IsotonicRegression in tests/test_evidence.py.
"""

from __future__ import annotations

import numpy as np


def pav(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The isotonic (non-decreasing in p) least-squares fit of y on p, returned in the input
    order; equal p values get one fitted value."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    # Pool ties in p first: one block per distinct p.
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    w = np.diff(np.r_[starts, len(ps)]).astype(np.float64)
    v = np.add.reduceat(ys, starts) / w
    # Pool adjacent violators with a stack of blocks (value, weight, count of distinct ps).
    vals: list[float] = []
    wts: list[float] = []
    cnt: list[int] = []
    for vi, wi in zip(v, w, strict=True):
        vals.append(float(vi))
        wts.append(float(wi))
        cnt.append(1)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            w_new = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w_new
            wts[-2] = w_new
            cnt[-2] += cnt[-1]
            vals.pop()
            wts.pop()
            cnt.pop()
    per_distinct = np.repeat(np.asarray(vals), cnt)
    fitted_sorted = np.repeat(per_distinct, w.astype(np.int64))
    out = np.empty_like(fitted_sorted)
    out[order] = fitted_sorted
    return out


def corp_brier(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """{brier, mcb, dsc, unc} of one record."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    recal = pav(p, y)
    clim = float(np.mean(y))
    s = float(np.mean((p - y) ** 2))
    s_rc = float(np.mean((recal - y) ** 2))
    unc = float(np.mean((clim - y) ** 2))
    return {"brier": s, "mcb": s - s_rc, "dsc": unc - s_rc, "unc": unc}
