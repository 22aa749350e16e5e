"""`phat promote version=N [--dry-run]` (= `python -m phat.promote`): gate a candidate and, on a
pass, make it production (see phat.lifecycle.promotion). Exits 1 when a gate fails, 2 on bad
input or a registry refusal."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry

log = logging.getLogger("phat.promote")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="promote")
def _hydra_main(cfg: DictConfig) -> None:
    from phat.lifecycle.promotion import PromotionRefused, promote

    call(promote, cfg, log, exit_codes={PromotionRefused: 1}, verb="promote")


def main() -> None:
    entry("promote", _hydra_main)


if __name__ == "__main__":
    main()
