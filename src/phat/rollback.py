"""`python -m phat.rollback registry.model_name=NAME [reason="..."]`: move `production` back to
the previous production version (repeatable: walks the promotion history). The other one-line
rollback needs no registry at all: run the consumer with `signal_source=proxy`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("phat.rollback")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="rollback")
def main(cfg: DictConfig) -> None:
    from phat.errors import PhatError
    from phat.promotion import rollback

    try:
        rollback(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except PhatError as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    main()
