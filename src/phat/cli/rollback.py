"""`phat rollback [reason="..."]` (= `python -m phat.rollback`): move `production` back to the
previous production version (repeatable: walks the promotion history). The other one-line
rollback needs no registry at all: run the consumer with `signal_source=proxy`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry, require_manager

if TYPE_CHECKING:
    from phat.settings import RollbackConf

log = logging.getLogger("phat.rollback")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="rollback")
def _hydra_main(cfg: DictConfig) -> None:
    call(run, cfg, log, verb="rollback")


def run(cfg: RollbackConf) -> dict[str, Any]:
    from phat.lifecycle.promotion import rollback

    require_manager(cfg, "rollback")
    return rollback(cfg)


def main() -> None:
    entry("rollback", _hydra_main)


if __name__ == "__main__":
    main()
