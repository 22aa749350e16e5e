"""Capacity and ladder choices, made inside the train and calibration spans, never on test.

- `purged_kfold`: contiguous validation blocks of the train span's samples; each block's fit set
  is every other train sample whose label and window read no bar its samples read (the split
  rule of phat.contract.splits applied at both ends of the block).
- `choose_logistic`: a logistic recipe's ladder and capacity together, by that purged K-fold's
  per-sample log loss (a proper score): climatology, the 1-bar return alone, then the recipe's
  inputs at each C of `C_GRID` from the strongest regularisation up, and the one-standard-error
  rule: the simplest candidate whose loss exceeds the best's by at most one standard error, so
  noise does not buy capacity. The feature matrix is built once.
- `choose_tree_leaves` (model=tree, `model.params.max_leaf_nodes=auto`): the leaves per tree on
  the same purged K-fold, each candidate at its best number of trees, one-standard-error rule.
- `choose_by_refits` (model=tcn, `model.params.channels=auto` and/or `trainer.weight_decay=auto`):
  each candidate refitted on every purged fold's fit set (early stopping on a purged tail of
  it, as the final fit), scored on the held-out block, one-standard-error rule.
- `choose_rung_by_refits` (model=tree and model=tcn, since 2026-12-07): their ladder on the
  same purged K-fold, every rung (climatology, the 1-bar return, the model with early stopping
  on a purged tail of the fold's fit samples, as its final fit) refitted per fold,
  one-standard-error rule: five more model fits per training.
- `rule_rungs` + `choose_rung` (the fallback when a fold's fit set is too short to carve the
  model's stopping tail): the rules the recipe nests, each a small `LogisticModel` in the
  artifact format, are compared with the recipe's model on the calibration span: the calibrator (the configured
  method) is fitted on its first half and every rung scored on its second half
  (`second_half`); the simplest rung within one standard error of the best is kept.

The standard error is that of the paired per-sample loss difference, estimated from the means
of contiguous blocks (the inner folds, or 10 time blocks of the scored half), so losses that
move together in time do not pass for independent draws (Hastie, Tibshirani & Friedman, The
Elements of Statistical Learning, 7.10: the one-standard-error rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from phat.errors import ConfigError
from phat.models.baselines import LogisticModel, WindowData, staged_log_losses
from phat.models.calibration import fit_calibrator, log_losses, sigmoid
from phat.models.kinds import searched_settings
from phat.models.noise import simplest_within_noise, time_blocks

INNER_FOLDS = 5
SCORE_BLOCKS = 10
# The 1-bar return rung's C: a one-input model needs no shrinkage, only finiteness.
RULE_C = 1e4
# Features whose 1-bar form is "the last return" (the rule every recipe nests).
_RETURN_FNS = ("log_return", "vol_return")
_RELATIVE_FNS = ("rel_return", "rel_vol_return")  # a relative label's rule reads these


def purged_kfold(
    ends: np.ndarray, k: int, purge: int, embargo: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, validation) index arrays into `ends` (sample times in order: bar positions, or a
    universe's timeline slots, where many samples share a slot), one pair per contiguous block.
    A fit sample s before a block [v0, v1] has s <= v0 - 1 - purge - embargo (its label ends
    before the block's first window starts); after it, s >= v1 + 1 + purge + embargo (its window
    starts after the block's last label)."""
    if len(ends) < 2 * k:
        raise ConfigError(f"{len(ends)} train samples are too few for {k} inner folds")
    out = []
    for block in np.array_split(np.arange(len(ends)), k):
        v0, v1 = int(ends[block[0]]), int(ends[block[-1]])
        fit = np.flatnonzero(
            (ends <= v0 - 1 - purge - embargo) | (ends >= v1 + 1 + purge + embargo)
        )
        if len(fit):
            out.append((fit, block))
    return out


Folds = list[tuple[np.ndarray, np.ndarray]]


def purged_search(
    ends: np.ndarray,
    y: np.ndarray,
    candidates: list[Any],
    score: Callable[[Any, Folds], tuple[np.ndarray, float]],
    purge: int,
    embargo: int,
    times: np.ndarray | None,
    key: str,
) -> tuple[int, list[dict[str, Any]], list[float]]:
    """The one purged-CV search every kind's choices go through (its capacity, and the ladder
    refitted per fold): the purged K-fold of the train samples `ends` (`times`: their
    timeline slots when they are a universe's), each candidate (simplest first) scored by
    `score(candidate, folds)` -> (the held-out blocks' per-sample log losses, in fold order;
    one more figure to report, e.g. the trees or epochs it kept), then the simplest within one
    standard error of the best mean loss (models.noise.simplest_within_noise, block by block).
    A fold whose fit set holds one outcome is refused, naming `key`. Returns (index of the
    choice, a row per candidate, the figures)."""
    yi = np.asarray(y).astype(int)
    folds = purged_kfold(ends if times is None else times, INNER_FOLDS, purge, embargo)
    for fit, _ in folds:
        _both_outcomes(yi[fit], key)
    groups = np.concatenate([np.full(len(v), k) for k, (_, v) in enumerate(folds)])
    loss = np.empty((len(groups), len(candidates)))
    extra = []
    for j, cand in enumerate(candidates):
        loss[:, j], e = score(cand, folds)
        extra.append(e)
    j, rows = simplest_within_noise(loss, groups)
    return j, rows, extra


def _newton_logistic(C: float, seed: int, max_iter: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # Newton-Cholesky: a few exact steps on n x (lookback * features) inputs, ~20x faster
    # than lbfgs here (scripts/bench_ladder.py) and deterministic at a fixed thread count.
    return LogisticRegression(C=C, solver="newton-cholesky", max_iter=max_iter, random_state=seed)


def choose_logistic(
    data: WindowData,
    ends: np.ndarray,
    y: np.ndarray,
    lookback: int,
    return_column: int | None,
    grid: tuple[float, ...],
    purge: int,
    embargo: int,
    seed: int,
    max_iter: int,
    times: np.ndarray | None = None,
    rules: bool = True,
) -> tuple[str, float | None, list[dict[str, Any]]]:
    """The logistic recipe's ladder and capacity in one purged K-fold of the train samples
    `ends`: candidates, simplest first, are climatology, the 1-bar return alone (column
    `return_column` of the last feature row, when there is one) and the recipe's inputs at
    each C of `grid` (strongest regularisation first). Returns (rung, C, table): rung is
    "climatology", "last_return" or "model" (then C is the chosen strength). `times`: the
    samples' timeline slots when they are a universe's (the folds cut in time), else `ends`.
    `rules=False` (model.ladder=off): the grid alone, so the model is kept at its best C."""
    X = data.tabular(ends, lookback)
    n_f = data.features.shape[1]
    yi = np.asarray(y).astype(int)
    names = (["climatology"] if rules else []) + (
        ["last_return"] if return_column is not None else []
    )
    n_rules = len(names)
    candidates: list[Any] = [*names, *grid]

    def score(cand: Any, folds: Folds) -> tuple[np.ndarray, float]:
        out = []
        for fit, val in folds:
            if cand == "climatology":
                p = np.full(len(val), float(np.mean(yi[fit])))
            elif cand == "last_return":  # fitted as rule_rung fits it
                x = X[:, (lookback - 1) * n_f + int(return_column)]  # type: ignore[arg-type]
                w, b = _one_input_logistic(x[fit], yi[fit], seed)
                p = sigmoid(w * x[val] + b)
            else:
                clf = _newton_logistic(cand, seed, max_iter).fit(X[fit], yi[fit])
                p = clf.predict_proba(X[val])[:, 1]
            out.append(log_losses(yi[val], p))
        return np.concatenate(out), float("nan")

    j, rows, _ = purged_search(ends, y, candidates, score, purge, embargo, times, "model.params.C")
    names += [f"C={c:g}" for c in grid]
    table = [{"candidate": n, **r, "chosen": i == j} for i, (n, r) in enumerate(zip(names, rows, strict=True))]  # fmt: skip
    if j < n_rules:
        return names[j], None, table
    return "model", grid[j - n_rules], table


def choose_tree_leaves(
    data: WindowData,
    ends: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    grid: tuple[int, ...],
    purge: int,
    embargo: int,
    seed: int,
    times: np.ndarray | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """The tree recipe's leaves per tree by the same purged K-fold of the train samples `ends`
    as the logistic's C: for each candidate (fewest leaves first) the trees are fitted on each
    fold's fit set and the per-sample log loss of the held-out block is taken at the number of
    trees that is best for that candidate over all blocks; then the one-standard-error rule
    (the fewest leaves within noise of the best). Returns (leaves, table)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    lookback = int(params["lookback"])
    X = data.tabular(ends, lookback)
    yi = np.asarray(y).astype(int)
    fixed = {k: v for k, v in params.items() if k not in ("lookback", "max_leaf_nodes")}

    def score(leaves: int, folds: Folds) -> tuple[np.ndarray, float]:
        staged = []  # per fold: [n_val_k, max_iter] losses by number of trees
        for fit, val in folds:
            clf = HistGradientBoostingClassifier(
                early_stopping=False, random_state=seed, max_leaf_nodes=leaves, **fixed
            ).fit(X[fit], yi[fit])
            staged.append(staged_log_losses(clf, X[val], yi[val]))
        k = int(np.argmin(np.concatenate(staged).mean(axis=0)))  # the best number of trees
        return np.concatenate([s[:, k] for s in staged]), float(k + 1)

    key = "model.params.max_leaf_nodes"
    j, rows, trees = purged_search(ends, y, list(grid), score, purge, embargo, times, key)
    kept_trees = [int(t) for t in trees]
    table = [
        {"candidate": f"max_leaf_nodes={g}", "trees": t, **r, "chosen": i == j}
        for i, (g, t, r) in enumerate(zip(grid, kept_trees, rows, strict=True))
    ]
    return grid[j], table


def refit_candidates(searched: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every combination of the searched settings' grids, simplest first: the first setting
    varies slowest (each grid is ordered simplest first)."""
    import itertools

    names = list(searched)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*searched.values())]


def choose_by_refits(
    ends: np.ndarray,
    y: np.ndarray,
    candidates: list[dict[str, Any]],
    fit_logits: Callable[[dict[str, Any], np.ndarray, np.ndarray], tuple[np.ndarray, int]],
    purge: int,
    embargo: int,
    times: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Capacity of a model whose every candidate is a fresh fit (the TCN), on the same purged
    K-fold of the train samples `ends` as the logistic's C: `fit_logits(candidate, fit_ends,
    val_ends)` fits the candidate on a fold's fit samples exactly as the final model is
    fitted (early stopping on a purged tail of those samples, never on the held-out block)
    and returns the held-out block's logits and the epochs it kept; the block's per-sample log
    loss ranks the candidates, one-standard-error rule. Returns (candidate, table)."""
    key = ", ".join(searched_settings()[k] for k in candidates[0])
    j, rows, extra = _refit_ranking(ends, y, candidates, fit_logits, purge, embargo, times, key)
    table = [
        {"candidate": ", ".join(f"{k}={v:g}" for k, v in c.items()), "epochs": e, **r,
         "chosen": i == j}
        for i, (c, e, r) in enumerate(zip(candidates, extra, rows, strict=True))
    ]  # fmt: skip
    return candidates[j], table


def choose_rung_by_refits(
    ends: np.ndarray,
    y: np.ndarray,
    rungs: list[str],
    fit_logits: Callable[[str, np.ndarray, np.ndarray], np.ndarray],
    purge: int,
    embargo: int,
    times: np.ndarray | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """The ladder of a kind refitted per fold (the tree): every rung (simplest first, the
    recipe's model last) fitted on each purged inner fold's fit samples as its final fit is,
    scored on the held-out block, one-standard-error rule: the same inner CV that ranks a
    logistic recipe's rungs, so no kind's ladder is judged on the calibration slice alone.
    Returns (index of the kept rung, table)."""

    def scored(rung: str, fit: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, float]:
        return fit_logits(rung, fit, val), float("nan")

    j, rows, _ = _refit_ranking(ends, y, rungs, scored, purge, embargo, times, "model.ladder")
    return j, [{"rung": n, "on": "inner CV", **r, "chosen": i == j}
               for i, (n, r) in enumerate(zip(rungs, rows, strict=True))]  # fmt: skip


def _refit_ranking(
    ends: np.ndarray,
    y: np.ndarray,
    candidates: list[Any],
    fit_logits: Callable[[Any, np.ndarray, np.ndarray], tuple[np.ndarray, float]],
    purge: int,
    embargo: int,
    times: np.ndarray | None,
    key: str,
) -> tuple[int, list[dict[str, Any]], list[float]]:
    """Each candidate refitted on every purged fold's fit samples and scored on its held-out
    block: (the simplest within one SE of the best, the rows, each candidate's mean of the
    second value fit_logits returns)."""
    yi = np.asarray(y).astype(int)

    def score(cand: Any, folds: Folds) -> tuple[np.ndarray, float]:
        cols, kept = [], []
        for fit, val in folds:
            z, e = fit_logits(cand, ends[fit], ends[val])
            cols.append(log_losses(yi[val], sigmoid(z)))
            kept.append(e)
        return np.concatenate(cols), float(np.mean(kept))

    return purged_search(ends, y, candidates, score, purge, embargo, times, key)


def _both_outcomes(y_fit: np.ndarray, key: str) -> None:
    if len(np.unique(y_fit)) < 2:
        raise ConfigError(
            f"{key}: an inner fold's fit set holds one outcome only (every label the same); "
            "the train span cannot rank candidates"
        )


def second_half(
    method: str, logits: np.ndarray, y: np.ndarray, purge: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The calibration slice cut in time: the calibrator (same method) fitted on its first
    half, `purge` samples before the cut dropped, and (p, y) of its second half; None when
    either part has fewer than 20 samples."""
    n = len(y)
    cut = n // 2
    fit_end = max(cut - purge, 0)
    if fit_end < 20 or n - cut < 20:
        return None
    cal = fit_calibrator(method, logits[:fit_end], y[:fit_end], purge=purge)
    return cal.predict(logits[cut:]), y[cut:]


def _one_input_logistic(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    clf = _newton_logistic(RULE_C, seed, 100).fit(x[:, None], np.asarray(y).astype(int))
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def _frozen(coef: np.ndarray, intercept: float, lookback: int, seed: int) -> LogisticModel:
    # max_iter is stored in its config, never used: the rule's weights are set, not fitted
    m = LogisticModel(C=RULE_C, lookback=lookback, max_iter=1000, seed=seed)
    m.coef_, m.intercept_ = np.asarray(coef, dtype=np.float64), float(intercept)
    return m


def return_column(feature_names: list[str], relative: bool = False) -> int | None:
    """The feature that is the last bar's return (log_return_1 or vol_return_1_<vol>); for a
    relative label (`relative`) the last bar's return minus the universe's when the set has
    one (rel_return_1 or rel_vol_return_1_<vol>: the relative rule's input), else the own."""
    if relative:
        rel = next((i for i, n in enumerate(feature_names) if _is_one_bar_return(n, _RELATIVE_FNS)),
                   None)  # fmt: skip
        if rel is not None:
            return rel
    return next((i for i, name in enumerate(feature_names) if _is_one_bar_return(name)), None)


def rule_rung(
    name: str, data: WindowData, ends: np.ndarray, y: np.ndarray, column: int | None, seed: int
) -> LogisticModel:
    """A rule rung fitted on the train samples, in the artifact's model format: climatology (a
    constant logit) or last_return (one weight on `column` of the last feature row)."""
    n_f = data.features.shape[1]
    if name == "climatology":
        rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
        return _frozen(np.zeros(n_f), float(np.log(rate / (1 - rate))), 1, seed)
    assert name == "last_return" and column is not None
    w, b = _one_input_logistic(data.tabular(ends, 1)[:, column], y, seed)
    coef = np.zeros(n_f)
    coef[column] = w
    return _frozen(coef, b, 1, seed)


def rule_rungs(
    data: WindowData, ends: np.ndarray, y: np.ndarray, col: int | None, seed: int
) -> list[tuple[str, LogisticModel]]:
    """The rules every recipe nests, simplest first: climatology, then last_return when the
    feature set has the last bar's return (`col`: return_column's)."""
    names = ["climatology"] + (["last_return"] if col is not None else [])
    return [(n, rule_rung(n, data, ends, y, col, seed)) for n in names]


def _is_one_bar_return(name: str, fns: tuple[str, ...] = _RETURN_FNS) -> bool:
    """log_return_1 or vol_return_1_<vol> (feature_name joins params in sorted order)."""
    for fn in fns:
        if name.startswith(fn + "_"):
            return name[len(fn) + 1 :].split("_")[0] == "1"
    return False


def choose_rung(
    method: str, logits: list[np.ndarray], y: np.ndarray, purge: int
) -> tuple[int | None, list[dict[str, Any]]]:
    """Index of the rung to keep (simplest first; the last is the recipe's model) by the
    calibrated second half of the calibration slice; None when the slice is too short to
    judge (the recipe's model is kept)."""
    scored = [second_half(method, z, y, purge) for z in logits]
    if any(s is None for s in scored):
        return None, []
    yy = scored[0][1]  # type: ignore[index]
    loss = np.column_stack([log_losses(yy, s[0]) for s in scored])  # type: ignore[index]
    return simplest_within_noise(loss, time_blocks(len(yy), SCORE_BLOCKS))
