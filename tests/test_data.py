"""Loading, layouts, validation messages, resampling, duplicates and gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ohlcv
from phat.data import find_segments, prepare_bars, read_table, resample_bars
from phat.errors import DataValidationError


def _prep(df: pd.DataFrame, **kw) -> object:
    kw.setdefault("timeframe", "15m")
    return prepare_bars(df, **kw)


# ---- layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["index", "column", "first_col_unnamed", "epoch_s", "epoch_ms", "iso_str", "upper", "title"],
)
def test_layouts_people_have_give_identical_bars(layout: str) -> None:
    base = ohlcv(40)
    df = base.copy()
    if layout == "column":
        df = df.reset_index()
    elif layout == "first_col_unnamed":
        df = df.reset_index().rename(columns={"timestamp": "Unnamed: 0"})
    elif layout == "epoch_s":
        df = df.reset_index()
        df["timestamp"] = (df["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1s")
    elif layout == "epoch_ms":
        df = df.reset_index().rename(columns={"timestamp": "open_time"})
        df["open_time"] = (df["open_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    elif layout == "iso_str":
        df = df.reset_index().rename(columns={"timestamp": "Date"})
        df["Date"] = df["Date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif layout == "upper":
        df.columns = [c.upper() for c in df.columns]
    elif layout == "title":
        df = df.reset_index()
        df.columns = [c.title() for c in df.columns]
    bars = _prep(df)
    ref = _prep(base)
    pd.testing.assert_frame_equal(bars.frame, ref.frame)
    assert str(bars.index.tz) == "UTC"
    assert bars.data_hash() == ref.data_hash()


def test_naive_timestamps_are_utc_and_tz_aware_are_converted() -> None:
    base = ohlcv(20)
    naive = base.copy()
    naive.index = naive.index.tz_localize(None)
    other_tz = base.copy()
    other_tz.index = other_tz.index.tz_convert("America/New_York")
    assert (_prep(naive).index == base.index).all()
    assert (_prep(other_tz).index == base.index).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_read_table_formats_round_trip(tmp_path, suffix: str) -> None:
    df = ohlcv(30).reset_index()
    p = tmp_path / f"bars{suffix}"
    {".csv": df.to_csv, ".parquet": df.to_parquet, ".feather": df.to_feather}[suffix](
        p, **({"index": False} if suffix == ".csv" else {})
    )
    bars = _prep(read_table(p))
    np.testing.assert_allclose(bars.frame["close"].to_numpy(), df["close"].to_numpy())


def test_unknown_format_and_missing_file_are_named(tmp_path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataValidationError, match=r"unsupported format '\.xlsx'"):
        read_table(tmp_path / "x.xlsx")


def test_optional_columns_kept_and_unknown_columns_dropped() -> None:
    df = ohlcv(20)
    df["Funding_Rate"] = 1e-4
    df["Spread"] = 0.01
    df["trades"] = 5
    bars = _prep(df)
    assert list(bars.frame.columns) == [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "funding_rate",
        "spread",
    ]


# ---- validation failures, each with its message ---------------------------------------------


def test_missing_required_column_named() -> None:
    with pytest.raises(DataValidationError, match=r"missing required columns \['volume'\]"):
        _prep(ohlcv(20).drop(columns=["volume"]))


def test_non_numeric_value_named_with_row_and_timestamp() -> None:
    df = ohlcv(20).astype({"close": object})
    df.iloc[7, df.columns.get_loc("close")] = "n/a"
    with pytest.raises(
        DataValidationError,
        match=r"column 'close' has 1 non-numeric values, first at row 7 \(2024-01-01T01:45:00Z\): 'n/a'",
    ):
        _prep(df)


def test_nan_price_refused_with_timestamp() -> None:
    df = ohlcv(20)
    df.iloc[3, df.columns.get_loc("high")] = np.nan
    with pytest.raises(
        DataValidationError,
        match=r"column 'high' has 1 NaN/inf values, first at row 3 \(2024-01-01T00:45:00Z\)",
    ):
        _prep(df)


def test_inf_price_refused() -> None:
    df = ohlcv(20)
    df.iloc[5, df.columns.get_loc("open")] = np.inf
    with pytest.raises(DataValidationError, match="column 'open' has 1 NaN/inf"):
        _prep(df)


def test_nan_volume_refused_by_default_and_zero_filled_by_policy() -> None:
    df = ohlcv(20)
    df.iloc[4, df.columns.get_loc("volume")] = np.nan
    with pytest.raises(
        DataValidationError,
        match=r"column 'volume' has 1 NaN values, first at row 4.*data.volume_nan=zero",
    ):
        _prep(df)
    bars = _prep(df, volume_nan="zero")
    assert bars.frame["volume"].iloc[4] == 0.0


def test_non_positive_price_named() -> None:
    df = ohlcv(20)
    df.iloc[9, df.columns.get_loc("low")] = 0.0
    with pytest.raises(
        DataValidationError,
        match=r"column 'low' has 1 non-positive values, first at row 9 \(2024-01-01T02:15:00Z\): 0\.0",
    ):
        _prep(df)


def test_high_below_close_named_with_values() -> None:
    df = ohlcv(20)
    o, c = df["open"].iloc[2], df["close"].iloc[2]
    df.iloc[2, df.columns.get_loc("high")] = (o + c) / 2  # below max(o, c), above low
    with pytest.raises(
        DataValidationError,
        match=r"1 bars have high < max\(open, close\), first at row 2 \(2024-01-01T00:30:00Z\): open=",
    ):
        _prep(df)


def test_low_above_open_named() -> None:
    df = ohlcv(20)
    df.iloc[6, df.columns.get_loc("low")] = (
        max(df["open"].iloc[6], df["close"].iloc[6]) * 0.9999
        + min(df["open"].iloc[6], df["close"].iloc[6]) * 0.0001
    )
    with pytest.raises(DataValidationError, match=r"low > min\(open, close\), first at row 6"):
        _prep(df)


def test_negative_volume_named() -> None:
    df = ohlcv(20)
    df.iloc[11, df.columns.get_loc("volume")] = -1
    with pytest.raises(
        DataValidationError, match=r"column 'volume' has negative values, first at row 11"
    ):
        _prep(df)


def test_exact_duplicates_dropped_with_warning(caplog) -> None:
    df = ohlcv(20)
    dup = pd.concat([df.iloc[:12], df.iloc[8:]])  # overlapping download
    with caplog.at_level("WARNING"):
        bars = _prep(dup)
    assert bars.report["duplicates_dropped"] == 4
    pd.testing.assert_frame_equal(bars.frame, _prep(df).frame)
    assert "dropped 4 exact duplicate rows" in caplog.text


def test_conflicting_duplicates_refused() -> None:
    df = ohlcv(20)
    row = df.iloc[[5]].copy()
    row["close"] = row["close"] * 1.0001
    row["high"] = row["high"] * 1.01
    with pytest.raises(
        DataValidationError,
        match=r"duplicate timestamp 2024-01-01T01:15:00Z with conflicting values in columns \['high', 'close'\]",
    ):
        _prep(pd.concat([df.iloc[:6], row, df.iloc[6:]]))


def test_unsorted_refused_with_rows() -> None:
    df = ohlcv(20)
    df = pd.concat([df.iloc[:5], df.iloc[[6, 5]], df.iloc[7:]])
    with pytest.raises(
        DataValidationError,
        match=r"not sorted: row 6 \(2024-01-01T01:15:00Z\) comes after row 5 \(2024-01-01T01:30:00Z\)",
    ):
        _prep(df)


def test_mixed_timeframe_refused() -> None:
    a = ohlcv(30, freq="15min")
    b = ohlcv(10, start=str(a.index[-1] + pd.Timedelta("20min")), freq="5min", seed=1)
    b["open"] = b["open"] * a["close"].iloc[-1] / 100
    b[["high", "low", "close"]] = b[["high", "low", "close"]] * a["close"].iloc[-1] / 100
    with pytest.raises(
        DataValidationError,
        match=r"irregular or mixed timeframe: bars are mostly 15m apart but row 30",
    ):
        _prep(pd.concat([a, b]))


def test_coarser_data_than_timeframe_refused() -> None:
    with pytest.raises(
        DataValidationError, match="data is 1h bars but timeframe 15m was asked for"
    ):
        _prep(ohlcv(30, freq="1h"))


def test_bad_timestamp_text_named() -> None:
    df = ohlcv(10).reset_index()
    df["timestamp"] = df["timestamp"].astype(str)
    df.loc[4, "timestamp"] = "yesterday-ish"
    with pytest.raises(
        DataValidationError, match=r"row 4 value 'yesterday-ish' is not a timestamp"
    ):
        _prep(df)


def test_no_timestamp_anywhere_refused() -> None:
    df = ohlcv(10).reset_index(drop=True)
    with pytest.raises(DataValidationError, match="no timestamp found"):
        _prep(df)


def test_bad_timeframe_string() -> None:
    with pytest.raises(DataValidationError, match="timeframe='fifteen'"):
        _prep(ohlcv(10), timeframe="fifteen")


# ---- resampling ------------------------------------------------------------------------------


def test_resample_aggregates_ohlcv_correctly() -> None:
    m1 = ohlcv(60, freq="1min", start="2024-01-01 00:00")
    m1["vwap"] = (m1["high"] + m1["low"]) / 2
    bars = _prep(m1, timeframe="15m")
    assert bars.report["resampled_from"] == "1m"
    assert len(bars) == 4
    for k in range(4):
        chunk = m1.iloc[15 * k : 15 * (k + 1)]
        row = bars.frame.iloc[k]
        assert bars.index[k] == chunk.index[0]
        assert row["open"] == chunk["open"].iloc[0]
        assert row["high"] == chunk["high"].max()
        assert row["low"] == chunk["low"].min()
        assert row["close"] == chunk["close"].iloc[-1]
        assert row["volume"] == pytest.approx(chunk["volume"].sum())
        assert row["vwap"] == pytest.approx(
            (chunk["vwap"] * chunk["volume"]).sum() / chunk["volume"].sum()
        )


def test_resample_drops_incomplete_buckets_never_fills() -> None:
    m1 = ohlcv(60, freq="1min", start="2024-01-01 00:05")  # 00:05..01:04: first and last partial
    bars = _prep(m1, timeframe="15m")
    assert bars.report["partial_buckets_dropped"] == 2
    assert bars.index[0] == pd.Timestamp("2024-01-01 00:15", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2024-01-01 00:45", tz="UTC")
    out, dropped = resample_bars(m1, pd.Timedelta("1min"), pd.Timedelta("15min"), min_coverage=0.5)
    assert dropped == 1  # 10/15 minutes pass a 0.5 coverage, the 5-minute tail does not
    assert out.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")


# ---- gaps ------------------------------------------------------------------------------------


def test_gap_longer_than_max_gap_splits_segments_small_holes_tolerated() -> None:
    df = ohlcv(100)
    holed = df.drop(df.index[[10, 11]])  # 2 missing bars: tolerated at max_gap=2
    gapped = holed.drop(holed.index[50:55])  # 5 missing bars: a gap
    bars = _prep(gapped, max_gap=2)
    assert bars.report["gaps"] == 1
    assert bars.report["small_holes_tolerated"] == 1
    assert bars.segment[0] == 0 and bars.segment[-1] == 1
    assert (np.diff(bars.segment) >= 0).all()
    assert _prep(gapped, max_gap="2h").report["gaps"] == 0


def test_fx_weekend_closure_bridged_but_midweek_gap_not() -> None:
    idx = pd.date_range("2024-01-05 18:00", "2024-01-08 03:00", freq="15min", tz="UTC")
    closed = (idx >= "2024-01-05 21:00") & (idx < "2024-01-07 22:00")  # Fri 21:00 .. Sun 22:00
    idx = idx[~closed]
    seg, rep = find_segments(idx, pd.Timedelta("15min"), pd.Timedelta("30min"), "fx")
    assert rep["gaps"] == 0 and rep["closures_bridged"] == 1 and (seg == 0).all()
    seg, rep = find_segments(idx, pd.Timedelta("15min"), pd.Timedelta("30min"), "24x7")
    assert rep["gaps"] == 1
    mid = pd.date_range("2024-01-09 00:00", periods=40, freq="15min", tz="UTC")
    mid = mid.delete(slice(10, 20))  # Tuesday outage
    _, rep = find_segments(mid, pd.Timedelta("15min"), pd.Timedelta("30min"), "fx")
    assert rep["gaps"] == 1 and rep["closures_bridged"] == 0
