"""The one fold function (`fit_fold`): `phat train` and every walk-forward fold fit the
recipe here, and score the split's baselines as the recipe ships them (`fold_rules`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from phat.contract.features import FeatureSpec
from phat.models.baselines import WindowData
from phat.models.calibration import Calibrator
from phat.models.rules import rule_forecasts
from phat.recipe.fit import (
    Fitted,
    asset_calibrators,
    calibrate,
    corrects_assets,
    fit_recipe,
    fits_per_asset,
)
from phat.recipe.series import Series

if TYPE_CHECKING:
    from phat.settings import RecipeConf


@dataclass
class FoldFit:
    """The recipe fitted on one split, as it ships: the kept forecast and its calibrator, the
    universe's per-asset maps, and the logits and p_hat of the spans asked for."""

    fitted: Fitted
    per_asset: dict[str, Calibrator]
    logits: dict[str, np.ndarray]
    p_hat: dict[str, np.ndarray]


def fit_fold(
    cfg: RecipeConf,
    ser: Series,
    fspec: FeatureSpec,
    data: WindowData,
    spans: dict[str, np.ndarray],
    tracking: dict[str, Any] | None = None,
    score: tuple[str, ...] | None = None,
    keep: str | None = None,
) -> FoldFit:
    """The one fold function: `phat train` and every walk-forward fold fit the recipe here
    (capacity and ladder: fit_recipe; calibration with the universe's per-asset corrections:
    asset_calibrators), so a walk-forward record scores exactly what a training ships.
    `score`: the spans to compute logits and p_hat for (all by default; the calibration span
    is always computed, the per-asset corrections are fitted on it). `keep`: fit_recipe's."""
    bars, y = ser.bars, ser.y
    fitted = fit_recipe(cfg, ser.seed, ser.threads, data, y, spans, ser.label_spec, fspec,
                        tracking, bars, keep)  # fmt: skip
    names = [k for k in spans if score is None or k in score or k == "calibration"]
    logits = {k: fitted.model.logits(data, spans[k]) for k in names}
    per_asset = asset_calibrators(cfg, bars, fitted.calibrator, spans["calibration"], logits, y)
    p_hat = {k: calibrate(fitted.calibrator, per_asset, bars, spans[k], logits[k]) for k in names}
    return FoldFit(fitted, per_asset, logits, p_hat)


def fold_rules(
    cfg: RecipeConf,
    ser: Series,
    fspec: FeatureSpec,
    data: WindowData,
    spans: dict[str, np.ndarray],
    proxy: dict[str, Any] | None,
) -> dict[str, np.ndarray]:
    """The baselines of a split (training's ladder and every walk-forward fold's record):
    rule_forecasts with the recipe's settings, the last-return rule as the recipe ships that
    rung (shipped_rule), so a candidate that is the rule equals its baseline bit for bit. A
    relative label's rules are the relative ones (models.rules.score_rules): the recipe's
    last-return rung reads a feature column (the own return, or rel_return_1), not that rule's
    volatility-scaled input, so it is not substituted."""
    shrink = float(cfg.calibration.shrink_bars) if corrects_assets(cfg, ser.bars) else None
    relative = ser.label_spec.kind == "relative"
    out = rule_forecasts(ser.y, ser.bars, spans, proxy, shrink, relative)
    if relative:
        return out
    shipped = shipped_rule(cfg, ser, fspec, data, spans, "last_return")
    if shipped is not None:
        out["last_return"] = shipped
    return out


def shipped_rule(
    cfg: RecipeConf,
    ser: Series,
    fspec: FeatureSpec,
    data: WindowData,
    spans: dict[str, np.ndarray],
    name: str,
) -> np.ndarray | None:
    """The test span's p_hat of the ladder's rung `name` as fit_recipe ships it when it keeps
    it: the rule fitted on the train span (models.selection.rule_rung), the recipe's calibrator
    on the calibration span, the universe's per-asset maps. None where the recipe would not
    ship it so (no last-bar return among the features; one fit per asset)."""
    from phat.models import selection as sel

    relative = ser.label_spec.kind == "relative"
    if (
        name != "climatology" and sel.return_column(fspec.names, relative) is None
    ) or fits_per_asset(cfg, ser.bars):
        return None
    return fit_fold(cfg, ser, fspec, data, spans, score=("test",), keep=name).p_hat["test"]
