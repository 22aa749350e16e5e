"""Training's orchestration, free of MLflow: the recipe (phat.recipe) fitted on the configured
split, evaluated against its baselines, and written as an artifact. `phat.train` wraps it with
Hydra and tracking; tests call `train` directly.

`cfg` is the resolved config as a plain dict (the shape of conf/train.yaml).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec
from phat.contract.splits import span_window
from phat.data.bars import Bars
from phat.evaluation.metrics import evaluate_split
from phat.evaluation.significance import versus_rules
from phat.evaluation.universe import universe_evidence
from phat.hashing import canonical_json
from phat.models.calibration import Calibrator
from phat.recipe.fit import asset_maps, selection_metrics
from phat.recipe.fold import FoldFit, fit_fold, fold_rules
from phat.recipe.series import Prepared, prepare
from phat.registry.artifact import save_artifact
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import RecipeConf


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
    # the evidence across a universe's assets (universe_evidence; Bars.across_assets): one
    # asset has none, its evidence is the run's
    asset_evidence: dict[str, Any] | None = None


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


def fit_evaluate(
    prep: Prepared, out_dir: str | Path, tracking: dict[str, Any] | None = None
) -> TrainResult:
    """Fit, calibrate on the calibration span, evaluate, write the artifact to out_dir/model.

    `tracking` ({"uri", "run_id"}) lets models that log while training (the TCN) write into
    the caller's MLflow run.
    """
    cfg, spans, fspec, bars = prep.cfg, prep.spans, prep.feature_spec, prep.bars
    timings = dict(prep.timings)
    t = time.perf_counter()
    assert prep.series is not None
    fold = fit_fold(cfg, prep.series, fspec, prep.data, spans, tracking)
    timings["fit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    preds = {
        k: SpanPredictions(
            ends=ends,
            timestamps=bars.index[ends],
            y=prep.y[ends],
            logits=fold.logits[k],
            p_raw=Calibrator("none").predict(fold.logits[k]),
            p_hat=fold.p_hat[k],
        )
        for k, ends in spans.items()
    }
    metrics, evidence = evaluate(prep, fold, preds)
    timings["calibrate_evaluate_s"] = time.perf_counter() - t

    tags = run_tags(prep, fold)
    universe, universe_tags = bars.universe_record(  # a universe's assets; one asset: none
        {s: f.to_dict()["normalization_params"] for s, f in prep.asset_specs.items()},
        {s: c.params["asset_correction"] for s, c in fold.per_asset.items()},
        cfg.model.pooling,
    )
    tags.update(universe_tags)
    out = Path(out_dir)
    model, calibrator = fold.fitted.model, fold.fitted.calibrator
    tags[Tag.MODEL_HASH] = save_artifact(
        out / "model", model, fspec, prep.label_spec, calibrator, tags, bars.data_spec(), universe
    )
    timings["total_s"] = sum(timings.values())
    return TrainResult(
        bars=bars,
        label_spec=prep.label_spec,
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
        selection=fold.fitted.tables,
        asset_evidence=evidence,
    )


def evaluate(
    prep: Prepared, fold: FoldFit, preds: dict[str, SpanPredictions]
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The run's metrics: calibration and test spans (evaluate_split), the selection metrics,
    the test span against the split's baselines (fold_rules, versus_rules), a universe's
    evidence across its assets, the data counts and the chosen capacity."""
    cfg, y, spans, bars = prep.cfg, prep.y, prep.spans, prep.bars
    mc = cfg.metrics
    n_bins = int(mc.n_bins)
    concurrent = bars.timeline()[1]
    base_rate = float(np.mean(y[spans["train"]]))
    metrics: dict[str, float] = {}
    for k in ("calibration", "test"):
        pr = preds[k]
        # a universe's samples are time-major, one per asset per bar: a block of the same
        # time span holds that many times the samples
        metrics.update(evaluate_split(
            k, pr.y, pr.p_raw, pr.p_hat, base_rate, n_bins=n_bins,
            block=int(mc.bootstrap_block) * concurrent, n_boot=int(mc.bootstrap_n),
            seed=prep.seed,
        ))  # fmt: skip
    metrics["train_base_rate"] = base_rate
    metrics.update(selection_metrics(
        cfg.calibration.method, fold.logits["calibration"], y[spans["calibration"]],
        prep.label_spec.horizon_bars * concurrent, n_bins,
    ))  # fmt: skip
    assert prep.series is not None  # the split's baselines, fitted once for both reports
    rules = fold_rules(cfg, prep.series, prep.feature_spec, prep.data, spans,
                       dict(cfg.signal.proxy))  # fmt: skip
    te, test = spans["test"], preds["test"]
    clock = bars.timeline()[0]
    h = prep.label_spec.horizon_bars
    metrics.update(versus_rules(test.y, test.p_hat, rules, h, None if clock is None else clock[te]))
    # the planted P(up) is the optimum of an absolute label only
    relative = prep.label_spec.kind == "relative"
    pb = None if prep.p_bayes is None or relative else prep.p_bayes.to_numpy()[te]
    pooled = fold.fitted.calibrator.predict(test.logits) if fold.per_asset else None
    evidence = bars.across_assets(lambda symbols: universe_evidence(
        symbols[te], test.y, test.p_hat, rules, clock[te], h, n_bins, pooled, pb
    ))  # fmt: skip
    metrics.update(evidence["metrics"] if evidence else {})
    if pb is not None:
        metrics["test_brier_bayes"] = float(np.mean((pb - test.y) ** 2))
    for k, v in prep.counts.items():
        metrics[f"data_{k}"] = float(v)
    metrics["model_parameters"] = float(fold.fitted.model.n_parameters)
    metrics.update(fold.fitted.params)
    return metrics, evidence


def run_tags(prep: Prepared, fold: FoldFit) -> dict[str, str]:
    """The run's and the model version's identity tags: contract, data, recipe and code."""
    lspec, bars, calibrator = prep.label_spec, prep.bars, fold.fitted.calibrator
    tags = {
        Tag.FEATURE_VERSION: prep.feature_spec.feature_version,
        Tag.LABEL_DEFINITION: lspec.canonical(),
        Tag.HORIZON_ID: lspec.horizon_id,
        Tag.HORIZON_BARS: str(lspec.horizon_bars),
        Tag.TIMEFRAME: lspec.timeframe,
        Tag.CALIBRATION: calibrator.to_json(),
        Tag.TRAINING_WINDOW: canonical_json(span_window(bars.index, prep.spans)),
        Tag.DATA_HASH: bars.data_hash(),
        Tag.MODEL_KIND: str(prep.cfg.model.kind),  # the recipe's kind
        Tag.SELECTED_RUNG: fold.fitted.rung,
        Tag.SEED: str(prep.seed),
        Tag.THREADS: str(prep.threads),
        Tag.GIT_SHA: git_sha(),
        Tag.SYMBOL: bars.symbol,
        Tag.CALENDAR: bars.calendar,
        Tag.MAX_GAP_BARS: str(bars.max_gap_bars),
        Tag.PROMOTABLE: "true" if calibrator.promotable else "false",
        Tag.RESOLUTION: str(calibrator.params.get("resolution", "ok")),
        Tag.ASSET_MAPS: asset_maps(prep.cfg, bars),
    }
    if len(tags[Tag.CALIBRATION]) > 4000:  # isotonic tables are long; the JSON file has them
        tags[Tag.CALIBRATION] = canonical_json(
            {"method": calibrator.method, "params": "see model/calibration.json"}
        )
    return tags


def train(
    cfg: RecipeConf, out_dir: str | Path, tracking: dict[str, Any] | None = None
) -> TrainResult:
    """prepare + fit_evaluate, without MLflow (tests and notebooks)."""
    return fit_evaluate(prepare(cfg), out_dir, tracking)
