"""The one duration grammar: `<n><unit>`, unit m (or min), h, d or w, n > 0.

Bar timeframes, horizons (`4x15m`), walk-forward windows, `data.max_gap` and a file name's
timeframe tail (`BTC-5m.csv`) all read durations through this module (`DURATION` is the pattern
the others embed). It sits at the bottom of the package and imports pandas only to build a
Timedelta, so the config check (`--help`, a bad override) stays light.
"""

from __future__ import annotations

import re
from typing import Any

from phat.errors import DataValidationError

_UNITS = {"min": "min", "m": "min", "h": "h", "d": "D", "w": "W"}
DURATION = r"\d+(?:min|m|h|d|w)"
_DURATION_RE = re.compile(r"^(\d+)(min|m|h|d|w)$")


def is_duration(text: Any) -> bool:
    m = _DURATION_RE.match(str(text).strip().lower())
    return bool(m) and int(m.group(1)) > 0


def parse_duration(text: Any, key: str, error: type[Exception] = DataValidationError) -> Any:
    """'15m' -> a 15-minute pd.Timedelta, '1h', '1d', '4w'; anything else (or zero) is one line
    naming `key`."""
    m = _DURATION_RE.match(str(text).strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise error(
            f"{key}={text!r}: expected a positive duration <n>m, <n>h, <n>d or <n>w "
            "(e.g. 15m, 1h, 30d, 4w)"
        )
    import pandas as pd

    return pd.Timedelta(int(m.group(1)), unit=_UNITS[m.group(2)])
