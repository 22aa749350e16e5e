"""Reading OHLCV files and normalising their layout: which column is time, how it is written,
which columns are prices. Validation of the values lives in phat.data.bars."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phat.errors import DataValidationError

REQUIRED = ("open", "high", "low", "close", "volume")
OPTIONAL = ("funding_rate", "spread", "vwap")
PRICE_COLUMNS = ("open", "high", "low", "close")
_TIMESTAMP_NAMES = ("timestamp", "time", "date", "datetime", "open_time", "ts", "date_time")
_ALIASES = {"vol": "volume", "funding": "funding_rate", "fundingrate": "funding_rate"}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV, Parquet or Feather by suffix; anything else is refused by name."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"data file {str(p)!r} does not exist")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    if suffix in (".csv", ".csv.gz", ".txt"):
        return pd.read_csv(p)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix in (".feather", ".arrow"):
        return pd.read_feather(p)
    raise DataValidationError(
        f"data file {str(p)!r}: unsupported format {suffix!r}; expected .csv, .parquet or .feather"
    )


def _parse_timestamps(values: pd.Series | pd.Index, source: str) -> pd.DatetimeIndex:
    """ISO strings, datetimes or epoch seconds/milliseconds/microseconds/nanoseconds -> UTC."""
    s = pd.Series(values)
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        idx = pd.DatetimeIndex(s)
    elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        num = s.astype("float64")
        if num.isna().any():
            row = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise DataValidationError(f"{source}: missing timestamp at row {row}")
        mag = float(np.nanmedian(np.abs(num.to_numpy()))) if len(num) else 0.0
        # Epoch magnitude for dates in 1973..2286: s ~1e9, ms ~1e12, us ~1e15, ns ~1e18.
        unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
        idx = pd.DatetimeIndex(pd.to_datetime(num.to_numpy(), unit=unit, utc=True))
    else:
        parsed = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
        bad = parsed.isna() & s.notna()
        if bad.any() or s.isna().any():
            row = int(np.flatnonzero((bad | s.isna()).to_numpy())[0])
            raise DataValidationError(
                f"{source}: row {row} value {s.iloc[row]!r} is not a timestamp "
                "(expected ISO 8601 text or epoch seconds/milliseconds)"
            )
        idx = pd.DatetimeIndex(parsed)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns")


def normalize_layout(df: pd.DataFrame) -> pd.DataFrame:
    """Find the timestamp (index, named column or first column) and lower-case the columns.

    Returns a frame indexed by a UTC DatetimeIndex named `timestamp`, in the input's row order.
    """
    df = df.copy()
    if isinstance(df.index, pd.DatetimeIndex):
        idx = _parse_timestamps(df.index, "index")
        df = df.reset_index(drop=True)
    else:
        lower = {str(c).strip().lower(): c for c in df.columns}
        ts_col = next((lower[n] for n in _TIMESTAMP_NAMES if n in lower), None)
        if ts_col is None and len(df.columns):
            first = df.columns[0]
            # The first column is the timestamp when it is not itself an OHLCV column.
            if str(first).strip().lower() not in REQUIRED + OPTIONAL:
                ts_col = first
        if ts_col is None:
            raise DataValidationError(
                "no timestamp found: expected a DatetimeIndex, a column named one of "
                f"{list(_TIMESTAMP_NAMES)}, or timestamps in the first column; got columns "
                f"{[str(c) for c in df.columns]}"
            )
        idx = _parse_timestamps(df[ts_col], f"column {str(ts_col)!r}")
        df = df.drop(columns=[ts_col]).reset_index(drop=True)
    renamed: dict[Any, str] = {}
    for c in df.columns:
        key = re.sub(r"[\s\-]+", "_", str(c).strip().lower())
        renamed[c] = _ALIASES.get(key, key)
    df = df.rename(columns=renamed)
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise DataValidationError(f"columns {dupes} appear more than once after lower-casing")
    keep = [c for c in REQUIRED + OPTIONAL if c in df.columns]
    df = df[keep]
    df.index = idx.rename("timestamp")
    return df


def read_column(raw: pd.DataFrame, name: str) -> pd.Series:
    """One extra column (e.g. `trigger_state`) of a raw table, indexed by UTC timestamp, for
    callers that need more than the OHLCV contract. Case-insensitive; refuses a missing column."""
    df = raw.copy()
    lower = {str(c).strip().lower(): c for c in df.columns}
    if name not in lower:
        raise DataValidationError(f"column {name!r} not found; got {[str(c) for c in raw.columns]}")
    values = df[lower[name]].to_numpy()
    if isinstance(df.index, pd.DatetimeIndex):
        idx = _parse_timestamps(df.index, "index")
    else:
        ts_col = next((lower[n] for n in _TIMESTAMP_NAMES if n in lower), df.columns[0])
        idx = _parse_timestamps(df[ts_col], f"column {str(ts_col)!r}")
    out = pd.Series(values, index=idx, name=name)
    return out[~out.index.duplicated(keep="first")]
