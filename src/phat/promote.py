"""`python -m phat.promote registry.model_name=NAME version=N [--dry-run]`: gate a candidate and,
on a pass, make it production (see phat.promotion). Exits 1 when a gate fails, 2 on bad input."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("phat.promote")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="promote")
def main(cfg: DictConfig) -> None:
    from phat.errors import PhatError
    from phat.promotion import PromotionRefused, promote

    try:
        promote(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except PromotionRefused as e:
        log.error("REFUSED: %s", e)
        sys.exit(1)
    except PhatError as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    if "--dry-run" in sys.argv:  # a flag people expect; Hydra takes key=value
        sys.argv = [a for a in sys.argv if a != "--dry-run"] + ["promotion.dry_run=true"]
    main()
