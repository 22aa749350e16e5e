"""`phat train [overrides]` (= `python -m phat.train`): train, calibrate, evaluate and track one
p_hat model.

    phat train model=logistic horizon=15m
    phat train model=tcn horizon=1h calibration=temperature
    phat train data.path=btc.parquet data.symbol=BTCUSDT horizon=15m

The command line around phat.lifecycle.training.run (config checks, fast, before heavy imports;
a sweep's jobs; one line and exit 2 for a refusal).
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from phat.cli import CONF_DIR, call, entry

log = logging.getLogger("phat.train")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> Any:
    import os

    from phat.cli.sweep import PARENT_ENV

    parent = os.environ.get(PARENT_ENV)
    if parent:  # a job of `phat train -m ...`: its value goes back to the sweeper
        return _sweep_job(cfg, parent)
    _refuse_orphan_job()
    from phat.lifecycle.training import run

    return call(lambda c: run(c, OmegaConf.to_yaml(cfg, resolve=True)), cfg, log, verb="train")


def _refuse_orphan_job() -> None:
    """A multirun job with no parent run must not train and register as a plain run: the
    sweep callback failed (or was removed), so the whole sweep stops with the reason, exit 2."""
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from phat.cli import fail
    from phat.cli.sweep import ERROR_ENV

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    why = os.environ.get(ERROR_ENV) or "hydra.callbacks.phat_sweep is not in the config"
    fail(f"SweepError: the sweep's parent run could not be opened ({why}); no job ran", 2)


def _sweep_job(cfg: DictConfig, parent: str) -> Any:
    from phat.cli.config import validate
    from phat.cli.sweep import job, job_key, record_failure

    try:
        container = validate("train", cfg)
    except Exception as e:  # a sampled value out of range: a FAILED job, the sweep goes on
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        plain = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(plain, dict)
        sweep = {"parent": parent, "key": job_key(list(hc.overrides.task)), "job": hc.job.num}
        tracking = OmegaConf.to_container(cfg.tracking, resolve=True)  # where the sweep logs
        record_failure(tracking, sweep, e)
        print(f"[sweep] job {hc.job.num}: FAILED {type(e).__name__}: {e}", flush=True)
        from phat.cli.sweep import failed_value

        return failed_value(hc, len(plain["sweep"]["objectives"]), f"{type(e).__name__}: {e}")
    return job(container, OmegaConf.to_yaml(cfg, resolve=True), parent)


def _abandon() -> None:
    """A sweep's parent run left open by a failed or interrupted sweep is ended (cli.sweep)."""
    from phat.cli.sweep import abandon

    abandon()


def main() -> None:
    entry("train", _hydra_main, after=_abandon)


if __name__ == "__main__":
    main()
