"""The one-standard-error rule: among candidates ordered simplest first, keep the simplest
whose mean loss exceeds the lowest by at most one standard error of the paired per-sample
difference, estimated from the means of contiguous blocks (inner folds or time blocks), so
losses that move together in time do not pass for independent draws (Hastie, Tibshirani &
Friedman, The Elements of Statistical Learning, 7.10). Capacity, the ladder and the tree's
early stopping all choose by it.
"""

from __future__ import annotations

import numpy as np


def time_blocks(n: int, blocks: int) -> np.ndarray:
    """The contiguous block (0 .. blocks-1) of each of n samples in time order."""
    return np.minimum(np.arange(n) * blocks // max(n, 1), blocks - 1)


def simplest_within_noise(loss: np.ndarray, groups: np.ndarray) -> tuple[int, list[dict]]:
    """`loss` [n_samples, n_candidates], candidates simplest first; `groups` the block of each
    sample. Returns the first candidate whose mean loss exceeds the lowest by at most one
    standard error of the paired difference (block means), and a row per candidate."""
    mean = loss.mean(axis=0)
    best = int(np.argmin(mean))
    ids = np.unique(groups)
    rows, chosen = [], None
    for j in range(loss.shape[1]):
        d = loss[:, j] - loss[:, best]
        bm = np.array([d[groups == g].mean() for g in ids])
        se = float(bm.std(ddof=1) / np.sqrt(len(ids))) if len(ids) > 1 else 0.0
        within = bool(d.mean() <= se)
        if chosen is None and within:
            chosen = j
        rows.append({"log_loss": float(mean[j]), "excess": float(d.mean()), "se": se})
    assert chosen is not None  # the best itself is always within
    return chosen, rows
