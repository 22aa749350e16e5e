"""The model zoo's registry: one entry per kind, everything the rest of phat asks about a kind.

A kind names its class ("module:Class", imported only when a model is built or loaded, so the
config check stays light), the dataclass of its `model.params` (names and types; defaults live in
conf/model/<kind>.yaml), and its traits: which other settings it reads, whether it stops early on
a validation tail of the train span, whether its capacity comes from the purged inner CV, and
whether scoring needs torch; and what its purged inner CV searches (`search`: each setting's
key and grid, simplest first; `search_fits`: how candidates are fitted per fold). No module
outside this one compares a kind's name to a literal, nor a parameter's name to choose a search.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from phat.confdefaults import auto_or_number, out_of_bounds, schema_autos, schema_bounds, setting
from phat.errors import ConfigError


@dataclass
class LogisticParams:
    C: Any = setting(0, lo_open=True, auto=True)  # auto: purged inner CV of the train span
    lookback: int = setting(1)
    max_iter: int = setting(1)


@dataclass
class TreeParams:
    lookback: int = setting(1)
    max_iter: int = setting(1)
    learning_rate: float = setting(0, lo_open=True)
    max_leaf_nodes: Any = setting(2, auto=True, integer=True)  # auto: as the logistic's C
    min_samples_leaf: int = setting(1)
    l2_regularization: float = setting(0)


@dataclass
class TCNParams:
    channels: Any = setting(1, auto=True, integer=True)  # auto: purged inner CV of the train span
    levels: int = setting(1)
    kernel_size: int = setting(2)
    dropout: float = setting(0, 1, hi_open=True)


@dataclass(frozen=True)
class Search:
    """A setting a kind's recipe chooses on the purged inner CV of the train span when it is
    `auto`: its config key and its candidates, simplest first."""

    key: str  # "model.params.C", "trainer.weight_decay"
    grid: tuple[Any, ...]

    @property
    def name(self) -> str:
        """The setting's own name (the metric `selected_<name>`)."""
        return self.key.rsplit(".", 1)[1]


# Candidates, simplest first: the logistic's C (strongest regularisation first; 1e-4 .. 1 in
# half decades), the tree's leaves per tree, the TCN's width, then its decoupled weight decay
# (AdamW; strongest first).
C_GRID: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(-8, 1))
LEAVES_GRID: tuple[int, ...] = (3, 7, 15, 31)
WIDTH_GRID: tuple[int, ...] = (8, 16, 32)
WEIGHT_DECAY_GRID: tuple[float, ...] = (1.0, 1e-1, 1e-2, 1e-4)
# How a kind's candidates are fitted per inner fold (models.selection.purged_search ranks them
# all the same way): "path" the logistic's closed-form fits, its ladder's rungs among the
# candidates (ladder and capacity in one inner CV);
# "staged" the tree's boosting without stopping, each candidate at its best number of trees;
# "refits" a fresh fit per candidate and fold, stopping early on its own purged tail.
SEARCH_FITS = ("path", "staged", "refits")


@dataclass(frozen=True)
class Kind:
    name: str
    path: str  # "module:Class"; only these load from an artifact (no arbitrary import paths)
    params: type | None  # the schema of model.params; None: not a recipe (artifact-only)
    reads: tuple[str, ...] = ()  # other settings the fit reads (logged as run params)
    trainer: bool = False  # gets trainer.* (epochs, patience, ...), threads and tracking
    validation_tail: bool = False  # early stopping on a purged tail of the train span
    # the ladder on the same purged inner CV, the model refitted per fold as the final fit
    # (five more fits per training); a kind with neither this nor search_fits="path" is
    # judged on the calibration slice
    ladder_refits: bool = False
    stopped_param: str | None = None  # the param early stopping chooses, logged as selected_*
    torch: bool = False  # scoring imports torch (the logged model's requirements)
    search: tuple[Search, ...] = ()  # what its purged inner CV chooses when set to auto
    search_fits: str = "refits"  # how its candidates are fitted per fold (SEARCH_FITS)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "logistic",
            "phat.models.baselines:LogisticModel",
            LogisticParams,
            search=(Search("model.params.C", C_GRID),),
            search_fits="path",
        ),
        Kind(
            "tree",
            "phat.models.baselines:TreeModel",
            TreeParams,
            reads=("trainer.val_fraction",),
            validation_tail=True,
            ladder_refits=True,
            stopped_param="max_iter",
            search=(Search("model.params.max_leaf_nodes", LEAVES_GRID),),
            search_fits="staged",
        ),  # fmt: skip
        Kind(
            "tcn",
            "phat.models.tcn:TCNModel",
            TCNParams,
            reads=("trainer.",),
            trainer=True,
            validation_tail=True,
            ladder_refits=True,
            torch=True,
            search=(
                Search("model.params.channels", WIDTH_GRID),
                Search("trainer.weight_decay", WEIGHT_DECAY_GRID),
            ),
        ),  # fmt: skip
        # a universe's per-asset container (model.pooling=per_asset): its members are recipes
        Kind("per_asset", "phat.models.per_asset:PerAssetModel", None),
    )
}


def recipes() -> tuple[str, ...]:
    """The kinds a recipe fits: every entry with a params schema, as KINDS is now (a kind
    registered after import is one too: docs/extending.md)."""
    return tuple(k for k, v in KINDS.items() if v.params is not None)


def searched_settings() -> dict[str, str]:
    """Every setting a search may choose, by name: the run logs the metric `selected_<name>`
    and the param `<key>_selected` (registry/tracking.py)."""
    return {s.name: s.key for k in KINDS.values() for s in k.search}


def check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params' declared ranges; a param declared `auto=True` (chosen on the purged inner CV
    of the train span) is `auto` or a number in its range (the logistic's C > 0, the tree's
    max_leaf_nodes and the TCN's channels whole numbers)."""
    out = dict(params)
    spec = kind(name).params
    if spec is None:
        return out
    bounds = schema_bounds(spec)
    for key, integer in schema_autos(spec).items():
        try:
            out[key] = auto_or_number(f"model.params.{key}", out[key], bounds[key], integer)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    for key, b in bounds.items():
        why = out_of_bounds(f"model.params.{key}", out.get(key), b)
        if why:
            raise ConfigError(f"{why} (model={name})")
    return out


def kind(name: str) -> Kind:
    try:
        return KINDS[str(name)]
    except KeyError:
        raise ConfigError(f"model.kind={name!r}: expected one of {list(recipes())}") from None


def model_class(name: str) -> Any:
    mod, cls = kind(name).path.split(":")
    return getattr(importlib.import_module(mod), cls)


def build_model(name: str, params: dict[str, Any], seed: int) -> Any:
    cls = model_class(name)
    try:
        return cls(seed=seed, **params)
    except TypeError as e:
        raise ConfigError(f"model={name}: {e}") from None


def kinds_in(model: Any) -> set[str]:
    """The kinds a fitted model is made of (a per-asset container: its members' kinds)."""
    members = getattr(model, "members", None)
    if members:
        return set().union(*(kinds_in(m) for m in members.values()))
    return {str(model.kind)}


def needs_torch(kinds: Iterable[str]) -> bool:
    return any(kind(k).torch for k in kinds)
