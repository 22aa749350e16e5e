"""The loaded inference function, `PHatModel`: OHLCV bars in, p_hat per bar out.

Batch scoring of validated bars (`predict_bars`), reading raw bars under the model's DataSpec
(`read_bars`, `segments`), the coverage rule every scoring verb applies (`check_coverage`), and
the streaming scorer (`stream()`, phat.scoring.stream). Loading and verifying an artifact is
phat.registry's (registry.artifact.load_artifact returns one of these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec
from phat.models.baselines import WindowData
from phat.models.calibration import Calibrator
from phat.tagnames import Tag

# An artifact written before the DataSpec existed: the calendar it was trained under then.
LEGACY_DATA_SPEC = {"calendar": "24x7", "max_gap_bars": 2}
SCORE_BLOCK = 65_536  # windows scored per model call


@dataclass
class PHatModel:
    """A loaded, verified inference function: OHLCV bars in, p_hat per bar out."""

    model: Any
    feature_spec: FeatureSpec
    label_spec: LabelSpec
    calibrator: Calibrator
    metadata: dict[str, Any] = field(default_factory=dict)
    data_spec: dict[str, Any] = field(default_factory=lambda: dict(LEGACY_DATA_SPEC))
    # A universe model's assets (artifact universe.json): {"name", "assets": {symbol: {...}}}
    universe: dict[str, Any] | None = None
    _views: dict[str, PHatModel] = field(default_factory=dict, repr=False, compare=False)

    @property
    def assets(self) -> list[str]:
        """The symbols a universe model scores (sorted), each under its own view (for_asset);
        [] for a single-asset model, which is its own view of any symbol's bars. The one place
        the model's shape (universe.json or none) is read."""
        return sorted(self.universe["assets"]) if self.universe else []

    def for_asset(self, symbol: str) -> PHatModel:
        """The inference function for one asset: a universe model's pooled model under that
        asset's DataSpec, feature normalization and calibration map (an asset the model does
        not list is refused by name); a single-asset model returns itself (it scores any
        symbol's bars, as always)."""
        if not self.assets:
            return self
        if symbol in self._views:
            return self._views[symbol]
        from phat.errors import DataValidationError

        entry = self.universe["assets"].get(symbol)
        if entry is None:
            listed = self.assets
            raise DataValidationError(
                f"asset {symbol!r} is not in universe model {self.universe['name']!r} "
                f"({len(listed)} assets: {', '.join(listed[:8])}{' ...' if len(listed) > 8 else ''}); "
                "a universe model scores only the assets it was trained on"
            )
        from dataclasses import replace

        norm = entry["normalization"]
        members = getattr(self.model, "members", None)  # model.pooling=per_asset: its own
        view = PHatModel(
            self.model if members is None else members[symbol],
            replace(
                self.feature_spec,
                norm_mean=None if norm is None else tuple(norm["mean"]),
                norm_std=None if norm is None else tuple(norm["std"]),
            ),
            self.label_spec,
            self.calibrator.with_asset_correction(entry.get("calibration")),
            {**self.metadata, Tag.ASSET: symbol},
            dict(entry["data_spec"]),
        )
        self._views[symbol] = view
        return view

    @property
    def model_hash(self) -> str:
        return str(self.metadata.get(Tag.MODEL_HASH, ""))

    def identity(self, uri: str) -> dict[str, str]:
        """What scored output records of its model: phat.* and registry.* metadata and the
        URI it was loaded by (a predict file's metadata, an engine's report)."""
        meta = {
            k: str(v) for k, v in self.metadata.items() if k.startswith((Tag.PREFIX, "registry."))
        }
        return {**meta, Tag.MODEL_URI: str(uri)}

    def predict_bars(self, frame: pd.DataFrame, segment: np.ndarray | None = None) -> pd.DataFrame:
        """p_hat_raw and p_hat for every bar of validated bars (NaN where no full window)."""
        self._one_asset("predict_bars")
        self.feature_spec.check_data(frame)  # every scoring path: predict, backtest, promote
        raw = self.feature_spec.compute_raw(frame)
        seg = np.zeros(len(frame), dtype=np.int64) if segment is None else segment
        ok = self.feature_spec.valid_end_mask(raw, seg)
        data = WindowData(self.feature_spec.normalize(raw), self.feature_spec.window)
        ends = np.flatnonzero(ok)
        p_raw = np.full(len(frame), np.nan)
        p_cal = np.full(len(frame), np.nan)
        if len(ends):
            # In blocks of windows: every model's logit is per window (the TCN's batch-invariant),
            # so blocks change no bit and bound the memory of tabular copies to one block.
            z = np.concatenate(
                [self.model.logits(data, ends[i : i + SCORE_BLOCK])
                 for i in range(0, len(ends), SCORE_BLOCK)]
            )  # fmt: skip
            p_raw[ends] = Calibrator("none").predict(z)
            p_cal[ends] = self.calibrator.predict(z)
        return pd.DataFrame({"p_hat_raw": p_raw, "p_hat": p_cal}, index=frame.index)

    def _one_asset(self, what: str) -> None:
        if self.assets:
            from phat.errors import DataValidationError

            raise DataValidationError(
                f"{what}: model {self.universe['name']!r} is a universe model of "
                f"{len(self.assets)} assets; score one asset with .for_asset(symbol), or bars of "
                "many with a symbol column (predict) / predict_members"
            )

    def predict_members(self, bars: Any) -> pd.DataFrame:
        """p_hat_raw and p_hat for every row of validated bars, each member (one asset, or
        every asset of a universe) scored by its own view (`for_asset`), in the rows' order;
        a universe's output has a `symbol` column (Bars.gather)."""
        return bars.gather([part for _, _, part in self._by_member(bars)])

    def score(self, bars: Any, min_share: float, what: str) -> tuple[pd.DataFrame, str]:
        """predict_members, and check_coverage per member: a member scored below `min_share`
        refuses the whole call, by name; (the predictions, the one coverage line)."""
        lines, scored = [], 0
        scored_parts = self._by_member(bars)
        for a, view, part in scored_parts:
            p = part["p_hat"].to_numpy()
            gaps = int(a.bars.report.get("gaps", 0))
            lines.append(view.check_coverage(p, gaps, min_share, bars.label(what, a.symbol)))
            scored += int(np.isfinite(p).sum())
        name = (self.universe or {"name": bars.symbol})["name"]
        return bars.gather([part for _, _, part in scored_parts]), bars.summary(lines, scored, name)

    def _by_member(self, bars: Any) -> list[tuple[Any, PHatModel, pd.DataFrame]]:
        """(member, its view, its predictions) per member of `bars`."""
        out = []
        for a in bars.members():
            view = self.for_asset(a.symbol)
            out.append((a, view, view.predict_bars(a.bars.frame, a.bars.segment)))
        return out

    def stream(
        self, state: dict[str, Any] | None = None, volume_nan: str | None = None, now: Any = None
    ) -> Any:
        """A streaming scorer (phat.scoring.stream.StreamScorer): `update(bar)` per new bar,
        `update_many({symbol: bar})` per bar-step of many assets, equal to predict() bit for
        bit; `state` resumes a saved `scorer.state()`."""
        from phat.scoring.stream import StreamScorer

        return StreamScorer(self, state=state, volume_nan=volume_nan, now=now)

    @property
    def calendar(self) -> str:
        return str(self.data_spec["calendar"])

    def read_bars(self, ohlcv: pd.DataFrame, **data_kwargs: Any) -> Any:
        """Validate raw bars under this model's DataSpec (its timeframe, calendar and max_gap):
        the same reading as in training, so windows break at the same places. Data of another
        timeframe or calendar is refused by name. `data_kwargs`: calendar (auto or the model's),
        volume_nan, timestamp_format, dayfirst, symbol."""
        from phat.data import prepare_bars

        self._one_asset("read_bars")
        return prepare_bars(
            ohlcv,
            timeframe=self.label_spec.timeframe,
            allow_resample=False,
            max_gap=int(self.data_spec["max_gap_bars"]),
            model_calendar=self.calendar,
            now=pd.Timestamp.now(tz="UTC"),
            **{"calendar": "auto", **data_kwargs},
        )

    def segments(self, frame: pd.DataFrame) -> np.ndarray:
        """Segment ids of already validated bars under this model's calendar and max_gap
        (refuses bars inside the calendar's closures)."""
        from phat.data.bars import find_segments
        from phat.data.calendars import check_follows, resolve
        from phat.data.timeframes import parse_timeframe

        tf = parse_timeframe(self.label_spec.timeframe)
        cal = resolve(self.calendar)
        index = pd.DatetimeIndex(frame.index)
        check_follows(
            index, tf, cal, "the model's calendar", f"this model scores only {cal.name} data"
        )
        seg, _ = find_segments(index, tf, tf * int(self.data_spec["max_gap_bars"]), cal)
        return seg

    def check_coverage(
        self,
        p_hat: np.ndarray,
        gaps: int,
        min_share: float,
        what: str,
        from_start: bool = True,
        reasons: np.ndarray | None = None,
    ) -> str:
        """Refuse scoring that scores nothing, or less than `min_share` of the bars that could
        have a window (all of them, less the first warm-up when `p_hat` starts at the data's
        first bar); returns the one-line coverage summary otherwise.

        `reasons` (a binding's fallback_reason per bar): bars on the proxy by a recorded
        decision (a calibration alarm) were not meant to be scored and are not counted; when
        the rule fires, the message names the cause the unscored bars record (calendar,
        an inference failure) or else gaps or a history shorter than the window."""
        warm = self.feature_spec.bars_read - 1
        start = warm if from_start else 0
        why = np.asarray(reasons if reasons is not None else [""] * len(p_hat), dtype=object)
        decided = why == "calibration_alarm"
        unscored = why[~np.isfinite(p_hat) & ~decided]
        return self.coverage_of(
            int(np.isfinite(p_hat).sum()), len(p_hat), gaps, min_share, what, from_start,
            int(decided[start:].sum()), [r for r in unscored if r not in ("", "no_window")],
        )  # fmt: skip

    def coverage_of(
        self,
        scored: int,
        n_bars: int,
        gaps: int,
        min_share: float,
        what: str,
        from_start: bool = True,
        n_decided: int = 0,
        recorded: list[str] | None = None,
    ) -> str:
        """check_coverage from counts (`scored` of `n_bars`; an engine that scores an asset in
        chunks sums them): the summary line, or the refusal naming the likely cause."""
        from phat.errors import DataValidationError

        warm = self.feature_spec.bars_read - 1
        start = warm if from_start else 0
        eligible = max(n_bars - start - n_decided, 0)
        share = scored / eligible if eligible else 0.0
        line = (
            f"{scored} of {n_bars} bars scored ({share:.0%} of {eligible} eligible) "
            f"under the model's calendar {self.calendar}, max_gap "
            f"{self.data_spec['max_gap_bars']} bars; {gaps} gaps"
        )
        if n_decided:
            line += f"; {n_decided} on the proxy by decision (calibration_alarm)"
            if eligible == 0:
                return line  # every bar that could be scored is on the proxy by decision
        if scored == 0 or share < min_share:
            recorded = list(recorded or [])
            if recorded:
                top = max(set(recorded), key=recorded.count)
                cause = (
                    f"the bars fall outside the model's calendar {self.calendar} "
                    "(fallback_reason calendar_mismatch); read data of that calendar"
                    if top == "calendar_mismatch"
                    else f"the model could not score them (fallback_reason {top}; see "
                    "fallback_detail in the decisions)"
                )
            elif gaps:
                cause = (
                    f"{gaps} gaps split the data and each costs a {warm + 1}-bar window before "
                    "scoring resumes; if they are scheduled closures, train with the data's "
                    "calendar (data.calendar=...), if short outages, with a larger data.max_gap"
                )
            else:
                cause = f"the data is too short for the model's {warm + 1}-bar window"
            raise DataValidationError(
                f"{what}: {line}, below signal.min_scored_share={min_share}: {cause}"
            )
        return line

    def predict(self, ohlcv: pd.DataFrame, **data_kwargs: Any) -> pd.DataFrame:
        """p_hat_raw and p_hat per bar of `ohlcv` (any layout the file loader accepts), read
        under the model's DataSpec (see read_bars); NaN where no full window exists. A
        universe model takes a long table with a `symbol` column (each asset read under its
        own DataSpec) and returns a `symbol` column too."""
        from phat.data.universe import long_symbols, split_long, stack

        symbols = long_symbols(ohlcv) if isinstance(ohlcv, pd.DataFrame) else None
        if symbols is not None and self.assets:
            assets = [
                self.for_asset(sym).read_bars(rows, **{**data_kwargs, "symbol": sym})
                for sym, rows in split_long(ohlcv, symbols)
            ]  # each under its own DataSpec, then one universe (its cross-section included)
            return self.predict_members(stack(str(self.universe["name"]), assets, {}))
        if symbols is not None and symbols.nunique() > 1:
            from phat.errors import DataValidationError

            raise DataValidationError(
                f"the table holds {symbols.nunique()} symbols ({', '.join(sorted(symbols.unique())[:5])}"
                f"{' ...' if symbols.nunique() > 5 else ''}) but this model scores one asset: "
                "give one asset's rows"
            )
        bars = self.read_bars(ohlcv, **data_kwargs)
        return self.predict_bars(bars.frame, bars.segment)
