"""Trading calendars: when bars are expected, so that scheduled closures are not gaps.

    24x7     crypto: every bar slot is in session
    fx       the FX week: closed from Friday 20:00 to Monday 00:00 UTC (the weekend close and
             the Sunday-evening reopen both fall inside it, summer and winter time alike)
    XNYS ... an exchange (any code exchange-calendars knows): sessions, holidays, early closes

A missing stretch between two bars is measured in *in-session bar slots*: a Friday-to-Monday
stretch of daily stock bars misses 0 slots (a closure), a missing Tuesday misses 1. A stretch
missing more than `data.max_gap` slots is a gap (samples whose window or label spans it are
dropped); fewer are tolerated, as before. A bar that lies inside a scheduled closure means the
data follows another calendar and is refused.

`auto` infers the calendar from the timestamps (see `infer`) and says what it chose and why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from phat.data.timeframes import format_timeframe, iso
from phat.errors import CalendarMismatch, DataValidationError

WORDS = ("auto", "24x7", "fx")
# Exchanges `auto` tries for bars without weekends (the first that matches wins ties).
AUTO_EXCHANGES = ("XNYS", "XLON", "XFRA", "XTKS", "XHKG", "XTSE", "XASX", "XSWX", "XPAR", "XAMS")
_FX_CLOSE_DAY, _FX_CLOSE_HOUR = 4, 20  # Friday 20:00 UTC
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Calendar:
    """A named calendar; `name` is what artifacts store and configs accept."""

    name: str

    # -- slots ---------------------------------------------------------------------------------
    def missing_slots(
        self, after: pd.DatetimeIndex, before: pd.DatetimeIndex, tf: pd.Timedelta
    ) -> np.ndarray:
        """In-session bar slots strictly between each bar in `after` and the next bar in
        `before` (the missing stretch [after + tf, before))."""
        start, end = after + tf, before
        if len(start) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.name == "24x7":
            return np.maximum((end - start) // tf, 0).astype(np.int64)
        if self.name == "fx":
            return np.array([_fx_open_slots(a, b, tf) for a, b in zip(start, end, strict=True)])
        return _exchange_missing(self.name, start, end, tf)

    def closed_mask(self, index: pd.DatetimeIndex, tf: pd.Timedelta) -> np.ndarray:
        """True for bars that lie inside a scheduled closure (data of another calendar)."""
        if self.name == "24x7" or len(index) == 0:
            return np.zeros(len(index), dtype=bool)
        if self.name == "fx":
            # The heart of the weekend, closed in every season: Saturday, and Sunday before 20:00.
            wd = index.day_of_week
            return np.asarray((wd == 5) | ((wd == 6) & (index.hour < 20)))
        cal = exchange(self.name, index[0], index[-1])
        if tf >= _DAY:
            days = index.tz_convert(None).normalize()
            return ~np.asarray(days.isin(cal.sessions))
        return ~_in_trading_hours(cal, index)


def resolve(name: str) -> Calendar:
    """A calendar by name; refuses what is neither a word nor an exchange code, by name."""
    if name in ("24x7", "fx"):
        return Calendar(name)
    import exchange_calendars as xc

    if name not in xc.get_calendar_names():
        raise DataValidationError(
            f"data.calendar={name!r}: expected auto, 24x7, fx or an exchange code of "
            "exchange-calendars such as XNYS, XLON, XTKS"
        )
    return Calendar(name)


@functools.lru_cache(maxsize=32)
def _exchange_cached(code: str, start: str, end: str) -> Any:
    import warnings

    import exchange_calendars as xc

    with warnings.catch_warnings():  # its pandas-3 deprecation notices are not ours to act on
        warnings.simplefilter("ignore")
        return xc.get_calendar(code, start=start, end=end)


def exchange(code: str, first: pd.Timestamp, last: pd.Timestamp) -> Any:
    """An exchange_calendars calendar covering [first, last] (with a year of margin)."""
    start = (pd.Timestamp(first).tz_convert(None) - pd.Timedelta(days=366)).strftime("%Y-01-01")
    end = (pd.Timestamp(last).tz_convert(None) + pd.Timedelta(days=366)).strftime("%Y-12-31")
    try:
        return _exchange_cached(code, start, end)
    except Exception as e:  # exchange_calendars bounds its data (e.g. no dates before 1990)
        raise DataValidationError(
            f"data.calendar={code}: exchange-calendars cannot cover {start} .. {end} ({e})"
        ) from None


def _in_trading_hours(cal: Any, index: pd.DatetimeIndex) -> np.ndarray:
    """Bars whose start lies in a session [open, close) (lunch breaks count as open)."""
    opens = cal.opens.to_numpy(dtype="datetime64[ns]")
    closes = cal.closes.to_numpy(dtype="datetime64[ns]")
    t = index.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    k = np.searchsorted(opens, t, side="right") - 1
    ok = k >= 0
    ok[ok] = t[ok] < closes[k[ok]]
    return ok


def _fx_open_slots(start: pd.Timestamp, end: pd.Timestamp, tf: pd.Timedelta) -> int:
    """Bar slots in [start, end) outside the FX weekend window [Fri 20:00, Mon 00:00)."""
    slots = pd.date_range(start, end, freq=tf, inclusive="left")
    if len(slots) > 100_000:  # a year-long hole in minute bars: certainly a gap
        return len(slots)
    wd = slots.day_of_week
    closed = ((wd == 4) & (slots.hour >= _FX_CLOSE_HOUR)) | (wd == 5) | (wd == 6)
    return int((~np.asarray(closed)).sum())


def _exchange_missing(
    code: str, start: pd.DatetimeIndex, end: pd.DatetimeIndex, tf: pd.Timedelta
) -> np.ndarray:
    cal = exchange(code, start[0], end[-1])
    if tf >= _DAY:
        # Sessions whose date lies in [start, end): bars are labelled by session date.
        sessions = cal.sessions.to_numpy(dtype="datetime64[ns]")
        lo = start.tz_convert(None).normalize().to_numpy(dtype="datetime64[ns]")
        hi = end.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        n = np.searchsorted(sessions, hi, side="left") - np.searchsorted(sessions, lo, "left")
        return np.maximum(n, 0).astype(np.int64) // max(int(tf / _DAY), 1)
    # Session minutes inside each [start, end), from the sessions' open/close times.
    opens = cal.opens.to_numpy(dtype="datetime64[ns]")
    closes = cal.closes.to_numpy(dtype="datetime64[ns]")
    s0 = start.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    e0 = end.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    first = np.maximum(np.searchsorted(closes, s0, side="right"), 0)
    last = np.searchsorted(opens, e0, side="left")
    tf_min = max(tf / pd.Timedelta(minutes=1), 1.0)
    out = np.zeros(len(s0), dtype=np.int64)
    for k in range(len(s0)):
        o, c = opens[first[k] : last[k]], closes[first[k] : last[k]]
        overlap = np.minimum(c, e0[k]) - np.maximum(o, s0[k])
        minutes = overlap[overlap > np.timedelta64(0, "ns")].sum() / np.timedelta64(1, "m")
        out[k] = int(minutes // tf_min)
    return out


# ---------------------------------------------------------------------------------------------
# auto


@dataclass(frozen=True)
class Inference:
    calendar: str | None  # None: the data cannot tell (too short)
    reason: str


def infer(index: pd.DatetimeIndex, tf: pd.Timedelta) -> Inference:
    """Which calendar the bars follow, from their timestamps alone.

    Saturday bars -> 24x7. No weekend bars: daily bars -> the exchange whose sessions best match
    the dates; intraday bars with Sunday-evening bars -> fx; intraday bars inside one exchange's
    trading minutes -> that exchange; otherwise fx. Needs a week of bars to decide."""
    if len(index) < 3 or index[-1] - index[0] < pd.Timedelta(days=7):
        return Inference(None, "less than a week of bars: the weekend pattern is not visible")
    wd = np.asarray(index.day_of_week)
    weeks = (index[-1] - index[0]) / pd.Timedelta(days=7)
    sat_share = float((wd == 5).mean())
    if sat_share > 0.05:
        return Inference("24x7", f"{sat_share:.0%} of bars fall on Saturdays")
    if tf >= _DAY:
        code, share = _best_exchange_daily(index)
        if share >= 0.9:
            return Inference(
                code,
                f"no weekend bars; {share:.1%} agreement between the bar dates and {code} sessions",
            )
        raise DataValidationError(
            f"data.calendar=auto: {format_timeframe(tf)} bars without weekends match no known "
            f"exchange well (best {code}, {share:.1%} agreement); set data.calendar to the "
            "exchange's code (e.g. data.calendar=XNYS) or data.calendar=24x7"
        )
    sunday = int((wd == 6).sum())
    if sunday:
        return Inference(
            "fx", f"no Saturday bars in {weeks:.0f} weeks and {sunday} Sunday-evening bars"
        )
    code, share = _best_exchange_intraday(index)
    if share >= 0.95:
        return Inference(code, f"no weekend bars; {share:.1%} of bars in {code} trading hours")
    return Inference("fx", f"no weekend bars in {weeks:.0f} weeks, trading around the clock")


def _best_exchange(index: pd.DatetimeIndex, share_of: Any) -> tuple[str, float]:
    """The AUTO_EXCHANGES calendar with the highest `share_of(calendar)` (first wins ties;
    a near-perfect match stops the search)."""
    best = ("XNYS", 0.0)
    for code in AUTO_EXCHANGES:
        try:
            cal = exchange(code, index[0], index[-1])
        except DataValidationError:
            continue
        share = float(share_of(cal))
        if share > best[1]:
            best = (code, share)
        if share >= 0.995:
            break
    return best


def _best_exchange_daily(index: pd.DatetimeIndex) -> tuple[str, float]:
    """Jaccard agreement between the bar dates and the sessions in their span."""
    days = index.tz_convert(None).normalize().unique()

    def agreement(cal: Any) -> float:
        sessions = cal.sessions_in_range(days[0], days[-1])
        return len(days.intersection(sessions)) / max(len(days.union(sessions)), 1)

    return _best_exchange(index, agreement)


def _best_exchange_intraday(index: pd.DatetimeIndex) -> tuple[str, float]:
    """Share of bars that start inside the exchange's trading hours."""
    return _best_exchange(index, lambda cal: _in_trading_hours(cal, index).mean())


def check_follows(
    index: pd.DatetimeIndex, tf: pd.Timedelta, cal: Calendar, why: str, remedy: str
) -> None:
    """Refuse bars that lie in `cal`'s scheduled closures (the data follows another calendar)."""
    closed = cal.closed_mask(index, tf)
    if closed.any():
        i = int(np.flatnonzero(closed)[0])
        raise CalendarMismatch(
            f"{int(closed.sum())} bars fall inside scheduled closures of calendar {cal.name} "
            f"({why}), first at row {i} ({iso(index[i])}, a {index[i].day_name()}); the data "
            f"follows another calendar: {remedy}"
        )
