"""Reading OHLCV files and normalising their layout: which format the file is, which column is
time and how it is written, which columns are prices. Values are validated in phat.data.bars.

Formats are recognised without flags (docs/data.md shows one example of each): CSV with a
header (any of , ; tab | as delimiter, UTF-8 or UTF-16), an exchange's raw kline CSV (no header,
12 columns, open time in ms or us), a headerless 6-column CSV, Parquet, Feather (freqtrade's
candles included) and JSON (freqtrade's [[ms, o, h, l, c, v], ...] or records).

Timestamps: datetimes; epoch seconds/ms/us/ns by magnitude; text by one format for the whole
column. Text that reads both day-first and month-first with different results is refused
unless `data.dayfirst` or `data.timestamp_format` settles it: never silently swapped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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

# Binance-style raw klines: no header, 12 columns, open time in ms (us since 2025).
KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)
_PLAIN_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read an OHLCV file in any of the recognised formats (module docstring). Anything that
    cannot be read is one DataValidationError naming the file and the problem."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"data file {str(p)!r} does not exist")
    if p.is_dir():
        raise DataValidationError(f"data path {str(p)!r} is a directory; expected a file")
    suffix = p.suffix.lower()
    if suffix in (".gz", ".zip") and "".join(p.suffixes[-2:]).lower() in _ARCHIVED:
        suffix = "".join(p.suffixes[-2:]).lower()
    if suffix not in READERS:
        raise DataValidationError(
            f"data file {str(p)!r}: unsupported format {suffix!r}; expected .csv, .parquet, "
            ".feather or .json (a .zip or .gz archive holding one CSV is read as that CSV)"
        )
    if p.stat().st_size == 0:
        raise DataValidationError(f"data file {str(p)!r} is empty (0 bytes)")
    try:
        return READERS[suffix](p)
    except DataValidationError:
        raise
    except Exception as e:  # pyarrow/pandas raise many types for a corrupt file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataValidationError(
            f"data file {str(p)!r} is not a readable {suffix.lstrip('.')} file ({first[:160]})"
        ) from None


_ARCHIVED = (".csv.gz", ".txt.gz", ".csv.zip")


def _unzip_one(p: Path) -> bytes:
    """The one file a zip archive holds (folders and macOS resource forks aside)."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            members = [
                m for m in z.infolist()
                if not m.is_dir() and not m.filename.startswith("__MACOSX/")
            ]  # fmt: skip
            if len(members) != 1:
                names = [m.filename for m in members][:5]
                raise DataValidationError(
                    f"data file {str(p)!r} is a zip archive of {len(members)} files {names}; "
                    "expected exactly one CSV inside"
                )
            return z.read(members[0])
    except zipfile.BadZipFile as e:
        raise DataValidationError(
            f"data file {str(p)!r} is not a readable zip archive ({e})"
        ) from None


def _text(p: Path) -> str:
    """The file's text: UTF-8 (BOM or not) or UTF-16 with a BOM; binary content is refused.
    A .gz file is gunzipped, a .zip archive's one file read."""
    import gzip

    if p.suffix.lower() == ".gz":
        try:
            with gzip.open(p) as f:
                raw = f.read()
        except (OSError, EOFError) as e:
            raise DataValidationError(f"data file {str(p)!r} is not readable gzip ({e})") from None
    elif p.suffix.lower() == ".zip":
        raw = _unzip_one(p)
    else:
        raw = p.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if b"\x00" in raw[:4096]:
        raise DataValidationError(f"data file {str(p)!r} holds binary data (NUL bytes), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataValidationError(
            f"data file {str(p)!r} is not UTF-8 or UTF-16 text (byte {e.start}: "
            f"{raw[e.start : e.start + 4]!r})"
        ) from None


def _read_csv(p: Path) -> pd.DataFrame:
    import csv
    import io

    text = _text(p)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataValidationError(f"data file {str(p)!r} has no rows (only blank lines)")
    try:
        sep = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|").delimiter
    except csv.Error:
        sep = ","
    first = [c.strip().strip('"') for c in lines[0].split(sep)]
    if not _is_number(first[0]) and not _looks_like_time(first[0]):
        return pd.read_csv(io.StringIO(text), sep=sep)
    if len(first) == len(KLINE_COLUMNS):
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, names=list(KLINE_COLUMNS))
        return df[list(KLINE_COLUMNS[:6])]
    if len(first) == len(_PLAIN_COLUMNS):
        return pd.read_csv(io.StringIO(text), sep=sep, header=None, names=list(_PLAIN_COLUMNS))
    raise DataValidationError(
        f"data file {str(p)!r} has no header and {len(first)} columns; expected a header, an "
        f"exchange kline CSV ({len(KLINE_COLUMNS)} columns) or 6 columns {list(_PLAIN_COLUMNS)}"
    )


def _read_json(p: Path) -> pd.DataFrame:
    import json

    try:
        obj = json.loads(_text(p))
    except json.JSONDecodeError as e:
        raise DataValidationError(f"data file {str(p)!r} is not valid JSON ({e})") from None
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        if len(obj[0]) < 6:
            raise DataValidationError(
                f"data file {str(p)!r}: candle rows have {len(obj[0])} values; expected 6 "
                f"({list(_PLAIN_COLUMNS)})"
            )
        return pd.DataFrame([r[:6] for r in obj], columns=list(_PLAIN_COLUMNS))
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return pd.DataFrame.from_records(obj)
    raise DataValidationError(
        f"data file {str(p)!r}: expected a JSON list of candles [[time, open, high, low, close, "
        "volume], ...] or of records"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_time(text: str) -> bool:
    return bool(re.match(r"^\d{1,4}[-./]\d{1,2}[-./]\d{1,4}", text))


def _parse_timestamps(
    values: pd.Series | pd.Index,
    source: str,
    timestamp_format: str | None = None,
    dayfirst: bool | None = None,
) -> pd.DatetimeIndex:
    """Datetimes, text, or epoch seconds/milliseconds/microseconds/nanoseconds -> UTC."""
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
        idx = _parse_text(s.astype(object), source, timestamp_format, dayfirst)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns")


def _parse_text(
    s: pd.Series, source: str, timestamp_format: str | None, dayfirst: bool | None
) -> pd.DatetimeIndex:
    """Text timestamps with one format for the column; never a silent day/month swap.

    With `timestamp_format` (strftime) every value must match it. Otherwise the first 1,000
    values are read month-first and day-first: when both readings succeed and differ, the
    column is refused unless `dayfirst` settles it; when only one succeeds, it is used."""
    import warnings

    from pandas.tseries.api import guess_datetime_format

    def refuse_bad(parsed: pd.Series) -> pd.DatetimeIndex:
        bad = parsed.isna().to_numpy() | s.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            how = f"format {timestamp_format!r}" if timestamp_format else "ISO 8601 text"
            raise DataValidationError(
                f"{source}: row {row} value {s.iloc[row]!r} is not a timestamp in {how} "
                "(data.timestamp_format takes a strftime pattern)"
            )
        return pd.DatetimeIndex(parsed)

    def read(values: pd.Series, first_day: bool) -> pd.Series:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fmt = guess_datetime_format(sample, dayfirst=first_day) if sample else None
            if fmt:
                return pd.to_datetime(values, format=fmt, utc=True, errors="coerce")
            return pd.to_datetime(
                values, format="mixed", dayfirst=first_day, utc=True, errors="coerce"
            )

    if timestamp_format:
        return refuse_bad(pd.to_datetime(s, format=timestamp_format, utc=True, errors="coerce"))
    head = s.iloc[:1000]
    sample = next((str(v).strip() for v in head if isinstance(v, str) and v.strip()), "")
    if re.match(r"^\d{4}-\d{2}-\d{2}", sample):  # ISO 8601: year-month-day, one reading
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iso = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
        if not (iso.isna() & s.notna()).any():
            return refuse_bad(iso)
    month_first, day_first = read(head, False), read(head, True)
    ok_m = not (month_first.isna() & head.notna()).any()
    ok_d = not (day_first.isna() & head.notna()).any()
    if dayfirst is None and ok_m and ok_d and not month_first.equals(day_first):
        i = int(np.flatnonzero((month_first != day_first).to_numpy())[0])
        raise DataValidationError(
            f"{source}: text dates read two ways: row {i} {head.iloc[i]!r} is "
            f"{month_first.iloc[i]:%Y-%m-%d} month-first or {day_first.iloc[i]:%Y-%m-%d} "
            "day-first; set data.dayfirst=true or data.dayfirst=false (or "
            "data.timestamp_format)"
        )
    first_day = bool(dayfirst) if dayfirst is not None else (ok_d and not ok_m)
    return refuse_bad(read(s, first_day))


def column_key(name: Any) -> str:
    """A column's canonical name: lower case, spaces and dashes as underscores, aliases
    (vol -> volume, funding -> funding_rate) resolved."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return _ALIASES.get(key, key)


def normalize_layout(
    df: pd.DataFrame, *, timestamp_format: str | None = None, dayfirst: bool | None = None
) -> pd.DataFrame:
    """Find the timestamp (index, named column or first column) and lower-case the columns.

    Returns a frame indexed by a UTC DatetimeIndex named `timestamp`, in the input's row order.
    """
    df = df.copy()
    if isinstance(df.index, pd.DatetimeIndex):
        idx = _parse_timestamps(df.index, "index", timestamp_format, dayfirst)
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
        idx = _parse_timestamps(df[ts_col], f"column {str(ts_col)!r}", timestamp_format, dayfirst)
        df = df.drop(columns=[ts_col]).reset_index(drop=True)
    renamed = {c: column_key(c) for c in df.columns}
    df = df.rename(columns=renamed)
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise DataValidationError(f"columns {dupes} appear more than once after lower-casing")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:  # name what the file has, before unknown columns are dropped
        raise DataValidationError(
            f"missing required columns {missing}; expected {list(REQUIRED)} (any case) beside "
            f"the timestamp, got columns {[str(c) for c in df.columns]}"
        )
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


# A file's reader by its suffix (lower case; archives by their two suffixes): the one table a
# new format is added to (docs/extending.md). A universe's folder lists the files it can read
# from it (phat.data.universe.data_suffixes).
READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".csv.gz": _read_csv,
    ".txt.gz": _read_csv,
    ".gz": _read_csv,  # one gzipped CSV
    ".zip": _read_csv,  # one CSV in a zip archive (exchanges' monthly klines)
    ".csv.zip": _read_csv,
    ".txt": _read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".feather": pd.read_feather,
    ".arrow": pd.read_feather,
    ".json": _read_json,
}
