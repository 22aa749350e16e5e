"""`python -m phat.promote registry.model_name=NAME version=N [--dry-run]`: gate a candidate and,
on a pass, make it production (see phat.promotion). Exits 1 when a gate fails, 2 on bad input."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call

log = logging.getLogger("phat.promote")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="promote")
def main(cfg: DictConfig) -> None:
    from phat.promotion import PromotionRefused, promote

    call(promote, cfg, log, exit_codes={PromotionRefused: 1})


if __name__ == "__main__":
    if "--dry-run" in sys.argv:  # a flag people expect; Hydra takes key=value
        sys.argv = [a for a in sys.argv if a != "--dry-run"] + ["promotion.dry_run=true"]
    main()
