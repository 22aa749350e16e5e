"""`phat promote version=N [--dry-run]` (= `python -m phat.promote`): gate a candidate and, on a
pass, make it production (see phat.lifecycle.promotion). Exits 1 when a gate fails, 2 on bad
input or a registry refusal.

With `promotion.evidence=walkforward` (the default) the significance gates read the version's
walk-forward record; a version that has none gets one first, made exactly as `phat walkforward
walkforward.for_version=N` makes it: the version's own recipe (label, features, model,
calibration, split, trainer, seed, read from its training run's config.yaml), refitted on this
command's data in the windows of `walkforward.*`, logged in experiment `phat-walkforward`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry, require_manager
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import PromoteConf

log = logging.getLogger("phat.promote")

# The sections of a training's config that define its recipe (a walk-forward refits them).
RECIPE_KEYS = ("horizon", "label", "features", "model", "calibration", "split", "trainer", "seed",
               "threads")  # fmt: skip


def run(cfg: PromoteConf) -> dict[str, Any]:
    from phat.lifecycle.promotion import promote

    require_manager(cfg, "promote")  # before anything is made or moved
    if str(cfg.promotion.evidence) == "walkforward":
        ensure_record(cfg)
    return promote(cfg)


def ensure_record(cfg: PromoteConf) -> None:
    """Make version N's walk-forward record when it has none (module docstring)."""
    from phat.registry.client import model_name_for, registry_error
    from phat.registry.recorder import recorder

    client = recorder(cfg.tracking).client
    name, version = model_name_for(cfg), str(cfg.version)
    try:
        mv = client.get_model_version(name, version)
    except Exception as e:
        raise registry_error(e, f"{name} v{version}") from None
    if mv.tags.get(Tag.WALKFORWARD_RUN_ID):
        return
    from phat.errors import ConfigError
    from phat.lifecycle.promotion import require_candidate

    require_candidate(client, name, mv)  # no record is made for a version promote refuses
    print(
        f"phat promote: {name} v{version} has no walk-forward record; making it first, as "
        f"`phat walkforward walkforward.for_version={version}` would on this data "
        "(experiment phat-walkforward)",
        flush=True,
    )
    from phat.cli.walkforward import run as walkforward

    try:
        walkforward(walkforward_config(cfg, mv))
    except ConfigError as e:
        raise ConfigError(f"making {name} v{version}'s walk-forward record on this command's "
                          f"data (data.*): {e}") from None  # fmt: skip


def walkforward_config(cfg: PromoteConf, mv: Any) -> Any:
    """`phat walkforward walkforward.for_version=N`'s settings for version mv: its training
    run's recipe, this command's data, store, metrics and walk-forward windows."""
    import os
    import tempfile

    import mlflow
    from omegaconf import OmegaConf

    from phat.cli.config import compose, validate
    from phat.errors import ContractError

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    try:
        with tempfile.TemporaryDirectory() as d:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path="config.yaml", dst_path=d
            )
            trained = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:
        raise ContractError(
            f"{mv.name} v{mv.version}: its training run {mv.run_id} has no readable config.yaml "
            f"({str(e).splitlines()[0][:160]}); make its record with `phat walkforward "
            f"walkforward.for_version={mv.version}` and the version's settings"
        ) from None
    base = OmegaConf.to_container(compose("walkforward", []), resolve=True)
    assert isinstance(base, dict) and isinstance(trained, dict)
    for key in RECIPE_KEYS:
        if key in trained:
            base[key] = trained[key]
    for key in ("data", "registry", "metrics", "signal"):
        base[key] = _plain(cfg[key])
    # this command's store, the record's own experiment (phat-walkforward)
    base["tracking"] = {**_plain(cfg.tracking), "experiment": base["tracking"]["experiment"]}
    base["walkforward"] = {**_plain(cfg.walkforward), "for_version": int(mv.version)}
    return validate("walkforward", base)


def _plain(section: Any) -> Any:
    """A settings section as plain dicts and lists (what a composed config is made of)."""
    from collections.abc import Mapping

    if isinstance(section, Mapping):
        return {k: _plain(v) for k, v in section.items()}
    if isinstance(section, (list, tuple)):
        return [_plain(v) for v in section]
    return section


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="promote")
def _hydra_main(cfg: DictConfig) -> None:
    from phat.lifecycle.promotion import PromotionRefused

    call(run, cfg, log, exit_codes={PromotionRefused: 1}, verb="promote")


def main() -> None:
    entry("promote", _hydra_main)


if __name__ == "__main__":
    main()
