"""Durations, timeframes and timestamps from config and tags; naive timestamps mean UTC.

One grammar for every duration phat reads (bar timeframes, horizons, walk-forward windows,
`data.max_gap`, a file name's timeframe tail): `<n><unit>` with unit m (or min), h, d or w."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from phat.errors import DataValidationError

_UNITS = {"min": "min", "m": "min", "h": "h", "d": "D", "w": "W"}
DURATION = r"\d+(?:min|m|h|d|w)"  # the pattern other grammars embed (horizons, file names)
_DURATION_RE = re.compile(r"^(\d+)(min|m|h|d|w)$")


def parse_duration(
    text: Any, key: str, error: type[Exception] = DataValidationError
) -> pd.Timedelta:
    """'15m' -> 15 minutes, '1h', '1d', '4w'; anything else (or zero) is one line naming `key`."""
    m = _DURATION_RE.match(str(text).strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise error(
            f"{key}={text!r}: expected a positive duration <n>m, <n>h, <n>d or <n>w "
            "(e.g. 15m, 1h, 30d, 4w)"
        )
    return pd.Timedelta(int(m.group(1)), unit=_UNITS[m.group(2)])


def parse_timeframe(tf: Any) -> pd.Timedelta:
    """A bar timeframe: a duration ('15m' -> 15 minutes)."""
    return parse_duration(tf, "timeframe")


def format_timeframe(td: pd.Timedelta) -> str:
    minutes = int(td / pd.Timedelta(minutes=1))
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def as_utc(value: Any) -> pd.Timestamp:
    """A timestamp from config or a tag; naive means UTC (the same rule as for data)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat().replace("+00:00", "Z")
