"""`phat doctor [--dry-run]` (= `python -m phat.doctor`): list and repair what crashes left in the
MLflow store (phat.lifecycle.doctor): runs RUNNING with no process behind them, PENDING logged
models, versions whose training never finished, an alias the history does not account for."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry

if TYPE_CHECKING:
    from phat.settings import DoctorConf

log = logging.getLogger("phat.doctor")


def run(cfg: DoctorConf) -> dict[str, Any]:
    from phat.lifecycle.doctor import find, repair, report
    from phat.registry.recorder import recorder

    rec = recorder(cfg.tracking)
    findings = find(rec.client, float(cfg.stale_after_hours))
    dry = bool(cfg.dry_run)
    print(report(findings, dry))
    repaired = 0 if dry else repair(rec, findings)
    if repaired:
        print(f"phat doctor: repaired {repaired} in {rec.uri}")
    return {"findings": findings, "repaired": repaired}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="doctor")
def _hydra_main(cfg: DictConfig) -> None:
    call(run, cfg, log, verb="doctor")


def main() -> None:
    entry("doctor", _hydra_main)


if __name__ == "__main__":
    main()
