"""Sweeps: `phat train -m ...` (Hydra multirun, any sweeper and launcher).

    phat train -m model=logistic,tree seed=1,2,3                  # 6 jobs, basic sweeper
    phat train -m hparams_search=logistic_optuna hydra.sweeper.n_trials=20
    phat train -m model=logistic,tree hydra/launcher=joblib hydra.launcher.n_jobs=2

`SweepCallback` (hydra.callbacks in conf/train.yaml) runs in the sweeping process: before any
job it connects to the tracking store (creating and migrating it once, so parallel jobs never
race MLflow's migrations) and opens the sweep's parent run; after the last job it logs the
summary (CSV + Markdown, best first), the Pareto front of a multi-objective search, the
winner's held-out test metrics (reported once, after selection), and with
`sweep.register_best=true` registers the winner, the only version a sweep registers.

`job()` runs one job inside whichever process the launcher chose: a nested child run under the
parent, nothing registered, the test span's metrics kept out of the run's metrics (in
`held_out/`), and the value(s) of `sweep.objectives` returned to the sweeper. A job that fails
is a FAILED child with its error (tag `phat.error`); the sweep goes on. A job whose overrides
equal a FINISHED child's (a re-run sweep, or a second machine) is not trained again.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from phat.tagnames import Tag

PARENT_ENV = "PHAT_SWEEP_PARENT"


def sweep_name(config: DictConfig) -> str:
    """sweep.name, else the Optuna study's name, else one name per multirun start."""
    name = OmegaConf.select(config, "sweep.name")
    if name:
        return str(name)
    study = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
    if study:
        return str(study)
    return time.strftime("train-%Y%m%d-%H%M%S")


ERROR_ENV = "PHAT_SWEEP_ERROR"
_OPEN: dict[str, Any] = {}  # the sweep this process opened and has not finished


def abandon() -> None:
    """After a multirun that never reached on_multirun_end (its launcher raised, e.g. a Ray
    worker died under hydra/launcher=ray): the parent and every child still RUNNING become
    FAILED with the reason, so nothing is left looking alive or silently missing. Re-running
    the command resumes the sweep (finished jobs are not trained again)."""
    if not _OPEN:
        return
    opened = dict(_OPEN)
    _OPEN.clear()
    os.environ.pop(PARENT_ENV, None)
    import sys

    from phat.registry.recorder import recorder
    from phat.registry.sweeps import children

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # stop the jobs still running before marking them
    rec = recorder(opened["tracking"])
    kids = children(opened["parent"])
    stuck = [r for r in kids if r.info.status == "RUNNING"]
    done = sum(r.info.status == "FINISHED" for r in kids)
    why = (
        "the sweep stopped before its last job ended (a job's worker died or the launcher "
        f"failed); {done} jobs finished; re-run the same command to resume"
    )
    for r in stuck:
        rec.on(r.info.run_id).tags({Tag.ERROR: f"its worker died or was stopped: {why}"})
        rec.on(r.info.run_id).finish("FAILED")
    par = rec.on(opened["parent"])
    par.tags({Tag.ERROR: why})
    par.finish("FAILED")
    print(
        f"[sweep {opened['name']}] FAILED: {why}; {len(stuck)} unfinished jobs marked FAILED "
        f"(parent run {opened['parent']})",
        file=sys.stderr,
        flush=True,
    )


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra 1.3 turns a callback's exception into a warning and runs the jobs anyway: they
        # would train as plain runs outside the sweep. The reason goes to the jobs instead, and
        # a job of a multirun without a parent stops the sweep with it, exit 2 (cli/train.py).
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(ERROR_ENV, None)
        try:
            self._open(config)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            os.environ[ERROR_ENV] = f"{type(e).__name__}: {first[:300]}"

    def _open(self, config: DictConfig) -> None:
        from phat.registry.recorder import recorder
        from phat.registry.sweeps import open_parent
        from phat.registry.tracking import use_experiment

        # the composed config, not yet validated (a sweep's jobs are): where the sweep logs
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        rec = recorder(tracking)
        exp_id = use_experiment(rec.uri, rec.experiment)
        name = sweep_name(config)
        objectives = [str(o) for o in config.sweep.objectives]
        parent = open_parent(rec, name, exp_id, objectives)
        os.environ[PARENT_ENV] = parent
        _OPEN.update(tracking=tracking, parent=parent, name=name)
        os.environ["PHAT_SWEEP_NAME"] = name
        # The overrides every job shares (no sweep syntax): progress lines leave them out.
        given = OmegaConf.select(config, "hydra.overrides.task") or []
        fixed = [o for o in given if "," not in o and "(" not in o]
        os.environ["PHAT_SWEEP_FIXED"] = "\n".join(fixed)
        if "ray_launcher" in str(OmegaConf.select(config, "hydra.launcher._target_") or ""):
            _start_ray(config)
        print(
            f"[sweep {name}] parent run {parent} in {rec.uri}; objectives {objectives}", flush=True
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _OPEN.clear()
        parent = os.environ.pop(PARENT_ENV, None)
        if not parent:
            return
        os.environ.pop("PHAT_SWEEP_FIXED", None)
        # the composed config as Hydra holds it (attributes, as a validated one reads)
        finish(config, parent, os.environ.pop("PHAT_SWEEP_NAME", ""))


def _start_ray(config: DictConfig) -> None:
    """hydra/launcher=ray: Ray started here, before the launcher, with the launcher's own
    hydra.launcher.ray.init settings, so that every job gets the sweep's PHAT_SWEEP_* (its
    parent run) also on an existing cluster, whose workers do not inherit this process's
    environment (the launcher then finds Ray running and uses it)."""
    import ray

    from phat.engines.fanout import start_ray

    if ray.is_initialized():
        return
    init = OmegaConf.to_container(config.hydra.launcher.ray.init, resolve=True) or {}
    assert isinstance(init, dict)
    if init.get("address") is None:  # a local cluster: the launcher's small object store
        init.setdefault("object_store_memory", 78643200)
    start_ray(ray, **{str(k): v for k, v in init.items()})


def finish(cfg: Any, parent: str, name: str) -> dict[str, Any]:
    """Summarise the sweep on its parent run; register the winner on request."""
    import tempfile
    from pathlib import Path

    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder
    from phat.registry.sweeps import (
        children,
        held_out_metrics,
        markdown,
        pareto_front,
        register_run,
        summary_frame,
    )

    objectives = [str(o) for o in cfg.sweep.objectives]
    rec = recorder(cfg.tracking)
    par = rec.on(parent)  # workers on several machines finish one parent (writes retry)

    def tag(key: str, value: str) -> None:
        par.tags({key: value})

    def metric(key: str, value: float) -> None:
        par.metrics({key: value})

    runs = children(parent)
    table = summary_frame(runs, objectives)
    done = table[table["status"] == "FINISHED"] if not table.empty else table
    out: dict[str, Any] = {"jobs": len(table), "finished": len(done)}
    with tempfile.TemporaryDirectory() as d:
        table.to_csv(Path(d) / "summary.csv", index=False)
        (Path(d) / "summary.md").write_text(
            f"# Sweep {name}: {len(done)} of {len(table)} jobs finished, best first by "
            f"{objectives[0]}\n\n{markdown(table)}"
        )
        if len(objectives) > 1 and not done.empty:
            front = pareto_front(table, objectives)
            front.to_csv(Path(d) / "pareto.csv", index=False)
            (Path(d) / "pareto.md").write_text(
                f"# Pareto front of {objectives} (all minimised): {len(front)} of "
                f"{len(done)} finished jobs\n\n{markdown(front)}"
            )
            out["pareto"] = len(front)
        par.artifacts(d)
    if done.empty:
        par.finish("FAILED")
        print(f"[sweep {name}] no job finished; see the FAILED children's phat.error", flush=True)
        return out
    best = done.iloc[0]
    metric(f"best_{objectives[0]}", float(best[objectives[0]]))
    tag(Tag.SWEEP_BEST_RUN, str(best["run_id"]))
    tag(Tag.SWEEP_BEST_OVERRIDES, str(best["overrides"]))
    # Selection is over; the chosen configuration's test span is looked at now, once.
    test = held_out_metrics(str(best["run_id"]))
    for k in ("test_brier", "test_ece", "test_log_loss", "test_auc", "test_brier_climatology"):
        if k in test and math.isfinite(test[k]):
            metric(f"chosen_{k}", test[k])
    print(
        f"[sweep {name}] chosen: {best['overrides']} ({objectives[0]} "
        f"{best[objectives[0]]:.5f}, run {best['run_name']}); its test span, reported once: "
        f"brier {test['test_brier']:.5f} [{test['test_brier_ci_low']:.5f}, "
        f"{test['test_brier_ci_high']:.5f}], ece {test['test_ece']:.4f}, "
        f"climatology {test['test_brier_climatology']:.5f}",
        flush=True,
    )
    out.update(best_run=str(best["run_id"]), test=test)
    if bool(cfg.sweep.register_best):
        reg = register_run(rec, str(best["run_id"]), model_name_for(cfg))
        tag(Tag.SWEEP_REGISTERED, f"{reg['model_name']}/v{reg['model_version']}")
        print(
            f"[sweep {name}] registered the winner: models:/{reg['model_name']}/{reg['model_version']}"
        )
        out["registered"] = reg
    par.finish("FINISHED")
    return out


def job_key(task_overrides: list[str]) -> str:
    """A job's identity in its sweep: its overrides, sorted (hydra.* and paths left out)."""
    return " ".join(
        sorted(o for o in task_overrides if not o.startswith(("hydra.", "out_dir=", "sweep.")))
    )


class SweepJobFailed(RuntimeError):
    """Raised to the Optuna sweeper for a failed job: it records the trial as FAIL (NaN would
    be told as a COMPLETE value, which Optuna refuses and the sweeper cannot recover from)."""


def failed_value(hc: Any, n: int, why: str) -> float | list[float]:
    """What a failed job returns: NaN to the basic sweeper (its summary shows the failure),
    an exception to the Optuna sweeper (a FAIL trial; conf/hparams_search sets
    max_failure_rate: 1.0 so the search goes on)."""
    if "optuna" in str(OmegaConf.select(hc, "sweeper._target_", default="")).lower():
        raise SweepJobFailed(why)
    return math.nan if n == 1 else [math.nan] * n


def job(cfg: dict[str, Any], config_yaml: str, parent: str) -> float | list[float]:
    """One sweep job; returns the objective value(s) (see failed_value for a failed job)."""
    from hydra.core.hydra_config import HydraConfig

    from phat.lifecycle.training import run
    from phat.registry.recorder import recorder
    from phat.registry.sweeps import done_job, objective_values

    # The sweep's store for every read below, whatever this process's environment says (a
    # worker of an existing Ray cluster inherits none of the sweeping command's).
    recorder(cfg.tracking)
    objectives = [str(o) for o in cfg.sweep.objectives]
    hc = HydraConfig.get()
    key = job_key(list(hc.overrides.task))
    fixed = {o.split("=", 1)[0] for o in os.environ.get("PHAT_SWEEP_FIXED", "").splitlines()}
    shown = " ".join(o for o in key.split() if o.split("=", 1)[0] not in fixed) or key
    num = hc.job.num
    name = os.environ.get("PHAT_SWEEP_NAME", "")
    t0 = time.perf_counter()
    previous = done_job(parent, key)
    if previous is not None:
        values = objective_values(previous, objectives)
        print(
            f"[sweep {name}] job {num} {shown}: already done in run {previous.info.run_id} "
            f"({objectives[0]} {values[0]:.5f}); not trained again",
            flush=True,
        )
        return values[0] if len(values) == 1 else values
    sweep = {"parent": parent, "key": key, "job": num}
    try:
        out = run(cfg, config_yaml, sweep=sweep)
        values = [float(out["metrics"].get(m, math.nan)) for m in objectives]
        status = " ".join(f"{m} {v:.5f}" for m, v in zip(objectives, values, strict=True))
    except Exception as e:
        record_failure(cfg.tracking, sweep, e)
        values = [math.nan] * len(objectives)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        status = f"FAILED {type(e).__name__}: {first[:300]}"
    print(
        f"[sweep {name}] job {num} {shown}: {status} in {time.perf_counter() - t0:.1f} s"
        f"{_best_so_far(parent, objectives)}",
        flush=True,
    )
    if any(math.isnan(v) for v in values):
        return failed_value(hc, len(values), f"job {num} {shown}: {status}")
    return values[0] if len(values) == 1 else values


def record_failure(tracking: Any, sweep: dict[str, Any], err: Exception) -> None:
    """The failed job as a FAILED child carrying its error (created here when the job failed
    before its run existed, e.g. on bad data); `tracking`: where the sweep logs."""
    from phat.registry.recorder import recorder

    rec = recorder(tracking)
    if sweep.get("run_id") is None:
        parent = rec.client.get_run(sweep["parent"])
        tags = {Tag.SWEEP_OVERRIDES: sweep["key"], Tag.SWEEP_JOB: str(sweep["job"])}
        run = rec.create(parent.info.experiment_id, f"job-{sweep['job']}", tags, sweep["parent"])
    else:
        run = rec.on(sweep["run_id"])
    run.tags({Tag.ERROR: f"{type(err).__name__}: {str(err).strip()}"})
    run.finish("FAILED")


def _best_so_far(parent: str, objectives: list[str]) -> str:
    from phat.registry.sweeps import children, objective_values

    best = None
    for r in children(parent):
        if r.info.status != "FINISHED":
            continue
        v = objective_values(r, objectives)[0]
        if math.isfinite(v) and (best is None or v < best[0]):
            best = (v, r.data.tags.get(Tag.SWEEP_JOB, "?"))
    return f" | best so far {best[0]:.5f} (job {best[1]})" if best else ""
