"""A universe: many assets at one timeframe and one calendar, each read and validated alone.

`data.path` names a universe when it is a directory, a glob, a list of files, or one long-format
file with a `symbol` column. Every asset goes through the single-asset reader
(`phat.data.prepare_bars`) under the same data.* settings; then the universe rules: one native
timeframe and one calendar for all, no symbol twice. A bad asset is one line naming its file (or
symbol) and the problem; with `data.on_bad_asset=skip` it is left out and named in
`Universe.skipped` (the run's summary and the `phat.assets_skipped` tag).

An asset's symbol is its file's stem with a trailing timeframe (`ADA_BTC-5m` -> `ADA_BTC`), or
the value of the `symbol` column.
"""

from __future__ import annotations

import glob as globlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from phat.data.bars import Bars
from phat.data.timeframes import DURATION
from phat.errors import DataValidationError

DATA_SUFFIXES = (".csv", ".csv.gz", ".txt", ".parquet", ".pq", ".feather", ".arrow", ".json")
_TF_TAIL = re.compile(rf"[-_.]({DURATION})$", re.IGNORECASE)


@dataclass
class Universe:
    """Validated assets (in symbol order) and what was left out, by symbol or file."""

    name: str
    assets: list[Bars]
    skipped: dict[str, str] = field(default_factory=dict)
    p_bayes: dict[str, pd.Series] | None = None  # synthetic universes: the known optimum

    @property
    def symbols(self) -> list[str]:
        return [a.symbol for a in self.assets]


def is_universe(path: Any) -> bool:
    """Whether data.path names many assets (see the module docstring); a long file is only
    known once read (`long_symbols`)."""
    if path is None:
        return False
    if isinstance(path, (list, tuple)):
        return True
    text = str(path)
    return Path(text).is_dir() or any(ch in text for ch in "*?[")


def dataset_name(d: dict[str, Any]) -> str:
    """The name of the configured data, as every verb derives it (the registered model is
    phat-<name>-<horizon>): for a universe data.universe_name, else the directory's name (a
    list's or glob's folder, a long file's stem; a synthetic universe SYNTH<N>); for one asset
    data.symbol, else the file's stem, else SYNTH. Read from the settings alone."""
    path = d["path"]
    synthetic_universe = path is None and int(d["synthetic"].get("assets", 0)) > 0
    if (synthetic_universe or is_universe(path)) and d.get("universe_name"):
        return str(d["universe_name"])
    if synthetic_universe:
        return f"SYNTH{int(d['synthetic']['assets'])}"
    if path is None:
        return str(d["symbol"] or "SYNTH")
    if isinstance(path, (list, tuple)):
        return Path(str(path[0])).parent.resolve().name or "universe"
    p = Path(str(path))
    if p.is_dir():
        return p.resolve().name
    if is_universe(path):  # a glob: its folder
        return p.parent.resolve().name or "universe"
    return str(d.get("universe_name") or d["symbol"] or p.stem)


def symbol_of(path: Path) -> str:
    """A file's asset symbol: its stem without a trailing timeframe (`ADA_BTC-5m` -> ADA_BTC)."""
    name = path.name
    for suf in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return _TF_TAIL.sub("", name) or name


def _is_data_file(p: Path) -> bool:
    return p.is_file() and any(p.name.lower().endswith(s) for s in DATA_SUFFIXES)


def universe_files(path: Any) -> list[Path]:
    """The files of a directory, glob or list, sorted; refuses an empty directory, a glob that
    matches nothing, a missing listed file, and two files for one symbol."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise DataValidationError("data.path is an empty list; expected one or more files")
        files = [Path(str(p)) for p in path]
        for f in files:
            if not f.is_file():
                raise DataValidationError(f"data file {str(f)!r} (in data.path) does not exist")
    elif Path(str(path)).is_dir():
        d = Path(str(path))
        files = sorted(p for p in d.iterdir() if _is_data_file(p))
        if not files:
            raise DataValidationError(
                f"data directory {str(d)!r} holds no data file (expected "
                f"{', '.join(DATA_SUFFIXES)})"
            )
    else:
        files = sorted(Path(p) for p in globlib.glob(str(path)) if _is_data_file(Path(p)))
        if not files:
            raise DataValidationError(f"data.path glob {str(path)!r} matches no data file")
    seen: dict[str, Path] = {}
    for f in files:
        sym = symbol_of(f)
        if sym in seen:
            raise DataValidationError(
                f"two files for symbol {sym!r}: {str(seen[sym])!r} and {str(f)!r}; keep one"
            )
        seen[sym] = f
    return files


def long_symbols(raw: pd.DataFrame) -> pd.Series | None:
    """The `symbol` column of a long-format table (any case), or None; refuses nulls by row."""
    col = next((c for c in raw.columns if str(c).strip().lower() == "symbol"), None)
    if col is None:
        return None
    s = raw[col]
    bad = s.isna() | (s.astype(str).str.strip() == "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataValidationError(
            f"column 'symbol' is empty at {int(bad.sum())} rows, first at row {row}; every row "
            "of a long-format file needs its asset's symbol"
        )
    return s.astype(str).str.strip()


def split_long(raw: pd.DataFrame, symbols: pd.Series) -> list[tuple[str, pd.DataFrame]]:
    """(symbol, rows) per asset of a long table, in symbol order, without the symbol column."""
    col = next(c for c in raw.columns if str(c).strip().lower() == "symbol")
    body = raw.drop(columns=[col])
    return [(str(sym), body[(symbols == sym).to_numpy()]) for sym in sorted(symbols.unique())]


def check_universe(assets: list[Bars], where: dict[str, str]) -> dict[str, str]:
    """The universe rules over validated assets: one native timeframe, one calendar; returns
    {symbol: problem} for each asset that disagrees with the first (in symbol order)."""
    if not assets:
        return {}
    first = assets[0]
    tf0 = first.report.get("native_timeframe")
    bad: dict[str, str] = {}
    for a in assets[1:]:
        tf = a.report.get("native_timeframe")
        if tf != tf0:
            bad[a.symbol] = (
                f"{where[a.symbol]}: {tf} bars, but the universe's are {tf0} (asset "
                f"{first.symbol}); one universe holds one timeframe"
            )
        elif a.calendar != first.calendar:
            bad[a.symbol] = (
                f"{where[a.symbol]}: calendar {a.calendar} ({a.report.get('calendar_reason')}), "
                f"but the universe's is {first.calendar} (asset {first.symbol}); one universe "
                "holds one calendar: set data.calendar or leave the asset out"
            )
    return bad


@dataclass
class AssetSlice:
    """One asset's rows [start, stop) in a stacked universe, and its own validated bars."""

    symbol: str
    start: int
    stop: int
    bars: Bars


@dataclass
class StackedBars(Bars):
    """A universe as one table: the assets' validated bars one after another (asset-major, each
    in time order), every asset's segments numbered apart, so no window or label crosses from
    one asset into the next (the gap rule does it). `grid` is the universe's timeline (sorted
    union of the timestamps); `clock` each row's slot on it, the time axis splits cut on."""

    assets: list[AssetSlice] = field(default_factory=list)
    grid: pd.DatetimeIndex | None = None
    clock: Any = None
    _asset_rows: Any = field(default=None, repr=False)

    def data_spec(self) -> dict[str, Any]:
        spec = super().data_spec()
        spec["universe"] = self.symbol
        spec["assets"] = [a.symbol for a in self.assets]
        return spec

    def data_hash(self) -> str:
        from phat.hashing import sha256_text

        return sha256_text("|".join(f"{a.symbol}:{a.bars.data_hash()}" for a in self.assets))

    def asset_of_rows(self) -> Any:
        """The asset number of every row (an int array, built once)."""
        import numpy as np

        if self._asset_rows is None:
            sizes = [a.stop - a.start for a in self.assets]
            self._asset_rows = np.repeat(np.arange(len(self.assets), dtype=np.int64), sizes)
        return self._asset_rows


def stack(name: str, assets: list[Bars], skipped: dict[str, str]) -> StackedBars:
    """The assets (already checked by check_universe) as one StackedBars."""
    import numpy as np

    slices, segs, at, seg0 = [], [], 0, 0
    for a in assets:
        slices.append(AssetSlice(a.symbol, at, at + len(a), a))
        segs.append(np.asarray(a.segment, dtype=np.int64) + seg0)
        seg0 = int(segs[-1].max()) + 1 if len(a) else seg0
        at += len(a)
    frame = pd.concat([a.frame for a in assets])
    grid = pd.DatetimeIndex(np.unique(frame.index.asi8)).tz_localize("UTC").rename("timestamp")
    first = assets[0]
    report: dict[str, Any] = {
        "assets": len(assets),
        "symbols": [a.symbol for a in assets],
        "skipped": dict(skipped),
        "rows_out": len(frame),
        "gaps": int(sum(a.report.get("gaps", 0) for a in assets)),
        "gap_list": [
            {"symbol": a.symbol, **g} for a in assets for g in a.report.get("gap_list", [])
        ],
        "native_timeframe": first.report.get("native_timeframe"),
        "calendar": first.calendar,
        "calendar_reason": first.report.get("calendar_reason"),
    }
    if first.report.get("resampled_from") is not None:
        report["resampled_from"] = first.report["resampled_from"]
    return StackedBars(
        frame=frame,
        timeframe=first.timeframe,
        symbol=name,
        segment=np.concatenate(segs),
        report=report,
        calendar=first.calendar,
        max_gap_bars=max(a.max_gap_bars for a in assets),
        assets=slices,
        grid=grid,
        clock=grid.searchsorted(frame.index),
    )
