"""What every `python -m phat.<verb>` entry point does around its work: resolve the Hydra config
to a plain dict, run, and turn phat's own errors into a one-line message and an exit code
(2: bad input or config; the verb may map a refusal to another code) instead of a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def call(
    fn: Callable[[dict[str, Any]], Any],
    cfg: DictConfig,
    logger: logging.Logger,
    exit_codes: dict[type[BaseException], int] | None = None,
) -> Any:
    from phat.errors import PhatError

    container = OmegaConf.to_container(cfg, resolve=True)
    try:
        return fn(container)  # type: ignore[arg-type]
    except PhatError as e:
        code = next((c for t, c in (exit_codes or {}).items() if isinstance(e, t)), 2)
        logger.error("%s: %s", type(e).__name__, e)
        sys.exit(code)
