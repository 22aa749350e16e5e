"""The thin MLflow layer: where runs go and what a training run records.

Tracking URI: `tracking.uri` from config, else MLflow's own `MLFLOW_TRACKING_URI`, else a local
SQLite file `sqlite:///mlflow.db` (the Model Registry needs a database; no server required).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
_MAX_PARAM_LEN = 6000  # MLflow 3 stores params up to 6000 characters


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
        exp_id = mlflow.create_experiment(name)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def tracked_run(uri: str, experiment: str, run_name: str) -> Iterator[Any]:
    """The MLflow run a verb logs into: the one `mlflow run` created for it (MLFLOW_RUN_ID, in
    whatever experiment `mlflow run` chose), else a new run in `experiment`."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    # Who runs it: `phat doctor` tells a crashed run (process gone) from a live one.
    owner = {"phat.host": socket.gethostname(), "phat.pid": str(os.getpid())}
    outer = os.environ.get("MLFLOW_RUN_ID")
    if outer:
        with mlflow.start_run(run_id=outer) as run:
            mlflow.set_tags({"mlflow.runName": run_name, **owner})
            yield run
        return
    use_experiment(uri, experiment)
    with mlflow.start_run(run_name=run_name, tags=owner) as run:
        pause_point("run_started")
        yield run


def pause_point(name: str) -> None:
    """Fault injection for crash tests: with PHAT_PAUSE_AT=<name> the process says so on stdout
    and waits there (to be killed). Points: run_started, model_logged, version_registered."""
    if os.environ.get("PHAT_PAUSE_AT") == name:
        import time

        print(f"PHAT_PAUSED {name}", flush=True)
        time.sleep(600)


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser (tracking server)"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'model.params.C': '0.1', ...} with JSON for lists."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list | tuple):
        out[prefix[:-1]] = json.dumps(d, sort_keys=True)[:_MAX_PARAM_LEN]
    else:
        out[prefix[:-1]] = str(d)[:_MAX_PARAM_LEN]
    return out


def write_run_files(result: Any, out_dir: Path, config_yaml: str, n_bins: int) -> list[str]:
    """Files a person opens: config, specs, reliability data and plots, test predictions.

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
            reliability_diagram(
                pr.y,
                {"raw": pr.p_raw, "calibrated": pr.p_hat},
                plots / f"reliability_{split}.png",
                n_bins=n_bins,
                title=f"{result.model.kind} {result.label_spec.horizon_id}: {split} span",
            )
        except Exception as e:  # a figure is a report, not the model
            warnings.append(f"reliability plot ({split}) not drawn: {type(e).__name__}: {e}")
            log.warning("%s", warnings[-1])
    pr = result.predictions["test"]
    pd.DataFrame(
        {"y": pr.y, "logit": pr.logits, "p_hat_raw": pr.p_raw, "p_hat": pr.p_hat},
        index=pr.timestamps,
    ).to_parquet(out_dir / "test_predictions.parquet")
    return warnings


def log_run(result: Any, cfg: dict[str, Any], out_dir: Path) -> None:
    """Log params, tags, metrics and every file under out_dir into the active MLflow run."""
    import mlflow

    params = flatten(cfg)
    items = list(params.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))
    mlflow.set_tags(result.tags)
    metrics = {k: float(v) for k, v in result.metrics.items() if np.isfinite(v)}
    metrics.update({f"timing_{k}": float(v) for k, v in result.timings.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(out_dir))


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
    if cal.params.get("resolution") == "none":
        text += "  NO RESOLUTION: p_hat is constant; not promotable"
    return text


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
        f"phat.train: {result.model.kind} {result.label_spec.horizon_id} on {result.bars.symbol} "
        f"({result.counts['bars']} bars, {len(result.spans['train'])} train / "
        f"{len(result.spans['calibration'])} calibration / {len(result.spans['test'])} test samples)",
        f"  data          {_span(result.bars.index)}  calendar {result.bars.calendar} "
        f"({result.bars.report.get('calendar_reason', '')}), {result.counts['gaps']} gaps",
        f"  test span     {_span(result.predictions['test'].timestamps)}",
        f"  run id        {run_id}  (experiment {experiment!r})",
        f"  model hash    {result.tags['phat.model_hash']}",
        f"  calibration   {_calibration_line(result.calibrator)}",
        f"  {'test metric':<18}{'raw':>10}{'calibrated':>12}   95% CI (calibrated)",
    ]
    for label, key in rows:
        lines.append(
            f"  {label:<18}{m[key + '_raw']:>10.5f}{m[key]:>12.5f}   "
            f"[{m[key + '_ci_low']:.5f}, {m[key + '_ci_high']:.5f}]"
        )
    lines.append(
        f"  {'climatology brier':<18}{m['test_brier_climatology']:>22.5f}   "
        f"skill {m['test_brier_skill']:+.4f}"
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
