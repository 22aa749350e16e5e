"""A bar series ready for the recipe: data read and validated, labels and raw features
(`prepare_series`), and a split's inputs: the spans (`split_series`), the feature normalization
fitted on the train bars (`fold_features`) and the early-stopping tail (`with_validation_tail`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec, make_labels
from phat.contract.splits import SplitConfig, carve_tail, make_splits
from phat.data.bars import Bars
from phat.data.load import asset_spans, load_bars
from phat.errors import DataValidationError
from phat.models.baselines import WindowData
from phat.models.kinds import kind as model_kind
from phat.recipe.specs import validate_config

if TYPE_CHECKING:
    from phat.settings import RecipeConf

log = logging.getLogger(__name__)


def _seed_all(seed: int, threads: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may use the global RNG
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - sklearn depends on threadpoolctl
        pass


@dataclass
class Series:
    """Data, labels and raw features of the whole bar series, before any split (what
    walk-forward folds and the single split both start from)."""

    cfg: RecipeConf
    label_spec: LabelSpec
    feature_spec: FeatureSpec  # normalization not yet fitted
    split_config: SplitConfig
    bars: Bars
    p_bayes: pd.Series | None
    y: np.ndarray
    usable: np.ndarray
    raw: np.ndarray
    counts: dict[str, int]
    seed: int
    threads: int
    timings: dict[str, float]


@dataclass
class Prepared:
    """Everything decided before a model is fitted (no MLflow run exists yet)."""

    cfg: RecipeConf
    label_spec: LabelSpec
    feature_spec: FeatureSpec  # normalization fitted on the train span
    bars: Bars
    p_bayes: pd.Series | None
    y: np.ndarray
    spans: dict[str, np.ndarray]
    data: WindowData
    counts: dict[str, int]
    seed: int
    threads: int
    timings: dict[str, float] = field(default_factory=dict)
    asset_specs: dict[str, FeatureSpec] = field(default_factory=dict)  # a universe's, per asset
    series: Series | None = None  # what the split was cut from (fit_fold reads it)


def raw_features(fspec: FeatureSpec, bars: Bars) -> np.ndarray:
    """Raw features of validated bars, asset by asset (no rolling statistic reads across
    assets, and every asset's values are the bits it gets scored alone)."""
    parts = []
    for a in bars.members():
        try:
            fspec.check_data(a.bars.frame)
        except DataValidationError as e:
            raise DataValidationError(f"{bars.where(a.symbol)}{e}") from None
        parts.append(fspec.compute_raw(a.bars.frame))
    return np.concatenate(parts)


def prepare_series(cfg: RecipeConf) -> Series:
    """Load and validate data, build labels and raw features. Raises on bad input."""
    t0 = time.perf_counter()
    lspec, fspec, scfg = validate_config(cfg)
    seed = int(cfg.seed)
    threads = int(cfg.threads)
    _seed_all(seed, threads)
    bars, p_bayes = load_bars(cfg, lspec.timeframe)
    t1 = time.perf_counter()

    close = bars.frame["close"].to_numpy()
    raw = raw_features(fspec, bars)
    y = make_labels(close, bars.segment, lspec, bars.timeline()[0])
    windows_ok = fspec.valid_end_mask(raw, bars.segment)
    usable = windows_ok & ~np.isnan(y)
    # The same horizon as a sign label: finite wherever a label exists before neutral dropping.
    sign_spec = replace(lspec, kind="sign", threshold_bps=0.0)
    y_any = make_labels(close, bars.segment, sign_spec)
    no_gap = bars.asset_of_rows()  # segments as if no gap split any asset
    ok_without_gaps = fspec.valid_end_mask(raw, no_gap) & ~np.isnan(
        make_labels(close, no_gap, sign_spec)
    )
    counts = {
        "bars": len(bars),
        "samples_usable": int(usable.sum()),
        "samples_dropped_gap": int((ok_without_gaps & ~(windows_ok & ~np.isnan(y_any))).sum()),
        "labels_neutral_dropped": int((windows_ok & np.isnan(y) & ~np.isnan(y_any)).sum()),
        "gaps": int(bars.report.get("gaps", 0)),
    }
    if counts["samples_dropped_gap"]:
        log.warning(
            "%d samples dropped because their window or label spans one of %d gaps",
            counts["samples_dropped_gap"],
            counts["gaps"],
        )
    timings = {"data_s": t1 - t0, "features_s": time.perf_counter() - t1}
    return Series(
        cfg, lspec, fspec, scfg, bars, p_bayes, y, usable, raw, counts, seed, threads, timings
    )


def prepare(cfg: RecipeConf) -> Prepared:
    """Load and validate data, build labels and features, split. Raises on bad input."""
    ser = prepare_series(cfg)
    fspec, data, asset_specs, spans = fold_inputs(cfg, ser, split_series(ser, ser.split_config))
    lspec, bars, y = ser.label_spec, ser.bars, ser.y
    timings = dict(ser.timings)
    return Prepared(
        cfg, lspec, fspec, bars, ser.p_bayes, y, spans, data, ser.counts, ser.seed,
        ser.threads, timings, asset_specs, ser,
    )  # fmt: skip


def split_series(
    ser: Series, scfg: SplitConfig, usable: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """make_splits on the series (optionally on a narrower usable mask), with the gap hint."""
    bars, lspec, fspec, y = ser.bars, ser.label_spec, ser.feature_spec, ser.y
    counts = ser.counts
    usable = ser.usable if usable is None else usable
    clock, _, slack = bars.timeline()
    try:
        spans = make_splits(
            bars.index, usable, y, scfg, lspec.horizon_bars, fspec.bars_read, clock,
            bars.time_axis, slack,
        )  # fmt: skip
        # An asset with no train sample has no normalization (fold_features): no samples
        # (one asset has its train samples, or make_splits refused).
        asset = bars.asset_of_rows()
        trained = np.unique(asset[spans["train"]])
        out = {k: v[np.isin(asset[v], trained)] for k, v in spans.items()}
        empty = [k for k, v in out.items() if not len(v)]
        if empty:
            raise DataValidationError(
                f"the universe's assets share too little time to split: {asset_spans(bars)}; "
                f"split at shared timestamps, no asset with train samples has {' or '.join(empty)} "
                "samples; give assets whose histories overlap (files of one symbol that differ "
                "only by a date suffix, e.g. BTCUSDT-15m-2025-06.zip, are read as one series)"
            )
        return out
    except DataValidationError as e:
        if not counts["samples_dropped_gap"]:
            raise
        first = bars.report["gap_list"][0]
        raise DataValidationError(
            f"{e}; {counts['samples_dropped_gap']} samples were lost to {counts['gaps']} gaps "
            f"under calendar {bars.calendar} (first: {first['missing_bars']} bars missing after "
            f"{first['after']}): if they are scheduled closures set data.calendar (auto infers "
            "it), if short outages raise data.max_gap"
        ) from None


def fold_features(
    ser: Series, train: np.ndarray
) -> tuple[FeatureSpec, WindowData, dict[str, FeatureSpec]]:
    """Normalization fitted on the bars that train samples read, and the normalized rows.

    Fitted per asset on that asset's train rows (a z-score pooled over assets of different
    volatility would let the loud ones drown the quiet ones): returned per symbol (assets with
    no train sample have none, and no samples: split_series), with the pooled fit over all
    those rows as the FeatureSpec (what the artifact's feature_spec.json records; one asset's
    own fit)."""
    fspec, raw, bars = ser.feature_spec, ser.raw, ser.bars
    asset = bars.asset_of_rows()
    feats = np.zeros(raw.shape, dtype=np.float32)
    specs: dict[str, FeatureSpec] = {}
    rows_all = []
    for k, a in enumerate(bars.members()):
        mine = train[asset[train] == k]
        if not len(mine):
            continue
        rows = np.arange(max(a.start, int(mine.min()) - fspec.bars_read + 1), int(mine.max()) + 1)
        specs[a.symbol] = fspec.fit_normalization(raw, rows)
        feats[a.start : a.stop] = specs[a.symbol].normalize(raw[a.start : a.stop])
        rows_all.append(rows)
    pooled = fspec.fit_normalization(raw, np.concatenate(rows_all))
    return pooled, WindowData(feats, fspec.window), specs


def with_validation_tail(
    cfg: RecipeConf,
    spans: dict[str, np.ndarray],
    horizon_bars: int,
    bars_read: int,
    bars: Bars | None = None,
) -> dict[str, np.ndarray]:
    """For the TCN and the tree: the train span's tail becomes their early-stopping validation
    span (purged like every boundary, trainer.val_fraction; a universe's cut in time); the
    logistic model keeps the spans as they are (its capacity comes from the inner CV)."""
    if not model_kind(cfg.model.kind).validation_tail:
        return spans
    clock, _, slack = bars.timeline() if bars is not None else (None, 1, 0)
    fit_ends, val_ends = carve_tail(
        spans["train"], float(cfg.trainer.val_fraction), horizon_bars, bars_read, clock,
        slack,
    )  # fmt: skip
    return {
        "train": fit_ends,
        "validation": val_ends,
        **{k: v for k, v in spans.items() if k != "train"},
    }


def fold_inputs(
    cfg: RecipeConf, ser: Series, spans: dict[str, np.ndarray]
) -> tuple[FeatureSpec, WindowData, dict[str, FeatureSpec], dict[str, np.ndarray]]:
    """A split's inputs to the recipe, for training and every walk-forward fold alike: the
    feature normalization fitted on its train bars (fold_features) and, for the kinds that
    early-stop, the train span's validation tail (with_validation_tail)."""
    fspec, data, asset_specs = fold_features(ser, spans["train"])
    spans = with_validation_tail(cfg, spans, ser.label_spec.horizon_bars, fspec.bars_read, ser.bars)
    return fspec, data, asset_specs, spans
