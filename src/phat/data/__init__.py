"""Data layer: read files, validate bars, calendars and the synthetic generator."""

from phat.data.bars import Bars, find_segments, prepare_bars, resample_bars, validate_values
from phat.data.io import read_column, read_table
from phat.data.timeframes import as_utc, format_timeframe, parse_timeframe

__all__ = [
    "Bars",
    "as_utc",
    "find_segments",
    "format_timeframe",
    "parse_timeframe",
    "prepare_bars",
    "read_column",
    "read_table",
    "resample_bars",
    "validate_values",
]
