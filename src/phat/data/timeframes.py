"""Timeframes and timestamps from config and tags: '15m' <-> Timedelta, naive means UTC."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from phat.errors import DataValidationError

_TF_RE = re.compile(r"^(\d+)(m|min|h|d)$")


def parse_timeframe(tf: str) -> pd.Timedelta:
    """'15m' -> 15 minutes, '1h' -> 1 hour, '1d' -> 1 day."""
    m = _TF_RE.match(str(tf).strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise DataValidationError(
            f"timeframe {tf!r} is not of the form <n>m, <n>h or <n>d (e.g. '15m')"
        )
    unit = {"m": "min", "min": "min", "h": "h", "d": "D"}[m.group(2)]
    return pd.Timedelta(int(m.group(1)), unit=unit)


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
