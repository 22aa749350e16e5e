"""Independent fits fanned out: in this process (engine=local) or as Ray tasks (engine=ray).

    for result in fan_out(cfg, fit_one, shared, items, label=lambda item: f"fold {item}"):
        ...

`task(shared, item)` is a module-level function. `shared` (the prepared series, the settings)
goes to Ray's object store once; each item is one task. Results come back in the items' order,
whatever order the tasks finish in, so everything a caller does with them (stitched records,
MLflow runs, progress lines) is what the serial run does. Every task runs at the caller's
thread count (`threads`; a fit is bitwise reproducible only at a fixed count), reserving that
many of the cluster's CPUs (threads=1: one task per CPU), and seeds its own fit from the
settings, so a task's result is the serial result bit for bit (tests/test_engines).

A task that raises raises here, as it would serially (the task's own exception: a data error
stays one line). A worker that dies (a killed process, out of memory) raises `TaskDied` naming
the item: tasks are never retried (a retry would hide the crash). Only as many tasks as the
cluster runs at once are submitted at a time, so a stop leaves no queue behind. Inside a task, fan_out runs serially (no nested clusters).

`ray.address` null starts a local cluster for the call and stops it after; an address joins an
existing cluster (phat must be installed on its nodes). A cluster already initialised in this
process (a notebook's, a test session's) is used as it is and left running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from phat.engines import require
from phat.errors import ConfigError, PhatError

if TYPE_CHECKING:
    from phat.settings import RecipeConf

_IN_TASK = False  # set inside a Ray task: a nested fan_out runs serially


class TaskDied(PhatError):
    """A task's worker process died; `.label` names the fold/asset, `.item` is it, `.done`
    the results collected before it (in order)."""

    reason = "engine_task_died"
    exit_code = 1  # not bad input (2): the machine failed; re-running the command may pass

    def __init__(self, label: str, detail: str, done: list[Any], item: Any = None):
        self.label, self.detail, self.done, self.item = label, detail, done, item
        super().__init__(
            f"{label}: its Ray worker died ({detail}); tasks are not retried, the run stops here"
        )


def engine_of(cfg: RecipeConf) -> str:
    """The engine a fan-out runs on: cfg.engine, or local inside a task."""
    return "local" if _IN_TASK else str(cfg.engine)


@contextlib.contextmanager
def ray_cluster(settings: Any) -> Iterator[Any]:
    """The Ray module with a cluster to use: an initialised one as it is, else a new local
    cluster (`address` null; `num_cpus` null: every core) or the given address, shut down on
    exit."""
    ray = require("ray")
    if ray.is_initialized():
        yield ray
        return
    address = settings.get("address")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": "ERROR",
        "configure_logging": True,
    }
    if address is None:
        kwargs["num_cpus"] = settings.get("num_cpus")
    start_ray(ray, address=address or "local", **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def start_ray(ray: Any, **init: Any) -> None:
    """ray.init with phat's PHAT_* environment in every task's (runtime_env env_vars): workers
    of an existing cluster do not inherit this process's environment (a sweep's parent run,
    fault injection), a local cluster's would. The caller's runtime_env is kept."""
    import os

    runtime = dict(init.pop("runtime_env", None) or {})
    mine = {k: v for k, v in os.environ.items() if k.startswith("PHAT_")}
    runtime["env_vars"] = {**mine, **dict(runtime.get("env_vars") or {})}
    ray.init(runtime_env=runtime, **init)


def _run(task: Callable[[Any, Any], Any], shared: Any, item: Any, threads: int) -> Any:
    global _IN_TASK
    from threadpoolctl import threadpool_limits

    _IN_TASK = True
    with threadpool_limits(threads):
        return task(shared, item)


def fan_out(
    cfg: RecipeConf,
    task: Callable[[Any, Any], Any],
    shared: Any,
    items: Sequence[Any],
    label: Callable[[Any], str],
    threads: int = 1,
) -> Iterator[Any]:
    """task(shared, item) for every item, in order: serially, or as Ray tasks under
    cfg.engine == "ray" (cfg.ray: address, num_cpus). A generator: serially, item k+1
    starts when the caller asks for it, so the first error stops the run where it did."""
    if engine_of(cfg) != "ray":
        for item in items:
            yield task(shared, item)
        return
    with ray_cluster(cfg.ray) as ray:
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus < threads:  # a task Ray can never place would wait forever
            raise ConfigError(
                f"threads={threads}: each Ray task reserves that many CPUs, and the cluster has "
                f"{cpus:g}; set threads <= {cpus:g} (ray.num_cpus for a local cluster)"
            )
        # Each task reserves its thread count: no oversubscription, and the serial run's bits
        # (a fit is reproducible only at a fixed thread count; threads=1 runs one task per CPU).
        remote = ray.remote(num_cpus=threads, max_retries=0)(_run)
        ref = ray.put(shared)
        # At most `window` tasks exist at once (as many as the cluster runs together): the rest
        # are submitted as those finish. A stop (an error, a died worker, a caller that closes
        # the generator) then leaves only those few running, never a queue, and nothing is
        # cancelled: ray.cancel races with a task finishing at that moment and can abort the
        # driver inside Ray (ray-project/ray#54846), so the few finish or die with the job.
        window = max(1, int(cpus // threads))
        flying: dict[Any, int] = {}  # ref -> item index
        landed: dict[int, tuple[bool, Any]] = {}  # index -> (ok, result or exception)
        todo = iter(range(len(items)))
        done: list[Any] = []

        def submit() -> None:
            for k in todo:
                flying[remote.remote(task, ref, items[k], threads)] = k
                if len(flying) >= window:
                    return

        submit()
        for k, item in enumerate(items):
            while k not in landed:
                ready, _ = ray.wait(list(flying), num_returns=1)
                for r in ready:
                    landed[flying.pop(r)] = _outcome(ray, r)
                submit()
            ok, result = landed.pop(k)
            if not ok:
                if isinstance(result, ray.exceptions.RayTaskError):
                    cause = getattr(result, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else result) from None
                if isinstance(result, ray.exceptions.RayError):  # the worker (or node) died
                    text = str(result).strip()
                    first = text.splitlines()[0] if text else ""
                    why = f"{type(result).__name__}: {first[:200]}"
                    raise TaskDied(label(item), why, done, item) from None
                raise result
            done.append(result)
            yield result


def _outcome(ray: Any, r: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the exception ray.get raised): a finished task's outcome,
    kept until its turn comes in the items' order."""
    try:
        return True, ray.get(r)
    except Exception as e:  # noqa: BLE001 - re-raised in order by fan_out
        return False, e
