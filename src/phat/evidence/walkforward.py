"""Walk-forward: refit on a moving (or expanding) window, score the next step, stitch.

Fold k has a test window [T_k, T_k + test), a calibration window [T_k - calibration, T_k) and a
train window of `train` before that (or everything before it: `expanding`); T_(k+1) = T_k + step.
Each fold goes through the same split rule as `phat train` (split.method=dates: purge of the
horizon at each boundary, embargo of the feature window at each start), fits the feature
normalisation on its own train bars, fits the model, calibrates on its calibration window, and
scores its test window, which lies strictly after everything it learned from. The baselines
(climatology: the fold's train base rate; the proxy; last-bar sign; a one-feature logistic on
the last bar's return) are fitted on the same train window and scored on the same test bars.

`run_folds(cfg)` does the work without MLflow and returns a `Record`; `summarize(record)`
scores it (metrics with block-bootstrap intervals, the CORP decomposition, Diebold-Mariano
against every baseline).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.data.timeframes import as_utc
from phat.data.timeframes import parse_duration as data_duration
from phat.errors import ConfigError, DataValidationError
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import WalkforwardConf

BASELINES = ("climatology", "proxy", "last_sign", "last_return")


def parse_duration(text: Any, key: str) -> pd.Timedelta:
    """A walk-forward window (`30d`, `12h`, `4w`, `90m`): the one duration grammar, as config."""
    return data_duration(text, key, ConfigError)


@dataclass
class Fold:
    number: int
    train_start: pd.Timestamp
    calibration_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    n_train: int = 0
    n_calibration: int = 0
    n_test: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)
    rung: str = "model"  # what the fold's ladder kept (recipe.fit.fit_recipe)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Record:
    """The stitched out-of-sample record: one row per scored bar."""

    frame: pd.DataFrame  # timestamp index; [symbol,] fold, label, p_hat_raw, p_hat, p_<baseline>
    folds: list[Fold]
    horizon_bars: int
    symbol: str
    model_kind: str
    timings: dict[str, float]
    recipe: dict[str, str] = field(default_factory=dict)  # what a registered version must match
    per_asset: pd.DataFrame | None = None  # a universe's table (summarize fills it)


def plan_folds(index: pd.DatetimeIndex, wf: dict[str, Any]) -> list[Fold]:
    """The fold windows over the data's span (the last fold may be shorter)."""
    cal = parse_duration(wf["calibration"], "walkforward.calibration")
    step = parse_duration(wf["step"], "walkforward.step")
    test = parse_duration(wf["test"], "walkforward.test") if wf["test"] else step
    expanding = str(wf["train"]).lower() == "expanding"
    train = parse_duration(wf["initial" if expanding else "train"], "walkforward.train")
    first, last = index[0], index[-1]
    t = first + train + cal
    if wf["start"]:
        start = as_utc(wf["start"])
        if start < t:
            raise ConfigError(
                f"walkforward.start={wf['start']}: the first fold needs {train} of training and "
                f"{cal} of calibration before it; the data starts {first}, so the earliest is {t}"
            )
        t = start
    folds: list[Fold] = []
    while t <= last:
        train_start = first if expanding else t - cal - train
        folds.append(
            Fold(len(folds), train_start, t - cal, t, min(t + test, last + pd.Timedelta(1)))
        )
        t = t + step
    if not folds:
        raise DataValidationError(
            f"no walk-forward fold fits: the data spans {first:%Y-%m-%d %H:%M} .. "
            f"{last:%Y-%m-%d %H:%M} ({(last - first).days} days), and the first fold needs "
            f"{train.days} days of training and {cal.days} days of calibration before its test "
            "window: shorten walkforward.train, walkforward.calibration and walkforward.step "
            "(phat walkforward and phat promote take them) or give more history"
        )
    return folds


def check_windows(wf: dict[str, Any]) -> None:
    """The window settings, checked before any data is read (one line each)."""
    for key in (
        "calibration",
        "step",
        "test",
        "initial" if str(wf["train"]) == "expanding" else "train",
    ):
        if wf[key]:
            parse_duration(wf[key], f"walkforward.{key}")


@dataclass
class _FoldInputs:
    """What every fold reads (shared once with the engine's workers)."""

    cfg: WalkforwardConf
    ser: Any
    symbol_of_row: np.ndarray | None


def run_folds(cfg: WalkforwardConf, progress: Any = None) -> Record:
    """Every fold, in order (engine=ray: as Ray tasks, the same bits; phat.engines.fanout)."""
    from phat.engines.fanout import fan_out
    from phat.recipe.fit import asset_maps
    from phat.recipe.series import prepare_series

    t0 = time.perf_counter()
    check_windows(cfg.walkforward)
    ser = prepare_series(cfg)
    bars, lspec = ser.bars, ser.label_spec
    symbol_of_row = bars.across_assets(lambda symbols: symbols)  # a universe's rows' assets
    folds = plan_folds(bars.time_axis, cfg.walkforward)
    rows: list[pd.DataFrame] = []
    done: list[Fold] = []
    results = fan_out(
        cfg, fold_task, _FoldInputs(cfg, ser, symbol_of_row), folds,
        label=lambda f: f"walk-forward fold {f.number} ({f.test_start:%Y-%m-%d})",
        threads=ser.threads,
    )  # fmt: skip
    with contextlib.closing(results):  # an early stop submits no more tasks
        for fold, out in zip(folds, results, strict=False):
            if isinstance(out, str):  # the fold's spans could not be split
                if fold.number == len(folds) - 1 and fold.number > 0 and "test span" in out:
                    break  # a last, short test window: not a fold
                raise DataValidationError(
                    f"walk-forward fold {fold.number} ({fold.test_start:%Y-%m-%d}): {out}; give each "
                    "span more bars than the embargo plus split.min_samples (walkforward.train, "
                    f"walkforward.calibration, walkforward.step; these bars are {lspec.timeframe}) "
                    "or lower split.min_samples"
                )
            frame, fitted_fold = out
            rows.append(frame)
            done.append(fitted_fold)
            if progress is not None:
                progress(fitted_fold)
    record = pd.concat(rows).rename_axis("timestamp")
    recipe = {
        Tag.FEATURE_VERSION: ser.feature_spec.feature_version,
        Tag.LABEL_DEFINITION: lspec.canonical(),
        Tag.MODEL_KIND: str(cfg.model.kind),
        "calibration": str(cfg.calibration.method),
        Tag.DATA_HASH: bars.data_hash(),
        Tag.ASSET_MAPS: asset_maps(cfg, bars),
    }
    recipe.update(bars.across_assets(lambda _: {Tag.POOLING: cfg.model.pooling}) or {})
    return Record(
        record, done, lspec.horizon_bars, bars.symbol, str(cfg.model.kind),
        {"total_s": time.perf_counter() - t0, "data_s": ser.timings["data_s"]}, recipe,
    )  # fmt: skip


def fold_task(inputs: _FoldInputs, fold: Fold) -> tuple[pd.DataFrame, Fold] | str:
    """One fold: split, normalise, fit, calibrate, score its test window and the baselines.
    Returns (rows, the fold with its counts and metrics), or the split's refusal as text."""
    from phat.contract.splits import SplitConfig
    from phat.models.calibration import Calibrator
    from phat.recipe.fold import fit_fold, fold_rules
    from phat.recipe.series import fold_inputs, split_series
    from phat.registry.tracking import pause_point

    cfg, ser = inputs.cfg, inputs.ser
    bars, y = ser.bars, ser.y
    ft = time.perf_counter()
    pause_point(f"fold_{fold.number}")
    fold = replace(fold)
    scfg = replace(
        SplitConfig(),
        method="dates",
        calibration_start=fold.calibration_start.isoformat(),
        test_start=fold.test_start.isoformat(),
        test_end=fold.test_end.isoformat(),
        purge_bars=ser.split_config.purge_bars,
        embargo_bars=ser.split_config.embargo_bars,
        min_samples=int(cfg.split.min_samples),
    )
    usable = ser.usable & (bars.index >= fold.train_start)
    try:
        spans = split_series(ser, scfg, usable)
    except DataValidationError as e:
        return str(e)
    fspec, data, _, spans = fold_inputs(cfg, ser, spans)
    # the one fold function training ships through: per-asset corrections included
    fit = fit_fold(cfg, ser, fspec, data, spans, score=("test",))
    fitted, calibrator = fit.fitted, fit.fitted.calibrator
    cal_ends, test_ends, tr = spans["calibration"], spans["test"], spans["train"]
    logits = fit.logits["test"]
    # The rules: sign and climatology fitted on train + calibration, the last-return rule as
    # the recipe ships that rung (recipe.fold.fold_rules).
    rules = fold_rules(cfg, ser, fspec, data, spans, dict(cfg.signal.proxy))
    frame = pd.DataFrame(
        {
            "fold": fold.number,
            "label": y[test_ends],
            "p_hat_raw": Calibrator("none").predict(logits),
            "p_hat": fit.p_hat["test"],
            "rung": fitted.rung,  # what the fold's ladder kept
            **{f"p_{name}": rules[name] for name in BASELINES},
        },
        index=bars.index[test_ends],
    )
    if inputs.symbol_of_row is not None:  # a universe: which asset each row is
        frame.insert(0, "symbol", inputs.symbol_of_row[test_ends])
    fold.n_train, fold.n_calibration, fold.n_test = len(tr), len(cal_ends), len(test_ends)
    fold.calibration = calibrator.to_dict()
    fold.rung = fitted.rung
    fold.metrics = {**fold_metrics(frame, int(cfg.metrics.n_bins)), **fitted.params}
    fold.seconds = time.perf_counter() - ft
    return frame, fold


# Recipe tags a version registered before they existed lacks (it is checked on the rest).
NEWER_RECIPE_TAGS = (Tag.ASSET_MAPS,)


def check_recipe(record: Record, version_tags: dict[str, str], what: str) -> None:
    """A walk-forward record stands for a registered version only when it refits the same
    recipe: features, label, model kind, calibration method, per-asset maps and pooling (and
    the same data)."""
    import json

    have = dict(version_tags)
    have["calibration"] = json.loads(have.get(Tag.CALIBRATION, "{}")).get("method", "?")
    for key, mine in record.recipe.items():
        if key in NEWER_RECIPE_TAGS and key not in have:
            continue  # a version registered before phat wrote this tag
        theirs = have.get(key)
        if theirs != mine:
            raise ConfigError(
                f"walkforward.for_version: {what} has {key}={str(theirs)[:80]!r} but this "
                f"walk-forward refits {str(mine)[:80]!r}; give it the version's data and config"
            )


def fold_metrics(frame: pd.DataFrame, n_bins: int) -> dict[str, float]:
    from phat.evaluation.metrics import brier, ece, log_loss, roc_auc

    y = frame["label"].to_numpy()
    p = frame["p_hat"].to_numpy()
    out = {
        "brier": brier(y, p),
        "brier_raw": brier(y, frame["p_hat_raw"].to_numpy()),
        "ece": ece(y, p, n_bins=n_bins),
        "log_loss": log_loss(y, p),
        "auc": roc_auc(y, p),
        "base_rate": float(np.mean(y)),
        "n": float(len(y)),
    }
    for b in BASELINES:
        pb = frame[f"p_{b}"].to_numpy()
        ok = np.isfinite(pb)
        out[f"brier_{b}"] = brier(y[ok], pb[ok]) if ok.any() else math.nan
    return out


def summarize(record: Record, n_bins: int, block: int, n_boot: int, seed: int) -> dict[str, float]:
    """The record's metrics: oos_* with block-bootstrap intervals, the CORP decomposition, and
    Diebold-Mariano (Brier losses, one-sided, model better) against each baseline on the bars
    where the baseline has a forecast."""
    from phat.evaluation.decomposition import corp_brier
    from phat.evaluation.metrics import evaluate_split
    from phat.evaluation.significance import (
        diebold_mariano,
        newey_west_lag,
        universe_diebold_mariano,
    )

    f = record.frame
    y = f["label"].to_numpy()
    p = f["p_hat"].to_numpy()
    base_rate = float(np.mean(f["p_climatology"]))
    universe = "symbol" in f.columns
    assets = int(f["symbol"].nunique()) if universe else 1
    m = evaluate_split(
        "oos", y, f["p_hat_raw"].to_numpy(), p, base_rate,
        n_bins=n_bins, block=block * assets, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    if universe:  # the per-asset table of the stitched record (phat.evaluation.universe)
        from phat.evaluation.universe import REPORT_FDR, per_asset_table

        record.per_asset = per_asset_table(
            f["symbol"].to_numpy(), y, p, f["p_climatology"].to_numpy(),
            f["p_last_return"].to_numpy(), record.horizon_bars, n_bins, REPORT_FDR,
            folds=f["fold"].to_numpy(),  # the promotion gate's table, row for row
        )  # fmt: skip
        t = record.per_asset
        m["assets_scored"] = float(len(t))
        m["assets_beat_climatology"] = float(t["beats_climatology"].sum())
        m["assets_miscalibrated"] = float(t["miscalibrated"].sum())
    corp = corp_brier(y, p)
    m.update({"oos_mcb": corp["mcb"], "oos_dsc": corp["dsc"], "oos_unc": corp["unc"]})
    m["oos_p_extreme"] = float(np.sum((p <= 0.0) | (p >= 1.0)))
    loss = (p - y) ** 2
    # A universe's record (a symbol column): DM on the per-timestamp mean over its assets.
    clock = pd.DatetimeIndex(f.index).asi8 if "symbol" in f.columns else None
    for b in BASELINES:
        pb = f[f"p_{b}"].to_numpy()
        ok = np.isfinite(pb)
        m[f"oos_brier_{b}"] = float(np.mean((pb[ok] - y[ok]) ** 2)) if ok.any() else math.nan
        lb = (pb[ok] - y[ok]) ** 2
        dm = (
            diebold_mariano(loss[ok], lb, record.horizon_bars)
            if clock is None
            else universe_diebold_mariano(loss[ok], lb, clock[ok], record.horizon_bars)
        )
        m[f"dm_stat_vs_{b}"] = dm["stat"]
        m[f"dm_pvalue_vs_{b}"] = dm["pvalue"]
    m["dm_lag"] = float(newey_west_lag(len(loss), record.horizon_bars))
    m["folds"] = float(len(record.folds))
    return m
