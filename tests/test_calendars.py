"""Trading calendars in the data contract: scheduled closures are not gaps, `auto` says what it
chose, a model scores only data of its own calendar, and an FX model scores every in-session
bar with a full window identically from full and truncated history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_cfg
from phat.data import prepare_bars
from phat.data.calendars import Calendar, infer
from phat.data.synthetic import SyntheticConfig, generate
from phat.errors import CalendarMismatch, DataValidationError


def fx_week(bars: pd.DataFrame) -> pd.DataFrame:
    """Drop what the FX market does not trade: Friday 21:00 to Sunday 21:00 UTC."""
    wd, h = bars.index.day_of_week, bars.index.hour
    closed = ((wd == 4) & (h >= 21)) | (wd == 5) | ((wd == 6) & (h < 21))
    return bars[~np.asarray(closed)]


def xnys_daily(n: int, seed: int = 5) -> pd.DataFrame:
    """Daily bars on the NYSE's sessions (weekends and holidays closed), labelled by date."""
    import exchange_calendars as xc

    sessions = xc.get_calendar("XNYS", start="2012-01-01").sessions_in_range(
        "2012-01-03", "2024-12-31"
    )[:n]
    bars = generate(SyntheticConfig(periods=n, seed=seed, timeframe="1d", start="2012-01-03")).bars
    bars.index = pd.DatetimeIndex(sessions).tz_localize("UTC").rename("timestamp")
    return bars


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate(SyntheticConfig(periods=9000, seed=21, timeframe="1h")).bars


def test_auto_picks_24x7_for_crypto_fx_for_fx_and_an_exchange_for_stocks(hourly) -> None:
    b = prepare_bars(hourly, timeframe="1h", calendar="auto")
    assert b.calendar == "24x7" and "Saturday" in b.report["calendar_reason"]
    fx = prepare_bars(fx_week(hourly), timeframe="1h", calendar="auto")
    assert fx.calendar == "fx" and "Sunday-evening" in fx.report["calendar_reason"]
    assert fx.report["gaps"] == 0 and fx.report["closures_bridged"] >= 50
    st = prepare_bars(xnys_daily(600), timeframe="1d", calendar="auto")
    assert st.calendar == "XNYS" and "XNYS sessions" in st.report["calendar_reason"]
    assert st.report["gaps"] == 0  # weekends and holidays are closures


def test_stock_holiday_is_a_closure_but_a_missing_session_is_a_gap() -> None:
    bars = xnys_daily(300)
    b = prepare_bars(bars, timeframe="1d", calendar="XNYS", max_gap=0)
    assert b.report["gaps"] == 0 and b.report["closures_bridged"] > 40
    holey = bars.drop(bars.index[[100, 101, 102]])  # three trading days lost
    b = prepare_bars(holey, timeframe="1d", calendar="XNYS", max_gap=2)
    assert b.report["gaps"] == 1 and b.report["gap_list"][0]["missing_bars"] == 3
    # Under 24x7 every weekend would be a gap: the reason calendars exist.
    b = prepare_bars(bars, timeframe="1d", calendar="24x7", max_gap=1)
    assert b.report["gaps"] > 40


def test_intraday_exchange_bars_count_only_trading_minutes() -> None:
    cal = Calendar("XNYS")
    tf = pd.Timedelta("30min")
    # Friday 20:30 UTC (last half hour) -> Monday 14:30 UTC (open): nothing missing.
    fri = pd.DatetimeIndex([pd.Timestamp("2024-01-05 20:30", tz="UTC")])
    mon = pd.DatetimeIndex([pd.Timestamp("2024-01-08 14:30", tz="UTC")])
    assert cal.missing_slots(fri, mon, tf).tolist() == [0]
    # Friday 20:30 -> Monday 16:00: three half-hour bars of Monday missing.
    mon2 = pd.DatetimeIndex([pd.Timestamp("2024-01-08 16:00", tz="UTC")])
    assert cal.missing_slots(fri, mon2, tf).tolist() == [3]


def test_bars_inside_a_closure_are_refused_by_name(hourly) -> None:
    with pytest.raises(
        CalendarMismatch, match=r"inside scheduled closures of calendar fx.*Saturday"
    ):
        prepare_bars(hourly, timeframe="1h", calendar="fx")
    with pytest.raises(CalendarMismatch, match="not a trading day|closures of calendar XNYS"):
        prepare_bars(
            generate(SyntheticConfig(periods=60, timeframe="1d")).bars,
            timeframe="1d",
            calendar="XNYS",
        )


def test_auto_refuses_when_it_cannot_tell(hourly) -> None:
    with pytest.raises(DataValidationError, match="less than a week.*data.calendar=24x7"):
        prepare_bars(hourly.iloc[:100], timeframe="1h", calendar="auto")
    assert infer(hourly.index[:100], pd.Timedelta("1h")).calendar is None
    with pytest.raises(DataValidationError, match="data.calendar='nowhere'"):
        prepare_bars(hourly, timeframe="1h", calendar="nowhere")


@pytest.fixture(scope="module")
def fx_model(hourly, tmp_path_factory):
    """A logistic model trained on hourly FX-week bars, registered in a fresh store."""
    from phat.lifecycle.training import run

    d = tmp_path_factory.mktemp("fx")
    fx = fx_week(hourly)
    path = d / "eurusd.parquet"
    fx.to_parquet(path)
    uri = f"sqlite:///{d}/mlflow.db"
    out = run(
        make_cfg(
            d / "run",
            f"data.path={path}",
            "data.symbol=EURUSD",
            "horizon=1h",
            "metrics.bootstrap_n=5",
            "split.min_samples=100",
            uri=uri,
        )
    )
    import mlflow

    mlflow.set_tracking_uri(uri)
    return fx, path, uri, out


def test_fx_model_scores_every_in_session_bar_with_a_full_window(fx_model) -> None:
    import phat

    fx, _, _, out = fx_model
    model = phat.load(f"models:/{out['model_name']}/{out['model_version']}")
    assert model.data_spec["calendar"] == "fx" and out["model_name"] == "phat-eurusd-1h"
    p = model.predict(fx)["p_hat"].to_numpy()
    warm = model.feature_spec.bars_read - 1
    assert np.isfinite(p[warm:]).all(), "a weekend closure broke the windows"
    assert np.isnan(p[:warm]).all()


@pytest.mark.parametrize("cut", [0.3, 0.55, 0.8, 1.0])
def test_fx_parity_full_vs_truncated_history(fx_model, cut: float) -> None:
    import phat

    fx, _, _, out = fx_model
    model = phat.load(f"models:/{out['model_name']}/{out['model_version']}")
    full = model.predict(fx)["p_hat"]
    n = int(len(fx) * cut)
    start = max(0, n - 400)  # a truncated history that starts mid-week
    part = model.predict(fx.iloc[start:n])["p_hat"]
    ok = part.notna()
    assert ok.sum() > 200
    np.testing.assert_array_equal(part[ok].to_numpy(), full.loc[part.index[ok]].to_numpy())


def test_a_model_refuses_data_of_another_calendar(fx_model, hourly, tmp_path) -> None:
    import phat

    fx, _, _, out = fx_model
    model = phat.load(f"models:/{out['model_name']}/{out['model_version']}")
    with pytest.raises(CalendarMismatch, match="follows calendar 24x7.*trained under calendar fx"):
        model.predict(hourly)  # crypto (24x7) bars for an FX model
    with pytest.raises(CalendarMismatch, match="closures of calendar fx"):
        model.predict(hourly.iloc[100:150])  # too short to infer: the closure check catches it
    with pytest.raises(CalendarMismatch, match="trained under calendar fx"):
        model.predict(fx, calendar="24x7")
    # And the reverse: a 24x7 model given FX-week bars.
    from phat.registry.artifact import load_artifact

    crypto = load_artifact(_train_24x7(hourly, tmp_path))
    with pytest.raises(
        CalendarMismatch, match=r"data follows calendar fx.*trained under calendar 24x7"
    ):
        crypto.predict(fx)


def _train_24x7(hourly: pd.DataFrame, tmp_path: Path) -> Path:
    from phat.pipeline import train

    path = tmp_path / "btc.parquet"
    hourly.to_parquet(path)
    cfg = make_cfg(
        tmp_path / "o",
        f"data.path={path}",
        "horizon=1h",
        "metrics.bootstrap_n=5",
        "split.min_samples=100",
    )
    return train(cfg, tmp_path / "o").artifact_dir


def test_fx_backtest_is_scored_by_the_model_not_the_proxy(fx_model, tmp_path) -> None:
    from phat.cli.backtest import run as backtest
    from phat.cli.config import compose, validate

    _, path, uri, out = fx_model
    cfg = validate(
        "backtest",
        compose(
            "backtest",
            [
                f"out_dir={tmp_path}",
                f"tracking.uri={uri}",
                f"data.path={path}",
                "data.symbol=EURUSD",
                "horizon=1h",
                f"signal_source=model_v{out['model_version']}",
            ],
        ),
    )
    res = backtest(cfg)
    d = res["result"].decisions
    assert (d["signal_source"] != "proxy").all(), d["fallback_reason"].value_counts()
    assert res["metrics"]["fallback_bars"] == 0


def test_daily_stock_bars_train_with_horizon_1d(tmp_path) -> None:
    from phat.pipeline import train

    path = tmp_path / "goog.csv"
    xnys_daily(1400).to_csv(path)
    cfg = make_cfg(
        tmp_path / "o",
        f"data.path={path}",
        "horizon=1d",
        "metrics.bootstrap_n=5",
        "metrics.bootstrap_block=20",
        "split.min_samples=100",
    )
    res = train(cfg, tmp_path / "o")
    assert res.bars.calendar == "XNYS" and res.counts["gaps"] == 0
    assert res.label_spec.timeframe == "1d" and res.label_spec.horizon_bars == 1
    assert res.metrics["data_samples_dropped_gap"] == 0


def test_scoring_nothing_is_an_error(fx_model) -> None:
    import phat

    fx, _, _, out = fx_model
    model = phat.load(f"models:/{out['model_name']}/{out['model_version']}")
    short = fx.iloc[:50]
    p = model.predict(short)["p_hat"].to_numpy()
    assert np.isnan(p).all()
    with pytest.raises(DataValidationError, match=r"0 of 50 bars scored.*too short"):
        model.check_coverage(p, 0, 0.5, "predict")
