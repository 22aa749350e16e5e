"""The recipe fitted on one split (`fit_recipe`): capacity and the model ladder on a purged
inner CV of the train span (models/selection.py), the calibrator on the calibration span, a
universe's per-asset corrections (`asset_calibrators`) and per-asset fits (`fit_per_asset`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec
from phat.contract.splits import carve_tail
from phat.data.bars import Bars
from phat.data.universe import StackedBars
from phat.errors import DataValidationError
from phat.hashing import canonical_json
from phat.models.baselines import Model, WindowData
from phat.models.calibration import Calibrator, fit_calibrator
from phat.models.kinds import build_model
from phat.models.kinds import kind as model_kind

if TYPE_CHECKING:
    from phat.settings import RecipeConf

log = logging.getLogger(__name__)


def selection_metrics(
    method: str, logits: np.ndarray, y: np.ndarray, purge: int, n_bins: int
) -> dict[str, float]:
    """What a sweep may select by: the calibration slice cut in time, the calibrator (same
    method) fitted on its first half only, and scored on its second half, `purge` samples
    after the cut so no label of the fitting half overlaps a scored bar. The model never saw
    these bars, the calibrator that scores them never saw them, and the test span plays no
    part (selection_* metrics; docs/sweeps.md)."""
    from phat.evaluation.metrics import brier, ece, log_loss
    from phat.models.selection import second_half

    half = second_half(method, logits, y, purge)
    if half is None:  # too few to fit and score anything
        return {}
    p, yy = half
    return {
        "selection_log_loss": log_loss(yy, p),
        "selection_brier": brier(yy, p),
        "selection_ece": ece(yy, p, n_bins=n_bins),
        "selection_n": float(len(yy)),
    }


def fit_model(
    kind: str,
    params: Mapping[str, Any],
    trainer: Mapping[str, Any],
    seed: int,
    threads: int,
    data: WindowData,
    y: np.ndarray,
    spans: dict[str, np.ndarray],
    tracking: dict[str, Any] | None = None,
) -> Model:
    """Build a model of `kind` with `params` (the trainer settings for the kinds that train
    with one) and fit it on spans["train"] (the TCN with early stopping on
    spans["validation"])."""
    params = dict(params)
    if model_kind(kind).trainer:
        params["trainer"] = dict(trainer)
        params["threads"] = threads
        params["tracking"] = tracking
    model = build_model(kind, params, seed)
    tr = spans["train"]
    if "validation" in spans:
        va = spans["validation"]
        model.fit(data, tr, y[tr], va, y[va])
    else:
        model.fit(data, tr, y[tr])
    return model


@dataclass
class Fitted:
    """The recipe fitted on one split: the forecast kept (the recipe's model or a simpler
    rung of its ladder), its calibrator, and how both were chosen."""

    model: Model
    calibrator: Calibrator
    rung: str  # "model" or the rule rung kept (climatology, last_return)
    params: dict[str, float]  # chosen capacity (selected_C, when the grid was searched)
    tables: dict[str, list[dict[str, Any]]]  # inner CV and ladder rows (run artifacts)


def fit_recipe(
    cfg: RecipeConf,
    seed: int,
    threads: int,
    data: WindowData,
    y: np.ndarray,
    spans: dict[str, np.ndarray],
    lspec: LabelSpec,
    fspec: FeatureSpec,
    tracking: dict[str, Any] | None = None,
    bars: Bars | None = None,
    keep: str | None = None,
) -> Fitted:
    """The one recipe `phat train` and every walk-forward fold run (models/selection.py):

    - logistic: ladder and capacity in one purged inner CV of the train span (climatology,
      the 1-bar return alone, the recipe's inputs over C_GRID with model.params.C=auto or at
      the given C), simplest within one standard error of the best log loss;
    - tree, TCN: capacity first on the same purged inner CV (the tree's leaves with
      max_leaf_nodes=auto, the TCN's width and weight decay with model.params.channels=auto /
      trainer.weight_decay=auto), then the ladder on that inner CV too: every rung refitted
      per fold, the model with early stopping on a purged tail of the fold's fit samples as
      its final fit (a fold too short for that tail: judged on the calibration slice instead,
      calibrator on its first half, log loss on its second, and said);
    - then the calibrator on the calibration span (with the ladder, Platt keeps the identity
      map unless its fit is significant). `model.ladder=off` keeps the model and plain Platt;
      C=auto still searches the grid.

    `bars`: a universe's (StackedBars) cut its inner folds and halves in time (`timeline`);
    with model.pooling=per_asset, the recipe runs per asset (fit_per_asset). `keep`: a rung of
    the ladder kept without selection (a rule as the recipe ships it: recipe.fold.shipped_rule).
    """
    if keep is not None:
        return _kept_rung(cfg, seed, data, y, spans, lspec, fspec, bars, keep)
    if fits_per_asset(cfg, bars):
        return fit_per_asset(cfg, seed, threads, data, y, spans, lspec, fspec, bars)
    from phat.contract.splits import required_boundaries

    clock, concurrent, slack = bars.timeline() if bars is not None else (None, 1, 0)
    tr = spans["train"]
    # the inner folds' purge and embargo (in samples; slots of a universe's timeline)
    b = required_boundaries(lspec.horizon_bars, fspec.bars_read)
    r = _Run(
        cfg, seed, threads, data, y, tr, lspec, fspec, clock, slack,
        (b.purge + slack, b.embargo + slack, seed), None if clock is None else clock[tr],
        dict(cfg.model.params), dict(cfg.trainer), model_kind(cfg.model.kind),
        cfg.model.ladder == "on",
    )  # fmt: skip
    searched = {s.name: s.grid for s in r.spec.search if r.setting(s.key) == "auto"}
    if r.spec.search_fits == "path" and (r.ladder or searched):  # the ladder searched with it
        _logistic_inner_cv(r, searched)
    elif searched:
        {"staged": _tree_leaves, "refits": _refit_search}[r.spec.search_fits](r, searched)
    refits = r.ladder and r.spec.ladder_refits and _ladder_by_refits(r)
    if r.model is None:
        r.model = fit_model(r.spec.name, r.params, r.trainer, seed, threads, data, y, spans,
                            tracking)  # fmt: skip
        if r.spec.stopped_param and "validation" in spans:  # early stopping's choice
            r.chosen[f"selected_{r.spec.stopped_param}"] = float(
                r.model.state()[1][r.spec.stopped_param]  # the fitted model's own record
            )
    purge = lspec.horizon_bars * concurrent  # in samples of the time-ordered spans
    if r.ladder and not (r.spec.search_fits == "path" or refits):  # else the inner CV did
        _ladder_on_calibration(r, spans["calibration"], purge)
    calibrator = _calibrator(cfg, r.model, data, y, spans["calibration"], purge)
    return Fitted(r.model, calibrator, r.rung, r.chosen, r.tables)


@dataclass
class _Run:
    """One fit_recipe call's inputs and what its steps have chosen so far."""

    cfg: RecipeConf
    seed: int
    threads: int
    data: WindowData
    y: np.ndarray
    tr: np.ndarray  # the train span's samples
    lspec: LabelSpec
    fspec: FeatureSpec
    clock: np.ndarray | None
    slack: int
    inner: tuple[int, int, int]  # the inner folds' purge, embargo, seed
    times: np.ndarray | None  # the train samples' timeline slots (a universe's)
    params: dict[str, Any]
    trainer: dict[str, Any]
    spec: Any  # the kind's Kind entry
    ladder: bool
    rung: str = "model"
    model: Model | None = None
    chosen: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        """The value of a kind's setting by its config key (model.params.* or trainer.*)."""
        section, name = key.rsplit(".", 1)
        return (self.params if section == "model.params" else self.trainer).get(name)

    def stopped_fit(
        self, fit: np.ndarray, params: dict[str, Any], trainer: dict[str, Any]
    ) -> Model:
        """The model fitted on the samples `fit` with early stopping on their purged tail (an
        inner fold's refit, as the final fit stops on the train span's tail)."""
        f, tail = carve_tail(fit, float(trainer["val_fraction"]), self.lspec.horizon_bars,
                             self.fspec.bars_read, self.clock, self.slack)  # fmt: skip
        return fit_model(self.spec.name, params, trainer, self.seed, self.threads, self.data,
                         self.y, {"train": f, "validation": tail})  # fmt: skip


def _logistic_inner_cv(r: _Run, searched: dict[str, tuple[Any, ...]]) -> None:
    """The logistic's ladder and C in one purged inner CV (models.selection.choose_logistic):
    C over its declared grid when auto, else at the given C."""
    from phat.models import selection as sel

    col = sel.return_column(r.fspec.names, r.lspec.kind == "relative") if r.ladder else None
    grid = searched.get("C") or (float(r.params["C"]),)
    rung, c, r.tables["inner_cv"] = sel.choose_logistic(
        r.data, r.tr, r.y[r.tr], int(r.params["lookback"]), col, grid, *r.inner,
        int(r.params["max_iter"]), r.times, r.ladder,
    )  # fmt: skip
    r.rung = rung
    if rung != "model":
        r.model = sel.rule_rung(rung, r.data, r.tr, r.y[r.tr], col, r.seed)
    elif c is not None:
        r.params["C"] = c
        if len(grid) > 1:
            r.chosen["selected_C"] = c
            say_grid_edge("model.params.C", c, grid, r.chosen)


def _tree_leaves(r: _Run, searched: dict[str, tuple[Any, ...]]) -> None:
    """The tree's leaves (max_leaf_nodes=auto) on the same purged inner CV, each candidate's
    trees grown without stopping and taken at their best number (choose_tree_leaves)."""
    from phat.models import selection as sel

    grid = searched["max_leaf_nodes"]
    leaves, r.tables["inner_cv"] = sel.choose_tree_leaves(
        r.data, r.tr, r.y[r.tr], r.params, grid, *r.inner, r.times
    )
    r.params["max_leaf_nodes"] = leaves
    r.chosen["selected_max_leaf_nodes"] = float(leaves)
    say_grid_edge("model.params.max_leaf_nodes", leaves, grid, r.chosen)


def _refit_search(r: _Run, searched: dict[str, tuple[Any, ...]]) -> None:
    """Settings set to auto whose every candidate is refitted per inner fold with early
    stopping on its purged tail (the TCN's width and weight decay; choose_by_refits)."""
    from phat.models import selection as sel

    def fold_fit(cand: dict[str, Any], fit: np.ndarray, val: np.ndarray) -> tuple[Any, int]:
        m = r.stopped_fit(fit, {**r.params, **_of(cand, r.params)},
                          {**r.trainer, **_of(cand, r.trainer)})  # fmt: skip
        return m.logits(r.data, val), int(m.history["best_epoch"]) + 1

    cand, r.tables["inner_cv"] = sel.choose_by_refits(
        r.tr, r.y[r.tr], sel.refit_candidates(searched), fold_fit, *r.inner[:2], r.times
    )
    r.params.update(_of(cand, r.params))
    r.trainer.update(_of(cand, r.trainer))
    r.chosen.update({f"selected_{k}": float(v) for k, v in cand.items()})


def _ladder_by_refits(r: _Run) -> bool:
    """The tree's and TCN's ladder on the same purged inner CV, every rung refitted per fold;
    False (said) when a fold's fit set is too short for the stopping tail, so the ladder is
    judged on the calibration slice instead."""
    from phat.models import selection as sel

    col = sel.return_column(r.fspec.names, r.lspec.kind == "relative")
    names = ["climatology", *(["last_return"] if col is not None else []), "model"]

    def rung_fit(name: str, fit: np.ndarray, val: np.ndarray) -> np.ndarray:
        if name != "model":
            return sel.rule_rung(name, r.data, fit, r.y[fit], col, r.seed).logits(r.data, val)
        return r.stopped_fit(fit, r.params, r.trainer).logits(r.data, val)

    try:
        j, r.tables["ladder"] = sel.choose_rung_by_refits(r.tr, r.y[r.tr], names, rung_fit,
                                                           *r.inner[:2], r.times)  # fmt: skip
    except DataValidationError as e:
        log.warning("model.ladder: the %s's inner folds cannot be refitted as its final fit "
                    "(%s); its ladder is judged on the calibration slice instead",
                    r.spec.name, e)  # fmt: skip
        return False
    r.rung = names[j]
    if r.rung != "model":
        r.model = sel.rule_rung(r.rung, r.data, r.tr, r.y[r.tr], col, r.seed)
    return True


def _ladder_on_calibration(r: _Run, cal: np.ndarray, purge: int) -> None:
    """The ladder judged on the calibration slice (calibrator on its first half, log loss on
    its second): the rungs and the fitted model, the simplest within one standard error."""
    from phat.models import selection as sel

    col = sel.return_column(r.fspec.names, r.lspec.kind == "relative")
    rungs = [*sel.rule_rungs(r.data, r.tr, r.y[r.tr], col, r.seed), ("model", r.model)]
    method = r.cfg.calibration.method
    j, rows = sel.choose_rung(method, [m.logits(r.data, cal) for _, m in rungs], r.y[cal], purge)
    if j is not None:
        r.rung, r.model = rungs[j]
        r.tables["ladder"] = [{"rung": n, "on": "calibration slice", **row, "chosen": i == j}
                              for i, ((n, _), row) in enumerate(zip(rungs, rows, strict=True))]  # fmt: skip


def _calibrator(
    cfg: RecipeConf, model: Model, data: WindowData, y: np.ndarray, cal: np.ndarray, purge: int
) -> Calibrator:
    """The recipe's calibrator of a kept forecast, on the calibration span (with the ladder,
    Platt keeps the identity map unless its fit is significant)."""
    ladder = cfg.model.ladder == "on"
    return fit_calibrator(cfg.calibration.method, model.logits(data, cal), y[cal],
                          purge=purge, identity_first=ladder)  # fmt: skip


def _kept_rung(
    cfg: RecipeConf, seed: int, data: WindowData, y: np.ndarray,
    spans: dict[str, np.ndarray], lspec: LabelSpec, fspec: FeatureSpec, bars: Bars | None,
    rung: str,
) -> Fitted:  # fmt: skip
    """The rung `rung` fitted and calibrated exactly as fit_recipe does when its ladder keeps
    it (its last lines, with the selection left out)."""
    from phat.models import selection as sel

    tr, cal = spans["train"], spans["calibration"]
    col = sel.return_column(fspec.names, lspec.kind == "relative")
    model = sel.rule_rung(rung, data, tr, y[tr], col, seed)
    purge = lspec.horizon_bars * (bars.timeline()[1] if bars is not None else 1)
    return Fitted(model, _calibrator(cfg, model, data, y, cal, purge), rung, {}, {})


def say_grid_edge(key: str, value: float, grid: Any, chosen: dict[str, float]) -> None:
    """An inner-CV choice at the end of its grid is said (a warning, and the metric
    `<setting>_at_grid_edge`): the best value may lie beyond the grid."""
    low, high = min(grid), max(grid)
    if value not in (low, high):
        return
    chosen[f"{key.rsplit('.', 1)[-1]}_at_grid_edge"] = 1.0
    log.warning(
        "%s=auto chose %g, the %s end of its grid (%g .. %g): the best value may lie beyond it",
        key, value, "lower" if value == low else "upper", low, high,
    )  # fmt: skip


def _of(values: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are settings of `section`."""
    return {k: v for k, v in values.items() if k in section}


def asset_calibrators(
    cfg: RecipeConf,
    bars: Bars,
    calibrator: Calibrator,
    cal_ends: np.ndarray,
    logits: dict[str, np.ndarray],
    y: np.ndarray,
) -> dict[str, Calibrator]:
    """A universe's per-asset maps (calibration.per_asset): the pooled calibrator followed by
    each asset's correction, fitted on its calibration samples and shrunk toward the pooled
    map by their number (models.calibration.fit_asset_correction). {} for one asset, or
    with per_asset=false."""
    from phat.models.calibration import fit_asset_correction

    if not corrects_assets(cfg, bars):
        return {}
    asset = bars.asset_of_rows()[cal_ends]
    p = calibrator.predict(logits["calibration"])
    shrink = float(cfg.calibration.shrink_bars)
    return {
        a.symbol: calibrator.with_asset_correction(
            fit_asset_correction(p[asset == k], y[cal_ends][asset == k], shrink)
        )
        for k, a in enumerate(bars.members())
    }


def calibrate(
    calibrator: Calibrator,
    per_asset: dict[str, Calibrator],
    bars: Bars,
    ends: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """p_hat of samples `ends` from their logits `z`: each asset's own map where there is one,
    else the pooled calibrator."""
    if not per_asset:
        return calibrator.predict(z)
    asset = bars.asset_of_rows()[ends]
    out = np.empty(len(z))
    for k, a in enumerate(bars.members()):
        m = asset == k
        out[m] = per_asset.get(a.symbol, calibrator).predict(z[m])
    return out


def asset_maps(cfg: RecipeConf, bars: Bars) -> str:
    """What the recipe's calibration does per asset (the phat.asset_maps tag, and a walk-forward
    record's recipe): `pooled`, or `per_asset shrink_bars=<n>` (asset_calibrators)."""
    if not corrects_assets(cfg, bars):
        return "pooled"
    return f"per_asset shrink_bars={float(cfg.calibration.shrink_bars):g}"


def corrects_assets(cfg: RecipeConf, bars: Bars | None) -> bool:
    """Whether the recipe corrects each asset's calibration (calibration.per_asset): only where
    several assets pool into one model (Bars.pooled); one asset's map is its own already."""
    return bars is not None and bars.pooled and bool(cfg.calibration.per_asset)


def fits_per_asset(cfg: RecipeConf, bars: Any) -> bool:
    """A universe under model.pooling=per_asset: one fit per asset (what engine=ray fans out).
    No bars: one asset's own samples (a member's fit), fitted as they are."""
    return bars is not None and bars.pooled and cfg.model.pooling == "per_asset"


@dataclass
class _AssetFitInputs:
    """What every asset's fit reads (shared once with the engine's workers)."""

    cfg: RecipeConf
    seed: int
    threads: int
    data: WindowData
    y: np.ndarray
    lspec: LabelSpec
    fspec: FeatureSpec


def asset_fit_task(inputs: _AssetFitInputs, job: tuple[str, dict[str, np.ndarray]]) -> Fitted:
    """One asset's recipe (fit_recipe) on its own samples (model.pooling=per_asset)."""
    i = inputs
    return fit_recipe(i.cfg, i.seed, i.threads, i.data, i.y, job[1], i.lspec, i.fspec)


def fit_per_asset(
    cfg: RecipeConf,
    seed: int,
    threads: int,
    data: WindowData,
    y: np.ndarray,
    spans: dict[str, np.ndarray],
    lspec: LabelSpec,
    fspec: FeatureSpec,
    bars: StackedBars,
) -> Fitted:
    """model.pooling=per_asset: the recipe (fit_recipe: capacity, ladder) run on each asset's
    samples alone, its models kept in one PerAssetModel; then one calibrator over every
    asset's calibration logits (per-asset corrections follow, as for a pooled model). The
    rung each asset kept is in the selection tables and the phat.selected_rung tag."""
    from phat.engines.fanout import fan_out
    from phat.models.calibration import fit_calibrator
    from phat.models.per_asset import PerAssetModel

    asset = bars.asset_of_rows()
    symbols = [a.symbol for a in bars.members()]
    members: dict[str, Any] = {}
    rungs: dict[str, str] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    jobs = []
    for k, sym in enumerate(symbols):
        mine = {name: v[asset[v] == k] for name, v in spans.items()}
        if len(mine["train"]):
            jobs.append((sym, mine))
    shared = _AssetFitInputs(cfg, seed, threads, data, y, lspec, fspec)
    fits = fan_out(cfg, asset_fit_task, shared, jobs, lambda j: f"asset {j[0]}", threads)
    for (sym, _), f in zip(jobs, fits, strict=True):  # engine=ray: one task per asset
        members[sym], rungs[sym] = f.model, f.rung
        for name, rows in f.tables.items():
            tables.setdefault(name, []).extend({"symbol": sym, **r} for r in rows)
    model = PerAssetModel(members, symbols, asset)
    cal = spans["calibration"]
    calibrator = fit_calibrator(
        cfg.calibration.method, model.logits(data, cal), y[cal],
        purge=lspec.horizon_bars * len(symbols),
        identity_first=cfg.model.ladder == "on",
    )  # fmt: skip
    return Fitted(model, calibrator, canonical_json(rungs), {}, tables)
