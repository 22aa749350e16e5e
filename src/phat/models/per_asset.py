"""A universe's per-asset models in one artifact (`model.pooling=per_asset`).

Each member is an ordinary model of the zoo (its own kind, weights and config), fitted on its
asset's windows only. The container follows the zoo's interface: `state()` stores every member's
arrays under `<symbol>/<name>` and their kinds and configs in the config, `from_state` rebuilds
them. Scoring goes through one member: `PHatModel.for_asset(symbol)` takes `members[symbol]`;
in training, `row_asset` (each row's asset number in `symbols`) lets `logits` route a mixed set
of window ends to their members.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phat.errors import ConfigError


class PerAssetModel:
    kind = "per_asset"

    def __init__(
        self,
        members: dict[str, Any],
        symbols: list[str] | None = None,
        row_asset: np.ndarray | None = None,
    ):
        self.members = dict(members)
        self.symbols = list(symbols) if symbols is not None else sorted(members)
        self.row_asset = row_asset

    def fit(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError("a per-asset model is fitted member by member (recipe.fit.fit_per_asset)")

    def logits(self, data: Any, ends: np.ndarray) -> np.ndarray:
        if self.row_asset is None:
            raise ConfigError(
                "a per-asset model scores one asset at a time: PHatModel.for_asset(symbol)"
            )
        ends = np.asarray(ends)
        which = self.row_asset[ends]
        out = np.full(len(ends), np.nan)
        for k, sym in enumerate(self.symbols):
            mine = which == k
            if mine.any() and sym in self.members:
                out[mine] = self.members[sym].logits(data, ends[mine])
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        members: dict[str, Any] = {}
        for sym in sorted(self.members):
            a, config = self.members[sym].state()
            arrays.update({f"{sym}/{name}": v for name, v in a.items()})
            members[sym] = {"kind": self.members[sym].kind, "config": config}
        return arrays, {"members": members}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> PerAssetModel:
        from phat.models.kinds import model_class

        members = {}
        for sym, m in config["members"].items():
            prefix = f"{sym}/"
            mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            members[sym] = model_class(m["kind"]).from_state(mine, m["config"])
        return cls(members)

    @property
    def n_parameters(self) -> int:
        return int(sum(m.n_parameters for m in self.members.values()))
