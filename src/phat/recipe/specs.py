"""The contract specs of a resolved config (label, features, splits), checked cheaply before
any data is read or heavy module imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phat.contract.features import POLICY_MISSING, FeatureSpec
from phat.contract.labels import LabelSpec, parse_horizon
from phat.contract.splits import SplitConfig
from phat.errors import ConfigError

if TYPE_CHECKING:
    from phat.settings import RecipeConf


def horizon_spec(cfg: RecipeConf) -> tuple[str, int, str]:
    """`horizon` -> (timeframe, horizon_bars, horizon_id) by one rule (phat.contract.labels)."""
    return parse_horizon(str(cfg.horizon))


def label_spec_from_cfg(cfg: RecipeConf) -> LabelSpec:
    timeframe, horizon_bars, horizon_id = horizon_spec(cfg)
    lab = cfg.label
    return LabelSpec(
        timeframe=timeframe,
        horizon_bars=horizon_bars,
        horizon_id=horizon_id,
        kind=str(lab.kind),
        threshold_bps=float(lab.threshold_bps),
        aggregation=str(lab.aggregation),
        neutral=str(lab.neutral),
        relative_to=str(lab.relative_to),
        min_assets=int(lab.min_assets),
    )


def feature_spec_from_cfg(cfg: RecipeConf) -> FeatureSpec:
    f = cfg.features
    # The missing-data policy is part of the contract; NaN volume is read by data.volume_nan
    # (one key for every verb) and recorded here so the artifact says how it was trained.
    missing = {
        **POLICY_MISSING,
        **dict(f.missing),
        "volume_nan": str(cfg.data.volume_nan),
    }
    return FeatureSpec(
        features=tuple(
            {"fn": str(x.fn), "params": dict(x.params)} for x in f.set.values() if x is not None
        ),
        window=int(f.window),
        normalization=str(f.normalization),
        clip=float(f.clip),
        missing=missing,
    )


def split_config_from_cfg(cfg: RecipeConf) -> SplitConfig:
    s = dict(cfg.split)
    try:
        return SplitConfig(**s)
    except TypeError as e:
        raise ConfigError(f"split: {e}") from None


def validate_config(cfg: RecipeConf) -> tuple[LabelSpec, FeatureSpec, SplitConfig]:
    """Cheap checks that answer before any heavy import or data load."""
    from phat.contract.splits import resolve_boundaries
    from phat.models.calibration import METHODS
    from phat.models.kinds import recipes

    lspec = label_spec_from_cfg(cfg)
    fspec = feature_spec_from_cfg(cfg)
    scfg = split_config_from_cfg(cfg)
    resolve_boundaries(scfg, lspec.horizon_bars, fspec.bars_read)
    if cfg.model.kind not in recipes():
        raise ConfigError(f"model.kind={cfg.model.kind!r}: expected one of {list(recipes())}")
    if cfg.calibration.method not in METHODS:
        raise ConfigError(
            f"calibration={cfg.calibration.method!r}: expected one of {list(METHODS)}"
        )
    return lspec, fspec, scfg
