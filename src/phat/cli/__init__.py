"""The command line: one thin module per verb (`phat <verb>` = `python -m phat.<verb>`), the
config schema and loader (phat.cli.config), and what every verb does around its work.

Around its work every verb: answers `--help` from its own page without heavy imports; checks
the overrides against the schema before Hydra starts (a misspelt key, a wrong type, an unknown
group option or a value out of range is one line and exit 2); runs; and turns phat's own
refusals into one line and exit 2 (the verb may map a refusal to another code, e.g. a failed
gate exits 1) instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from phat.cli.verbs import CONF_DIR, VERBS

__all__ = ["CONF_DIR", "VERBS", "call", "entry", "expand_overrides", "fail", "require_manager"]


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and exit: what every expected failure looks like to a user."""
    print(message.replace("\n", " "), file=sys.stderr)
    sys.exit(code)


def call(
    fn: Callable[[dict[str, Any]], Any],
    cfg: Any,
    logger: logging.Logger,
    exit_codes: dict[type[BaseException], int] | None = None,
    verb: str | None = None,
) -> Any:
    """Validate the composed config against the verb's schema, run `fn` on it as a plain dict,
    and map phat's errors to one line and an exit code."""
    from phat.cli.config import validate
    from phat.errors import PhatError

    try:
        container = validate(verb or _verb_of(logger), cfg)
        return fn(container)
    except PhatError as e:
        code = next(
            (c for t, c in (exit_codes or {}).items() if isinstance(e, t)),
            getattr(e, "exit_code", 2),
        )
        fail(f"{type(e).__name__}: {e}", code)
    except Exception as e:
        # The server said no to this user, or the store itself failed (MLflow, its HTTP client
        # or its database): one line, exit 2.
        from phat.errors import is_store_failure
        from phat.registry.access import refusal

        if said := refusal(e):
            fail(f"AccessRefused: {said}", 2)

        if not is_store_failure(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"RegistryUnavailable: the MLflow store failed: {first[:300]}", 2)


def require_manager(cfg: dict[str, Any], verb: str) -> None:
    """Before a lifecycle verb changes anything: on a shared server, the signed-in user must
    manage the model its settings name (phat.registry.access.require_manage)."""
    from phat.registry.access import require_manage
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder

    require_manage(recorder(cfg.tracking).uri, model_name_for(cfg), verb)


def _verb_of(logger: logging.Logger) -> str:
    return logger.name.rsplit(".", 1)[-1]


def expand_overrides(args: list[str]) -> list[str]:
    """`overrides="a=1 b=2"` (one argument, as `mlflow run -P overrides=...` passes it) ->
    `a=1`, `b=2`, split like a shell would; an empty `overrides=` adds nothing."""
    import shlex

    out: list[str] = []
    for a in args:
        if a.startswith("overrides="):
            out.extend(shlex.split(a[len("overrides=") :]))
        else:
            out.append(a)
    return out


def entry(verb: str, hydra_main: Callable[[], Any], after: Callable[[], Any] | None = None) -> None:
    """`python -m phat.<verb>`: fast help, overrides checked before Hydra runs, then Hydra
    (`after`: run once Hydra returns or fails, e.g. training's sweep clean-up)."""
    from phat.cli.config import help_text, precheck
    from phat.errors import ConfigError

    args = expand_overrides(sys.argv[1:])
    sys.argv = [sys.argv[0], *args]
    if "--dry-run" in args and verb in ("promote", "doctor"):  # a flag people expect
        key = "promotion.dry_run" if verb == "promote" else "dry_run"
        args = [a for a in args if a != "--dry-run"] + [f"{key}=true"]
        sys.argv = [sys.argv[0], *args]
    if "--help" in args or "-h" in args:
        print(help_text(verb))
        sys.exit(0)
    try:
        precheck(verb, args)
    except ConfigError as e:
        fail(f"ConfigError: {e}")
    import warnings

    # hydra-optuna-sweeper builds optuna's pre-3.0 distribution classes (docs/sweeps.md): a
    # deprecation for the plugin's authors, not something a user of phat can act on.
    warnings.filterwarnings(
        "ignore", message=".*Distribution has been deprecated", category=FutureWarning
    )
    retries = "hydra.launcher.ray.remote.max_retries"
    if verb == "train" and "hydra/launcher=ray" in args and not any(retries in a for a in args):
        # a retried job would hide a dead worker: it fails visibly instead (docs/scale.md)
        sys.argv.append(f"++{retries}=0")
    try:
        hydra_main()
    finally:
        if after is not None:
            after()
