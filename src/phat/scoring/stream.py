"""Streaming scorer: one new bar at a time, per asset, equal to batch scoring bit for bit.

    scorer = phat.load("models:/phat-btcusdt-15m@production").stream()
    p = scorer.update({"timestamp": "2025-03-01T10:15:00Z", "open": ..., "volume": ...})
    ps = scorer.update_many({"BTCUSDT": bar_a, "ETHUSDT": bar_b})   # one forward for all
    saved = scorer.state()                     # JSON-able; model.stream(state=saved) resumes

Per asset the scorer keeps the last `lookback + 1` bars of the columns the features read and
the last `window` normalized feature rows. A new bar is validated alone; its feature row comes
from `FeatureSpec.raw_at_last_bar`: every feature's own batch function run on its lookback + 1
buffered bars of all assets at once, keeping the last value. There is no streaming copy of a
feature (a running sum would be O(1) but differ from batch in the last bits, which flips float32
TCN inputs); a feature that is registered at all streams, bit for bit. The row is pushed into
the window, and the window is scored. NaN while warming up: until `bars_read` bars of one
segment exist, exactly as batch scoring.

Refusals (StreamRefused, with `.code`): `out_of_order`, `duplicate` (a bar at or before the last
accepted one), `misaligned` (not a whole number of bars after the last), `calendar` (inside the
model calendar's scheduled closure), `future` (more than a day past the clock), `universe` (a
model with relative features given anything but one timestamp's bars of at least two assets
together), `bad_value`
(missing column, non-finite or non-positive price, OHLC inconsistency, negative or missing
volume, an optional column missing beyond the forward-fill limit), `timestamp` (unreadable or
ambiguous). A refused bar changes nothing. A stretch missing more than the model's max_gap
in-session slots starts a new segment (warm-up again), as batch scoring does.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.confdefaults import conf_defaults
from phat.data.bars import UNIVERSE_RETURN, ohlc_violations
from phat.data.timeframes import as_utc
from phat.data.universe import last_return, universe_returns
from phat.errors import DataValidationError
from phat.models.baselines import WindowData

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SYMBOL = "default"
OPTIONAL = ("funding_rate", "spread", "vwap")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DAY_NS = 86_400 * 10**9
# What state() writes; a state of another format is refused by name (format 1, before
# 2026-12-01, buffered derived series instead of the bars' columns).
STATE_FORMAT = 2


class StreamRefused(DataValidationError):
    """A bar the stream will not take; `.code` names the reason, `.symbol` the asset."""

    def __init__(self, code: str, message: str, symbol: str = DEFAULT_SYMBOL):
        self.code, self.symbol, self.detail = code, symbol, message
        self.refusals: dict[str, StreamRefused] = {}
        where = "" if symbol == DEFAULT_SYMBOL else f"{symbol}: "
        super().__init__(f"{where}{code}: {message}")


class _Panel:
    """Per-asset state as rows of arrays, so one bar-step of many assets is a few numpy calls.

    Columns are stored shifted left (newest bar last, NaN before the first), so the last n
    bars of any asset are one contiguous row slice, as batch scoring's series are."""

    def __init__(self, columns: list[str], length: int, window: int, n_features: int):
        self.length, self.window, self.n_features = length, window, n_features
        self.index: dict[str, int] = {}
        self.series = {k: np.full((0, length), np.nan) for k in columns}
        self.rows = np.full((0, window, n_features), np.nan, dtype=np.float32)
        self.count = np.zeros(0, dtype=np.int64)  # bars taken
        self.seg_len = np.zeros(0, dtype=np.int64)  # bars in the current segment
        self.finite_run = np.zeros(0, dtype=np.int64)  # consecutive all-finite feature rows
        self.last_ns = np.zeros(0, dtype=np.int64)
        self.optional: dict[str, dict[str, list[float]]] = {}  # symbol -> column -> [value, run]

    def slot(self, sym: str) -> int:
        i = self.index.get(sym)
        if i is not None:
            return i
        i = self.index[sym] = len(self.index)
        if i == len(self.count):  # grow: double the rows
            extra = max(8, len(self.count))
            for k, v in self.series.items():
                self.series[k] = np.concatenate([v, np.full((extra, self.length), np.nan)])
            self.rows = np.concatenate(
                [self.rows, np.full((extra, *self.rows.shape[1:]), np.nan, dtype=np.float32)]
            )
            for name in ("count", "seg_len", "finite_run", "last_ns"):
                arr = getattr(self, name)
                setattr(self, name, np.concatenate([arr, np.zeros(extra, dtype=np.int64)]))
        return i

    def to_dict(self, sym: str) -> dict[str, Any]:
        i = self.index[sym]
        n = int(self.count[i])
        return {
            "count": n,
            "seg_len": int(self.seg_len[i]),
            "finite_run": int(self.finite_run[i]),
            "last_ns": int(self.last_ns[i]),
            "series": {
                k: v[i, self.length - min(n, self.length) :].tolist()
                for k, v in self.series.items()
            },  # fmt: skip
            "rows": self.rows[i, self.window - min(n, self.window) :].tolist(),
            "optional": self.optional.get(sym, {}),
        }

    def load(self, sym: str, d: dict[str, Any]) -> None:
        i = self.slot(sym)
        self.count[i], self.seg_len[i] = d["count"], d["seg_len"]
        self.finite_run[i], self.last_ns[i] = d["finite_run"], d["last_ns"]
        for k, v in self.series.items():
            vals = np.asarray(d["series"][k], dtype=np.float64)
            v[i] = np.nan  # a slot reused by load starts empty
            if len(vals):
                v[i, self.length - len(vals) :] = vals
        rows = np.asarray(d["rows"], dtype=np.float32)
        if len(rows):
            self.rows[i, self.window - len(rows) :] = rows
        self.optional[sym] = {k: list(v) for k, v in d["optional"].items()}


def _rows(idx: np.ndarray) -> slice | np.ndarray:
    """Rows `idx` as a slice when they are consecutive (one asset, or every asset of a
    universe in order: views and block copies instead of fancy-indexed gathers)."""
    if (
        len(idx)
        and idx[-1] - idx[0] == len(idx) - 1
        and (len(idx) < 3 or (np.diff(idx) == 1).all())
    ):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _push(panel: np.ndarray, idx: slice | np.ndarray, values: np.ndarray) -> None:
    panel[idx, :-1] = panel[idx, 1:]
    panel[idx, -1] = values


class StreamScorer:
    """See the module docstring. Build with `PHatModel.stream()`."""

    def __init__(
        self,
        model: Any,  # a PHatModel (phat.scoring.model), which builds this scorer
        state: dict[str, Any] | None = None,
        volume_nan: str | None = None,  # None: data.volume_nan's default (conf/data/)
        now: Any = None,
    ):
        from phat.data.calendars import resolve
        from phat.data.timeframes import parse_timeframe

        self.model = model
        spec = model.feature_spec
        if not spec.fitted:
            raise DataValidationError("the model's feature normalization is not fitted")
        self.spec = spec
        self.tf_ns = int(parse_timeframe(model.label_spec.timeframe).value)
        self.tf = pd.Timedelta(self.tf_ns, unit="ns")
        self.cal = resolve(model.calendar)
        self.max_gap = int(model.data_spec["max_gap_bars"])
        self.volume_nan = volume_nan or conf_defaults("data/_base")["volume_nan"]
        self.now = now
        self.cap = max(spec.lookback + 1, 2)
        self.need = spec.bars_read
        # what a bar brings; a universe's mean return (relative features) is computed here, from
        # one timestamp's bars of every asset together (update_many), as batch reading does
        self.relative = UNIVERSE_RETURN in spec.required_columns
        self.columns = [c for c in spec.required_columns if c != UNIVERSE_RETURN]
        self.limit = int(spec.missing.get("optional_ffill_bars", 0))
        self.panel = _Panel(spec.required_columns, self.cap, spec.window, spec.n_features)
        if state is not None:
            self._restore(state)

    # -- public -----------------------------------------------------------------------------
    def update(self, bar: Mapping[str, Any] | pd.Series, symbol: str = DEFAULT_SYMBOL) -> float:
        """Take one bar of one asset; returns its p_hat (NaN while warming up)."""
        return self.update_many({symbol: bar})[symbol]

    def update_many(self, bars: Mapping[str, Mapping[str, Any] | pd.Series]) -> dict[str, float]:
        """One new bar per asset, scored together in one forward. All or nothing: if any bar
        is refused, StreamRefused names every refusal (`.refusals`) and no asset changes."""
        checked: dict[str, tuple] = {}
        refusals: dict[str, StreamRefused] = {}
        for sym, bar in bars.items():
            try:
                checked[sym] = self._check(sym, bar)
            except StreamRefused as e:
                refusals[sym] = e
        if refusals:
            first = next(iter(refusals.values()))
            more = [s for s in refusals if s != first.symbol]
            err = StreamRefused(
                first.code,
                first.detail + (f" (also refused: {', '.join(more[:5])}"
                                f"{' ...' if len(more) > 5 else ''})" if more else ""),
                first.symbol,
            )  # fmt: skip
            err.refusals = refusals
            raise err
        out = {sym: float("nan") for sym in checked}
        if not checked:
            return out
        if self.relative:
            self._one_timestamp(checked)
        syms = list(checked)
        ready = self._apply(syms, [checked[s] for s in syms])
        if ready.any():
            scored = [s for s, r in zip(syms, ready, strict=True) if r]
            out.update(zip(scored, self._score(scored).tolist(), strict=True))
        return out

    def _one_timestamp(self, checked: dict[str, tuple]) -> None:
        """A model with relative features reads the universe at each timestamp: it takes the
        bars of one timestamp, of at least two assets, together (all assets present then:
        batch reading compares with exactly those); anything else is refused by name."""
        stamps = {p[0] for p in checked.values()}
        if len(stamps) > 1 or len(checked) < 2:
            sym = next(iter(checked))
            what = (f"bars of {len(stamps)} timestamps" if len(stamps) > 1
                    else f"one asset's bar ({sym}) alone")  # fmt: skip
            err = StreamRefused(
                "universe",
                f"{what}: the model's features are relative to its universe, read from every "
                "asset's bar at one timestamp; give update_many the bars of all assets present "
                "at that timestamp (at least 2)",
                sym,
            )
            err.refusals = dict.fromkeys(checked, err)  # the step as a whole: every bar of it
            raise err

    def state(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-able); `model.stream(state=...)` restores it."""
        return {
            "format": STATE_FORMAT,
            "model_hash": self.model.model_hash,
            "feature_version": self.spec.feature_version,
            "assets": {sym: self.panel.to_dict(sym) for sym in self.panel.index},
        }

    # -- validation: nothing is changed here ------------------------------------------------
    def _check(self, sym: str, bar: Any) -> tuple:
        try:
            self.model.for_asset(sym)  # an asset a universe model does not list: by name
        except DataValidationError as e:
            raise StreamRefused("unknown_asset", str(e), sym) from None
        get = _getter(bar)
        ts = self._timestamp(get("timestamp"), sym)
        vals = self._values(sym, get, ts)
        optional = {}
        for col in OPTIONAL:
            if col in self.columns:
                optional[col] = self._ffill(sym, col, vals[col], ts)
        new_segment = self._placement(sym, ts)
        o, h, lo, c = (vals[k] for k in ("open", "high", "low", "close"))
        return ts.value, o, h, lo, c, vals["volume"], optional, new_segment

    def _values(self, sym: str, get: Any, ts: pd.Timestamp) -> dict[str, float]:
        """The bar's prices, volume and optional columns as numbers, under batch reading's
        rules for one bar (no price filled, NaN volume only with volume_nan='zero')."""
        vals = {}
        for col in ("open", "high", "low", "close", "volume", *self.columns):
            if col in vals:
                continue
            raw = get(col)
            if raw is _MISSING:
                if col in OPTIONAL:
                    raw = float("nan")
                else:
                    raise StreamRefused(
                        "bad_value", f"bar at {_iso(ts)} has no column {col!r}", sym
                    )
            try:
                vals[col] = float(raw)
            except (TypeError, ValueError):
                raise StreamRefused(
                    "bad_value", f"column {col!r} is {raw!r} at {_iso(ts)}, not a number", sym
                ) from None
        o, h, lo, c, v = (vals[k] for k in ("open", "high", "low", "close", "volume"))
        for col, x in (("open", o), ("high", h), ("low", lo), ("close", c)):
            if not math.isfinite(x) or x <= 0:
                raise StreamRefused(
                    "bad_value", f"column {col!r} is {x!r} at {_iso(ts)}; prices are never filled",
                    sym,
                )  # fmt: skip
        if math.isnan(v):
            if self.volume_nan != "zero":
                raise StreamRefused(
                    "bad_value",
                    f"column 'volume' is NaN at {_iso(ts)}; stream(volume_nan='zero') treats it "
                    "as no trading",
                    sym,
                )
            vals["volume"] = v = 0.0
        if math.isinf(v) or v < 0:
            raise StreamRefused("bad_value", f"column 'volume' is {v!r} at {_iso(ts)}", sym)
        for bad, what in ohlc_violations(o, h, lo, c):  # batch reading's rules, one bar
            if bad:
                raise StreamRefused(
                    "bad_value",
                    f"bar at {_iso(ts)} has {what}: open={o} high={h} low={lo} close={c}",
                    sym,
                )
        return vals

    def _placement(self, sym: str, ts: pd.Timestamp) -> bool:
        """Whether the bar at `ts` starts a new segment of asset `sym` (a gap beyond max_gap);
        a duplicate, an earlier bar, one off the timeframe's grid or inside the calendar's
        closures is refused by name."""
        i = self.panel.index.get(sym)
        new_segment = True
        if i is not None and self.panel.count[i] > 0:
            last = int(self.panel.last_ns[i])
            if ts.value == last:
                raise StreamRefused("duplicate", f"a bar at {_iso(ts)} was already taken", sym)
            if ts.value < last:
                raise StreamRefused(
                    "out_of_order",
                    f"bar at {_iso(ts)} is before the last one taken ({_iso(pd.Timestamp(last, tz='UTC'))})",
                    sym,
                )
            step = ts.value - last
            if step % self.tf_ns:
                raise StreamRefused(
                    "misaligned",
                    f"bar at {_iso(ts)} is {pd.Timedelta(step, unit='ns')} after the last one, "
                    f"not a whole number of {self.model.label_spec.timeframe} bars",
                    sym,
                )
            missing = 0
            if step > self.tf_ns:
                prev = pd.DatetimeIndex([pd.Timestamp(last, tz="UTC")])
                missing = int(self.cal.missing_slots(prev, pd.DatetimeIndex([ts]), self.tf)[0])
            new_segment = missing > self.max_gap
        if self.cal.name != "24x7" and self.cal.closed_mask(pd.DatetimeIndex([ts]), self.tf)[0]:
            raise StreamRefused(
                "calendar",
                f"bar at {_iso(ts)} ({ts.day_name()}) lies inside a scheduled closure of "
                f"calendar {self.cal.name}; this model scores only {self.cal.name} data",
                sym,
            )
        return new_segment

    def _timestamp(self, raw: Any, sym: str) -> pd.Timestamp:
        if raw is _MISSING or raw is None:
            raise StreamRefused(
                "timestamp",
                "bar has no timestamp: give a 'timestamp' field (or time, date, datetime, "
                "open_time), or a Series named by its time",
                sym,
            )
        try:
            if isinstance(raw, str) and _ISO.match(raw.strip()):
                ts = pd.Timestamp(raw.strip())
            elif isinstance(raw, pd.Timestamp | np.datetime64) or hasattr(raw, "tzinfo"):
                ts = pd.Timestamp(raw)
            else:
                from phat.data.io import _parse_timestamps

                ts = _parse_timestamps(pd.Index([raw]), "timestamp")[0]
        except DataValidationError as e:
            raise StreamRefused("timestamp", str(e), sym) from None
        except (ValueError, TypeError) as e:
            raise StreamRefused("timestamp", f"{raw!r} is not a timestamp ({e})", sym) from None
        if ts.tz is None or str(ts.tz) != "UTC":  # (already UTC: nothing to convert)
            ts = as_utc(ts)
        now = pd.Timestamp(self.now) if self.now is not None else None
        now_ns = now.value if now is not None else time.time_ns()
        if ts.value > now_ns + _DAY_NS:
            raise StreamRefused(
                "future",
                f"bar at {_iso(ts)} is more than a day past the clock: wrong epoch unit or a "
                "misread date",
                sym,
            )
        return ts if ts.unit == "ns" else ts.as_unit("ns")

    def _ffill(self, sym: str, col: str, x: float, ts: Any) -> list[float]:
        last, run = self.panel.optional.get(sym, {}).get(col) or [float("nan"), 0.0]
        if math.isfinite(x):
            return [x, 0.0]
        if math.isinf(x):
            raise StreamRefused("bad_value", f"column {col!r} is infinite at {_iso(ts)}", sym)
        if math.isnan(last) or run + 1 > self.limit:
            raise StreamRefused(
                "bad_value",
                f"column {col!r} is missing at {_iso(ts)} beyond the forward-fill limit of "
                f"{self.limit} bars (features.missing.optional_ffill_bars)",
                sym,
            )
        return [last, run + 1]

    # -- state change -----------------------------------------------------------------------
    def _apply(self, syms: list[str], parsed: list[tuple]) -> np.ndarray:
        """Push one bar per asset (all at once); True where a full window of one segment ends
        at the new bar."""
        pn = self.panel
        idx = _rows(np.array([pn.slot(s) for s in syms], dtype=np.int64))
        cols = np.array([p[:6] for p in parsed], dtype=np.float64)  # ts, o, h, l, c, v
        ts_ns = np.array([p[0] for p in parsed], dtype=np.int64)
        o, h, lo, c, v = (cols[:, k] for k in range(1, 6))
        new_segment = np.array([p[7] for p in parsed], dtype=bool)
        bar = {"open": o, "high": h, "low": lo, "close": c, "volume": v}
        if self.relative:
            bar[UNIVERSE_RETURN] = self._universe_return(syms, pn.series["close"][idx, -1], c)
        for col in OPTIONAL:
            if col in self.columns:
                bar[col] = np.array([p[6][col][0] for p in parsed])
                for sym, p in zip(syms, parsed, strict=True):
                    pn.optional.setdefault(sym, {})[col] = p[6][col]
        for name, buf in pn.series.items():
            _push(buf, idx, bar[name])
        pn.count[idx] += 1
        raw = self.spec.raw_at_last_bar(
            {k: buf[idx] for k, buf in pn.series.items()}, pn.count[idx]
        )
        _push(pn.rows, idx, self._normalize(syms, raw))
        finite = np.isfinite(raw).all(axis=1)
        pn.finite_run[idx] = np.where(finite, pn.finite_run[idx] + 1, 0)
        pn.seg_len[idx] = np.where(new_segment, 1, pn.seg_len[idx] + 1)
        pn.last_ns[idx] = ts_ns
        return (pn.seg_len[idx] >= self.need) & (pn.finite_run[idx] >= self.spec.window)

    @staticmethod
    def _universe_return(syms: list[str], prev: np.ndarray, close: np.ndarray) -> np.ndarray:
        """The universe's mean 1-bar return at this timestamp, per asset of the call, by the
        data layer's own rule (universe_returns) on the assets in symbol order, as batch
        reading stacks them: the same sum in the same order, so the same bits."""
        order = np.argsort(np.array(syms), kind="stable")
        r1 = last_return(np.stack([prev, close], axis=1))[:, 1]
        out = np.empty(len(syms))
        out[order] = universe_returns(r1[order], np.zeros(len(syms), dtype=np.int64))
        return out

    def _normalize(self, syms: list[str], raw: np.ndarray) -> np.ndarray:
        """Feature rows as batch scoring normalizes them: by each asset's fitted mean and std
        (its view's: a universe model's own per asset, a single-asset model's one), the same
        arithmetic row by row, so the same bits."""
        if self.spec.normalization == "none":
            return self.spec.normalize(raw)
        views = [self.model.for_asset(s).feature_spec for s in syms]
        mean = np.array([v.norm_mean for v in views], dtype=np.float64)
        std = np.array([v.norm_std for v in views], dtype=np.float64)
        return self.spec.normalize(raw, mean, std)

    def _score(self, symbols: list[str]) -> np.ndarray:
        w = self.spec.window
        idx = np.array([self.panel.index[s] for s in symbols], dtype=np.int64)
        rows = self.panel.rows[idx].reshape(len(idx) * w, -1)
        ends = np.arange(1, len(idx) + 1) * w - 1
        if getattr(self.model.model, "members", None) is not None:  # per-asset models
            z = np.concatenate(
                [self.model.for_asset(s).model.logits(WindowData(rows[i * w : (i + 1) * w], w),
                                                      np.array([w - 1])) for i, s in enumerate(symbols)]
            )  # fmt: skip
        else:
            z = self.model.model.logits(WindowData(rows, w), ends)
        return np.concatenate(
            [
                self.model.for_asset(s).calibrator.predict(z[i : i + 1])
                for i, s in enumerate(symbols)
            ]
        )

    def _restore(self, state: dict[str, Any]) -> None:
        from phat.errors import HashMismatch

        if state.get("format") != STATE_FORMAT:
            raise DataValidationError(
                f"stream state format {state.get('format', 1)} is not this phat's "
                f"({STATE_FORMAT}): it cannot be resumed; start a new stream"
            )
        if state.get("model_hash") != self.model.model_hash:
            raise HashMismatch(
                f"stream state was saved for model {str(state.get('model_hash'))[:12]}, not "
                f"{self.model.model_hash[:12]}; start a new stream"
            )
        for sym, d in state["assets"].items():
            self.panel.load(sym, d)


_MISSING = object()


def _getter(bar: Any) -> Any:
    """Field access on a mapping or Series, with batch reading's names: case-insensitive,
    spaces and dashes as underscores, its aliases (vol, funding), and the timestamp under any
    of its names (timestamp, time, date, datetime, open_time, ts, date_time), else in the first
    field when that is not a bar column (a CSV's unnamed index column). A Series' name is
    the timestamp only when it is a datetime (a row of a frame indexed by time), never a row
    number. The names resolve once per layout of fields (a stream's bars share one)."""
    fields = bar.index if isinstance(bar, pd.Series) else bar
    try:
        keys, ts_field = _layout(tuple(fields))
    except TypeError:  # an unhashable field name: resolve this bar's alone
        keys, ts_field = _layout.__wrapped__(tuple(fields))

    def get(col: str) -> Any:
        if col == "timestamp":
            if ts_field is not None:
                return bar[ts_field]
            label = getattr(bar, "name", None) if isinstance(bar, pd.Series) else None
            if isinstance(label, pd.Timestamp | dt.datetime | np.datetime64):
                return label
            return _MISSING
        return bar[keys[col]] if col in keys else _MISSING

    return get


@functools.lru_cache(maxsize=256)
def _layout(fields: tuple) -> tuple[dict[str, Any], Any]:
    """(canonical name -> field, the timestamp's field or None) of one layout of fields."""
    from phat.data.io import _TIMESTAMP_NAMES, REQUIRED, column_key
    from phat.data.io import OPTIONAL as IO_OPTIONAL

    keys: dict[str, Any] = {}
    for k in fields:
        keys.setdefault(column_key(k), k)
    name = next((n for n in _TIMESTAMP_NAMES if n in keys), None)
    if name is None:  # as batch reading: an unnamed first column
        first = next(iter(keys), None)
        if first is not None and first not in (*REQUIRED, *IO_OPTIONAL):
            name = first
    return keys, (keys[name] if name is not None else None)


def _iso(ts: Any) -> str:
    from phat.data.timeframes import iso

    return iso(ts)
