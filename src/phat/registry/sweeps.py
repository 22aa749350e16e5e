"""The MLflow side of a sweep (Hydra multirun): one parent run, one nested child per job.

- `open_parent(name, experiment)`: the parent run of sweep `name` (tag `phat.sweep.name`),
  created once, or found again and reopened when the sweep is re-run or another machine joins
  it (the oldest parent wins a creation race; a duplicate deletes itself).
- `children(parent)`: the jobs so far, from every process and machine that joined.
- `done_job(parent, key)`: a FINISHED child with the same overrides (a re-run skips it).
- `summary_tables(...)`, `pareto_front(...)`: what the parent shows (CSV + Markdown).
- `register_run(run_id, name)`: register a child's logged model at the end
  (`sweep.register_best=true`), through the same path as `phat train`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from phat.tagnames import Tag


def open_parent(rec: Any, name: str, experiment_id: str, objectives: list[str]) -> str:
    import time

    client = rec.client
    found = _parents(client, name, experiment_id)
    if not found:
        tags = {Tag.SWEEP_NAME: name, Tag.SWEEP_OBJECTIVES: ",".join(objectives)}
        mine = rec.create(experiment_id, f"sweep-{name}", tags).run_id
        # Machines that start one sweep at once each create a parent: after a settling second
        # every one of them sees all, the oldest (then lowest id) stays, the others delete theirs.
        time.sleep(1.0)
        found = _parents(client, name, experiment_id)
        if found and found[0].info.run_id != mine:
            client.delete_run(mine)
            found = [r for r in found if r.info.run_id != mine]
    parent = found[0]
    if parent.info.status != "RUNNING":
        rec.on(parent.info.run_id).resume()
    return str(parent.info.run_id)


def _parents(client: Any, name: str, experiment_id: str) -> list[Any]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{Tag.SWEEP_NAME}` = '{name}'",
        max_results=100,
    )
    runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
    return [r for r in runs if Tag.MLFLOW_PARENT_RUN not in r.data.tags]


def children(parent_id: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_id)
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{Tag.MLFLOW_PARENT_RUN}` = '{parent_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def done_job(parent_id: str, key: str) -> Any | None:
    """A FINISHED child of this sweep with exactly these overrides, if any."""
    for r in children(parent_id):
        if r.data.tags.get(Tag.SWEEP_OVERRIDES) == key and r.info.status == "FINISHED":
            return r
    return None


def objective_values(run: Any, objectives: list[str]) -> list[float]:
    return [float(run.data.metrics.get(m, math.nan)) for m in objectives]


def _common(keys: list[str]) -> set[str]:
    sets = [set(k.split()) for k in keys if k]
    return set.intersection(*sets) if sets else set()


def summary_frame(runs: list[Any], objectives: list[str]) -> pd.DataFrame:
    """One row per job, best first (by the first objective; failed jobs last), with the
    overrides that differ between jobs."""
    common = _common([r.data.tags.get(Tag.SWEEP_OVERRIDES, "") for r in runs])
    rows = []
    for r in runs:
        key = r.data.tags.get(Tag.SWEEP_OVERRIDES, "")
        row: dict[str, Any] = {
            "job": r.data.tags.get(Tag.SWEEP_JOB, ""),
            "overrides": " ".join(o for o in key.split() if o not in common) or key,
            "status": r.info.status,
        }
        for m, v in zip(objectives, objective_values(r, objectives), strict=True):
            row[m] = v
        row["seconds"] = r.data.metrics.get("timing_total_s", math.nan)
        row["run_name"] = r.info.run_name
        row["run_id"] = r.info.run_id
        row["error"] = r.data.tags.get(Tag.ERROR, "")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_failed"] = frame["status"] != "FINISHED"
    frame = frame.sort_values(["_failed", objectives[0]], na_position="last", kind="stable")
    return frame.drop(columns="_failed").reset_index(drop=True)


def pareto_front(frame: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """The finished jobs no other finished job beats on every objective (all minimised)."""
    ok = frame[(frame["status"] == "FINISHED")].dropna(subset=objectives)
    vals = ok[objectives].to_numpy()
    keep = []
    for i in range(len(vals)):
        dominated = ((vals <= vals[i]).all(axis=1) & (vals < vals[i]).any(axis=1)).any()
        keep.append(not dominated)
    return ok[keep].reset_index(drop=True)


def markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no jobs)\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:.6g}" if isinstance(v, float) else str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def held_out_metrics(run_id: str) -> dict[str, float]:
    """The test-span metrics a sweep job kept out of its run's metrics (held_out/)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="held_out/test_metrics.json", dst_path=d
        )
        with open(path) as fh:
            return {k: float(v) for k, v in json.load(fh).items()}


def register_run(rec: Any, run_id: str, name: str) -> dict[str, Any]:
    """Register the logged model of finished sweep job `run_id` under `name` (or say which
    existing version it equals), as `phat train` would have."""
    from phat.registry.client import register_logged

    run = rec.client.get_run(run_id)
    models = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    if not models:
        raise RuntimeError(f"sweep job {run_id} logged no model")
    metrics = {**run.data.metrics, **held_out_metrics(run_id)}
    return register_logged(rec.on(run_id), run.data.tags, metrics, models[-1], name)
