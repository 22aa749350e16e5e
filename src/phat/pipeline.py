"""The training recipe, free of MLflow: data -> labels/features -> splits -> fit -> calibrate
-> evaluate -> artifact. `phat.train` wraps it with Hydra and tracking; tests call it directly.

`cfg` is the resolved config as a plain dict (the shape of conf/train.yaml).
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phat.contract.features import POLICY_MISSING, FeatureSpec
from phat.contract.labels import LabelSpec, make_labels, parse_horizon
from phat.contract.splits import SplitConfig, carve_tail, make_splits, span_window
from phat.data import Bars, prepare_bars, read_table
from phat.data.universe import StackedBars
from phat.errors import ConfigError, DataValidationError, shorten
from phat.evaluation.metrics import evaluate_split
from phat.hashing import canonical_json
from phat.models.baselines import WindowData
from phat.models.calibration import Calibrator, fit_calibrator
from phat.models.kinds import build_model
from phat.models.kinds import kind as model_kind
from phat.registry.artifact import save_artifact
from phat.tagnames import Tag

log = logging.getLogger(__name__)


@dataclass
class SpanPredictions:
    ends: np.ndarray  # bar positions
    timestamps: pd.DatetimeIndex
    y: np.ndarray
    logits: np.ndarray
    p_raw: np.ndarray
    p_hat: np.ndarray


@dataclass
class TrainResult:
    bars: Bars
    label_spec: LabelSpec
    feature_spec: FeatureSpec
    model: Any
    calibrator: Calibrator
    spans: dict[str, np.ndarray]
    predictions: dict[str, SpanPredictions]
    metrics: dict[str, float]
    tags: dict[str, str]
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    artifact_dir: Path | None = None
    p_bayes: pd.Series | None = None  # known Bayes-optimal p on synthetic data
    selection: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # fit_recipe's tables
    universe: dict[str, Any] | None = None  # a universe's evidence (universe_evidence)


def horizon_spec(cfg: dict[str, Any]) -> tuple[str, int, str]:
    """`horizon` -> (timeframe, horizon_bars, horizon_id) by one rule (phat.contract.labels)."""
    return parse_horizon(str(cfg["horizon"]))


def label_spec_from_cfg(cfg: dict[str, Any]) -> LabelSpec:
    timeframe, horizon_bars, horizon_id = horizon_spec(cfg)
    lab = cfg["label"]
    return LabelSpec(
        timeframe=timeframe,
        horizon_bars=horizon_bars,
        horizon_id=horizon_id,
        kind=str(lab["kind"]),
        threshold_bps=float(lab["threshold_bps"]),
        aggregation=str(lab["aggregation"]),
        neutral=str(lab["neutral"]),
    )


def feature_spec_from_cfg(cfg: dict[str, Any]) -> FeatureSpec:
    f = cfg["features"]
    # The missing-data policy is part of the contract; NaN volume is read by data.volume_nan
    # (one key for every verb) and recorded here so the artifact says how it was trained.
    missing = {
        **POLICY_MISSING,
        **dict(f["missing"]),
        "volume_nan": str(cfg["data"]["volume_nan"]),
    }
    return FeatureSpec(
        features=tuple({"fn": str(x["fn"]), "params": dict(x["params"])} for x in f["list"]),
        window=int(f["window"]),
        normalization=str(f["normalization"]),
        clip=float(f["clip"]),
        missing=missing,
    )


def split_config_from_cfg(cfg: dict[str, Any]) -> SplitConfig:
    s = dict(cfg["split"])
    try:
        return SplitConfig(**s)
    except TypeError as e:
        raise ConfigError(f"split: {e}") from None


def validate_config(cfg: dict[str, Any]) -> tuple[LabelSpec, FeatureSpec, SplitConfig]:
    """Cheap checks that answer before any heavy import or data load."""
    from phat.contract.splits import resolve_boundaries
    from phat.models.calibration import METHODS
    from phat.models.kinds import RECIPES

    lspec = label_spec_from_cfg(cfg)
    fspec = feature_spec_from_cfg(cfg)
    scfg = split_config_from_cfg(cfg)
    resolve_boundaries(scfg, lspec.horizon_bars, fspec.bars_read)
    if cfg["model"]["kind"] not in RECIPES:
        raise ConfigError(f"model.kind={cfg['model']['kind']!r}: expected one of {list(RECIPES)}")
    if cfg["calibration"]["method"] not in METHODS:
        raise ConfigError(
            f"calibration={cfg['calibration']['method']!r}: expected one of {list(METHODS)}"
        )
    return lspec, fspec, scfg


def synthetic_config(d: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """data.synthetic as (SyntheticConfig, the universe's shape: assets, vol_spread,
    correlation)."""
    from phat.data.synthetic import SyntheticConfig

    syn = dict(d["synthetic"])
    shape = {k: syn.pop(k) for k in ("assets", "vol_spread", "correlation") if k in syn}
    return SyntheticConfig(**syn), shape


def read_raw(d: dict[str, Any]) -> tuple[pd.DataFrame, str, pd.Series | None]:
    """The configured data before validation: a user file (`data.path`) or the embedded
    synthetic generator; returns (raw frame, symbol, known Bayes p for synthetic data)."""
    from phat.data.universe import dataset_name, one_series, read_pieces

    if d["path"]:
        one = one_series(d["path"])  # a folder, glob or list of one symbol's dated pieces
        if one is not None:
            return read_pieces(one[1], d["timestamp_format"], d["dayfirst"]), dataset_name(d), None
        return read_table(d["path"]), dataset_name(d), None
    from phat.data.synthetic import generate

    market = generate(synthetic_config(d)[0])
    return market.bars, dataset_name(d), market.p_up


def bars_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    """The data.* settings that say how raw bars are read (scoring.model.READ_SETTINGS)."""
    from phat.scoring.model import READ_SETTINGS

    return {k: d[k] for k in READ_SETTINGS}


def is_universe_data(d: dict[str, Any]) -> bool:
    """data.* names many assets by its path (a directory, glob or list) or by
    data.synthetic.assets > 0; a long file with a symbol column is found once read."""
    from phat.data.universe import is_universe

    if d["path"] is None:
        return int(d["synthetic"].get("assets", 0)) > 0
    return is_universe(d["path"])


def universe_sources(d: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(symbol, where, its files) per asset of a directory, glob or list (phat.data.universe:
    an asset's dated pieces are one source)."""
    from phat.data.universe import universe_groups

    return [(sym, _where(files), files) for sym, files in universe_groups(d["path"]).items()]


def _where(files: list[Path]) -> str:
    """A source's files as a refusal names them."""
    if len(files) == 1:
        return str(files[0])
    return f"{str(files[0])!r} .. {files[-1].name!r} ({len(files)} pieces)"


def long_sources(raw: pd.DataFrame, where: str) -> list[tuple[str, str, Any]] | None:
    """(symbol, where, rows) per asset of a long-format table, or None without a symbol column."""
    from phat.data.universe import long_symbols, split_long

    symbols = long_symbols(raw)
    if symbols is None:
        return None
    return [(sym, f"{where} symbol {sym}", rows) for sym, rows in split_long(raw, symbols)]


def load_universe(
    cfg: dict[str, Any],
    timeframe: str,
    model: Any = None,
    sources: list[tuple[str, str, Any]] | None = None,
) -> Any:
    """The configured universe, every asset read and validated alone (as load_bars reads one),
    then the universe rules (phat.data.universe); data.on_bad_asset=skip leaves a bad asset
    out and names it. With a loaded universe model, each asset is read under its own DataSpec
    (PHatModel.read_bars) and an asset the model does not list is refused by name."""
    from phat.data.universe import (
        Universe,
        check_universe,
        column_symbol,
        dataset_name,
        read_pieces,
    )

    d = cfg["data"]
    skip = str(d.get("on_bad_asset", "fail")) == "skip"
    skipped: dict[str, str] = {}
    p_bayes: dict[str, pd.Series] | None = None
    if d["path"] is None:
        from phat.data.synthetic import generate_universe

        syn, shape = synthetic_config(d)
        markets = generate_universe(syn, **shape)
        sources = [(sym, f"synthetic asset {sym}", m.bars) for sym, m in markets.items()]
        p_bayes = {sym: m.p_up for sym, m in markets.items()}
    elif sources is None:
        sources = universe_sources(d)

    def refused(sym: str, w: str, e: DataValidationError) -> None:
        msg = str(e) if str(e).startswith(w) else f"{w}: {e}"
        if not skip:
            raise DataValidationError(
                f"{msg} (data.on_bad_asset=skip leaves a bad asset out)"
            ) from None
        skipped[sym] = msg
        log.warning("left out of the universe: %s", msg)

    read: dict[str, tuple[str, Any]] = {}  # symbol -> (where, rows or (files, their tables))
    for sym, w, src in sources:
        if not isinstance(src, list):
            read[sym] = (w, src)
            continue
        try:  # a file's symbol column names its asset: pieces of one symbol are one asset
            tables = [read_table(f) for f in src]
            named = {column_symbol(f, t) for f, t in zip(src, tables, strict=True)} - {None}
            if len(named) > 1:
                raise DataValidationError(f"its symbol columns name {sorted(named)}")
        except DataValidationError as e:
            refused(sym, w, e)
            continue
        key = named.pop() if named else sym
        if key in read:  # another file of the same symbol: its pieces join
            first, (files, have) = read[key]
            read[key] = (first, (files + list(src), have + tables))
        else:
            read[key] = (w, (list(src), tables))
    where = {sym: w for sym, (w, _) in read.items()}
    assets: list[Bars] = []
    for sym in sorted(read):  # assets in symbol order, whatever their files are named
        w, src = read[sym]
        try:
            raw = (
                read_pieces(src[0], d["timestamp_format"], d["dayfirst"], raws=src[1])
                if isinstance(src, tuple)
                else src
            )
            if model is not None:
                bars = model.for_asset(sym).read_bars(raw, symbol=sym, **bars_kwargs(d))
            else:
                bars = prepare_bars(
                    raw, symbol=sym, timeframe=timeframe, max_gap=d["max_gap"],
                    resample_min_coverage=float(d["resample_min_coverage"]),
                    now=pd.Timestamp.now(tz="UTC"), source=w, announce=False, **bars_kwargs(d),
                )  # fmt: skip
        except DataValidationError as e:
            refused(sym, w, e)
            continue
        assets.append(bars)
    for sym, problem in check_universe(assets, where).items():
        if not skip:
            raise DataValidationError(f"{problem} (data.on_bad_asset=skip leaves it out)")
        skipped[sym] = problem
        log.warning("left out of the universe: %s", problem)
    assets = [a for a in assets if a.symbol not in skipped]
    if not assets:
        raise DataValidationError(
            f"no asset of the universe is usable: {shorten('; '.join(skipped.values()), 600)}"
        )
    if p_bayes is not None and assets[0].report.get("resampled_from") is not None:
        p_bayes = None  # the planted p is per native bar
    reason = str(assets[0].report.get("calendar_reason", ""))
    if reason.startswith("auto: "):  # one line for the universe, not one per asset
        log.info("data.calendar=auto chose %s for %d assets (%s: %s)", assets[0].calendar,
                 len(assets), assets[0].symbol, reason[len("auto: "):])  # fmt: skip
    return Universe(dataset_name(d), assets, skipped, p_bayes)


def load_bars(
    cfg: dict[str, Any], timeframe: str, model: Any = None
) -> tuple[Bars, pd.Series | None]:
    """The configured data, validated as `timeframe` bars under the data.* settings (training:
    finer bars are resampled); with a loaded model (scoring: backtest, monitor, promotion),
    read by the model itself (`PHatModel.read_bars`, the reader `phat predict` and serving
    use: its timeframe, calendar and max_gap, finer bars refused), so every scoring verb
    reads a file the same way. A universe (is_universe_data, or a long file) comes back as
    one StackedBars (phat.data.universe), its assets read one by one (load_universe). A
    universe model reads one listed asset's file as that asset (its own DataSpec)."""
    from phat.data.universe import one_series, stack, symbol_of

    d = cfg["data"]
    sources, column_symbol = None, None
    if not is_universe_data(d):
        raw, symbol, p = read_raw(d)
        sources = long_sources(raw, str(d["path"])) if d["path"] else None
        if sources is not None and len(sources) == 1:  # one symbol: one asset, named as before
            column_symbol, raw, sources = sources[0][0], sources[0][2], None
    if model is not None and model.universe is None and (sources or is_universe_data(d)):
        raise DataValidationError(
            f"data.path names a universe of assets, but the model scores one asset "
            f"({model.data_spec.get('symbol', '?')}): give that asset's bars"
        )
    one_file = sources is None and not is_universe_data(d)
    if model is not None and model.universe is not None and one_file:
        # one asset's file, scored as that listed asset (data.symbol, else its symbol column's
        # one value, else the file's name)
        symbol = str(
            d["symbol"]
            or column_symbol
            or (
                symbol_of(Path(str(d["path"])))
                if d["path"] and not one_series(d["path"])
                else symbol
            )
        )
        return model.for_asset(symbol).read_bars(raw, **bars_kwargs(d), symbol=symbol), p
    if sources is not None or is_universe_data(d):
        uni = load_universe(cfg, timeframe, model, sources)
        bars = stack(uni.name, uni.assets, uni.skipped)
        pb = None
        if uni.p_bayes is not None:
            pb = pd.concat([uni.p_bayes[a.symbol].loc[a.frame.index] for a in uni.assets])
        return bars, pb
    if model is not None:
        return model.read_bars(raw, symbol=symbol, **bars_kwargs(d)), p
    bars = prepare_bars(
        raw,
        symbol=symbol,
        timeframe=timeframe,
        max_gap=d["max_gap"],
        calendar=d["calendar"],
        volume_nan=d["volume_nan"],
        resample_min_coverage=float(d["resample_min_coverage"]),
        timestamp_format=d["timestamp_format"],
        dayfirst=d["dayfirst"],
        now=pd.Timestamp.now(tz="UTC"),
    )
    if bars.report.get("resampled_from") is not None:
        p = None  # the planted p is per native bar
    return bars, p


def git_sha() -> str:
    """Commit of the phat code that ran (asked where the package lives, not in the cwd,
    which is usually the user's data folder); `-dirty` with uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=here,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=here,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
class Prepared:
    """Everything decided before a model is fitted (no MLflow run exists yet)."""

    cfg: dict[str, Any]
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


@dataclass
class Series:
    """Data, labels and raw features of the whole bar series, before any split (what
    walk-forward folds and the single split both start from)."""

    cfg: dict[str, Any]
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


def raw_features(fspec: FeatureSpec, bars: Bars) -> np.ndarray:
    """Raw features of validated bars; a universe's asset by asset (no rolling statistic reads
    across assets, and every asset's values are the bits it gets scored alone)."""
    if not isinstance(bars, StackedBars):
        fspec.check_data(bars.frame)
        return fspec.compute_raw(bars.frame)
    parts = []
    for a in bars.assets:
        try:
            fspec.check_data(a.bars.frame)
        except DataValidationError as e:
            raise DataValidationError(f"asset {a.symbol}: {e}") from None
        parts.append(fspec.compute_raw(a.bars.frame))
    return np.concatenate(parts)


def prepare_series(cfg: dict[str, Any]) -> Series:
    """Load and validate data, build labels and raw features. Raises on bad input."""
    t0 = time.perf_counter()
    lspec, fspec, scfg = validate_config(cfg)
    seed = int(cfg["seed"])
    threads = int(cfg["threads"])
    _seed_all(seed, threads)
    bars, p_bayes = load_bars(cfg, lspec.timeframe)
    t1 = time.perf_counter()

    close = bars.frame["close"].to_numpy()
    raw = raw_features(fspec, bars)
    y = make_labels(close, bars.segment, lspec)
    windows_ok = fspec.valid_end_mask(raw, bars.segment)
    usable = windows_ok & ~np.isnan(y)
    # The same horizon as a sign label: finite wherever a label exists before neutral dropping.
    sign_spec = replace(lspec, kind="sign", threshold_bps=0.0)
    y_any = make_labels(close, bars.segment, sign_spec)
    no_gap = (
        bars.asset_of_rows() if isinstance(bars, StackedBars) else np.zeros(len(bars), np.int64)
    )
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


def prepare(cfg: dict[str, Any]) -> Prepared:
    """Load and validate data, build labels and features, split. Raises on bad input."""
    ser = prepare_series(cfg)
    fspec, data, asset_specs, spans = fold_inputs(cfg, ser, split_series(ser, ser.split_config))
    lspec, bars, y = ser.label_spec, ser.bars, ser.y
    timings = dict(ser.timings)
    return Prepared(
        cfg, lspec, fspec, bars, ser.p_bayes, y, spans, data, ser.counts, ser.seed,
        ser.threads, timings, asset_specs, ser,
    )  # fmt: skip


def timeline(bars: Bars) -> tuple[np.ndarray | None, int, int]:
    """(clock, concurrent, slack) of the split rules: a universe's rows' timeline slots, how
    many samples one slot holds at most (its assets: a purge counted in samples is scaled by
    it), and the largest tolerated hole (phat.contract.splits); one asset: (None, 1, 0)."""
    if isinstance(bars, StackedBars):
        return bars.clock, len(bars.assets), int(bars.max_gap_bars)
    return None, 1, 0


def with_validation_tail(
    cfg: dict[str, Any],
    spans: dict[str, np.ndarray],
    horizon_bars: int,
    bars_read: int,
    bars: Bars | None = None,
) -> dict[str, np.ndarray]:
    """For the TCN and the tree: the train span's tail becomes their early-stopping validation
    span (purged like every boundary, trainer.val_fraction; a universe's cut in time); the
    logistic model keeps the spans as they are (its capacity comes from the inner CV)."""
    if not model_kind(cfg["model"]["kind"]).validation_tail:
        return spans
    clock, _, slack = timeline(bars) if bars is not None else (None, 1, 0)
    fit_ends, val_ends = carve_tail(
        spans["train"], float(cfg["trainer"]["val_fraction"]), horizon_bars, bars_read, clock,
        slack,
    )  # fmt: skip
    return {
        "train": fit_ends,
        "validation": val_ends,
        **{k: v for k, v in spans.items() if k != "train"},
    }


def fold_inputs(
    cfg: dict[str, Any], ser: Series, spans: dict[str, np.ndarray]
) -> tuple[FeatureSpec, WindowData, dict[str, FeatureSpec], dict[str, np.ndarray]]:
    """A split's inputs to the recipe, for training and every walk-forward fold alike: the
    feature normalization fitted on its train bars (fold_features) and, for the kinds that
    early-stop, the train span's validation tail (with_validation_tail)."""
    fspec, data, asset_specs = fold_features(ser, spans["train"])
    spans = with_validation_tail(cfg, spans, ser.label_spec.horizon_bars, fspec.bars_read, ser.bars)
    return fspec, data, asset_specs, spans


@dataclass
class FoldFit:
    """The recipe fitted on one split, as it ships: the kept forecast and its calibrator, the
    universe's per-asset maps, and the logits and p_hat of the spans asked for."""

    fitted: Fitted
    per_asset: dict[str, Calibrator]
    logits: dict[str, np.ndarray]
    p_hat: dict[str, np.ndarray]


def fit_fold(
    cfg: dict[str, Any],
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


def fold_features(
    ser: Series, train: np.ndarray
) -> tuple[FeatureSpec, WindowData, dict[str, FeatureSpec]]:
    """Normalization fitted on the bars that train samples read, and the normalized rows.

    A universe's is fitted per asset on that asset's train rows (a z-score pooled over assets
    of different volatility would let the loud ones drown the quiet ones): returned per symbol
    (assets with no train sample have none, and no samples: split_series), with the pooled fit
    over all those rows as the FeatureSpec (what the artifact's feature_spec.json records)."""
    fspec, raw, bars = ser.feature_spec, ser.raw, ser.bars
    if not isinstance(bars, StackedBars):
        norm_rows = np.arange(max(0, int(train[0]) - fspec.bars_read + 1), int(train[-1]) + 1)
        fspec = fspec.fit_normalization(raw, norm_rows)
        return fspec, WindowData(fspec.normalize(raw), fspec.window), {}
    asset = bars.asset_of_rows()
    feats = np.zeros(raw.shape, dtype=np.float32)
    specs: dict[str, FeatureSpec] = {}
    rows_all = []
    for k, a in enumerate(bars.assets):
        mine = train[asset[train] == k]
        if not len(mine):
            continue
        rows = np.arange(max(a.start, int(mine.min()) - fspec.bars_read + 1), int(mine.max()) + 1)
        specs[a.symbol] = fspec.fit_normalization(raw, rows)
        feats[a.start : a.stop] = specs[a.symbol].normalize(raw[a.start : a.stop])
        rows_all.append(rows)
    pooled = fspec.fit_normalization(raw, np.concatenate(rows_all))
    return pooled, WindowData(feats, fspec.window), specs


def asset_spans(bars: StackedBars, most: int = 12) -> str:
    """Each asset's first and last bar, for a refusal: `AAA 2025-01-01..2025-03-13, ...`."""
    spans = [f"{a.symbol} {a.bars.index[0]:%Y-%m-%d}..{a.bars.index[-1]:%Y-%m-%d}"
             for a in bars.assets[:most]]  # fmt: skip
    more = len(bars.assets) - most
    return ", ".join(spans) + (f" and {more} more" if more > 0 else "")


def split_series(
    ser: Series, scfg: SplitConfig, usable: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """make_splits on the series (optionally on a narrower usable mask), with the gap hint."""
    bars, lspec, fspec, y = ser.bars, ser.label_spec, ser.feature_spec, ser.y
    counts = ser.counts
    usable = ser.usable if usable is None else usable
    clock, _, slack = timeline(bars)
    try:
        if clock is None:
            return make_splits(bars.index, usable, y, scfg, lspec.horizon_bars, fspec.bars_read)
        spans = make_splits(
            bars.index, usable, y, scfg, lspec.horizon_bars, fspec.bars_read, clock,
            bars.grid, slack,
        )  # fmt: skip
        # An asset with no train sample has no normalization (fold_features): no samples.
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


def last_returns(bars: Bars, fit: np.ndarray) -> np.ndarray:
    """The 1-bar log return per bar (the one-feature rules' input), each asset's on its own
    bars; a universe's in units of each asset's volatility (its standard deviation over the
    rows `fit`, positions or a mask), so one rule fitted on all assets is not the loud ones'."""
    from phat.models.rules import last_return

    close = bars.frame["close"].to_numpy()
    if not isinstance(bars, StackedBars):
        return last_return(close)
    r1 = np.concatenate([last_return(close[a.start : a.stop]) for a in bars.assets])
    groups = bars.asset_of_rows()
    rows = np.flatnonzero(fit) if np.asarray(fit).dtype == bool else np.asarray(fit)
    for g in np.unique(groups[rows]):
        sd = float(np.nanstd(r1[rows[groups[rows] == g]])) or 1.0
        r1[groups == g] /= sd
    return r1


RULES = ("climatology", "proxy", "last_sign", "last_return")


def rule_forecasts(
    y: np.ndarray,
    bars: Bars,
    spans: dict[str, np.ndarray],
    proxy: dict[str, Any] | None,
    cfg: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The test span scored by the simple forecasts a quant tries first (`RULES`), fitted on
    the train and calibration spans (phat train's and every walk-forward fold's): the one
    baseline ladder (`score_rules`) on spans. With the recipe's settings (`cfg`) and a
    universe whose recipe corrects each asset's calibration, climatology is corrected the same
    way (asset_climatology): base-rate differences alone never count as skill."""
    fit = np.concatenate(
        [spans["train"], spans.get("validation", spans["train"][:0]), spans["calibration"]]
    )
    base_rate = float(np.mean(y[spans["train"]]))
    out = score_rules(y, bars, fit, spans["test"], base_rate, proxy)
    if cfg is not None and isinstance(bars, StackedBars) and bool(cfg["calibration"]["per_asset"]):
        out["climatology"] = asset_climatology(
            y, bars, spans, base_rate, float(cfg["calibration"]["shrink_bars"])
        )
    return out


def fold_rules(
    cfg: dict[str, Any],
    ser: Series,
    fspec: FeatureSpec,
    data: WindowData,
    spans: dict[str, np.ndarray],
    proxy: dict[str, Any] | None,
) -> dict[str, np.ndarray]:
    """The baselines of a split (training's ladder and every walk-forward fold's record):
    rule_forecasts with the recipe's settings, the last-return rule as the recipe ships that
    rung (shipped_rule), so a candidate that is the rule equals its baseline bit for bit."""
    out = rule_forecasts(ser.y, ser.bars, spans, proxy, cfg)
    shipped = shipped_rule(cfg, ser, fspec, data, spans, "last_return")
    if shipped is not None:
        out["last_return"] = shipped
    return out


def shipped_rule(
    cfg: dict[str, Any],
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

    if (name != "climatology" and sel.return_column(fspec.names) is None) or fits_per_asset(
        cfg, ser.bars
    ):
        return None
    return fit_fold(cfg, ser, fspec, data, spans, score=("test",), keep=name).p_hat["test"]


def asset_climatology(
    y: np.ndarray, bars: StackedBars, spans: dict[str, np.ndarray], base_rate: float, shrink: float
) -> np.ndarray:
    """Climatology as strong as a recipe with per-asset corrections: the train span's pooled
    base rate, then each asset's correction fitted on its calibration samples and shrunk by
    their number exactly as the recipe shrinks its own (fit_asset_correction), on the test
    span. A forecast that is climatology plus per-asset corrections equals it in expectation."""
    from phat.models.calibration import fit_asset_correction

    asset = bars.asset_of_rows()
    cal, test = spans["calibration"], spans["test"]
    z = float(np.log(base_rate / (1.0 - base_rate)))
    out = np.full(len(test), base_rate)
    for k in range(len(bars.assets)):
        mine = cal[asset[cal] == k]
        known = mine[np.isfinite(y[mine])]
        fix = fit_asset_correction(np.full(len(known), base_rate), y[known], shrink)
        rows = asset[test] == k
        out[rows] = (
            Calibrator("none", {}).with_asset_correction(fix).predict(np.full(int(rows.sum()), z))
        )
    return out


def score_rules(
    y: np.ndarray,
    bars: Bars,
    fit: np.ndarray,
    score: np.ndarray,
    base_rate: float,
    proxy: dict[str, Any] | None,
) -> dict[str, np.ndarray]:
    """The baseline ladder, for training, walk-forward and promotion alike: the rows `score`
    (positions) forecast by climatology (`base_rate`: the train span's), the proxy (its
    `signal.proxy` settings; left out when None), the last bar's sign and a logistic on the
    last return, both fitted on the rows `fit` (positions) where the label and the return are
    known.

    A universe's rules are pooled as its model is: climatology is the train span's base rate
    over all assets (a per-asset rate is noisier, and under no signal a pooled model beat it
    "significantly": docs/results.md), and the sign and return rules are fitted on all
    assets' rows of the last return in units of each asset's own volatility (its standard
    deviation over its fitting rows); the proxy is computed per asset."""
    from phat.models.rules import last_return_logistic, last_sign_p, proxy_p_hat

    fit, score = np.asarray(fit), np.asarray(score)
    r1 = last_returns(bars, fit)
    ok = np.isfinite(r1[fit]) & np.isfinite(y[fit])
    rf, yf = r1[fit][ok], y[fit][ok]
    out = {"climatology": np.full(len(score), base_rate)}
    if proxy is not None:
        close = bars.frame["close"].to_numpy()
        pieces = [(a.start, a.stop) for a in bars.assets] if isinstance(bars, StackedBars) else []
        p_proxy = np.concatenate(
            [proxy_p_hat(close[a:b], **proxy) for a, b in pieces or [(0, len(bars))]]
        )
        out["proxy"] = p_proxy[score]
    out["last_sign"] = last_sign_p(rf, yf, r1[score])
    out["last_return"] = last_return_logistic(rf, yf, r1[score])
    return out


def baseline_ladder(
    prep: Prepared,
    spans: dict[str, np.ndarray],
    p_test: np.ndarray,
    rules: dict[str, np.ndarray],
) -> dict[str, float]:
    """The test span scored by the split's baselines (`rules`: fold_rules): test_brier_<rule> and a one-sided
    Diebold-Mariano p-value of the model against each (dm_pvalue_vs_<rule>; small = the model
    is better); a universe's on the per-timestamp mean loss differential. Climatology's
    Brier is test_brier_climatology (evaluate_split)."""
    from phat.evaluation.significance import diebold_mariano, universe_diebold_mariano

    te = spans["test"]
    yt = prep.y[te]
    loss = (p_test - yt) ** 2
    clock = timeline(prep.bars)[0]
    out: dict[str, float] = {}
    for name, pr in rules.items():
        good = np.isfinite(pr)
        lb = (pr[good] - yt[good]) ** 2
        if name != "climatology" or clock is not None:
            out[f"test_brier_{name}"] = float(np.mean(lb)) if good.any() else float("nan")
        h = prep.label_spec.horizon_bars
        out[f"dm_pvalue_vs_{name}"] = (
            diebold_mariano(loss[good], lb, h)["pvalue"]
            if clock is None
            else universe_diebold_mariano(loss[good], lb, clock[te][good], h)["pvalue"]
        )
    return out


def fit_model(
    cfg: dict[str, Any],
    seed: int,
    threads: int,
    data: WindowData,
    y: np.ndarray,
    spans: dict[str, np.ndarray],
    tracking: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Build the configured model (or with `params` instead of model.params) and fit it on
    spans["train"] (the TCN with early stopping on spans["validation"])."""
    mcfg = cfg["model"]
    params = dict(mcfg["params"] if params is None else params)
    if model_kind(mcfg["kind"]).trainer:
        params["trainer"] = dict(cfg["trainer"])
        params["threads"] = threads
        params["tracking"] = tracking
    model = build_model(mcfg["kind"], params, seed)
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

    model: Any
    calibrator: Calibrator
    rung: str  # "model" or the rule rung kept (climatology, last_return)
    params: dict[str, float]  # chosen capacity (selected_C, when the grid was searched)
    tables: dict[str, list[dict[str, Any]]]  # inner CV and ladder rows (run artifacts)


def fit_recipe(
    cfg: dict[str, Any],
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
    the ladder kept without selection (a rule as the recipe ships it: pipeline.shipped_rule).
    """
    if keep is not None:
        return _kept_rung(cfg, seed, data, y, spans, lspec, fspec, bars, keep)
    if fits_per_asset(cfg, bars):
        return fit_per_asset(cfg, seed, threads, data, y, spans, lspec, fspec, bars)
    from phat.contract.splits import required_boundaries
    from phat.models import selection as sel

    mcfg = cfg["model"]
    params = dict(mcfg["params"])
    tables: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, float] = {}
    tr, cal = spans["train"], spans["calibration"]
    clock, concurrent, slack = timeline(bars) if bars is not None else (None, 1, 0)
    purge = lspec.horizon_bars * concurrent  # in samples of the time-ordered spans
    ladder = str(mcfg.get("ladder", "off")) == "on"
    rung, model = "model", None
    spec = model_kind(mcfg["kind"])
    # the inner folds' purge and embargo (in samples; slots of a universe's timeline)
    b = required_boundaries(lspec.horizon_bars, fspec.bars_read)
    inner = (b.purge + slack, b.embargo + slack, seed)
    times = None if clock is None else clock[tr]
    if spec.inner_cv and (ladder or params.get("C") == "auto"):
        col = sel.return_column(fspec.names) if ladder else None
        grid = sel.C_GRID if params.get("C") == "auto" else (float(params["C"]),)
        rung, c, tables["inner_cv"] = sel.choose_logistic(
            data, tr, y[tr], int(params["lookback"]), col, grid, *inner,
            int(params["max_iter"]), times, ladder,
        )  # fmt: skip
        if rung != "model":
            model = sel.rule_rung(rung, data, tr, y[tr], col, seed)
        elif c is not None:
            params["C"] = c
            if len(grid) > 1:
                chosen["selected_C"] = c
                say_grid_edge("model.params.C", c, grid, chosen)
    if params.get("max_leaf_nodes") == "auto":  # the tree's leaves on the same inner CV
        params["max_leaf_nodes"], tables["inner_cv"] = sel.choose_tree_leaves(
            data, tr, y[tr], params, sel.LEAVES_GRID, *inner, times
        )
        chosen["selected_max_leaf_nodes"] = float(params["max_leaf_nodes"])
        say_grid_edge("model.params.max_leaf_nodes", params["max_leaf_nodes"], sel.LEAVES_GRID,
                      chosen)  # fmt: skip
    trainer = dict(cfg["trainer"])
    searched = {
        name: grid
        for name, grid in sel.REFIT_GRIDS.items()
        if spec.trainer and {**params, **trainer}.get(name) == "auto"
    }
    if searched:  # the TCN's width and weight decay: every candidate refitted per inner fold

        def fold_fit(cand: dict[str, Any], fit: np.ndarray, val: np.ndarray) -> tuple[Any, int]:
            f, tail = carve_tail(fit, float(trainer["val_fraction"]), lspec.horizon_bars,
                                 fspec.bars_read, clock, slack)  # fmt: skip
            m = fit_model(
                {**cfg, "trainer": {**trainer, **_of(cand, trainer)}}, seed, threads, data, y,
                {"train": f, "validation": tail}, None, {**params, **_of(cand, params)},
            )  # fmt: skip
            return m.logits(data, val), int(m.history["best_epoch"]) + 1

        cand, tables["inner_cv"] = sel.choose_by_refits(
            tr, y[tr], sel.refit_candidates(searched), fold_fit, *inner[:2], times
        )
        params.update(_of(cand, params))
        trainer.update(_of(cand, trainer))
        chosen.update({f"selected_{k}": float(v) for k, v in cand.items()})
    refits = ladder and spec.ladder_refits
    if refits:  # the ladder on the same purged inner CV, refitted
        col = sel.return_column(fspec.names)
        names = ["climatology", *(["last_return"] if col is not None else []), "model"]

        def rung_fit(name: str, fit: np.ndarray, val: np.ndarray) -> np.ndarray:
            if name != "model":
                return sel.rule_rung(name, data, fit, y[fit], col, seed).logits(data, val)
            f, tail = carve_tail(fit, float(trainer["val_fraction"]), lspec.horizon_bars,
                                 fspec.bars_read, clock, slack)  # fmt: skip
            m = fit_model({**cfg, "trainer": trainer}, seed, threads, data, y,
                          {"train": f, "validation": tail}, None, params)  # fmt: skip
            return m.logits(data, val)

        try:
            j, tables["ladder"] = sel.choose_rung_by_refits(tr, y[tr], names, rung_fit,
                                                             *inner[:2], times)  # fmt: skip
        except DataValidationError as e:  # a fold's fit set too short for the stopping tail
            log.warning("model.ladder: the %s's inner folds cannot be refitted as its final fit "
                        "(%s); its ladder is judged on the calibration slice instead",
                        spec.name, e)  # fmt: skip
            refits = False
        else:
            rung = names[j]
            if rung != "model":
                model = sel.rule_rung(rung, data, tr, y[tr], col, seed)
    if model is None:
        model = fit_model(
            {**cfg, "trainer": trainer}, seed, threads, data, y, spans, tracking, params
        )
        if spec.stopped_param and "validation" in spans:  # early stopping's choice
            chosen[f"selected_{spec.stopped_param}"] = float(model.params[spec.stopped_param])
    method = cfg["calibration"]["method"]
    if ladder and not (spec.inner_cv or refits):  # else the inner CV ranked them
        rungs = [*sel.rule_rungs(data, tr, y[tr], fspec.names, seed), ("model", model)]
        j, rows = sel.choose_rung(method, [m.logits(data, cal) for _, m in rungs], y[cal], purge)
        if j is not None:
            rung, model = rungs[j]
            tables["ladder"] = [{"rung": n, "on": "calibration slice", **r, "chosen": i == j}
                                for i, ((n, _), r) in enumerate(zip(rungs, rows, strict=True))]  # fmt: skip
    return Fitted(model, _calibrator(cfg, model, data, y, cal, purge), rung, chosen, tables)


def _calibrator(
    cfg: dict[str, Any], model: Any, data: WindowData, y: np.ndarray, cal: np.ndarray, purge: int
) -> Calibrator:
    """The recipe's calibrator of a kept forecast, on the calibration span (with the ladder,
    Platt keeps the identity map unless its fit is significant)."""
    ladder = str(cfg["model"].get("ladder", "off")) == "on"
    return fit_calibrator(cfg["calibration"]["method"], model.logits(data, cal), y[cal],
                          purge=purge, identity_first=ladder)  # fmt: skip


def _kept_rung(
    cfg: dict[str, Any], seed: int, data: WindowData, y: np.ndarray,
    spans: dict[str, np.ndarray], lspec: LabelSpec, fspec: FeatureSpec, bars: Bars | None,
    rung: str,
) -> Fitted:  # fmt: skip
    """The rung `rung` fitted and calibrated exactly as fit_recipe does when its ladder keeps
    it (its last lines, with the selection left out)."""
    from phat.models import selection as sel

    tr, cal = spans["train"], spans["calibration"]
    model = sel.rule_rung(rung, data, tr, y[tr], sel.return_column(fspec.names), seed)
    purge = lspec.horizon_bars * (timeline(bars)[1] if bars is not None else 1)
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
    cfg: dict[str, Any],
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

    if not isinstance(bars, StackedBars) or not bool(cfg["calibration"]["per_asset"]):
        return {}
    asset = bars.asset_of_rows()[cal_ends]
    p = calibrator.predict(logits["calibration"])
    shrink = float(cfg["calibration"]["shrink_bars"])
    return {
        a.symbol: calibrator.with_asset_correction(
            fit_asset_correction(p[asset == k], y[cal_ends][asset == k], shrink)
        )
        for k, a in enumerate(bars.assets)
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
    for k, a in enumerate(bars.assets):  # type: ignore[attr-defined]
        m = asset == k
        out[m] = per_asset.get(a.symbol, calibrator).predict(z[m])
    return out


def universe_evidence(
    prep: Prepared,
    spans: dict[str, np.ndarray],
    test: SpanPredictions,
    calibrator: Calibrator,
    per_asset: bool,
    rules: dict[str, np.ndarray],
) -> dict[str, Any]:
    """A universe's test-span evidence: the per-asset table (phat.evaluation.universe), the
    pooled tests on per-timestamp means, and with per-asset calibration the same span under
    the pooled map alone (test_brier_pooled_map, test_ece_pooled_map) to compare."""
    from phat.evaluation.metrics import brier, ece
    from phat.evaluation.universe import REPORT_FDR, per_asset_table, universe_metrics

    bars = prep.bars
    assert isinstance(bars, StackedBars)
    te = spans["test"]
    symbols = np.array([a.symbol for a in bars.assets])[bars.asset_of_rows()[te]]
    h, n_bins = prep.label_spec.horizon_bars, int(prep.cfg["metrics"]["n_bins"])
    table = per_asset_table(
        symbols, test.y, test.p_hat, rules["climatology"], rules["last_return"], h, n_bins,
        REPORT_FDR,
    )  # fmt: skip
    metrics = universe_metrics(
        table, test.y, test.p_hat,
        {"climatology": rules["climatology"], "last_return": rules["last_return"]},
        bars.clock[te], h,
    )  # fmt: skip
    if per_asset:
        pooled = calibrator.predict(test.logits)
        metrics["test_brier_pooled_map"] = brier(test.y, pooled)
        metrics["test_ece_pooled_map"] = ece(test.y, pooled, n_bins=n_bins)
    if prep.p_bayes is not None:
        pb = prep.p_bayes.to_numpy()[te]
        per = [
            (brier(test.y[m], test.p_hat[m]), brier(test.y[m], pb[m]))
            for m in (symbols == s for s in np.unique(symbols))
        ]
        metrics["asset_mean_brier_over_bayes"] = float(np.mean([a / b for a, b in per]))
    return {"table": table, "symbols": symbols, "metrics": metrics}


def universe_spec(
    bars: StackedBars, asset_specs: dict[str, FeatureSpec], per_asset: dict[str, Calibrator]
) -> dict[str, Any]:
    """What a universe model's artifact stores about its assets (universe.json): per listed
    asset its DataSpec, its fitted feature normalization and its calibration correction."""
    assets = {}
    for a in bars.assets:
        if a.symbol not in asset_specs:
            continue  # no train sample: not in the model (universe_tags names it)
        spec = asset_specs[a.symbol].to_dict()["normalization_params"]
        cal = per_asset.get(a.symbol)
        assets[a.symbol] = {
            "data_spec": a.bars.data_spec(),
            "normalization": spec,
            "calibration": None if cal is None else cal.params["asset_correction"],
        }
    return {"name": bars.symbol, "unlisted": "refuse", "assets": assets}


def asset_maps(cfg: dict[str, Any], bars: Bars) -> str:
    """What the recipe's calibration does per asset (the phat.asset_maps tag, and a walk-forward
    record's recipe): `pooled`, or `per_asset shrink_bars=<n>` (asset_calibrators)."""
    if not isinstance(bars, StackedBars) or not bool(cfg["calibration"]["per_asset"]):
        return "pooled"
    return f"per_asset shrink_bars={float(cfg['calibration']['shrink_bars']):g}"


def universe_tags(bars: StackedBars, asset_specs: dict[str, FeatureSpec]) -> dict[str, str]:
    """phat.universe, phat.assets (the count), and the assets left out with why."""
    untrained = [a.symbol for a in bars.assets if a.symbol not in asset_specs]
    tags = {Tag.UNIVERSE: bars.symbol, Tag.ASSETS: str(len(asset_specs))}
    skipped = dict(bars.report.get("skipped") or {})
    skipped.update({s: "no sample in the train span" for s in untrained})
    if skipped:
        tags[Tag.ASSETS_SKIPPED] = canonical_json(skipped)[:4000]
    return tags


def fits_per_asset(cfg: dict[str, Any], bars: Any) -> bool:
    """A universe under model.pooling=per_asset: one fit per asset (what engine=ray fans out)."""
    return isinstance(bars, StackedBars) and cfg["model"].get("pooling") == "per_asset"


@dataclass
class _AssetFitInputs:
    """What every asset's fit reads (shared once with the engine's workers)."""

    cfg: Any
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
    cfg: dict[str, Any],
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
    symbols = [a.symbol for a in bars.assets]
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
        cfg["calibration"]["method"], model.logits(data, cal), y[cal],
        purge=lspec.horizon_bars * len(symbols),
        identity_first=str(cfg["model"].get("ladder", "off")) == "on",
    )  # fmt: skip
    return Fitted(model, calibrator, canonical_json(rungs), {}, tables)


def fit_evaluate(
    prep: Prepared, out_dir: str | Path, tracking: dict[str, Any] | None = None
) -> TrainResult:
    """Fit, calibrate on the calibration span, evaluate, write the artifact to out_dir/model.

    `tracking` ({"uri", "run_id"}) lets models that log while training (the TCN) write into
    the caller's MLflow run.
    """
    cfg, y, spans, data = prep.cfg, prep.y, prep.spans, prep.data
    lspec, fspec, bars = prep.label_spec, prep.feature_spec, prep.bars
    timings = dict(prep.timings)
    t = time.perf_counter()
    fold = fit_fold(cfg, prep.series, fspec, data, spans, tracking)
    fitted, per_asset, logits = fold.fitted, fold.per_asset, fold.logits
    model, calibrator = fitted.model, fitted.calibrator
    tr = spans["train"]
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    preds = {
        k: SpanPredictions(
            ends=ends,
            timestamps=bars.index[ends],
            y=y[ends],
            logits=logits[k],
            p_raw=Calibrator("none").predict(logits[k]),
            p_hat=fold.p_hat[k],
        )
        for k, ends in spans.items()
    }
    mc = cfg["metrics"]
    base_rate = float(np.mean(y[tr]))
    metrics: dict[str, float] = {}
    for k in ("calibration", "test"):
        metrics.update(
            evaluate_split(
                k,
                preds[k].y,
                preds[k].p_raw,
                preds[k].p_hat,
                base_rate,
                n_bins=int(mc["n_bins"]),
                # a universe's samples are time-major, one per asset per bar: a block of the
                # same time span holds that many times the samples
                block=int(mc["bootstrap_block"]) * timeline(bars)[1],
                n_boot=int(mc["bootstrap_n"]),
                seed=prep.seed,
            )
        )
    metrics["train_base_rate"] = base_rate
    metrics.update(
        selection_metrics(
            cfg["calibration"]["method"],
            logits["calibration"],
            y[spans["calibration"]],
            lspec.horizon_bars * timeline(bars)[1],
            int(mc["n_bins"]),
        )
    )
    assert prep.series is not None  # the split's baselines, fitted once for both reports
    rules = fold_rules(cfg, prep.series, fspec, data, spans, dict(cfg["signal"]["proxy"]))
    metrics.update(baseline_ladder(prep, spans, preds["test"].p_hat, rules))
    evidence = None
    if isinstance(bars, StackedBars):
        evidence = universe_evidence(prep, spans, preds["test"], calibrator, bool(per_asset), rules)
        metrics.update(evidence["metrics"])
    if prep.p_bayes is not None:
        pb = prep.p_bayes.to_numpy()[spans["test"]]
        metrics["test_brier_bayes"] = float(np.mean((pb - preds["test"].y) ** 2))
    for k, v in prep.counts.items():
        metrics[f"data_{k}"] = float(v)
    metrics["model_parameters"] = float(model.n_parameters)
    metrics.update(fitted.params)
    timings["calibrate_evaluate_s"] = time.perf_counter() - t

    tags = {
        Tag.FEATURE_VERSION: fspec.feature_version,
        Tag.LABEL_DEFINITION: lspec.canonical(),
        Tag.HORIZON_ID: lspec.horizon_id,
        Tag.HORIZON_BARS: str(lspec.horizon_bars),
        Tag.TIMEFRAME: lspec.timeframe,
        Tag.CALIBRATION: calibrator.to_json(),
        Tag.TRAINING_WINDOW: canonical_json(span_window(bars.index, spans)),
        Tag.DATA_HASH: bars.data_hash(),
        Tag.MODEL_KIND: str(cfg["model"]["kind"]),  # the recipe's kind
        Tag.SELECTED_RUNG: fitted.rung,
        Tag.SEED: str(prep.seed),
        Tag.THREADS: str(prep.threads),
        Tag.GIT_SHA: git_sha(),
        Tag.SYMBOL: bars.symbol,
        Tag.CALENDAR: bars.calendar,
        Tag.MAX_GAP_BARS: str(bars.max_gap_bars),
        Tag.PROMOTABLE: "true" if calibrator.promotable else "false",
        Tag.RESOLUTION: str(calibrator.params.get("resolution", "ok")),
        Tag.ASSET_MAPS: asset_maps(cfg, bars),
    }
    if len(tags[Tag.CALIBRATION]) > 4000:  # isotonic tables are long; the JSON file has them
        tags[Tag.CALIBRATION] = canonical_json(
            {"method": calibrator.method, "params": "see model/calibration.json"}
        )
    universe = None
    if isinstance(bars, StackedBars):
        universe = universe_spec(bars, prep.asset_specs, per_asset)
        tags.update(universe_tags(bars, prep.asset_specs))
        tags[Tag.POOLING] = str(cfg["model"].get("pooling", "pooled"))
    out = Path(out_dir)
    tags[Tag.MODEL_HASH] = save_artifact(
        out / "model", model, fspec, lspec, calibrator, tags, bars.data_spec(), universe
    )
    timings["total_s"] = sum(timings.values())
    return TrainResult(
        bars=bars,
        label_spec=lspec,
        feature_spec=fspec,
        model=model,
        calibrator=calibrator,
        spans=spans,
        predictions=preds,
        metrics=metrics,
        tags=tags,
        counts=prep.counts,
        timings=timings,
        artifact_dir=out / "model",
        p_bayes=prep.p_bayes,
        selection=fitted.tables,
        universe=evidence,
    )


def train(
    cfg: dict[str, Any], out_dir: str | Path, tracking: dict[str, Any] | None = None
) -> TrainResult:
    """prepare + fit_evaluate, without MLflow (tests and notebooks)."""
    return fit_evaluate(prepare(cfg), out_dir, tracking)
