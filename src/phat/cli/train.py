"""`phat train [overrides]` (= `python -m phat.train`): train, calibrate, evaluate and track one
p_hat model.

    phat train model=logistic horizon=15m
    phat train model=tcn horizon=1h calibration=temperature
    phat train data.path=btc.parquet data.symbol=BTCUSDT horizon=15m

Reads top to bottom as the recipe: config checks (fast, before heavy imports), data and splits
(a data error fails here, before any MLflow run exists), then one MLflow run that holds the fit,
calibration, metrics, plots, the artifact and its registry version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from phat.cli import CONF_DIR, call, entry

log = logging.getLogger("phat.train")


def run(cfg: dict[str, Any], config_yaml: str = "") -> dict[str, Any]:
    """Train and track; returns {"run_id", "model_hash", "metrics", "model_version"}."""
    from phat.pipeline import fit_evaluate, prepare, validate_config
    from phat.registry.tracking import connect

    validate_config(cfg)
    prep = prepare(cfg)

    import mlflow

    from phat.registry.client import log_and_register, model_name_for
    from phat.registry.tracking import log_run, summary_lines, tracked_run, write_run_files

    uri = connect(cfg["tracking"])
    experiment = str(cfg["tracking"]["experiment"])
    out_dir = Path(cfg["out_dir"])
    lspec = prep.label_spec
    # Runs that differ in model, horizon, data, calibration or seed read differently in tables.
    run_name = (
        f"{cfg['model']['kind']}-{lspec.horizon_id}-{prep.bars.symbol}-"
        f"{cfg['calibration']['method']}-s{prep.seed}"
    )
    with tracked_run(uri, experiment, run_name) as active:
        run_id = active.info.run_id
        experiment = mlflow.get_experiment(active.info.experiment_id).name  # mlflow run picks
        result = fit_evaluate(prep, out_dir, tracking={"uri": uri, "run_id": run_id})
        warnings = write_run_files(
            result, out_dir, config_yaml or OmegaConf.to_yaml(cfg), int(cfg["metrics"]["n_bins"])
        )
        log_run(result, cfg, out_dir)
        if warnings:
            mlflow.set_tag("phat.warnings", " | ".join(warnings)[:5000])
        registered = log_and_register(
            result, model_name_for(cfg, prep.bars.symbol), bool(cfg["registry"]["register"])
        )
    lines = summary_lines(result, run_id, uri, experiment, registered)
    print("\n".join(lines))
    # The same summary as the run's description in the UI (MLflow renders it as Markdown).
    summary = "\n".join(line for line in lines if line.strip())
    mlflow.MlflowClient().set_tag(run_id, "mlflow.note.content", f"```\n{summary}\n```")
    for w in warnings:
        print(f"  WARNING       {w} (the model, metrics and artifact are kept)")
    return {
        "run_id": run_id,
        "model_hash": result.tags["phat.model_hash"],
        "metrics": result.metrics,
        **registered,
    }


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> Any:
    return call(lambda c: run(c, OmegaConf.to_yaml(cfg, resolve=True)), cfg, log, verb="train")


def main() -> None:
    entry("train", _hydra_main)


if __name__ == "__main__":
    main()
