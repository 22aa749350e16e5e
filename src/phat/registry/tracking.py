"""The thin MLflow layer: where runs go and what a training run records.

Tracking URI: `tracking.uri` from config, else MLflow's own `MLFLOW_TRACKING_URI`, else a local
SQLite file `sqlite:///mlflow.db` (the Model Registry needs a database; no server required).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.errors import shorten
from phat.models.kinds import kind as model_kind
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import RecipeConf

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND = (Tag.MLFLOW_EXPERIMENT_KIND, "custom_model_development")


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def connect(tracking: dict[str, Any]) -> str:
    """Point MLflow at the configured store with bounded waits, and return its URI.

    `tracking.timeout` (seconds) caps one HTTP request to a tracking server; with one retry and
    a short backoff an unreachable server answers within about twice that, as one line, instead
    of MLflow's default minutes of retries."""
    import mlflow

    timeout = max(int(tracking["timeout"]), 1)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0.1"
    uri = tracking_uri(tracking["uri"])
    mlflow.set_tracking_uri(uri)
    return uri


_CONFLICT = ("UniqueViolation", "UNIQUE constraint failed", "duplicate key value", "dataset_pk")


def retry_on_conflict(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an MLflow write that another process may be making at the same moment (two sweep
    workers tagging one experiment or parent run, linking one dataset). MLflow's SQL store
    checks, then inserts, so the second writer can hit the unique key: the row exists then, and
    the same write a moment later succeeds (an upsert). Seen with PostgreSQL under load. Other
    errors are raised at once."""
    for attempt in range(4):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt == 3 or not any(c in str(e) for c in _CONFLICT):
                raise
            time.sleep(0.2 * (attempt + 1))
    return None  # pragma: no cover - the loop returns or raises


def use_experiment(uri: str, name: str) -> str:
    """Point MLflow at `uri` and make `name` the active experiment; returns its id.

    With a local SQLite store, a new experiment keeps its artifacts in `mlruns/` beside the
    database file (MLflow's default is `./mlruns` under whatever the working directory is), so
    `mlflow.db` and its artifacts stay together wherever phat is run from.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None and uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        exp_id = mlflow.create_experiment(name, artifact_location=(db.parent / "mlruns").as_uri())
    elif exp is None:
        try:
            exp_id = mlflow.create_experiment(name)
        except mlflow.exceptions.MlflowException as e:  # another process created it just now
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = mlflow.get_experiment_by_name(name)
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    if exp is None or EXPERIMENT_KIND[0] not in exp.tags:
        # The UI opens it in the model-training view (runs, metrics, models), not GenAI traces.
        retry_on_conflict(mlflow.MlflowClient().set_experiment_tag, exp_id, *EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def tracked_run(
    uri: str,
    experiment: str,
    run_name: str,
    system_metrics: bool,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """The MLflow run a verb logs into: the one `mlflow run` created for it (MLFLOW_RUN_ID, in
    whatever experiment `mlflow run` chose), else a new run in `experiment`. With
    `system_metrics` (tracking.system_metrics) MLflow samples CPU, memory and disk (psutil)
    every second into system/* metrics. With `parent_run_id` the run is a nested child of it
    (a sweep's job), in the parent's experiment."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(1)
        mlflow.set_system_metrics_samples_before_logging(1)
    # Who runs it: `phat doctor` tells a crashed run (process gone) from a live one.
    owner = {Tag.HOST: socket.gethostname(), Tag.PID: str(os.getpid())}
    outer = os.environ.get("MLFLOW_RUN_ID")
    if outer:
        with mlflow.start_run(run_id=outer, log_system_metrics=system_metrics) as run:
            mlflow.set_tags({Tag.MLFLOW_RUN_NAME: run_name, **owner})
            yield run
        return
    if parent_run_id:
        exp_id = mlflow.MlflowClient().get_run(parent_run_id).info.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    else:
        use_experiment(uri, experiment)
    with mlflow.start_run(
        run_name=run_name,
        tags={**owner, **(tags or {})},
        log_system_metrics=system_metrics,
        parent_run_id=parent_run_id,
    ) as run:
        pause_point("run_started")
        yield run


def pause_point(name: str) -> None:
    """Fault injection for crash tests: with PHAT_PAUSE_AT=<name> the process says so on stdout
    (and in the file PHAT_PAUSE_FILE names, with its pid: a Ray worker's stdout is not the
    command's) and waits there (to be killed). Points: run_started, model_logged,
    version_registered, fold_<n> (a walk-forward fold's task), monitor_state_read (the state
    is read, under its lock), monitor_state (the new state is on disk, not yet renamed).
    PHAT_DELAY_AT=<name>:<seconds> sleeps there instead (race tests widen a window with it)."""
    delay = os.environ.get("PHAT_DELAY_AT", "")
    if delay.rpartition(":")[0] == name:
        import time

        time.sleep(float(delay.rpartition(":")[2]))
    if os.environ.get("PHAT_PAUSE_AT") == name:
        import time

        print(f"PHAT_PAUSED {name}", flush=True)
        if os.environ.get("PHAT_PAUSE_FILE"):  # whole or absent: a reader never sees half
            target = Path(os.environ["PHAT_PAUSE_FILE"])
            part = target.with_name(f".{target.name}.{os.getpid()}")
            part.write_text(f"{name} {os.getpid()}\n")
            os.replace(part, target)
        time.sleep(600)


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser (tracking server)"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'model.params.C': '0.1', ...} with JSON for lists (the recorder cuts a
    value to MLflow's param size)."""
    out: dict[str, str] = {}
    if isinstance(d, Mapping):  # a dict, or a validated settings section
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list | tuple):
        out[prefix[:-1]] = json.dumps(d, sort_keys=True, default=dict)
    else:
        out[prefix[:-1]] = str(d)
    return out


def write_run_files(
    result: Any, out_dir: Path, config_yaml: str, n_bins: int
) -> tuple[list[str], dict[str, Any]]:
    """Files a person opens: config, specs, every metric (metrics.json: the run's metrics plus
    the calibration slice's intervals), the training window, reliability data and plots, test
    predictions. Returns (warnings, figures): the open reliability figures by artifact path, for
    mlflow.log_figure.

    Nothing here may lose a fitted model: a figure that fails to draw is skipped and its
    error returned as a warning (logged on the run); tables and the artifact are kept."""
    from phat.evaluation.metrics import reliability_curve
    from phat.evaluation.plots import reliability_diagram

    warnings: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config_yaml)
    (out_dir / "label_spec.json").write_text(json.dumps(result.label_spec.to_dict(), indent=2))
    (out_dir / "feature_spec.json").write_text(json.dumps(result.feature_spec.to_dict(), indent=2))
    (out_dir / "data_report.json").write_text(json.dumps(result.bars.report, indent=2, default=str))
    (out_dir / "metrics.json").write_text(json.dumps(_finite(result.metrics), indent=1))
    (out_dir / "training_window.json").write_text(
        json.dumps(json.loads(result.tags[Tag.TRAINING_WINDOW]), indent=2)
    )
    if result.selection:  # how capacity and the ladder rung were chosen (recipe.fit.fit_recipe)
        (out_dir / "selection").mkdir(exist_ok=True)
        for name, rows in result.selection.items():
            pd.DataFrame(rows).to_csv(out_dir / "selection" / f"{name}.csv", index=False)
    figures: dict[str, Any] = {}
    plots = out_dir / "plots"
    rel = out_dir / "reliability"
    plots.mkdir(exist_ok=True)
    rel.mkdir(exist_ok=True)
    for split in ("calibration", "test"):
        pr = result.predictions[split]
        frames = []
        for kind, p in (("raw", pr.p_raw), ("calibrated", pr.p_hat)):
            for strategy in ("uniform", "quantile"):
                rc = reliability_curve(pr.y, p, n_bins=n_bins, strategy=strategy)
                rc.insert(0, "binning", "equal_width" if strategy == "uniform" else "equal_mass")
                rc.insert(0, "p", kind)
                frames.append(rc)
        table = pd.concat(frames, ignore_index=True)
        table.to_csv(rel / f"{split}.csv", index=False)
        (rel / f"{split}.json").write_text(table.to_json(orient="records", indent=1))
        try:
            figures[f"plots/reliability_{split}.png"] = reliability_diagram(
                pr.y,
                {"raw": pr.p_raw, "calibrated": pr.p_hat},
                plots / f"reliability_{split}.png",
                n_bins=n_bins,
                title=f"{result.model.kind} {result.label_spec.horizon_id}: {split} span",
                keep=True,
            )
        except Exception as e:  # a figure is a report, not the model
            warnings.append(f"reliability plot ({split}) not drawn: {type(e).__name__}: {e}")
            log.warning("%s", warnings[-1])
    pr = result.predictions["test"]
    test = pd.DataFrame(
        {"y": pr.y, "logit": pr.logits, "p_hat_raw": pr.p_raw, "p_hat": pr.p_hat},
        index=pr.timestamps,
    )
    if result.asset_evidence is not None:  # evidence per asset (Bars.across_assets)
        from phat.evaluation.plots import reliability_panels
        from phat.evaluation.universe import to_markdown

        test.insert(0, "symbol", result.asset_evidence["symbols"])
        table = result.asset_evidence["table"]
        table.to_csv(out_dir / "per_asset.csv", index=False)
        (out_dir / "per_asset.md").write_text(to_markdown(table))
        try:
            figures["plots/reliability_assets.png"] = reliability_panels(
                pr.y, pr.p_hat, result.asset_evidence["symbols"], plots / "reliability_assets.png",
                title=f"{result.bars.symbol} {result.label_spec.horizon_id}: test span per asset",
                keep=True,
            )  # fmt: skip
        except Exception as e:  # a figure is a report, not the model
            warnings.append(f"per-asset reliability plot not drawn: {type(e).__name__}: {e}")
            log.warning("%s", warnings[-1])
    test.to_parquet(out_dir / "test_predictions.parquet")
    return warnings, figures


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


# Settings that say where things go, not what was trained: they differ between identical
# trainings and would fill "show diff only" with noise.
_NOT_PARAMS = ("out_dir", "tracking.", "registry.", "sweep.", "hydra.")


def run_params(cfg: RecipeConf) -> dict[str, str]:
    """The settings that shaped this model, one param each: trainer.* only where the kind
    reads them (models.kinds: the TCN all, the tree its validation share), data.synthetic.* only for synthetic data, no paths of this
    run, no nulls (an unset setting is absent, not the string "None"), the feature list as
    short names in the composed set's order (features.list; every feature's settings are in
    config.yaml and feature_spec.json)."""
    from phat.data.universe import source_of

    flat = flatten(cfg)
    reads = model_kind(cfg.model.kind).reads
    source = source_of(cfg.data)
    out: dict[str, str] = {}
    for key, value in flat.items():
        if key.startswith(_NOT_PARAMS) or value == "None":
            continue
        if key.startswith("trainer.") and not key.startswith(reads):
            continue  # settings this kind does not read are not its params
        if key.startswith("data.synthetic.") and source != "synthetic":
            continue
        if key.startswith("features.set."):
            continue  # the composed set is one param, features.list (below)
        out[key] = value
    out["features.list"] = ",".join(
        f.fn + ("(" + ",".join(str(v) for v in f.params.values()) + ")" if f.params else "")
        for f in cfg.features.set.values()
        if f is not None
    )
    return out


def run_metrics(result: Any, hold_out_test: bool = False) -> dict[str, float]:
    """The metrics logged on the run: every test-span metric with its interval, the
    calibration slice's point values (its intervals are in metrics.json), the selection slice's
    (selection_*), data counts, timings. A sweep's job holds the test span's metrics out
    (`hold_out_test`): they are looked at once, for the chosen configuration."""
    metrics = {
        k: v
        for k, v in _finite(result.metrics).items()
        if not (k.startswith("calibration_") and "_ci_" in k)
        and not (hold_out_test and k.startswith("test_"))
    }
    metrics.update({f"timing_{k}": float(v) for k, v in result.timings.items()})
    return metrics


def log_dataset(run: Any, result: Any, cfg: RecipeConf) -> None:
    """The training data as an MLflow dataset input (the runs table's Datasets column): named
    by symbol, timeframe and date span, its source (the file, or the synthetic generator with
    its seed), and as digest the first 32 hex digits of phat.data_hash (MLflow's SQL schema
    holds 36 characters; the full hash is the input's phat.data_hash tag)."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource

    bars = result.bars
    frame = bars.frame.copy()
    frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC").tz_localize(None)
    timeline = bars.time_axis
    symbols = bars.across_assets(lambda symbols: symbols)  # a universe's rows: their assets
    if symbols is not None:
        frame.insert(0, "symbol", symbols)
    data_hash = result.tags[Tag.DATA_HASH]
    path = cfg.data.path
    if path:
        where = Path(str(path[0])).parent if isinstance(path, (list, tuple)) else Path(str(path))
        source: Any = FileSystemDatasetSource.from_dict({"uri": where.resolve().as_uri()})
    else:
        source = CodeDatasetSource(
            {"generator": "phat.data.synthetic", "seed": str(cfg.data.synthetic.seed)}
        )
    start, end = timeline[0], timeline[-1]
    name = f"{bars.symbol}-{result.label_spec.timeframe} {start:%Y-%m-%d}..{end:%Y-%m-%d}"
    dataset = mlflow.data.from_pandas(
        frame.rename_axis("timestamp").reset_index(),
        source=source,
        name=name,
        digest=data_hash[:32],
    )
    tags = {
        Tag.DATA_HASH: data_hash,
        Tag.START: pd.Timestamp(start).isoformat(),
        Tag.END: pd.Timestamp(end).isoformat(),
        Tag.BARS: str(len(bars.index)),
    }
    run.dataset(dataset, "training", tags)


def log_run(
    run: Any,
    result: Any,
    cfg: RecipeConf,
    out_dir: Path,
    figures: dict[str, Any] | None = None,
    hold_out_test: bool = False,
) -> None:
    """Log params, tags, metrics, the dataset input, figures and the files under out_dir into
    `run` (a registry.recorder.RunLog). `hold_out_test` (a sweep's job): the test span's
    metrics go to held_out/test_metrics.json, not into the run's metrics."""
    from phat.models.kinds import searched_settings

    params = run_params(cfg)
    for name, key in searched_settings().items():  # what an `auto` setting chose
        if f"selected_{name}" in result.metrics:
            params[f"{key}_selected"] = f"{result.metrics[f'selected_{name}']:g}"
    run.params(params)
    run.tags(result.tags)
    run.metrics(run_metrics(result, hold_out_test))
    if hold_out_test:
        test = {k: v for k, v in _finite(result.metrics).items() if k.startswith("test_")}
        run.dict(test, "held_out/test_metrics.json")
    log_dataset(run, result, cfg)
    for artifact_file, fig in (figures or {}).items():
        run.figure(fig, artifact_file)
    for entry in sorted(Path(out_dir).iterdir()):
        if entry.is_dir() and not (figures and entry.name == "plots"):
            run.artifacts(entry, entry.name)
        elif entry.is_file():
            run.artifacts(entry)


def _span(index: Any) -> str:
    def day(ts: Any) -> str:
        t = pd.Timestamp(ts)
        return t.strftime("%Y-%m-%d %H:%M") if (t.hour or t.minute) else t.strftime("%Y-%m-%d")

    return f"{day(index[0])} .. {day(index[-1])} UTC" if len(index) else "(empty)"


def _calibration_line(cal: Any) -> str:
    text = cal.method
    if cal.params.get("selected_by") == "auto":
        losses = ", ".join(f"{m} {v:.5f}" for m, v in cal.params["inner_log_loss"].items())
        text += f" (auto; held-out log loss: {losses})"
    if "identity_lr" in cal.params:  # the ladder's calibration rung (models/calibration.py)
        kept = "fitted map" if "fitted_a" not in cal.params else "identity map kept"
        text += f" ({kept}: likelihood ratio {cal.params['identity_lr']:.2f} vs 5.99 at 5%)"
    if cal.params.get("resolution") == "none":
        text += "  NO RESOLUTION: p_hat is constant; not promotable"
    return text


def _selection_lines(result: Any) -> list[str]:
    """Capacity and ladder verdict (recipe.fit.fit_recipe), chosen without the test span."""
    out = []
    if "selected_C" in result.metrics:
        out.append(
            f"  capacity      C={result.metrics['selected_C']:g} (purged 5-fold CV of the train "
            "span, simplest within one SE of the best log loss)"
        )
    if "selected_max_leaf_nodes" in result.metrics:
        out.append(
            f"  capacity      {result.metrics['selected_max_leaf_nodes']:.0f} leaves per tree "
            "(purged 5-fold CV of the train span, fewest within one SE of the best log loss)"
        )
    from phat.models.kinds import KINDS

    refit = [s.name for k in KINDS.values() if k.search_fits == "refits" for s in k.search
             if f"selected_{s.name}" in result.metrics]  # fmt: skip
    if refit:
        what = ", ".join(f"{n}={result.metrics[f'selected_{n}']:g}" for n in refit)
        out.append(
            f"  capacity      {what} (purged 5-fold CV of the train span, each fit stopping "
            "early on its own purged tail; simplest within one SE of the best log loss)"
        )
    if "selected_max_iter" in result.metrics:
        out.append(
            f"  capacity      {result.metrics['selected_max_iter']:.0f} trees (early stopping on "
            "the purged validation tail, fewest within one SE of the best log loss)"
        )
    kept = result.tags.get(Tag.SELECTED_RUNG, "model")
    if kept.startswith("{"):  # model.pooling=per_asset: one recipe per asset
        per = json.loads(kept)
        counts = {r: sum(v == r for v in per.values()) for r in sorted(set(per.values()))}
        out.append(
            f"  pooling       one {result.tags[Tag.MODEL_KIND]} per asset; rung kept: "
            f"{', '.join(f'{r} on {n}' for r, n in counts.items())} "
            "(selection/*.csv)"
        )
        return out
    rows = result.selection.get("ladder") or result.selection.get("inner_cv") or []
    where = str(rows[0].get("on", "inner CV")) if rows else ""  # the ladder table says where
    rows = [r for r in rows if not str(r.get("candidate", "")).startswith("C=") or r["chosen"]
            or kept != "model"]  # fmt: skip
    if rows:
        losses = ", ".join(f"{r.get('rung', r.get('candidate'))} {r['log_loss']:.5f}" for r in rows)
        verdict = (
            "kept the model"
            if kept == "model"
            else f"kept {kept}: the model is not better by more than noise"
        )
        out.append(f"  ladder        {verdict} ({where} log loss: {losses})")
    return out


def _universe_lines(result: Any) -> list[str]:
    """A universe run's assets and its evidence across them (evaluation.universe.universe_evidence)."""
    if result.asset_evidence is None:
        return []
    m, tags = result.metrics, result.tags
    n = int(m["assets_scored"])
    left = json.loads(tags.get(Tag.ASSETS_SKIPPED, "{}"))
    out = [
        f"  universe      {tags[Tag.UNIVERSE]}: {tags[Tag.ASSETS]} assets in the model"
        + (
            f"; left out {len(left)}: {', '.join(f'{k} ({shorten(v, 80)})' for k, v in left.items())}"
            if left
            else ""
        ),  # fmt: skip
        f"  per asset     {int(m['assets_beat_climatology'])} of {n} beat climatology, "
        f"{int(m['assets_miscalibrated'])} of {n} miscalibrated (Benjamini-Hochberg, 5%); "
        f"mean ECE {m['asset_mean_ece']:.4f}; table per_asset.md",
        f"  universe DM   p vs climatology {m['universe_dm_pvalue_vs_climatology']:.4f}, vs last "
        f"return {m['universe_dm_pvalue_vs_last_return']:.4f} (per-timestamp mean over assets)",
    ]
    if "test_brier_pooled_map" in m:
        out.append(
            f"  per-asset map brier {m['test_brier']:.5f} ece {m['test_ece']:.4f}; pooled map "
            f"alone brier {m['test_brier_pooled_map']:.5f} ece {m['test_ece_pooled_map']:.4f}"
        )
    if "asset_mean_brier_over_bayes" in m:
        out.append(
            f"  bayes         mean over assets of Brier / Bayes Brier "
            f"{m['asset_mean_brier_over_bayes']:.4f}"
        )
    return out


def _kind_line(result: Any) -> str:
    """The recipe's kind as the run is named and tagged (phat.model_kind), with the ladder's
    kept rung when it is not the kind's own model (`tree (kept: climatology)`)."""
    kind = result.tags.get(Tag.MODEL_KIND, result.model.kind)
    rung = result.tags.get(Tag.SELECTED_RUNG, "")
    return f"{kind} (kept: {rung})" if rung and rung != kind and kind != result.model.kind else kind


def summary_lines(
    result: Any, run_id: str, uri: str, experiment: str, registered: dict[str, Any] | None = None
) -> list[str]:
    m = result.metrics
    rows = [
        ("brier", "test_brier"),
        ("ece", "test_ece"),
        ("ece (equal mass)", "test_ece_mass"),
        ("log loss", "test_log_loss"),
        ("auc", "test_auc"),
    ]
    lines = [
        "",
        f"phat.train: {_kind_line(result)} {result.label_spec.horizon_id} on {result.bars.symbol} "
        f"({result.counts['bars']} bars, {len(result.spans['train'])} train / "
        f"{len(result.spans['calibration'])} calibration / {len(result.spans['test'])} test samples)",
        f"  data          {_span(result.bars.time_axis)}"
        f"  calendar {result.bars.calendar} "
        f"({result.bars.report.get('calendar_reason', '')}), {result.counts['gaps']} gaps",
        *_universe_lines(result),
        f"  test span     {_span(result.predictions['test'].timestamps)}",
        f"  run id        {run_id}  (experiment {experiment!r})",
        f"  model hash    {result.tags[Tag.MODEL_HASH]}",
        f"  calibration   {_calibration_line(result.calibrator)}",
        *_selection_lines(result),
        f"  {'test metric':<18}{'raw':>10}{'calibrated':>12}   95% CI (calibrated)",
    ]
    for label, key in rows:
        ci = f"[{m[key + '_ci_low']:.5f}, {m[key + '_ci_high']:.5f}]"
        if key + "_debiased" in m:  # a biased plug-in: the interval is the debiased estimate's
            ci = f"debiased {m[key + '_debiased']:.5f} {ci}"
        lines.append(f"  {label:<18}{m[key + '_raw']:>10.5f}{m[key]:>12.5f}   {ci}")
    lines.append(
        f"  {'climatology brier':<18}{m['test_brier_climatology']:>22.5f}   "
        f"skill {m['test_brier_skill']:+.4f}"
    )
    if "test_brier_last_return" in m:
        lines.append(
            f"  {'simple forecasts':<18}proxy {m['test_brier_proxy']:.5f}, last-bar sign "
            f"{m['test_brier_last_sign']:.5f}, last-bar return {m['test_brier_last_return']:.5f}"
        )
        lines.append(
            f"  {'model better (DM)':<18}p vs climatology {m['dm_pvalue_vs_climatology']:.4f}, "
            f"proxy {m['dm_pvalue_vs_proxy']:.4f}, last sign {m['dm_pvalue_vs_last_sign']:.4f}, "
            f"last return {m['dm_pvalue_vs_last_return']:.4f}"
        )
    if "test_brier_bayes" in m:
        lines.append(
            f"  {'bayes brier':<18}{m['test_brier_bayes']:>22.5f}   (planted signal's optimum)"
        )
    if registered and registered.get("duplicate_of"):
        name, ver = registered["model_name"], registered["model_version"]
        lines.append(
            f"  registered    nothing new: the model_hash equals models:/{name}/{ver}'s "
            "(tag phat.duplicate_of on this run)"
        )
    elif registered and registered.get("model_version"):
        name, ver = registered["model_name"], registered["model_version"]
        lines.append(
            f'  registered    models:/{name}/{ver}  (load: phat.load("models:/{name}/{ver}"))'
        )
    lines.append(f"  see it:        {ui_command(uri)}")
    return lines
