"""Reading the configured data (`data.*`): one file, a universe's files or the embedded
synthetic generator, validated into Bars or one StackedBars; every verb reads data here
(training resamples finer bars; a loaded model reads a file as it was trained)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from phat.data.bars import Bars, prepare_bars
from phat.data.io import read_table
from phat.data.universe import StackedBars
from phat.errors import DataValidationError, shorten

if TYPE_CHECKING:
    from phat.settings import DataConf, WithData

log = logging.getLogger(__name__)

# The data.* settings that say how raw bars are read (PHatModel.read_bars' keyword arguments,
# besides symbol): training and every scoring path pass these and only these.
READ_SETTINGS = ("calendar", "volume_nan", "timestamp_format", "dayfirst")


def synthetic_config(d: DataConf) -> tuple[Any, dict[str, Any]]:
    """data.synthetic as (SyntheticConfig, the universe's shape: assets, vol_spread,
    correlation)."""
    from phat.data.synthetic import SyntheticConfig

    syn = dict(d.synthetic)
    shape = {k: syn.pop(k) for k in ("assets", "vol_spread", "correlation") if k in syn}
    return SyntheticConfig(**syn), shape


def read_raw(d: DataConf) -> tuple[pd.DataFrame, str, pd.Series | None]:
    """The configured data before validation: a user file (`data.path`) or the embedded
    synthetic generator; returns (raw frame, symbol, known Bayes p for synthetic data)."""
    from phat.data.universe import dataset_name, one_series, read_pieces, source_of

    if source_of(d) != "synthetic":
        one = one_series(d.path)  # a folder, glob or list of one symbol's dated pieces
        if one is not None:
            return read_pieces(one[1], d.timestamp_format, d.dayfirst), dataset_name(d), None
        return read_table(d.path), dataset_name(d), None
    from phat.data.synthetic import generate

    market = generate(synthetic_config(d)[0])
    return market.bars, dataset_name(d), market.p_up


def bars_kwargs(d: DataConf) -> dict[str, Any]:
    """The data.* settings that say how raw bars are read (READ_SETTINGS)."""
    return {k: d[k] for k in READ_SETTINGS}


def is_universe_data(d: DataConf) -> bool:
    """data.* names many assets by its path (a directory, glob or list) or by
    data.synthetic.assets > 0; a long file with a symbol column is found once read."""
    from phat.data.universe import is_universe, source_of

    if source_of(d) == "synthetic":
        return d.synthetic.assets > 0
    return is_universe(d.path)


def universe_sources(d: DataConf) -> list[tuple[str, str, Any]]:
    """(symbol, where, its files) per asset of a directory, glob or list (phat.data.universe:
    an asset's dated pieces are one source)."""
    from phat.data.universe import universe_groups

    return [(sym, _where(files), files) for sym, files in universe_groups(d.path).items()]


def _where(files: list[Path]) -> str:
    """A source's files as a refusal names them."""
    if len(files) == 1:
        return str(files[0])
    return f"{str(files[0])!r} .. {files[-1].name!r} ({len(files)} pieces)"


def long_sources(raw: pd.DataFrame, where: str) -> list[tuple[str, str, Any]] | None:
    """(symbol, where, rows) per asset of a long-format table, or None without a symbol column."""
    from phat.data.universe import long_symbols, split_long

    symbols = long_symbols(raw)
    if symbols is None:
        return None
    return [(sym, f"{where} symbol {sym}", rows) for sym, rows in split_long(raw, symbols)]


def load_universe(
    cfg: WithData,
    timeframe: str,
    model: Any = None,
    sources: list[tuple[str, str, Any]] | None = None,
) -> Any:
    """The configured universe, every asset read and validated alone (as load_bars reads one),
    then the universe rules (phat.data.universe); data.on_bad_asset=skip leaves a bad asset
    out and names it. With a loaded universe model, each asset is read under its own DataSpec
    (PHatModel.read_bars) and an asset the model does not list is refused by name."""
    from phat.data.universe import Universe, check_universe, dataset_name, read_pieces, source_of

    d = cfg.data
    skip = d.on_bad_asset == "skip"
    skipped: dict[str, str] = {}
    p_bayes: dict[str, pd.Series] | None = None
    if source_of(d) == "synthetic":
        from phat.data.synthetic import generate_universe

        syn, shape = synthetic_config(d)
        markets = generate_universe(syn, **shape)
        sources = [(sym, f"synthetic asset {sym}", m.bars) for sym, m in markets.items()]
        p_bayes = {sym: m.p_up for sym, m in markets.items()}
    elif sources is None:
        sources = universe_sources(d)

    def refused(sym: str, w: str, e: DataValidationError) -> None:
        msg = str(e) if str(e).startswith(w) else f"{w}: {e}"
        if not skip:
            raise DataValidationError(
                f"{msg} (data.on_bad_asset=skip leaves a bad asset out)"
            ) from None
        skipped[sym] = msg
        log.warning("left out of the universe: %s", msg)

    read = _by_symbol(sources, refused)
    where = {sym: w for sym, (w, _) in read.items()}
    assets: list[Bars] = []
    for sym in sorted(read):  # assets in symbol order, whatever their files are named
        w, src = read[sym]
        try:
            raw = (
                read_pieces(src[0], d.timestamp_format, d.dayfirst, raws=src[1])
                if isinstance(src, tuple)
                else src
            )
            if model is not None:
                bars = model.for_asset(sym).read_bars(raw, symbol=sym, **bars_kwargs(d))
            else:
                bars = prepare_bars(
                    raw, symbol=sym, timeframe=timeframe, max_gap=d.max_gap,
                    resample_min_coverage=float(d.resample_min_coverage),
                    now=pd.Timestamp.now(tz="UTC"), source=w, announce=False, **bars_kwargs(d),
                )  # fmt: skip
        except DataValidationError as e:
            refused(sym, w, e)
            continue
        assets.append(bars)
    for sym, problem in check_universe(assets, where).items():
        if not skip:
            raise DataValidationError(f"{problem} (data.on_bad_asset=skip leaves it out)")
        skipped[sym] = problem
        log.warning("left out of the universe: %s", problem)
    assets = [a for a in assets if a.symbol not in skipped]
    if not assets:
        raise DataValidationError(
            f"no asset of the universe is usable: {shorten('; '.join(skipped.values()), 600)}"
        )
    if p_bayes is not None and assets[0].report.get("resampled_from") is not None:
        p_bayes = None  # the planted p is per native bar
    reason = str(assets[0].report.get("calendar_reason", ""))
    if reason.startswith("auto: "):  # one line for the universe, not one per asset
        log.info("data.calendar=auto chose %s for %d assets (%s: %s)", assets[0].calendar,
                 len(assets), assets[0].symbol, reason[len("auto: "):])  # fmt: skip
    return Universe(dataset_name(d), assets, skipped, p_bayes)


def _by_symbol(
    sources: list[tuple[str, str, Any]], refused: DataConf
) -> dict[str, tuple[str, Any]]:
    """symbol -> (where, its rows, or (its files, their tables)): a file's symbol column
    names its asset, so files of one symbol are one asset's pieces whatever they are named;
    a source that cannot be read goes to `refused(symbol, where, error)`."""
    from phat.data.universe import column_symbol

    read: dict[str, tuple[str, Any]] = {}
    for sym, w, src in sources:
        if not isinstance(src, list):
            read[sym] = (w, src)
            continue
        try:
            tables = [read_table(f) for f in src]
            named = {column_symbol(f, t) for f, t in zip(src, tables, strict=True)} - {None}
            if len(named) > 1:
                raise DataValidationError(f"its symbol columns name {sorted(named)}")
        except DataValidationError as e:
            refused(sym, w, e)
            continue
        key = named.pop() if named else sym
        if key in read:  # another file of the same symbol: its pieces join
            first, (files, have) = read[key]
            read[key] = (first, (files + list(src), have + tables))
        else:
            read[key] = (w, (list(src), tables))
    return read


def check_source(source: str, path: str, sources: list[Any] | None) -> None:
    """A read file is the asset or universe data=file or data=universe asked for (a long
    file's symbols are known only now): the other is refused by name."""
    if source == "file" and sources:
        raise DataValidationError(
            f"data=file reads one asset, but {path} holds {len(sources)} symbols in its symbol "
            "column: use data=universe (or data.path alone)"
        )
    if source == "universe" and not sources:
        raise DataValidationError(
            f"data=universe reads many assets, but {path} holds one: use data=file (or "
            "data.path alone)"
        )


def refuse_universe_for_one(model: Any, where: str, many: bool) -> None:
    """A single-asset model scores one asset's bars: `where` naming many assets (`many`) is
    refused by name (every reader of data for a model: load_bars, engine=spark)."""
    if many and not model.assets:
        raise DataValidationError(
            f"{where} names a universe of assets, but the model scores one asset "
            f"({model.data_spec.get('symbol', '?')}): give that asset's bars"
        )


def load_bars(cfg: WithData, timeframe: str, model: Any = None) -> tuple[Bars, pd.Series | None]:
    """The configured data, validated as `timeframe` bars under the data.* settings (training:
    finer bars are resampled); with a loaded model (scoring: backtest, monitor, promotion),
    read by the model itself (`PHatModel.read_bars`, the reader `phat predict` and serving
    use: its timeframe, calendar and max_gap, finer bars refused), so every scoring verb
    reads a file the same way. A universe (is_universe_data, or a long file) comes back as
    one StackedBars (phat.data.universe), its assets read one by one (load_universe). A
    universe model reads one listed asset's file as that asset (its own DataSpec)."""
    from phat.data.universe import one_series, source_of, stack, symbol_of

    d = cfg.data
    source = source_of(d)
    sources, column_symbol = None, None
    if not is_universe_data(d):
        raw, symbol, p = read_raw(d)
        sources = long_sources(raw, str(d.path)) if source != "synthetic" else None
        if sources is not None and len(sources) == 1:  # one symbol: one asset, named as before
            column_symbol, raw, sources = sources[0][0], sources[0][2], None
        check_source(str(d.source), str(d.path), sources)  # auto: the file says which
    if model is not None:
        refuse_universe_for_one(model, "data.path", bool(sources) or is_universe_data(d))
    one_file = sources is None and not is_universe_data(d)
    if model is not None and model.assets and one_file:
        # one asset's file, scored as that listed asset (data.symbol, else its symbol column's
        # one value, else the file's name)
        symbol = str(
            d.symbol
            or column_symbol
            or (
                symbol_of(Path(str(d.path)))
                if source == "file" and not one_series(d.path)
                else symbol
            )
        )
        return model.for_asset(symbol).read_bars(raw, **bars_kwargs(d), symbol=symbol), p
    if sources is not None or is_universe_data(d):
        uni = load_universe(cfg, timeframe, model, sources)
        bars = stack(uni.name, uni.assets, uni.skipped)
        pb = None
        if uni.p_bayes is not None:
            pb = pd.concat([uni.p_bayes[a.symbol].loc[a.frame.index] for a in uni.assets])
        return bars, pb
    if model is not None:
        return model.read_bars(raw, symbol=symbol, **bars_kwargs(d)), p
    bars = prepare_bars(
        raw,
        symbol=symbol,
        timeframe=timeframe,
        max_gap=d.max_gap,
        calendar=d.calendar,
        volume_nan=d.volume_nan,
        resample_min_coverage=float(d.resample_min_coverage),
        timestamp_format=d.timestamp_format,
        dayfirst=d.dayfirst,
        now=pd.Timestamp.now(tz="UTC"),
    )
    if bars.report.get("resampled_from") is not None:
        p = None  # the planted p is per native bar
    return bars, p


def asset_spans(bars: StackedBars, most: int = 12) -> str:
    """Each asset's first and last bar, for a refusal: `AAA 2025-01-01..2025-03-13, ...`."""
    spans = [f"{a.symbol} {a.bars.index[0]:%Y-%m-%d}..{a.bars.index[-1]:%Y-%m-%d}"
             for a in bars.assets[:most]]  # fmt: skip
    more = len(bars.assets) - most
    return ", ".join(spans) + (f" and {more} more" if more > 0 else "")
