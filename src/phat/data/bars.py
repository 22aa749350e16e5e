"""OHLCV bars: validating, resampling and finding gaps.

Everything downstream sees `Bars`: a frame indexed by a sorted, unique, UTC DatetimeIndex of one
timeframe, with lower-case columns `open high low close volume` and any of the optional columns
`funding_rate spread vwap`, plus a segment id per bar (a new segment starts after every gap).

Policy decisions (see docs/data.md):
- Bars are never fabricated. A missing stretch up to `max_gap` is tolerated (the bars on either
  side are treated as consecutive); a longer one is a gap, and samples whose windows or labels
  span it are dropped downstream.
- `calendar="fx"` bridges the scheduled FX weekend closure (missing stretch inside Friday 20:00 to
  Monday 00:00 UTC) instead of treating it as a gap; unscheduled holes are still gaps.
- Naive timestamps are taken as UTC. Exact duplicate rows are dropped with a warning;
  duplicates with different values are refused. Unsorted input is refused, not re-sorted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phat.confdefaults import conf_defaults
from phat.data.calendars import Calendar, check_follows, infer
from phat.data.calendars import resolve as resolve_calendar
from phat.data.io import PRICE_COLUMNS, REQUIRED, normalize_layout
from phat.data.timeframes import format_timeframe, parse_timeframe
from phat.data.timeframes import iso as _iso
from phat.errors import CalendarMismatch, DataValidationError
from phat.hashing import sha256_bytes

_DATA = conf_defaults("data/_base")  # data.* defaults for code callers: conf/data/

log = logging.getLogger(__name__)

# A universe's derived column (phat.data.universe.universe_returns): each row's universe mean
# 1-bar log return at its timestamp; the relative features read it. Derived from the members'
# closes, so no data hash covers it twice.
UNIVERSE_RETURN = "universe_return"


@dataclass
class AssetSlice:
    """One asset's rows [start, stop) in a Bars (a stacked universe's, or the whole of one
    asset's), and its own validated bars."""

    symbol: str
    start: int
    stop: int
    bars: Bars


@dataclass
class Bars:
    """Validated bars of one timeframe and the report of what validation did to them."""

    frame: pd.DataFrame
    timeframe: str
    symbol: str
    segment: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)
    calendar: str = "24x7"  # resolved: 24x7 | fx | an exchange code (never "auto")
    max_gap_bars: int = 2  # in-session bar slots a tolerated hole may miss

    def data_spec(self) -> dict[str, Any]:
        """The DataSpec an artifact stores: whoever scores with the model reads data this way."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "calendar": self.calendar,
            "max_gap_bars": int(self.max_gap_bars),
            "timestamps": "UTC; naive taken as UTC",
        }

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.frame.index  # type: ignore[return-value]

    def members(self) -> list[AssetSlice]:
        """The assets these bars hold, each with its rows [start, stop): one asset is a
        universe of one (a StackedBars holds many). Every per-asset loop walks these."""
        return [AssetSlice(self.symbol, 0, len(self), self)]

    def asset_of_rows(self) -> np.ndarray:
        """The asset number of every row (members' order)."""
        return np.zeros(len(self), dtype=np.int64)

    def timeline(self) -> tuple[np.ndarray | None, int, int]:
        """(clock, concurrent, slack) of the split rules: each row's slot on the shared
        timeline (None: the rows are the timeline), how many samples one slot holds at most,
        and the largest tolerated hole in slots (phat.contract.splits)."""
        return None, 1, 0

    def where(self, symbol: str) -> str:
        """How a refusal names one of the members ("" for one asset: the file is named)."""
        return ""

    # What differs for one asset is declared here, by the data, not tested for by its readers:
    # every scoring path walks members() with the model's view of each (PHatModel.for_asset)
    # and asks the bars how per-member outputs come together. One asset's outputs keep the
    # shape they have always had (no symbol column, the asset's own line, its own view).

    @property
    def pooled(self) -> bool:
        """Whether these bars pool assets into one model (a universe, of any size): the
        recipe's per-asset corrections and fits apply to pooled bars only."""
        return False

    def label(self, what: str, symbol: str) -> str:
        """`what` (a refusal's subject) for one member: one asset's file is already named."""
        return what

    def keys_of(self, symbol: str) -> dict[str, str]:
        """The columns besides the timestamp that name a member's output rows (a universe's
        `symbol`): none for one asset, whose outputs have always been its own."""
        return {}

    def gather(self, parts: list[pd.DataFrame]) -> pd.DataFrame:
        """Per-member outputs (members' order) as the one output, each row with its keys."""
        members = self.members()
        return pd.concat(
            [p.assign(**self.keys_of(a.symbol)) for a, p in zip(members, parts, strict=True)]
        )

    def summary(self, lines: list[str], scored: int, name: str) -> str:
        """The one coverage line of per-member `lines` (`scored` bars in all, of `name`)."""
        return lines[0]

    def view_of(self, model: Any) -> Any:
        """The model as these bars' output names it: one asset's view (a universe model's
        asset map and tag), else the model itself."""
        return model.for_asset(self.symbol)

    @property
    def time_axis(self) -> pd.DatetimeIndex:
        """The data's timeline: one asset's index (a universe's: the union of its assets')."""
        return self.index

    @property
    def row_keys(self) -> tuple[str, ...]:
        """The key columns of every output row (keys_of): a model's signature names them."""
        return tuple(self.keys_of(""))

    def across_assets(self, compute: Any) -> Any:
        """`compute(symbol of every row)`: the evidence across several pooled assets (per-asset
        tables, cross-sectional tests); None for one asset, whose evidence is the whole run's."""
        return None

    def universe_record(
        self, normalization: dict[str, Any], corrections: dict[str, Any], pooling: str
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """What a model fitted on these bars stores of its assets: (universe.json, its tags).
        One asset's model stores neither (its artifact and hash as they have always been)."""
        return None, {}

    def data_hash(self) -> str:
        """sha256 over timestamps and values: identifies the exact data a model saw."""
        parts = [self.index.asi8.tobytes()]
        for col in self.frame.columns:
            if col == UNIVERSE_RETURN:
                continue
            parts.append(col.encode())
            parts.append(np.ascontiguousarray(self.frame[col].to_numpy(np.float64)).tobytes())
        return sha256_bytes(b"".join(parts))


# ---------------------------------------------------------------------------------------------
# Validation


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_numeric(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s.dtype):
            raise DataValidationError(f"column {col!r} is boolean; expected numbers")
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() & s.notna().to_numpy()
        if bad.any():
            i = _first(bad)
            raise DataValidationError(
                f"column {col!r} has {int(bad.sum())} non-numeric values, first at row {i} "
                f"({_iso(df.index[i])}): {s.iloc[i]!r}"
            )
        out[col] = num.astype("float64")
    return pd.DataFrame(out, index=df.index)


def _drop_duplicate_timestamps(
    df: pd.DataFrame, report: dict[str, Any], source: str = ""
) -> pd.DataFrame:
    dup = df.index.duplicated(keep=False)
    if not dup.any():
        report["duplicates_dropped"] = 0
        return df
    sub = df[dup]
    # A timestamp is an exact duplicate when every row carrying it has the same values.
    for ts, grp in sub.groupby(level=0, sort=False):
        if len(grp.drop_duplicates()) > 1:
            cols = [c for c in grp.columns if grp[c].nunique(dropna=False) > 1]
            raise DataValidationError(
                f"duplicate timestamp {_iso(ts)} with conflicting values in columns {cols} "
                f"({len(grp)} rows); refusing to choose one"
            )
    keep = ~df.index.duplicated(keep="first")
    n = int((~keep).sum())
    log.warning("%sdropped %d exact duplicate rows (same timestamp, same values)", source, n)
    report["duplicates_dropped"] = n
    return df[keep]


def ohlc_violations(o: Any, h: Any, lo: Any, c: Any) -> list[tuple[Any, str]]:
    """The OHLC consistency rules (with a relative tolerance of 1e-9 for rounding), each as a
    (mask, what) pair; arrays for a frame, scalars for one bar (the streaming scorer)."""
    tol = 1e-9 * np.maximum(np.abs(h), 1.0)
    return [
        (h + tol < lo, "high < low"),
        (h + tol < np.maximum(o, c), "high < max(open, close)"),
        (lo - tol > np.minimum(o, c), "low > min(open, close)"),
    ]


def validate_values(df: pd.DataFrame, *, volume_nan: str = _DATA["volume_nan"]) -> pd.DataFrame:
    """Check column presence, numeric types, finiteness, positivity and OHLC consistency."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing required columns {missing}; expected {list(REQUIRED)} (any case), "
            f"got {list(df.columns)}"
        )
    df = _check_numeric(df)
    for col in PRICE_COLUMNS:
        v = df[col].to_numpy()
        bad = ~np.isfinite(v)
        if bad.any():
            i = _first(bad)
            raise DataValidationError(
                f"column {col!r} has {int(bad.sum())} NaN/inf values, first at row {i} "
                f"({_iso(df.index[i])}); prices are never filled"
            )
        nonpos = v <= 0
        if nonpos.any():
            i = _first(nonpos)
            raise DataValidationError(
                f"column {col!r} has {int(nonpos.sum())} non-positive values, first at row {i} "
                f"({_iso(df.index[i])}): {float(v[i])!r}"
            )
    vol = df["volume"].to_numpy()
    if np.isinf(vol).any():
        i = _first(np.isinf(vol))
        raise DataValidationError(f"column 'volume' is infinite at row {i} ({_iso(df.index[i])})")
    if np.isnan(vol).any():
        i = _first(np.isnan(vol))
        if volume_nan != "zero":
            raise DataValidationError(
                f"column 'volume' has {int(np.isnan(vol).sum())} NaN values, first at row {i} "
                f"({_iso(df.index[i])}); set data.volume_nan=zero to treat them as no trading"
            )
        df["volume"] = df["volume"].fillna(0.0)
    if (df["volume"].to_numpy() < 0).any():
        i = _first(df["volume"].to_numpy() < 0)
        raise DataValidationError(
            f"column 'volume' has negative values, first at row {i} ({_iso(df.index[i])})"
        )
    o, h, lo, c = (df[k].to_numpy() for k in PRICE_COLUMNS)
    for mask, what in ohlc_violations(o, h, lo, c):
        if mask.any():
            i = _first(mask)
            raise DataValidationError(
                f"{int(mask.sum())} bars have {what}, first at row {i} ({_iso(df.index[i])}): "
                f"open={o[i]} high={h[i]} low={lo[i]} close={c[i]}"
            )
    for col in ("funding_rate", "spread", "vwap"):
        if col in df.columns and np.isinf(df[col].to_numpy()).any():
            i = _first(np.isinf(df[col].to_numpy()))
            raise DataValidationError(
                f"column {col!r} is infinite at row {i} ({_iso(df.index[i])})"
            )
    if "spread" in df.columns and (df["spread"].to_numpy() < 0).any():
        i = _first(df["spread"].to_numpy() < 0)
        raise DataValidationError(f"column 'spread' is negative at row {i} ({_iso(df.index[i])})")
    return df


def check_sorted(df: pd.DataFrame) -> None:
    ts = df.index.asi8
    back = np.flatnonzero(np.diff(ts) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise DataValidationError(
            f"timestamps are not sorted: row {i} ({_iso(df.index[i])}) comes after row {i - 1} "
            f"({_iso(df.index[i - 1])}); sort the input by time (for text dates, check that "
            "day and month are read in the right order: data.dayfirst, data.timestamp_format)"
        )


def infer_timeframe(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The bar spacing: the most common step. Refuses steps that are not a multiple of it."""
    if len(index) < 3:
        raise DataValidationError(f"need at least 3 bars to infer the timeframe, got {len(index)}")
    index = pd.DatetimeIndex(index).as_unit("ns")
    steps = np.diff(index.asi8)
    values, counts = np.unique(steps, return_counts=True)
    base = int(values[np.argmax(counts)])
    off = steps % base != 0
    if off.any():
        i = _first(off) + 1
        raise DataValidationError(
            f"irregular or mixed timeframe: bars are mostly {format_timeframe(pd.Timedelta(base))} "
            f"apart but row {i} ({_iso(index[i])}) is {pd.Timedelta(int(steps[i - 1]))} after the "
            "previous bar, which is not a whole number of bars"
        )
    return pd.Timedelta(base)


def resample_bars(
    df: pd.DataFrame, native: pd.Timedelta, target: pd.Timedelta, min_coverage: float = 1.0
) -> tuple[pd.DataFrame, int]:
    """Aggregate finer bars into `target` bars aligned to the epoch (00:00, 00:15, ...).

    open=first, high=max, low=min, close=last, volume=sum, funding_rate=last, spread=mean,
    vwap=volume-weighted mean. Buckets holding fewer than `min_coverage` of their sub-bars are
    dropped (never completed with invented data); the count is returned.
    """
    if target % native != pd.Timedelta(0):
        raise DataValidationError(
            f"cannot resample {format_timeframe(native)} bars to {format_timeframe(target)}: "
            "the target is not a whole multiple"
        )
    per = int(target / native)
    g = df.groupby(df.index.floor(target))
    out = pd.DataFrame(
        {
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
        }
    )
    if "funding_rate" in df.columns:
        out["funding_rate"] = g["funding_rate"].last()
    if "spread" in df.columns:
        out["spread"] = g["spread"].mean()
    if "vwap" in df.columns:
        pv = (df["vwap"] * df["volume"]).groupby(df.index.floor(target)).sum()
        vol = out["volume"]
        out["vwap"] = np.where(vol > 0, pv / vol.where(vol > 0, 1.0), g["vwap"].mean())
    count = g["close"].size()
    keep = count >= int(np.ceil(min_coverage * per))
    out.index.name = "timestamp"
    return out[keep.to_numpy()], int((~keep).sum())


def find_segments(
    index: pd.DatetimeIndex,
    timeframe: pd.Timedelta,
    max_gap: pd.Timedelta,
    calendar: str | Calendar,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Segment id per bar: a new segment starts after a missing stretch of more than `max_gap`
    in-session bar slots (scheduled closures of the calendar miss no slot)."""
    cal = calendar if isinstance(calendar, Calendar) else resolve_calendar(calendar)
    index = pd.DatetimeIndex(index).as_unit("ns")
    steps = np.diff(index.asi8)
    holes = np.flatnonzero(steps > timeframe.value)
    max_slots = int(max_gap // timeframe)
    missing = cal.missing_slots(index[holes], index[holes + 1], timeframe)
    is_gap = np.zeros(len(steps), dtype=bool)
    is_gap[holes] = missing > max_slots
    segment = np.concatenate([[0], np.cumsum(is_gap)]).astype(np.int64)
    gaps = [
        {"after": _iso(index[i]), "before": _iso(index[i + 1]), "missing_bars": int(m)}
        for i, m in zip(holes, missing, strict=True)
        if m > max_slots
    ]
    return segment, {
        "gaps": len(gaps),
        "gap_list": gaps[:50],
        "small_holes_tolerated": int(((missing > 0) & (missing <= max_slots)).sum()),
        "closures_bridged": int((missing == 0).sum()),
    }


def _as_duration(value: Any, timeframe: pd.Timedelta, name: str) -> pd.Timedelta:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if value < 0:
            raise DataValidationError(f"{name}={value}: expected a number of bars >= 0")
        return timeframe * int(value)
    try:
        return parse_timeframe(str(value))
    except DataValidationError:
        raise DataValidationError(
            f"{name}={value!r}: expected a number of bars or a duration such as '1h'"
        ) from None


def prepare_bars(
    raw: pd.DataFrame,
    *,
    timeframe: str,
    symbol: str = "UNKNOWN",
    max_gap: Any = _DATA["max_gap"],
    calendar: str = "24x7",  # code callers: no calendar (config's data.calendar is auto)
    volume_nan: str = _DATA["volume_nan"],
    resample_min_coverage: float = _DATA["resample_min_coverage"],
    allow_resample: bool = True,
    model_calendar: str | None = None,
    timestamp_format: str | None = None,
    dayfirst: bool | None = None,
    now: pd.Timestamp | None = None,
    source: str = "",
    announce: bool = True,
) -> Bars:
    """Normalize, validate and (if finer and allowed) resample raw OHLCV to `timeframe`.

    `calendar`: auto | 24x7 | fx | an exchange code. `model_calendar` (scoring): the calendar
    the model was trained under; data of another calendar is refused by name. `now` (the
    caller's clock): bars stamped more than a day after it are refused. `source` (a universe
    member's file) prefixes the warnings; `announce=False` leaves the calendar `auto` chose
    unlogged (a universe says it once for all its assets)."""
    target = parse_timeframe(timeframe)
    report: dict[str, Any] = {"rows_in": len(raw)}
    df = normalize_layout(raw, timestamp_format=timestamp_format, dayfirst=dayfirst)
    if len(df) == 0:
        raise DataValidationError("the data has no rows")
    df = validate_values(df, volume_nan=volume_nan)
    where = f"{source}: " if source else ""
    df = _drop_duplicate_timestamps(df, report, where)
    check_sorted(df)
    if now is not None and df.index[-1] > now + pd.Timedelta(days=1):
        i = int(np.searchsorted(df.index.asi8, (now + pd.Timedelta(days=1)).value, side="right"))
        raise DataValidationError(
            f"{len(df) - i} bars are stamped in the future, first at row {i} "
            f"({_iso(df.index[i])}; now is {_iso(now)}): wrong epoch unit or a misread date"
        )
    df = _to_timeframe(df, timeframe, allow_resample, resample_min_coverage, report)
    cal, reason = _choose_calendar(df.index, target, calendar, model_calendar)
    if announce and reason.startswith("auto: "):
        log.info("data.calendar=auto chose %s: %s", cal.name, reason[len("auto: ") :])
    report["calendar"], report["calendar_reason"] = cal.name, reason
    remedy = (
        f"this model scores only {model_calendar} data"
        if model_calendar
        else f"set data.calendar to the data's calendar (data.calendar=auto infers it; it is {calendar} now)"
    )
    check_follows(df.index, target, cal, reason, remedy)
    gap = _as_duration(max_gap, target, "data.max_gap")
    segment, gap_report = find_segments(df.index, target, gap, cal)
    report.update(gap_report)
    report["rows_out"] = len(df)
    if gap_report["gaps"]:
        first = gap_report["gap_list"][0]
        log.warning(
            "%s%d gaps of more than %d missing in-session bars split the series under calendar %s "
            "(first: %d bars missing after %s); if these are scheduled closures set data.calendar, "
            "if they are small outages raise data.max_gap",
            where,
            gap_report["gaps"],
            int(gap // target),
            cal.name,
            first["missing_bars"],
            first["after"],
        )
    return Bars(
        frame=df,
        timeframe=timeframe,
        symbol=symbol,
        segment=segment,
        report=report,
        calendar=cal.name,
        max_gap_bars=int(gap // target),
    )


def _to_timeframe(
    df: pd.DataFrame,
    timeframe: str,
    allow_resample: bool,
    min_coverage: float,
    report: dict[str, Any],
) -> pd.DataFrame:
    """The bars at `timeframe`: as they are when native, aggregated from finer bars when
    allowed (training; incomplete buckets dropped and said), refused when coarser. Spacing
    finer than the native step would be mixed bars: infer_timeframe ensured every step is a
    multiple of it."""
    target = parse_timeframe(timeframe)
    native = infer_timeframe(df.index)
    report["native_timeframe"] = format_timeframe(native)
    if native > target:
        raise DataValidationError(
            f"data is {format_timeframe(native)} bars but timeframe {timeframe} was asked for; "
            "bars can be aggregated to a coarser timeframe, never split into a finer one"
        )
    if native < target and not allow_resample:
        raise DataValidationError(
            f"bars are {format_timeframe(native)} but this model takes {timeframe} bars; a model "
            f"scores bars of its own timeframe: give {timeframe} bars (phat resamples only when "
            "training, where incomplete buckets can be dropped)"
        )
    if native < target:
        df, dropped = resample_bars(df, native, target, min_coverage)
        report["resampled_from"] = format_timeframe(native)
        report["partial_buckets_dropped"] = dropped
        if dropped:
            log.warning(
                "resampling %s -> %s dropped %d incomplete buckets",
                format_timeframe(native),
                timeframe,
                dropped,
            )
        if len(df) < 3:
            raise DataValidationError(
                f"resampling to {timeframe} left {len(df)} complete bars; need more history"
            )
    return df


def _family(name: str) -> str:
    return name if name in ("24x7", "fx") else "exchange"


def _choose_calendar(
    index: pd.DatetimeIndex, tf: pd.Timedelta, calendar: str, model_calendar: str | None
) -> tuple[Calendar, str]:
    """The calendar to read the bars under, and why (printed, logged, stored)."""
    if model_calendar:
        if calendar not in ("auto", model_calendar):
            raise CalendarMismatch(
                f"data.calendar={calendar} but the model was trained under calendar "
                f"{model_calendar}; a model scores only data of its own calendar"
            )
        try:
            seen = infer(index, tf)
        except DataValidationError:
            seen = None
        if seen is not None and seen.calendar and _family(seen.calendar) != _family(model_calendar):
            raise CalendarMismatch(
                f"the data follows calendar {seen.calendar} ({seen.reason}) but the model was "
                f"trained under calendar {model_calendar}; a model scores only data of its own "
                "calendar"
            )
        return resolve_calendar(model_calendar), "the model's calendar"
    if calendar != "auto":
        return resolve_calendar(calendar), "set by data.calendar"
    seen = infer(index, tf)
    if seen.calendar is None:
        raise DataValidationError(
            f"data.calendar=auto cannot tell the calendar: {seen.reason}; set it "
            "(data.calendar=24x7 for crypto, data.calendar=fx, or an exchange code such as "
            "data.calendar=XNYS)"
        )
    return resolve_calendar(seen.calendar), f"auto: {seen.reason}"
