"""One recorder for every verb's MLflow runs: naming, tags, params, metrics, artifacts, retries.

`recorder(cfg.tracking)` connects once per command (the same object for every later call with
the same tracking settings) and is the only writer of runs in the package; a test walks the
source for any other. A verb opens its run with `Recorder.run(name, ...)` (the run `mlflow run`
made for it, a sweep job's nested child, or a new run in `tracking.experiment`), a child with
`Recorder.create(...)`, or an existing run with `Recorder.on(run_id)`; each gives a `RunLog`
whose writes:

- go through the client with the run's id (children and the active run alike),
- are batched to MLflow's request limits (100 params or tags, 1,000 metrics per request),
- hold MLflow's size limits (params 6,000 characters, tags 5,000 here: the long ones are
  files),
- drop non-finite metrics (MLflow would store NaN as a point on every chart),
- retry a unique-key conflict of two writers (registry.tracking.retry_on_conflict) and raise
  anything else at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phat.registry.tracking import connect, retry_on_conflict, tracked_run, tracking_uri
from phat.tagnames import Tag

MAX_PARAM = 6000  # MLflow 3 stores params up to 6,000 characters
MAX_TAG = 5000
_PARAMS_PER_CALL, _TAGS_PER_CALL, _METRICS_PER_CALL = 100, 100, 1000


def _tag_values(tags: dict[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them: text, at most MAX_TAG characters."""
    return {k: str(v)[:MAX_TAG] for k, v in tags.items()}


class RunLog:
    """Writes into one run (see the module's docstring)."""

    def __init__(self, rec: Recorder, run_id: str, experiment_id: str = ""):
        self.rec = rec
        self.run_id = str(run_id)
        self.experiment_id = str(experiment_id)

    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in _tag_values(tags).items()]
        for i in range(0, len(items), _TAGS_PER_CALL):
            self._batch(tags=items[i : i + _TAGS_PER_CALL])

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_CALL):
            self._batch(params=items[i : i + _PARAMS_PER_CALL])

    def metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self._metrics([(k, float(v), step, now) for k, v in metrics.items()])

    def series(self, key: str, values: list[float], first_step: int = 0) -> None:
        """A metric's path, one point per step (e.g. an e-value by matured bar)."""
        now = int(time.time() * 1000)
        self._metrics([(key, float(v), first_step + i, now) for i, v in enumerate(values)])

    def _metrics(self, points: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, v, ts, step) for k, v, step, ts in points if math.isfinite(v)]
        for i in range(0, len(items), _METRICS_PER_CALL):
            self._batch(metrics=items[i : i + _METRICS_PER_CALL])

    def _batch(self, **kw: Any) -> None:
        retry_on_conflict(self.rec.client.log_batch, self.run_id, **kw)

    def dict(self, obj: Any, artifact_file: str) -> None:
        self.rec.client.log_dict(self.run_id, obj, artifact_file)

    def text(self, text: str, artifact_file: str) -> None:
        self.rec.client.log_text(self.run_id, text, artifact_file)

    def figure(self, fig: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as PNG and close it (a figure is never left open)."""
        import matplotlib.pyplot as plt

        try:
            self.rec.client.log_figure(self.run_id, fig, artifact_file)
        finally:
            plt.close(fig)

    def artifacts(self, local: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's files (under `artifact_path`)."""
        local = Path(local)
        if local.is_dir():
            self.rec.client.log_artifacts(self.run_id, str(local), artifact_path)
        else:
            self.rec.client.log_artifact(self.run_id, str(local), artifact_path)

    def note(self, markdown: str) -> None:
        """The run's description in the UI (rendered as Markdown)."""
        retry_on_conflict(self.rec.client.set_tag, self.run_id, Tag.MLFLOW_NOTE, markdown)

    def dataset(self, dataset: Any, context: str, tags: dict[str, str]) -> None:
        """An MLflow dataset input (the runs table's Datasets column)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        marks = [InputTag(k, v) for k, v in tags.items()] + [
            InputTag(MLFLOW_DATASET_CONTEXT, context)
        ]
        inp = DatasetInput(dataset=dataset._to_mlflow_entity(), tags=marks)
        retry_on_conflict(self.rec.client.log_inputs, self.run_id, datasets=[inp])

    def resume(self) -> None:
        """Mark an ended run RUNNING again (a sweep's parent that later workers join)."""
        self.rec.client.update_run(self.run_id, status="RUNNING")

    def finish(self, status: str = "FINISHED") -> None:
        """End a run made with `Recorder.create` (FINISHED, FAILED or KILLED)."""
        self.rec.client.set_terminated(self.run_id, status)


class Recorder:
    def __init__(self, tracking: dict[str, Any]):
        self.tracking = dict(tracking)
        self.uri = connect(self.tracking)
        self.experiment = str(self.tracking["experiment"])
        self._client: Any = None

    @property
    def client(self) -> Any:
        """MLflow's client on this store, made on first use (a store is opened only when a
        command reads or writes it)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    @contextmanager
    def run(
        self,
        name: str,
        *,
        tags: dict[str, Any] | None = None,
        parent: str | None = None,
        system_metrics: bool | None = None,
    ) -> Iterator[RunLog]:
        """The verb's run (registry's tracked_run: `mlflow run`'s, a nested child of
        `parent`, or a new one), active for MLflow's fluent calls (log_model) inside."""
        tags = _tag_values(tags or {})
        if system_metrics is None:  # the store's setting (tracking.system_metrics)
            system_metrics = bool(self.tracking.get("system_metrics", False))
        with tracked_run(self.uri, self.experiment, name, system_metrics, parent, tags) as r:
            yield RunLog(self, r.info.run_id, r.info.experiment_id)

    def create(
        self, experiment_id: str, name: str, tags: dict[str, Any], parent: str | None = None
    ) -> RunLog:
        """A run that is not the active one (a walk-forward fold, a sweep's parent or failed
        job); `RunLog.finish` ends it."""
        tags = _tag_values(tags)
        if parent:
            tags[Tag.MLFLOW_PARENT_RUN] = parent
        r = self.client.create_run(experiment_id, run_name=name, tags=tags)
        return RunLog(self, r.info.run_id, experiment_id)

    def on(self, run_id: str) -> RunLog:
        return RunLog(self, run_id)


_RECORDERS: dict[tuple[str, str, str], Recorder] = {}


def recorder(tracking: dict[str, Any]) -> Recorder:
    """The command's recorder: its connection (the client) made once per tracking store and
    experiment; each call takes the caller's tracking settings (a later command in the same
    process may ask for other ones, e.g. tracking.system_metrics) and points MLflow's global
    URI at the store again (cheap), so the reads that use it see the same store."""
    key = (tracking_uri(tracking.get("uri")), str(tracking["experiment"]), str(tracking["timeout"]))
    rec = _RECORDERS.get(key)
    if rec is None:
        rec = _RECORDERS[key] = Recorder(tracking)
    else:
        rec.tracking = dict(tracking)
        connect(rec.tracking)
    return rec
