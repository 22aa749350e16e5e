"""Real files nobody here wrote: formats recognised without flags, timestamps never misread,
and a matrix of malformed inputs, each of which `phat train` refuses with exit code 2 and one
line naming the problem (no traceback), leaving nothing in MLflow. docs/data.md lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phat.data import prepare_bars, read_table
from phat.data.synthetic import random_walk
from phat.errors import DataValidationError

N = 1500  # 15 days of 15m bars: enough for `auto` to see weekends


def frame(n: int = N, seed: int = 3) -> pd.DataFrame:
    return random_walk(n, seed=seed)


def csv_text(df: pd.DataFrame) -> str:
    return df.reset_index().to_csv(index=False)


def w_csv(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / "bars.csv"
        p.write_text(csv_text(edit(frame())))
        return p

    return make


def w_text(text: str, name: str = "bars.csv") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_text(text)
        return p

    return make


def w_bytes(data: bytes, name: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data)
        return p

    return make


def setv(row: int, col: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy().astype({col: object}) if isinstance(value, str) else df.copy()
        df.iloc[row, df.columns.get_loc(col)] = value
        return df

    return edit


def _dayfirst_text(d: Path) -> Path:
    df = frame().reset_index()
    df["timestamp"] = df["timestamp"].dt.strftime("%d.%m.%Y %H:%M:%S.000")
    p = d / "eurusd.csv"
    df.to_csv(p, index=False)
    return p


def _dir(d: Path) -> Path:
    (d / "folder").mkdir()
    return d / "folder"


def _dir_named_csv(d: Path) -> Path:
    (d / "x.csv").mkdir()
    return d / "x.csv"


def _gap(d: Path) -> Path:
    df = frame(900)
    df = pd.concat([df.iloc[:450], df.iloc[750:]])  # 3 days missing mid-week
    p = d / "bars.csv"
    p.write_text(csv_text(df))
    return p


def _future(d: Path) -> Path:
    df = frame()
    df.index = df.index + (pd.Timestamp("2200-01-01", tz="UTC") - df.index[0])
    p = d / "bars.csv"
    p.write_text(csv_text(df))
    return p


def _hourly(d: Path) -> Path:
    p = d / "bars.csv"
    p.write_text(csv_text(random_walk(N, seed=4, timeframe="1h")))
    return p


def _parquet_bad_strings(d: Path) -> Path:
    df = frame().astype({"close": str})
    df.iloc[10, df.columns.get_loc("close")] = "1,234.5"
    p = d / "bars.parquet"
    df.to_parquet(p)
    return p


def _nan_timestamp(d: Path) -> Path:
    df = frame().reset_index()
    df["timestamp"] = df["timestamp"].astype(str)
    df.loc[5, "timestamp"] = None
    p = d / "bars.csv"
    df.to_csv(p, index=False)
    return p


HEADER = "timestamp,open,high,low,close,volume\n"

# name -> (make the input, text the one-line message must contain, extra overrides)
BAD: dict[str, tuple[Callable[[Path], Path], str, list[str]]] = {
    "header_only": (w_text(HEADER), "no rows", []),
    "one_row": (w_text(HEADER + "2025-01-01T00:00:00Z,1,1,1,1,1\n"), "at least 3 bars", []),
    "missing_column": (
        w_csv(lambda df: df.drop(columns=["volume"])),
        "missing required columns ['volume']",
        [],
    ),
    "text_in_price": (
        w_csv(setv(7, "close", "abc")),
        "column 'close' has 1 non-numeric values, first at row 7",
        [],
    ),
    "nan_price": (
        w_csv(setv(9, "open", np.nan)),
        "column 'open' has 1 NaN/inf values, first at row 9",
        [],
    ),
    "inf_price": (w_csv(setv(9, "high", np.inf)), "column 'high' has 1 NaN/inf values", []),
    "negative_price": (w_csv(setv(11, "low", -1.0)), "column 'low' has 1 non-positive values", []),
    "zero_price": (w_csv(setv(12, "close", 0.0)), "column 'close' has 1 non-positive values", []),
    "high_below_low": (
        w_csv(
            lambda df: df.assign(
                high=np.where(np.arange(len(df)) == 20, df["low"] * 0.9, df["high"])
            )
        ),
        "high < low",
        [],
    ),
    "close_above_high": (
        w_csv(
            lambda df: df.assign(
                close=np.where(np.arange(len(df)) == 30, df["high"] * 1.1, df["close"])
            )
        ),
        "high < max(open, close)",
        [],
    ),
    "conflicting_duplicates": (
        w_csv(
            lambda df: pd.concat(
                [
                    df.iloc[:50],
                    df.iloc[[49]].assign(volume=df["volume"].iloc[49] + 1.0),
                    df.iloc[50:],
                ]
            )
        ),
        "conflicting values",
        [],
    ),
    "unsorted": (
        w_csv(lambda df: df.iloc[np.r_[0:100, 101, 100, 102 : len(df)]]),
        "not sorted: row 101",
        [],
    ),
    "ambiguous_dayfirst": (_dayfirst_text, "read two ways", []),
    "long_unscheduled_gap": (_gap, "lost to 1 gaps", ["data.calendar=24x7"]),
    "negative_volume": (w_csv(setv(13, "volume", -5.0)), "column 'volume' has negative values", []),
    "all_zero_volume": (w_csv(lambda df: df.assign(volume=0.0)), "features=no_volume", []),
    "parquet_price_strings": (
        _parquet_bad_strings,
        "column 'close' has 1 non-numeric values, first at row 10",
        [],
    ),
    "missing_path": (lambda d: d / "nope.csv", "does not exist", []),
    "directory_as_path": (_dir, "holds no data file", []),  # a directory is a universe
    "far_future": (_future, "stamped in the future", []),
    "horizon_finer_than_bars": (_hourly, "data is 1h bars but timeframe 15m", []),
    "empty_file": (w_bytes(b"", "bars.csv"), "is empty (0 bytes)", []),
    "random_bytes_csv": (w_bytes(bytes(range(256)) * 8, "bars.csv"), "binary data", []),
    "random_bytes_parquet": (
        w_bytes(bytes(range(256)) * 8, "bars.parquet"),
        "not a readable parquet file",
        [],
    ),
    "directory_named_csv": (_dir_named_csv, "holds no data file", []),
    "missing_timestamp": (_nan_timestamp, "row 5", []),
    "unknown_calendar": (w_csv(lambda df: df), "data.calendar='XXXX'", ["data.calendar=XXXX"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_matrix(case: str, tmp_path: Path) -> None:
    make, needle, extra = BAD[case]
    path = make(tmp_path)
    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "phat",
            "train",
            f"data.path={path}",
            f"tracking.uri=sqlite:///{db}",
            f"out_dir={tmp_path / 'out'}",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    out = r.stdout + r.stderr
    errors = [x for x in out.splitlines() if "Error:" in x]
    assert r.returncode == 2, out
    assert "Traceback" not in out, out
    assert len(errors) == 1 and needle in errors[0], out
    # Nothing left behind in MLflow: the store was never even opened.
    assert not db.exists() and not (tmp_path / "mlruns").exists()


def test_matrix_is_at_least_24_cases_and_documented() -> None:
    assert len(BAD) >= 24
    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    missing = [c for c in BAD if f"`{c}`" not in doc]
    assert not missing, f"docs/data.md does not list {missing}"


# ---- files that can be read correctly are read, not refused ------------------------------


def _same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    np.testing.assert_array_equal(got.index.as_unit("ns").asi8, want.index.as_unit("ns").asi8)
    np.testing.assert_allclose(
        got[["open", "high", "low", "close", "volume"]],
        want[["open", "high", "low", "close", "volume"]],
        rtol=1e-12,
    )


def test_utf16_semicolon_and_identical_duplicates_are_read(tmp_path: Path, caplog) -> None:
    df = frame(300)
    p = tmp_path / "u16.csv"
    p.write_bytes(csv_text(df).encode("utf-16"))
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)
    p = tmp_path / "semi.csv"
    p.write_text(df.reset_index().to_csv(index=False, sep=";"))
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)
    dup = pd.concat([df.iloc[:10], df.iloc[[9]], df.iloc[10:]])
    with caplog.at_level("WARNING"):
        b = prepare_bars(dup, timeframe="15m")
    assert b.report["duplicates_dropped"] == 1 and "exact duplicate" in caplog.text
    _same_bars(b.frame, df)


def test_mixed_utc_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    df = frame(300).reset_index()
    stamps = df["timestamp"].dt.tz_convert("Europe/Berlin")  # +01:00, then +02:00 after March
    df["timestamp"] = [t.isoformat() for t in stamps]
    df.loc[::2, "timestamp"] = [t.isoformat() for t in stamps.dt.tz_convert("UTC")[::2]]
    p = tmp_path / "offsets.csv"
    df.to_csv(p, index=False)
    b = prepare_bars(read_table(p), timeframe="15m")
    _same_bars(b.frame, frame(300))


def test_parquet_numeric_strings_are_numbers(tmp_path: Path) -> None:
    df = frame(300)
    p = tmp_path / "s.parquet"
    df.astype({"close": str, "open": str}).to_parquet(p)
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)


# ---- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_exchange_kline_csv_without_header(tmp_path: Path, unit: str) -> None:
    df = frame(300)
    t = (df.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, unit)
    close_t = t + (pd.Timedelta("15min") // pd.Timedelta(1, unit)) - 1
    rows = np.column_stack(
        [
            t,
            df["open"],
            df["high"],
            df["low"],
            df["close"],
            df["volume"],
            close_t,
            df["volume"] * df["close"],
            np.full(len(df), 42),
            df["volume"] / 2,
            df["volume"] * df["close"] / 2,
            np.zeros(len(df)),
        ]
    )
    p = tmp_path / "BTCUSDT-15m-2025-01.csv"
    lines = [
        ",".join(
            format(float(v), ".17g") if i not in (0, 6, 8, 11) else str(int(v))
            for i, v in enumerate(r)
        )
        for r in rows
    ]
    p.write_text("\n".join(lines) + "\n")
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)


def test_freqtrade_json_and_feather(tmp_path: Path) -> None:
    df = frame(300)
    ms = (df.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    candles = [
        [int(t), o, h, low, c, v]
        for t, o, h, low, c, v in zip(
            ms, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True
        )
    ]
    p = tmp_path / "BTC_USDT-15m.json"
    p.write_text(json.dumps(candles))
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)
    p = tmp_path / "BTC_USDT-15m.feather"
    df.reset_index().rename(columns={"timestamp": "date"}).to_feather(p)
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)


def test_headerless_six_column_csv(tmp_path: Path) -> None:
    df = frame(300)
    p = tmp_path / "plain.csv"
    p.write_text(df.reset_index().to_csv(index=False, header=False))
    _same_bars(prepare_bars(read_table(p), timeframe="15m").frame, df)


# ---- timestamps --------------------------------------------------------------------------


def _dayfirst_frame(n: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = frame(n)
    df = base.reset_index()
    df["timestamp"] = df["timestamp"].dt.strftime("%d.%m.%Y %H:%M:%S.000")
    return base, df


def test_dayfirst_is_refused_when_ambiguous_and_right_when_settled() -> None:
    base, df = _dayfirst_frame(300)  # 2025-01-01 .. 2025-01-04: every day <= 12, ambiguous
    with pytest.raises(
        DataValidationError,
        match=r"read two ways.*2025-01-02 month-first or 2025-02-01 day-first|read two ways",
    ):
        prepare_bars(df, timeframe="15m")
    _same_bars(prepare_bars(df, timeframe="15m", dayfirst=True).frame, base)
    fmt = prepare_bars(df, timeframe="15m", timestamp_format="%d.%m.%Y %H:%M:%S.%f")
    _same_bars(fmt.frame, base)


def test_dayfirst_that_only_reads_one_way_is_read_that_way() -> None:
    base, df = _dayfirst_frame(2000)  # reaches 2025-01-13: only day-first parses every row
    big = df.iloc[1200:]  # starts on the 13th: unambiguous from the first row
    _same_bars(prepare_bars(big, timeframe="15m").frame, base.iloc[1200:])


def test_month_first_is_never_silently_swapped() -> None:
    base = frame(300)
    df = base.reset_index()
    df["timestamp"] = df["timestamp"].dt.strftime("%m/%d/%Y %H:%M")
    with pytest.raises(DataValidationError, match="read two ways"):
        prepare_bars(df, timeframe="15m")
    _same_bars(prepare_bars(df, timeframe="15m", dayfirst=False).frame, base)


def test_wrong_timestamp_format_names_the_row() -> None:
    _, df = _dayfirst_frame(50)
    with pytest.raises(
        DataValidationError, match=r"row 0 value .* not a timestamp in format '%Y-%m-%d'"
    ):
        prepare_bars(df, timeframe="15m", timestamp_format="%Y-%m-%d")
