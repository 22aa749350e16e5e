"""Defaults live in conf/ only: code that needs a setting's default reads it from there.

`conf_defaults("data/_base")` is one YAML file of `phat/conf/` as a dict (without Hydra's
`defaults:` list). `from_conf("policy/reference", "params")` is a class decorator that gives a
dataclass's fields their defaults from that file (put it under `@dataclass`), so a class such as
`SyntheticConfig` or `ReferencePolicy` keeps its names and types in code and its default values
in the file the user reads and overrides; a field the file lacks fails at import.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parent / "conf"


@functools.cache
def _read(path: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((CONF / f"{path}.yaml").read_text()) or {}
    data.pop("defaults", None)
    return data


def conf_defaults(path: str, key: str | None = None) -> dict[str, Any]:
    """A copy of conf/<path>.yaml (its `key` section when given)."""
    data = _read(path)
    return dict(data[key] if key else data)


def from_conf(path: str, key: str | None = None, fields: tuple[str, ...] | None = None) -> Any:
    """`fields`: only these (the others keep what the class says, e.g. a contract's fitted
    parameters); default: every annotated field."""

    def fill(cls: type) -> type:
        values = conf_defaults(path, key)
        for name in fields or cls.__dict__.get("__annotations__", {}):
            if name not in values:
                raise KeyError(f"{cls.__name__}.{name}: no default in conf/{path}.yaml")
            setattr(cls, name, values[name])
        return cls

    return fill


# ---------------------------------------------------------------------------------------------
# Ranges next to types: a schema field declares what values its setting takes.

BOUNDS = "phat_bounds"  # dataclass field metadata key
# OmegaConf's marker of a mandatory value (omegaconf.MISSING is this string), spelled here so
# that the schemas' modules import without omegaconf: a logged model's scoring environment
# imports models/kinds.py and has no config library.
MISSING = "???"
ANY = "any real number"
AUTO = "phat_auto"  # dataclass field metadata key: `auto` is a value (its number an integer?)
CHOICES = "phat_choices"  # dataclass field metadata key: the values a word setting may take


def setting(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    free: bool = False,
    auto: bool = False,
    integer: bool = False,
) -> Any:
    """A schema field with no default (conf/ holds it) and its range: `lo`..`hi`, each end
    closed unless `lo_open`/`hi_open`; `free=True` says a number may take any value (a numeric
    setting without one or the other is an error in the schema, caught by a test).
    `auto=True`: the word `auto` is a value too (chosen on the purged inner CV of the train
    span; the field's type is then Any), and `integer=True` says a number given must be whole."""
    from dataclasses import field

    bounds = ANY if free else (lo, lo_open, hi, hi_open)
    meta: dict[str, Any] = {BOUNDS: bounds}
    if auto:
        meta[AUTO] = bool(integer)
    return field(default=MISSING, metadata=meta)


def choice(values: tuple[str, ...]) -> Any:
    """A schema field with no default (conf/ holds it) that takes one of `values` (declared
    once, beside the type: the config check, --help and the code that reads the setting all
    ask the schema's tuple)."""
    from dataclasses import field

    return field(default=MISSING, metadata={CHOICES: tuple(values)})


def schema_choices(schema: type, prefix: str = "") -> dict[str, tuple[str, ...]]:
    """`dotted.key -> allowed values` for every field of a schema dataclass declared by choice."""
    return _field_metadata(schema, CHOICES, prefix)


def schema_bounds(schema: type, prefix: str = "") -> dict[str, Any]:
    """`dotted.key -> bounds` for every field of a schema dataclass that declares them."""
    return _field_metadata(schema, BOUNDS, prefix)


def schema_autos(schema: type, prefix: str = "") -> dict[str, bool]:
    """`dotted.key -> integer?` for every field of a schema dataclass that may be `auto`."""
    return _field_metadata(schema, AUTO, prefix)


def _field_metadata(schema: type, key: str, prefix: str) -> dict[str, Any]:
    """`dotted.key -> metadata[key]` over a schema's fields and its nested schemas' fields."""
    from dataclasses import MISSING as NO_FACTORY
    from dataclasses import fields, is_dataclass

    out: dict[str, Any] = {}
    for f in fields(schema):
        if key in f.metadata:
            out[prefix + f.name] = f.metadata[key]
        elif f.default_factory is not NO_FACTORY:
            inner = f.default_factory()
            if is_dataclass(inner):
                out.update(_field_metadata(type(inner), key, f"{prefix}{f.name}."))
    return out


def auto_or_number(key: str, value: Any, bounds: Any, integer: bool) -> Any:
    """`auto`, or `value` as a number in `bounds` (an int when `integer`); anything else raises
    ValueError with the one-line refusal (`key=value: expected auto or ...`)."""
    if value == "auto":
        return value
    lo, lo_open, hi, hi_open = bounds
    want = f"an integer >= {lo:g}" if integer else f"a number {'>' if lo_open else '>='} {lo:g}"
    try:
        x = float(value)
        ok = not isinstance(value, bool) and out_of_bounds(key, x, bounds) is None
        ok = ok and (not integer or x == int(x))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{key}={value!r}: expected auto or {want}")
    return int(x) if integer else x


def out_of_bounds(key: str, value: Any, bounds: Any) -> str | None:
    """The one-line refusal of `value` for `key`, or None when it is in range."""
    if bounds == ANY or isinstance(value, bool) or not isinstance(value, int | float):
        return None  # None, or text such as a duration: its own grammar checks it
    lo, lo_open, hi, hi_open = bounds
    if lo is not None and (value <= lo if lo_open else value < lo):
        return f"{key}={value!r}: expected {'>' if lo_open else '>='} {lo}"
    if hi is not None and (value >= hi if hi_open else value > hi):
        return f"{key}={value!r}: expected {'<' if hi_open else '<='} {hi}"
    return None
