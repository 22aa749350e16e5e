"""Time-ordered train | calibration | test splits with purge and embargo at each boundary.

A sample at bar t reads bars t - bars_read + 1 .. t + horizon_bars (its features' window and
warm-up, then its label). Two samples in different spans must read disjoint bars, so at a
boundary bar B (the first bar of the later span):

- purge   = horizon_bars       : earlier-span samples need t <= B - 1 - horizon_bars, so no
                                 label of theirs reads bar B or later;
- embargo = bars_read - 1      : later-span samples need t >= B + bars_read - 1, so no window
                                 of theirs reads bar B - 1 or earlier.

Both are derived from the LabelSpec and FeatureSpec; a config may ask for more, never less.
Spans are never shuffled. The same rule carves the TCN's validation tail out of the train span.

A universe (many assets stacked one after another) passes `clock`: each row's slot on the
universe's timeline. Boundaries are then timestamps shared by every asset, purge and embargo are
counted in slots (plus `slack`, the largest hole an asset may hold inside a segment, so a window
or label stretched over a tolerated hole still stays on its side), and spans come back in time
order (by slot, then row). Without `clock` a row's slot is its position: one asset, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from phat.confdefaults import from_conf
from phat.data import as_utc
from phat.errors import ConfigError, DataValidationError

SPANS = ("train", "calibration", "test")


@dataclass(frozen=True)
@from_conf("split/fractions")  # the defaults: conf/split/fractions.yaml
class SplitConfig:
    method: str  # "fractions" | "dates"
    train: float
    calibration: float
    test: float
    calibration_start: str | None  # for method="dates"
    test_start: str | None
    test_end: str | None
    purge_bars: int | None  # None: derived minimum
    embargo_bars: int | None
    min_samples: int


@dataclass(frozen=True)
class Boundaries:
    purge: int
    embargo: int


def required_boundaries(horizon_bars: int, bars_read: int) -> Boundaries:
    return Boundaries(purge=horizon_bars, embargo=bars_read - 1)


def resolve_boundaries(cfg: SplitConfig, horizon_bars: int, bars_read: int) -> Boundaries:
    """The purge/embargo to use: the derived minimum, or a larger configured value."""
    need = required_boundaries(horizon_bars, bars_read)
    purge = need.purge if cfg.purge_bars is None else int(cfg.purge_bars)
    embargo = need.embargo if cfg.embargo_bars is None else int(cfg.embargo_bars)
    if purge < need.purge:
        raise ConfigError(
            f"split.purge_bars={purge} is less than the label horizon needs "
            f"({need.purge} = horizon_bars); leave it unset to use the minimum"
        )
    if embargo < need.embargo:
        raise ConfigError(
            f"split.embargo_bars={embargo} is less than the feature window needs "
            f"({need.embargo} = window + feature warm-up - 1); leave it unset to use the minimum"
        )
    return Boundaries(purge=purge, embargo=embargo)


def _boundary_bars(
    cfg: SplitConfig, index: pd.DatetimeIndex, usable: np.ndarray, clock: np.ndarray | None = None
) -> tuple[int, int, int]:
    """Bar positions (calibration start, test start, end exclusive); with `clock`, slots of the
    timeline `index` (then the universe's sorted timestamps)."""
    pos = np.flatnonzero(usable)
    if len(pos) == 0:
        raise DataValidationError("no usable samples: every bar lacks a full window or a label")
    slots = pos if clock is None else clock[pos]
    first, last = int(slots.min()), int(slots.max())
    if cfg.method == "fractions":
        fr = np.array([cfg.train, cfg.calibration, cfg.test], dtype=float)
        if (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-9:
            raise ConfigError(
                f"split fractions train={cfg.train}, calibration={cfg.calibration}, "
                f"test={cfg.test}: expected positive numbers summing to 1"
            )
        span = last + 1 - first
        b1 = first + int(round(span * fr[0]))
        b2 = first + int(round(span * (fr[0] + fr[1])))
        return b1, b2, last + 1
    if cfg.method == "dates":
        if not cfg.calibration_start or not cfg.test_start:
            raise ConfigError(
                "split.method=dates needs split.calibration_start and split.test_start"
            )
        try:
            cs = as_utc(cfg.calibration_start)
            ts = as_utc(cfg.test_start)
            te = as_utc(cfg.test_end) if cfg.test_end else None
        except ValueError as e:
            raise ConfigError(f"split dates: {e}") from None
        if not cs < ts:
            raise ConfigError(
                f"split.calibration_start {cs.isoformat()} must be before split.test_start {ts.isoformat()}"
            )
        b1 = int(index.searchsorted(cs))
        b2 = int(index.searchsorted(ts))
        end = int(index.searchsorted(te)) if te is not None else len(index)
        return b1, b2, end
    raise ConfigError(f"split.method={cfg.method!r}: expected 'fractions' or 'dates'")


def make_splits(
    index: pd.DatetimeIndex,
    usable: np.ndarray,
    y: np.ndarray,
    cfg: SplitConfig,
    horizon_bars: int,
    bars_read: int,
    clock: np.ndarray | None = None,
    grid: pd.DatetimeIndex | None = None,
    slack: int = 0,
) -> dict[str, np.ndarray]:
    """Sample bar positions per span, in time order, with purge and embargo applied. A
    universe passes `clock` (each row's slot on `grid`, its timeline) and `slack` (module
    docstring)."""
    b = resolve_boundaries(cfg, horizon_bars, bars_read)
    pos = np.flatnonzero(usable)
    if clock is None:
        b1, b2, end = _boundary_bars(cfg, index, usable)
        t, purge, embargo = pos, b.purge, b.embargo
    else:
        b1, b2, end = _boundary_bars(cfg, grid, usable, clock)
        pos = pos[np.lexsort((pos, clock[pos]))]  # time order: by slot, then row
        t, purge, embargo = clock[pos], b.purge + slack, b.embargo + slack
    spans = {
        "train": pos[t <= b1 - 1 - purge],
        "calibration": pos[(t >= b1 + embargo) & (t <= b2 - 1 - purge)],
        "test": pos[(t >= b2 + embargo) & (t < end)],
    }
    for name, p in spans.items():
        n_pos = int(np.nansum(y[p])) if len(p) else 0
        if len(p) < cfg.min_samples or n_pos == 0 or n_pos == len(p):
            raise DataValidationError(
                f"too little history: the {name} span has {len(p)} samples ({n_pos} up) but "
                f"needs at least split.min_samples={cfg.min_samples} with both outcomes; "
                f"{len(index)} bars give {len(pos)} usable samples after a {bars_read}-bar "
                f"window and warm-up, a {horizon_bars}-bar horizon, and purge {b.purge} + "
                f"embargo {b.embargo} bars at each of the 2 boundaries"
            )
    return spans


def carve_tail(
    train: np.ndarray,
    fraction: float,
    horizon_bars: int,
    bars_read: int,
    clock: np.ndarray | None = None,
    slack: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the train span into (fit, validation tail) with the same purge/embargo rule (on
    the universe's `clock`, when given, as make_splits)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"validation fraction {fraction}: expected 0 < fraction < 1")
    b = required_boundaries(horizon_bars, bars_read)
    t = train if clock is None else clock[train]
    cut = int(t[int(len(train) * (1 - fraction))])
    fit = train[t <= cut - 1 - b.purge - slack]
    val = train[t >= cut + b.embargo + slack]
    if len(fit) == 0 or len(val) == 0:
        raise DataValidationError(
            f"train span of {len(train)} samples is too short to carve a validation tail of "
            f"{fraction:.0%} with purge {b.purge} and embargo {b.embargo}"
        )
    return fit, val


def span_window(index: pd.DatetimeIndex, spans: dict[str, np.ndarray]) -> dict[str, Any]:
    """First/last sample timestamps per span, ISO 8601 UTC (the `phat.training_window` tag)."""
    return {
        k: [
            index[int(v[0])].isoformat().replace("+00:00", "Z"),
            index[int(v[-1])].isoformat().replace("+00:00", "Z"),
        ]
        for k, v in spans.items()
        if len(v)
    }
