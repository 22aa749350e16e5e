"""Train and register one p_hat model: the work of `phat train` and of each sweep job.

Reads top to bottom as the recipe: config checks, data and splits (a data error fails here,
before any MLflow run exists), then one MLflow run that holds the fit, calibration, metrics,
plots, the artifact and its registry version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import TrainConf

log = logging.getLogger("phat.train")


def run(
    cfg: TrainConf, config_yaml: str = "", sweep: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train and track; returns {"run_id", "model_hash", "metrics", "model_version"}.

    `sweep` ({"parent", "key", "job"}, from phat.cli.sweep.job): the run is a nested child of
    the sweep's parent run, registers nothing, holds the test span's metrics out, and prints
    no summary (the sweep prints one line per job)."""
    from phat.pipeline import fit_evaluate
    from phat.recipe.fit import fits_per_asset
    from phat.recipe.series import prepare
    from phat.recipe.specs import validate_config

    validate_config(cfg)
    prep = prepare(cfg)
    if str(cfg.engine) == "ray" and not fits_per_asset(cfg, prep.bars):
        print(  # not silent: the engine was asked for and has nothing to do here
            "engine=ray: this training has no independent fits to fan out (per-asset fits "
            "of a universe do: model.pooling=per_asset); it runs in this process"
        )

    import mlflow

    from phat.registry.client import log_and_register, model_name_for
    from phat.registry.recorder import recorder
    from phat.registry.tracking import log_run, summary_lines, write_run_files

    rec = recorder(cfg.tracking)
    out_dir = Path(cfg.out_dir)
    lspec = prep.label_spec
    # Runs that differ in model, horizon, data, calibration or seed read differently in tables.
    run_name = (
        f"{cfg.model.kind}-{lspec.horizon_id}-{prep.bars.symbol}-"
        f"{cfg.calibration.method}-s{prep.seed}"
    )
    parent, tags = None, {}
    if sweep is not None:
        run_name += f"-j{sweep['job']}"
        parent = sweep["parent"]
        tags = {Tag.SWEEP_OVERRIDES: sweep["key"], Tag.SWEEP_JOB: str(sweep["job"])}
    with rec.run(run_name, tags=tags, parent=parent) as run:  # tracking.system_metrics
        run_id = run.run_id
        if sweep is not None:
            sweep["run_id"] = run_id
        experiment = mlflow.get_experiment(run.experiment_id).name  # mlflow run picks
        result = fit_evaluate(prep, out_dir, tracking={"uri": rec.uri, "run_id": run_id})
        warnings, figures = write_run_files(
            result, out_dir, config_yaml or OmegaConf.to_yaml(cfg), int(cfg.metrics.n_bins)
        )
        log_run(run, result, cfg, out_dir, figures, hold_out_test=sweep is not None)
        if warnings:
            run.tags({Tag.WARNINGS: " | ".join(warnings)})
        # A sweep registers nothing per job (at most its winner, at the end).
        register = bool(cfg.registry.register) and sweep is None
        registered = log_and_register(run, result, model_name_for(cfg, prep.bars.symbol), register)
        if sweep is not None:
            sel = ", ".join(
                f"{k} {v:.5f}" for k, v in result.metrics.items() if k.startswith("selection_")
            )
            run.note(
                f"Sweep job {sweep['job']} ({sweep['key']}): {sel}. Test-span metrics are held "
                "out (held_out/test_metrics.json) and reported once, for the chosen job, on the "
                "parent run.",
            )
            return {"run_id": run_id, "metrics": result.metrics, **registered}
    lines = summary_lines(result, run_id, rec.uri, experiment, registered)
    print("\n".join(lines))
    # The same summary as the run's description in the UI (MLflow renders it as Markdown).
    summary = "\n".join(line for line in lines if line.strip())
    run.note(f"```\n{summary}\n```")
    for w in warnings:
        print(f"  WARNING       {w} (the model, metrics and artifact are kept)")
    return {
        "run_id": run_id,
        "model_hash": result.tags[Tag.MODEL_HASH],
        "metrics": result.metrics,
        **registered,
    }
