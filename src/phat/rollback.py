"""`python -m phat.rollback registry.model_name=NAME [reason="..."]`: move `production` back to
the previous production version (repeatable: walks the promotion history). The other one-line
rollback needs no registry at all: run the consumer with `signal_source=proxy`."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call

log = logging.getLogger("phat.rollback")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="rollback")
def main(cfg: DictConfig) -> None:
    from phat.promotion import rollback

    call(rollback, cfg, log)


if __name__ == "__main__":
    main()
