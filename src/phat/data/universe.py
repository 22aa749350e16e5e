"""A universe: many assets at one timeframe and one calendar, each read and validated alone.

`data.path` names a universe when it is a directory, a glob, a list of files, or one long-format
file with a `symbol` column. Every asset goes through the single-asset reader
(`phat.data.prepare_bars`) under the same data.* settings; then the universe rules: one native
timeframe and one calendar for all, no symbol twice. A bad asset is one line naming its file (or
symbol) and the problem; with `data.on_bad_asset=skip` it is left out and named in
`Universe.skipped` (the run's summary and the `phat.assets_skipped` tag).

An asset's symbol is its file's stem without a trailing date or period and timeframe
(`ADA_BTC-5m` -> `ADA_BTC`, `BTCUSDT-15m-2025-06` -> `BTCUSDT`), or the value of the `symbol`
column. History delivered in pieces (one file per month or day, as exchanges and vendors publish
it) is one asset: files whose names differ only by that date suffix are read one by one and
concatenated in time (`read_pieces`); a path whose files are all one symbol's pieces is that one
asset, not a universe.
"""

from __future__ import annotations

import glob as globlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.data.bars import UNIVERSE_RETURN, AssetSlice, Bars
from phat.data.timeframes import DURATION
from phat.errors import DataValidationError

if TYPE_CHECKING:
    from phat.settings import DataConf


def data_suffixes() -> tuple[str, ...]:
    """The suffixes of the files a universe's folder or glob reads: those phat.data.io.READERS
    has a reader for (a format added there is a universe member too)."""
    from phat.data.io import READERS

    return tuple(READERS)


_TF_TAIL = re.compile(rf"[-_.]({DURATION})$", re.IGNORECASE)
# A piece's date: -2025-06, -2025-06-01, _202506, _20250601 (year 19xx/20xx, month 01-12).
_PERIOD_TAIL = re.compile(
    r"[-_.]((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])(?:[-_]?(0[1-9]|[12]\d|3[01]))?$"
)


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
    """Whether data.path names many assets (see the module docstring): a directory, glob or
    list whose files are more than one symbol; a long file is only known once read
    (`long_symbols`). A path whose files cannot be listed counts as a universe, so the
    universe reader's refusal names the problem."""
    if path is None:
        return False
    text = str(path)
    if not (
        isinstance(path, (list, tuple)) or Path(text).is_dir() or any(c in text for c in "*?[")
    ):
        return False
    try:
        return len(universe_groups(path)) != 1
    except DataValidationError:
        return True


def source_of(d: Any) -> str:
    """Where the configured bars come from: `synthetic`, `file` or `universe` (data.source, set
    by the data=... option). `auto` (the default) is what data.path names: unset, the
    generator (a synthetic universe with data.synthetic.assets > 0); a directory, glob or list
    of many symbols, a universe; else one file (a long file's symbols are found once read).
    An explicit source the path contradicts is refused by name, before anything is read."""
    from phat.errors import ConfigError

    source, path = str(d.get("source") or "auto"), d["path"]
    many = is_universe(path)
    if source == "auto":
        return "synthetic" if path is None else "universe" if many else "file"
    if source == "synthetic" and path is not None:
        raise ConfigError(
            f"data=synthetic generates its bars, but data.path={path} is set: drop data=synthetic "
            "to read the file (data.path alone does), or drop data.path"
        )
    if source == "file" and (path is None or many):
        raise ConfigError(
            "data=file reads one asset's file: give data.path=FILE"
            if path is None
            else f"data=file reads one asset, but data.path={path} names many: use data=universe"
        )
    if source == "universe" and path is None:
        raise ConfigError(
            "data=universe reads files: give data.path (a directory, glob or list of files, or "
            "a long file with a symbol column); a synthetic universe is data.synthetic.assets=N"
        )
    return source


def one_series(path: Any) -> tuple[str, list[Path]] | None:
    """(symbol, its files in time order) when a directory, glob or list holds the pieces of
    one symbol's history (or just one file); None otherwise."""
    if (
        path is None
        or isinstance(path, (str, Path))
        and not (Path(str(path)).is_dir() or any(c in str(path) for c in "*?["))
    ):
        return None
    try:
        groups = universe_groups(path)
    except DataValidationError:
        return None
    return next(iter(groups.items())) if len(groups) == 1 else None


def dataset_name(d: DataConf) -> str:
    """The name of the configured data, as every verb derives it (the registered model is
    phat-<name>-<horizon>): for a universe data.universe_name, else the directory's name (a
    list's or glob's folder, a long file's stem; a synthetic universe SYNTH<N>); for one asset
    data.symbol, else the file's symbol (symbol_of: a universe member's rule), else SYNTH.
    Read from the settings alone."""
    path, synthetic = d["path"], source_of(d) == "synthetic"
    synthetic_universe = synthetic and int(d["synthetic"].get("assets", 0)) > 0
    if (synthetic_universe or is_universe(path)) and d.get("universe_name"):
        return str(d["universe_name"])
    if synthetic_universe:
        return f"SYNTH{int(d['synthetic']['assets'])}"
    if synthetic:
        return str(d["symbol"] or "SYNTH")
    one = one_series(path)  # one symbol's dated pieces: that symbol
    if one is not None:
        return str(d["symbol"] or one[0])
    if isinstance(path, (list, tuple)):
        return Path(str(path[0])).parent.resolve().name or "universe"
    p = Path(str(path))
    if p.is_dir():
        return p.resolve().name
    if is_universe(path):  # a glob: its folder
        return p.parent.resolve().name or "universe"
    return str(d.get("universe_name") or d["symbol"] or symbol_of(p))


def earlier_name(d: DataConf) -> str | None:
    """The name these settings gave before one naming rule served a file alone and a
    universe's member (#36): a file alone was named by its whole stem (`BTC_USDT-1h.feather`:
    BTC_USDT-1h), a member by its symbol (BTC_USDT), as both are now. None where the two
    agree. A model registered under the earlier name keeps being found by it
    (phat.registry.client.model_name_for)."""
    if source_of(d) != "file" or d["symbol"] or d.get("universe_name"):
        return None
    if one_series(d["path"]) is not None:
        return None
    stem = Path(str(d["path"])).stem
    return stem if stem != dataset_name(d) else None


def _piece_name(path: Path) -> tuple[str, str]:
    """(the file's name without its data suffix, its date suffix or '')."""
    name = path.name
    for suf in sorted(data_suffixes(), key=len, reverse=True):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    m = _PERIOD_TAIL.search(name)
    return (name[: m.start()], m.group(0)) if m and m.start() > 0 else (name, "")


def symbol_of(path: Path) -> str:
    """A file's asset symbol: its stem without a trailing date suffix and timeframe
    (`ADA_BTC-5m` -> ADA_BTC, `BTCUSDT-15m-2025-06` -> BTCUSDT)."""
    name, _ = _piece_name(path)
    return _TF_TAIL.sub("", name) or name


def _is_data_file(p: Path) -> bool:
    return p.is_file() and any(p.name.lower().endswith(s) for s in data_suffixes())


def universe_files(path: Any) -> list[Path]:
    """The files of a directory, glob or list, sorted; refuses an empty directory, a glob that
    matches nothing and a missing listed file."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise DataValidationError("data.path is an empty list; expected one or more files")
        files = [Path(str(p)) for p in path]
        for f in files:
            if not f.is_file():
                raise DataValidationError(f"data file {str(f)!r} (in data.path) does not exist")
        return files
    if Path(str(path)).is_dir():
        d = Path(str(path))
        files = sorted(p for p in d.iterdir() if _is_data_file(p))
        if not files:
            raise DataValidationError(
                f"data directory {str(d)!r} holds no data file (expected "
                f"{', '.join(data_suffixes())})"
            )
        return files
    files = sorted(Path(p) for p in globlib.glob(str(path)) if _is_data_file(Path(p)))
    if not files:
        raise DataValidationError(f"data.path glob {str(path)!r} matches no data file")
    return files


def universe_groups(path: Any) -> dict[str, list[Path]]:
    """{symbol: its files} of a directory, glob or list (symbol order; a symbol's pieces in
    the order of their date suffixes). Two files of one symbol must both be dated pieces
    (`X-2025-06.csv`, `X-2025-07.csv`); any other pair (`X-5m.csv` and `X-1h.csv`) is
    refused by name."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    for f in universe_files(path):
        groups.setdefault(symbol_of(f), []).append((_piece_name(f)[1], f))
    for sym, files in groups.items():
        if len(files) > 1 and (
            not all(d for d, _ in files) or len({d for d, _ in files}) < len(files)
        ):
            a, b = sorted(str(f) for _, f in files)[:2]
            raise DataValidationError(
                f"two files for symbol {sym!r}: {a!r} and {b!r}; keep one (files of one symbol "
                "are read as one series only when their names differ by a date suffix, e.g. "
                "-2025-06)"
            )
    return {s: [f for _, f in sorted(groups[s], key=lambda x: x[0])] for s in sorted(groups)}


def file_groups(path: Any, symbol: str | None = None) -> dict[str, list[Path]]:
    """{symbol: its files} of any data.path: one file is one asset (`symbol`, else its name's
    symbol, symbol_of), a directory, glob or list its universe_groups."""
    p = Path(str(path)) if not isinstance(path, list | tuple) else None
    if p is not None and p.is_file() and not is_universe(path):
        return {symbol or symbol_of(p): [p]}
    return universe_groups(path)


def column_symbol(path: Path, raw: pd.DataFrame) -> str | None:
    """The one value of a file's `symbol` column, or None without one; a file of a folder of
    assets holding several symbols is refused by name."""
    symbols = long_symbols(raw)
    if symbols is None:
        return None
    values = sorted(symbols.unique())
    if len(values) > 1:
        raise DataValidationError(
            f"data file {str(path)!r} holds {len(values)} symbols in its symbol column "
            f"({', '.join(values[:5])}); a long table of many assets is given alone as data.path"
        )
    return str(values[0])


def read_pieces(
    files: list[Path],
    timestamp_format: str | None = None,
    dayfirst: bool | None = None,
    raws: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One symbol's history from its pieces (`raws`: the files already read): each file's
    timestamps parsed alone (an exchange's monthly files change epoch unit from ms to us in
    2025), each checked to be in time order (named by file), then concatenated in time.
    Overlapping pieces repeat bars: the rows are merged in time order, so the bar validation
    drops exact duplicates and refuses conflicting ones, as within one file."""
    from phat.data.bars import check_sorted
    from phat.data.io import normalize_layout, read_table

    frames = []
    for i, f in enumerate(files):
        raw = raws[i] if raws is not None else read_table(f)
        frame = normalize_layout(raw, timestamp_format=timestamp_format, dayfirst=dayfirst)
        try:
            check_sorted(frame)
        except DataValidationError as e:
            raise DataValidationError(f"{str(f)!r}: {e}") from None
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    frames.sort(key=lambda fr: fr.index[0] if len(fr) else pd.Timestamp.max.tz_localize("UTC"))
    whole = pd.concat(frames)
    return whole.iloc[np.argsort(whole.index.asi8, kind="stable")]


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

    def members(self) -> list[AssetSlice]:
        return self.assets

    def timeline(self) -> tuple[Any, int, int]:
        return self.clock, len(self.assets), int(self.max_gap_bars)

    def where(self, symbol: str) -> str:
        return f"asset {symbol}: "

    @property
    def pooled(self) -> bool:
        return True

    def label(self, what: str, symbol: str) -> str:
        return f"{what}, asset {symbol}"

    def keys_of(self, symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    def summary(self, lines: list[str], scored: int, name: str) -> str:
        return (
            f"{scored} of {len(self)} bars scored over {len(self.assets)} assets of universe {name}"
        )

    def view_of(self, model: Any) -> Any:
        return model

    @property
    def time_axis(self) -> pd.DatetimeIndex:
        assert self.grid is not None
        return self.grid

    def across_assets(self, compute: Any) -> Any:
        return compute(np.array([a.symbol for a in self.assets])[self.asset_of_rows()])

    def universe_record(
        self, normalization: dict[str, Any], corrections: dict[str, Any], pooling: str
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """universe.json (per listed asset: its DataSpec, fitted feature `normalization` and
        calibration correction, `corrections`; an asset with no train sample is not listed)
        and the tags phat.universe, phat.assets (the count), phat.pooling and the assets left
        out, with why."""
        from phat.hashing import canonical_json
        from phat.tagnames import Tag

        listed = [a for a in self.assets if a.symbol in normalization]
        spec = {"name": self.symbol, "unlisted": "refuse", "assets": {
            a.symbol: {"data_spec": a.bars.data_spec(), "normalization": normalization[a.symbol],
                       "calibration": corrections.get(a.symbol)}
            for a in listed
        }}  # fmt: skip
        tags = {Tag.UNIVERSE: self.symbol, Tag.ASSETS: str(len(normalization)),
                Tag.POOLING: pooling}  # fmt: skip
        skipped = dict(self.report.get("skipped") or {})
        skipped.update({a.symbol: "no sample in the train span"
                        for a in self.assets if a.symbol not in normalization})  # fmt: skip
        if skipped:
            tags[Tag.ASSETS_SKIPPED] = canonical_json(skipped)[:4000]
        return spec, tags

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
    clock = grid.searchsorted(frame.index)
    r1 = np.concatenate([last_return(a.frame["close"].to_numpy()) for a in assets])
    market = universe_returns(r1, clock)  # derived: not part of any data hash (Bars.data_hash)
    frame[UNIVERSE_RETURN] = market
    for s in slices:
        s.bars.frame = s.bars.frame.assign(**{UNIVERSE_RETURN: market[s.start : s.stop]})
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
        clock=clock,
    )


# ---------------------------------------------------------------------------------------------
# The cross-section: what every asset present at one timestamp does (relative labels, relative
# features and rules read it; the streaming scorer computes it with the same function on one
# timestamp's bars, so batch and stream agree bit for bit).


def last_return(close: np.ndarray) -> np.ndarray:
    """log(close_t) - log(close_(t-1)) along the last axis; NaN at the first bar."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(lc.shape, np.nan)
    out[..., 1:] = np.diff(lc, axis=-1)
    return out


def cross_section(
    values: np.ndarray, clock: np.ndarray, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the `how` (mean or median) of the finite `values` of every row at the same
    timeline slot, and how many there are (a row's own value included; NaN where none)."""
    clock = np.asarray(clock, dtype=np.int64)
    ok = np.isfinite(values)
    slots, inv = np.unique(clock, return_inverse=True)
    count = np.bincount(inv[ok], minlength=len(slots))
    if how == "mean":
        total = np.bincount(inv[ok], weights=values[ok], minlength=len(slots))
        center = np.divide(total, count, out=np.full(len(slots), np.nan), where=count > 0)
    else:
        center = np.full(len(slots), np.nan)
        order = np.argsort(inv[ok], kind="stable")
        vals, grp = values[ok][order], inv[ok][order]
        if len(grp):  # one run of rows per slot: its median
            bounds = np.flatnonzero(np.diff(grp)) + 1
            chunks = np.split(vals, bounds)
            for g, chunk in zip(grp[np.r_[0, bounds]], chunks, strict=True):
                center[g] = np.median(chunk)
    return center[inv], count[inv]


def universe_returns(r1: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """Per row: the universe's mean 1-bar log return at the row's timestamp over the assets
    with a return there (their own included: rows are asset-major in symbol order, so the sum
    runs in symbol order), NaN where fewer than 2 have one (a relative move needs another
    asset). A missing asset is missing, never filled forward. The column UNIVERSE_RETURN."""
    center, count = cross_section(r1, clock)
    return np.where(count >= 2, center, np.nan)
