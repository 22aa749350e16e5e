"""Defaults live in conf/ only: code that needs a setting's default reads it from there.

`conf_defaults("data/synthetic")` is one YAML file of `phat/conf/` as a dict (without Hydra's
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
