"""Timeframes and timestamps from config and tags; naive timestamps mean UTC. Durations follow
the one grammar of phat/durations.py."""

from __future__ import annotations

from typing import Any

import pandas as pd

from phat.durations import DURATION, parse_duration

__all__ = ["DURATION", "as_utc", "format_timeframe", "iso", "parse_duration", "parse_timeframe"]


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
