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
from phat.errors import ConfigError, DataValidationError
from phat.evaluation.metrics import evaluate_split
from phat.hashing import canonical_json
from phat.models.baselines import WindowData, build_model
from phat.models.calibration import Calibrator, fit_calibrator
from phat.registry.artifact import save_artifact

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
    from phat.models.baselines import MODEL_KINDS
    from phat.models.calibration import METHODS

    lspec = label_spec_from_cfg(cfg)
    fspec = feature_spec_from_cfg(cfg)
    scfg = split_config_from_cfg(cfg)
    resolve_boundaries(scfg, lspec.horizon_bars, fspec.bars_read)
    if cfg["model"]["kind"] not in MODEL_KINDS:
        raise ConfigError(
            f"model.kind={cfg['model']['kind']!r}: expected one of {sorted(MODEL_KINDS)}"
        )
    if cfg["calibration"]["method"] not in METHODS:
        raise ConfigError(
            f"calibration={cfg['calibration']['method']!r}: expected one of {list(METHODS)}"
        )
    return lspec, fspec, scfg


def read_raw(d: dict[str, Any]) -> tuple[pd.DataFrame, str, pd.Series | None]:
    """The configured data before validation: a user file (`data.path`) or the embedded
    synthetic generator; returns (raw frame, symbol, known Bayes p for synthetic data)."""
    if d["path"]:
        return read_table(d["path"]), str(d["symbol"] or Path(d["path"]).stem), None
    from phat.data.synthetic import SyntheticConfig, generate

    market = generate(SyntheticConfig(**dict(d["synthetic"])))
    return market.bars, str(d["symbol"] or "SYNTH"), market.p_up


def load_bars(
    cfg: dict[str, Any], timeframe: str, model: Any = None
) -> tuple[Bars, pd.Series | None]:
    """The configured data, validated as `timeframe` bars under the data.* settings (training:
    finer bars are resampled); with a loaded model (scoring: backtest, monitor, promotion),
    read by the model itself (`PHatModel.read_bars`, the reader `phat predict` and serving
    use: its timeframe, calendar and max_gap, finer bars refused), so every scoring verb
    reads a file the same way."""
    d = cfg["data"]
    raw, symbol, p = read_raw(d)
    if model is not None:
        bars = model.read_bars(
            raw,
            symbol=symbol,
            calendar=d["calendar"],
            volume_nan=d["volume_nan"],
            timestamp_format=d["timestamp_format"],
            dayfirst=d["dayfirst"],
        )
        return bars, p
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
    fspec.check_data(bars.frame)
    raw = fspec.compute_raw(bars.frame)
    y = make_labels(close, bars.segment, lspec)
    windows_ok = fspec.valid_end_mask(raw, bars.segment)
    usable = windows_ok & ~np.isnan(y)
    # The same horizon as a sign label: finite wherever a label exists before neutral dropping.
    sign_spec = replace(lspec, kind="sign", threshold_bps=0.0)
    y_any = make_labels(close, bars.segment, sign_spec)
    no_gap = np.zeros(len(bars), dtype=np.int64)
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
    spans = split_series(ser, ser.split_config)
    fspec, data = fold_features(ser, spans["train"])
    lspec, bars, y = ser.label_spec, ser.bars, ser.y
    spans = with_validation_tail(cfg, spans, lspec.horizon_bars, fspec.bars_read)
    timings = dict(ser.timings)
    return Prepared(
        cfg, lspec, fspec, bars, ser.p_bayes, y, spans, data, ser.counts, ser.seed,
        ser.threads, timings,
    )  # fmt: skip


def with_validation_tail(
    cfg: dict[str, Any], spans: dict[str, np.ndarray], horizon_bars: int, bars_read: int
) -> dict[str, np.ndarray]:
    """For the TCN and the tree: the train span's tail becomes their early-stopping validation
    span (purged like every boundary, trainer.val_fraction); the logistic model keeps the
    spans as they are (its capacity comes from the inner CV)."""
    if cfg["model"]["kind"] not in ("tcn", "tree"):
        return spans
    fit_ends, val_ends = carve_tail(
        spans["train"], float(cfg["trainer"]["val_fraction"]), horizon_bars, bars_read
    )
    return {
        "train": fit_ends,
        "validation": val_ends,
        **{k: v for k, v in spans.items() if k != "train"},
    }


def fold_features(ser: Series, train: np.ndarray) -> tuple[FeatureSpec, WindowData]:
    """Normalization fitted on the bars that train samples read, and the normalized rows."""
    fspec = ser.feature_spec
    norm_rows = np.arange(max(0, int(train[0]) - fspec.bars_read + 1), int(train[-1]) + 1)
    fspec = fspec.fit_normalization(ser.raw, norm_rows)
    return fspec, WindowData(fspec.normalize(ser.raw), fspec.window)


def split_series(
    ser: Series, scfg: SplitConfig, usable: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """make_splits on the series (optionally on a narrower usable mask), with the gap hint."""
    bars, lspec, fspec, y = ser.bars, ser.label_spec, ser.feature_spec, ser.y
    counts = ser.counts
    usable = ser.usable if usable is None else usable
    try:
        return make_splits(bars.index, usable, y, scfg, lspec.horizon_bars, fspec.bars_read)
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


def baseline_ladder(
    prep: Prepared, spans: dict[str, np.ndarray], p_test: np.ndarray, cfg: dict[str, Any]
) -> dict[str, float]:
    """The test span scored by the simple forecasts a quant tries first, fitted on the train
    and calibration spans: test_brier_<rule> and a one-sided Diebold-Mariano p-value of the
    model against each (dm_pvalue_vs_<rule>; small = the model is better). Climatology's
    Brier is test_brier_climatology (evaluate_split)."""
    from phat.evaluation.significance import diebold_mariano
    from phat.models.rules import (
        climatology,
        last_return,
        last_return_logistic,
        last_sign_p,
        proxy_p_hat,
    )

    y = prep.y
    te = spans["test"]
    fit = np.concatenate(
        [spans["train"], spans.get("validation", spans["train"][:0]), spans["calibration"]]
    )
    close = prep.bars.frame["close"].to_numpy()
    r1 = last_return(close)
    ok = np.isfinite(r1[fit])
    rules = {
        "climatology": climatology(y[spans["train"]], len(te)),
        "proxy": proxy_p_hat(close)[te],
        "last_sign": last_sign_p(r1[fit][ok], y[fit][ok], r1[te]),
        "last_return": last_return_logistic(r1[fit][ok], y[fit][ok], r1[te]),
    }
    yt = y[te]
    loss = (p_test - yt) ** 2
    out: dict[str, float] = {}
    for name, pr in rules.items():
        good = np.isfinite(pr)
        lb = (pr[good] - yt[good]) ** 2
        if name != "climatology":
            out[f"test_brier_{name}"] = float(np.mean(lb)) if good.any() else float("nan")
        out[f"dm_pvalue_vs_{name}"] = diebold_mariano(loss[good], lb, prep.label_spec.horizon_bars)[
            "pvalue"
        ]
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
    if mcfg["kind"] == "tcn":
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
) -> Fitted:
    """The one recipe `phat train` and every walk-forward fold run (models/selection.py):

    - logistic: ladder and capacity in one purged inner CV of the train span (climatology,
      the 1-bar return alone, the recipe's inputs over C_GRID with model.params.C=auto or at
      the given C), simplest within one standard error of the best log loss;
    - tree, TCN: the model fitted, then judged against the rules it nests on the calibration
      slice (calibrator on its first half, log loss on its second);
    - then the calibrator on the calibration span (with the ladder, Platt keeps the identity
      map unless its fit is significant). `model.ladder=off` keeps the model and plain Platt;
      C=auto still searches the grid.
    """
    from phat.contract.splits import required_boundaries
    from phat.models import selection as sel

    mcfg = cfg["model"]
    params = dict(mcfg["params"])
    tables: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, float] = {}
    tr, cal = spans["train"], spans["calibration"]
    purge = lspec.horizon_bars
    ladder = str(mcfg.get("ladder", "off")) == "on"
    rung, model = "model", None
    if mcfg["kind"] == "logistic" and (ladder or params.get("C") == "auto"):
        b = required_boundaries(lspec.horizon_bars, fspec.bars_read)
        col = sel.return_column(fspec.names) if ladder else None
        grid = sel.C_GRID if params.get("C") == "auto" else (float(params["C"]),)
        rung, c, tables["inner_cv"] = sel.choose_logistic(
            data, tr, y[tr], int(params["lookback"]), col, grid, b.purge, b.embargo, seed,
            int(params["max_iter"]),
        )  # fmt: skip
        if not ladder:  # the rules were not candidates: the grid's choice is the model's C
            rung = "model"
        if rung != "model":
            model = sel.rule_rung(rung, data, tr, y[tr], col, seed)
        elif c is not None:
            params["C"] = c
            if len(grid) > 1:
                chosen["selected_C"] = c
    if model is None:
        model = fit_model(cfg, seed, threads, data, y, spans, tracking, params)
        if mcfg["kind"] == "tree" and "validation" in spans:  # early stopping's choice
            chosen["selected_max_iter"] = float(model.params["max_iter"])
    method = cfg["calibration"]["method"]
    if ladder and mcfg["kind"] != "logistic":
        rungs = [*sel.rule_rungs(data, tr, y[tr], fspec.names, seed), ("model", model)]
        j, rows = sel.choose_rung(method, [m.logits(data, cal) for _, m in rungs], y[cal], purge)
        if j is not None:
            rung, model = rungs[j]
            tables["ladder"] = [{"rung": n, **r, "chosen": i == j}
                                for i, ((n, _), r) in enumerate(zip(rungs, rows, strict=True))]  # fmt: skip
    calibrator = fit_calibrator(
        method, model.logits(data, cal), y[cal], purge=purge, identity_first=ladder
    )
    return Fitted(model, calibrator, rung, chosen, tables)


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
    fitted = fit_recipe(cfg, prep.seed, prep.threads, data, y, spans, lspec, fspec, tracking)
    model, calibrator = fitted.model, fitted.calibrator
    tr = spans["train"]
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    logits = {k: model.logits(data, v) for k, v in spans.items()}
    preds = {
        k: SpanPredictions(
            ends=ends,
            timestamps=bars.index[ends],
            y=y[ends],
            logits=logits[k],
            p_raw=Calibrator("none").predict(logits[k]),
            p_hat=calibrator.predict(logits[k]),
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
                block=int(mc["bootstrap_block"]),
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
            lspec.horizon_bars,
            int(mc["n_bins"]),
        )
    )
    metrics.update(baseline_ladder(prep, spans, preds["test"].p_hat, cfg))
    if prep.p_bayes is not None:
        pb = prep.p_bayes.to_numpy()[spans["test"]]
        metrics["test_brier_bayes"] = float(np.mean((pb - preds["test"].y) ** 2))
    for k, v in prep.counts.items():
        metrics[f"data_{k}"] = float(v)
    metrics["model_parameters"] = float(model.n_parameters)
    metrics.update(fitted.params)
    timings["calibrate_evaluate_s"] = time.perf_counter() - t

    tags = {
        "phat.feature_version": fspec.feature_version,
        "phat.label_definition": lspec.canonical(),
        "phat.horizon_id": lspec.horizon_id,
        "phat.horizon_bars": str(lspec.horizon_bars),
        "phat.timeframe": lspec.timeframe,
        "phat.calibration": calibrator.to_json(),
        "phat.training_window": canonical_json(span_window(bars.index, spans)),
        "phat.data_hash": bars.data_hash(),
        "phat.model_kind": str(cfg["model"]["kind"]),  # the recipe's kind
        "phat.selected_rung": fitted.rung,
        "phat.seed": str(prep.seed),
        "phat.threads": str(prep.threads),
        "phat.git_sha": git_sha(),
        "phat.symbol": bars.symbol,
        "phat.calendar": bars.calendar,
        "phat.max_gap_bars": str(bars.max_gap_bars),
        "phat.promotable": "true" if calibrator.promotable else "false",
        "phat.resolution": str(calibrator.params.get("resolution", "ok")),
    }
    if len(tags["phat.calibration"]) > 4000:  # isotonic tables are long; the JSON file has them
        tags["phat.calibration"] = canonical_json(
            {"method": calibrator.method, "params": "see model/calibration.json"}
        )
    out = Path(out_dir)
    tags["phat.model_hash"] = save_artifact(
        out / "model", model, fspec, lspec, calibrator, tags, bars.data_spec()
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
    )


def train(
    cfg: dict[str, Any], out_dir: str | Path, tracking: dict[str, Any] | None = None
) -> TrainResult:
    """prepare + fit_evaluate, without MLflow (tests and notebooks)."""
    return fit_evaluate(prepare(cfg), out_dir, tracking)
