"""Signal sources (binding, fail closed), the backtest engine, and learning-book isolation."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from conftest import make_cfg
from phat.cli.backtest import run as backtest
from phat.cli.config import validate
from phat.errors import (
    ConfigError,
    ContractError,
    DataValidationError,
    FeatureVersionMismatch,
    HashMismatch,
    HorizonMismatch,
    MalformedArtifact,
    RegistryUnavailable,
)
from phat.lifecycle.training import run as train_run
from phat.trading.backtest import isolation_compliance, run_backtest
from phat.trading.policy import TRIGGERS, ReferencePolicy
from phat.trading.signals import Binding, classify_load_error, parse_source, proxy_p_hat

CONF = make_cfg.__globals__["CONF_DIR"]
PERIODS = "data.synthetic.periods=5000"


def bt_cfg(tmp_path, uri, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            "backtest",
            overrides=[
                f"out_dir={tmp_path}",
                f"tracking.uri={uri}",
                PERIODS,
                "registry.model_name=phat-bt",
                *overrides,
            ],
        )
    return validate("backtest", cfg)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("bt")
    uri = f"sqlite:///{d}/mlflow.db"
    out = train_run(
        make_cfg(
            d / "t1", PERIODS, "metrics.bootstrap_n=10", "registry.model_name=phat-bt", uri=uri
        )
    )
    mlflow.set_tracking_uri(uri)
    return uri, out


def test_parse_source_and_error_classes() -> None:
    assert parse_source("proxy") == ("proxy", None)
    assert parse_source("model_v3") == ("version", "3")
    assert parse_source("production") == ("alias", "production")
    with pytest.raises(ConfigError, match="signal_source='models:/x'"):
        parse_source("models:/x")
    # The reason comes from the class, whatever the message says (reworded on purpose here).
    assert classify_load_error(HashMismatch("the horizon mismatch is fine")) == "hash_mismatch"
    assert classify_load_error(HorizonMismatch("model_hash mismatch")) == "horizon_mismatch"
    assert classify_load_error(FeatureVersionMismatch("x")) == "feature_version_mismatch"
    assert classify_load_error(MalformedArtifact("model_hash mismatch")) == "malformed_artifact"
    assert classify_load_error(RegistryUnavailable("x")) == "registry_unavailable"
    assert classify_load_error(ContractError("model_hash mismatch")) == "model_unavailable"
    # a bug is a bug, whatever its message says: never a refusal's code (issue #27)
    assert classify_load_error(Exception("model_hash mismatch")) == "internal_error"
    assert classify_load_error(KeyError("model")) == "internal_error"


def test_proxy_formula_and_causality() -> None:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 400)))
    p = proxy_p_hat(close, k=1.5, momentum=8, zscore_window=32)
    assert np.isnan(p[: 8 + 32 - 1]).all() and np.isfinite(p[8 + 32 - 1 :]).all()
    t = 300
    mom = np.log(close[8:] / close[:-8])  # mom[i] is momentum at bar i+8
    win = mom[t - 8 - 31 : t - 8 + 1]
    z = (mom[t - 8] - win.mean()) / win.std()
    assert p[t] == pytest.approx(0.5 * (1 + np.tanh(1.5 * z)), abs=1e-12)
    changed = close.copy()
    changed[t + 1 :] *= 1.3
    assert (
        proxy_p_hat(changed, k=1.5, momentum=8, zscore_window=32)[: t + 1].tobytes()
        == p[: t + 1].tobytes()
    )


def test_model_run_binds_version_evaluates_test_span_and_logs_everything(store, tmp_path) -> None:
    uri, out = store
    res = backtest(bt_cfg(tmp_path, uri, f"signal_source=model_v{out['model_version']}"))
    run_ = MlflowClient(uri).get_run(res["run_id"])
    tags = run_.data.tags
    assert tags["phat.binding.model_version"] == str(out["model_version"])
    assert tags["phat.binding.model_hash"] == out["model_hash"]
    assert tags["phat.binding.fallback_signal_source"] == "proxy"
    assert tags["phat.binding.horizon_id"] == "15m"
    test_start = json.loads(
        MlflowClient(uri)
        .get_model_version("phat-bt", str(out["model_version"]))
        .tags["phat.training_window"]
    )["test"][0]
    d = res["result"].decisions
    assert d["timestamp"].iloc[0] == pd.Timestamp(test_start)  # never on bars it learned from
    for k in (
        "turnover",
        "trade_count",
        "churn",
        "cost_bps",
        "pnl_net",
        "max_drawdown",
        "sharpe",
        "exposure",
    ):
        for prefix in ("", "learning_", "profit_"):
            assert prefix + k in run_.data.metrics
    assert run_.data.metrics["isolation_compliance"] == 1.0
    # Every policy and cost setting is a param, with the bound version and the signal source.
    params = run_.data.params
    assert (
        params["model_version"] == str(out["model_version"]) and params["model_name"] == "phat-bt"
    )
    assert params["signal_source"] == f"model_v{out['model_version']}"
    cfg = bt_cfg(tmp_path, uri, f"signal_source=model_v{out['model_version']}")
    from phat.registry.tracking import flatten

    for key, value in flatten({"policy": cfg["policy"], "costs": cfg["costs"]}).items():
        assert value == "None" or params[key] == value, key
    arts = {a.path for a in MlflowClient(uri).list_artifacts(res["run_id"])}
    assert {"decisions.parquet", "trades.parquet", "equity.png"} <= arts
    cols = {
        "timestamp",
        "symbol",
        "trigger_state",
        "signal_source",
        "model_version",
        "model_hash",
        "p_hat_raw",
        "p_hat",
        "signal_strength",
        "fallback_reason",
        "target_weight_raw",
        "target_weight_final",
        "delta_weight",
        "learning_book",
        "experiment_id",
    }
    assert cols <= set(d.columns) and len(d) == res["metrics"]["bars"]
    trades = res["result"].trades
    model_trades = trades[trades["source"] == "model"]
    assert len(model_trades) > 0 and model_trades["learning_book"].all()
    assert (model_trades["experiment_id"] == f"phat-bt/v{out['model_version']}").all()
    assert (model_trades["experiment_variant"] == out["model_hash"][:12]).all()
    assert d["weight_learning"].abs().max() <= 0.25 + 1e-12  # learning cap
    assert (trades[trades["source"] == "proxy"]["learning_book"] == False).all()  # noqa: E712


def test_missing_version_completes_on_proxy_with_reason(store, tmp_path, caplog) -> None:
    uri, _ = store
    with caplog.at_level("WARNING"):
        res = backtest(bt_cfg(tmp_path, uri, "signal_source=model_v999"))
    d = res["result"].decisions
    assert (d["fallback_reason"] == "model_unavailable").all()
    assert (d["signal_source"] == "proxy").all() and not d["learning_book"].any()
    assert "FALLING BACK TO THE PROXY" in caplog.text
    assert res["metrics"]["fallback_bars"] == len(d)
    with pytest.raises(ContractError, match="model_unavailable"):
        backtest(bt_cfg(tmp_path, uri, "signal_source=model_v999", "signal.strict=true"))


def test_a_bug_in_the_binding_is_internal_error_never_model_unavailable(
    store, tmp_path, monkeypatch
) -> None:
    """An unexpected exception while binding (a programming error, injected) falls back only
    in non-strict mode, with its own reason and its first line on every decision; strict mode
    raises it as it is."""
    import phat.registry.client as client_mod

    uri, out = store

    def broken_load(*args, **kwargs):
        raise KeyError("phat.model_hash")  # what a bug looks like, not a refusal

    monkeypatch.setattr(client_mod, "load", broken_load)
    v = str(out["model_version"])
    res = backtest(bt_cfg(tmp_path / "a", uri, f"signal_source=model_v{v}"))
    d = res["result"].decisions
    assert (d["fallback_reason"] == "internal_error").all()
    assert (d["fallback_detail"] == "KeyError: 'phat.model_hash'").all()
    assert (d["signal_source"] == "proxy").all()
    with pytest.raises(KeyError, match="phat.model_hash"):
        backtest(bt_cfg(tmp_path / "b", uri, f"signal_source=model_v{v}", "signal.strict=true"))


def test_a_bug_in_logging_is_an_error_and_the_decisions_are_kept(
    store, tmp_path, monkeypatch, caplog
) -> None:
    """A failure inside the backtest's MLflow logging that is not the store being down (an
    injected TypeError) is raised (the command exits 1), after the decisions were written and
    their folder named; a store that is down stays a warning (test_races)."""
    uri, _ = store

    real = MlflowClient.log_batch

    def broken_log_batch(self, run_id, metrics=(), *a, **k):
        if metrics:
            raise TypeError("unsupported metric value")
        return real(self, run_id, metrics, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", broken_log_batch)
    with caplog.at_level("ERROR"), pytest.raises(TypeError, match="unsupported metric"):
        backtest(bt_cfg(tmp_path, uri, "signal_source=proxy"))
    assert (tmp_path / "decisions.parquet").exists() and (tmp_path / "trades.parquet").exists()
    assert f"decisions, trades and equity are in {tmp_path}" in caplog.text
    assert "NOTHING WAS LOGGED" not in caplog.text


def test_hash_and_horizon_mismatch_fall_back_with_their_reason(store, tmp_path) -> None:
    uri, out = store
    client = MlflowClient(uri)
    v = str(out["model_version"])
    client.set_model_version_tag("phat-bt", v, "phat.model_hash", "f" * 64)
    try:
        res = backtest(
            bt_cfg(tmp_path / "a", uri, f"signal_source=model_v{v}", "backtest.start=2025-02-01")
        )
        assert (res["result"].decisions["fallback_reason"] == "hash_mismatch").all()
    finally:
        client.set_model_version_tag("phat-bt", v, "phat.model_hash", out["model_hash"])
    res = backtest(
        bt_cfg(
            tmp_path / "b",
            uri,
            f"signal_source=model_v{v}",
            "horizon=4x15m",
            "backtest.start=2025-02-01",
        )
    )
    assert (res["result"].decisions["fallback_reason"] == "horizon_mismatch").all()


def test_production_alias_is_resolved_once_and_pinned(store, tmp_path) -> None:
    uri, out = store
    client = MlflowClient(uri)
    client.set_registered_model_alias("phat-bt", "production", str(out["model_version"]))
    res = backtest(bt_cfg(tmp_path, uri, "signal_source=production"))
    assert res["binding"].model_version == str(out["model_version"])
    assert res["binding"].signal_source == "production"
    proxy = backtest(bt_cfg(tmp_path / "p", uri, "signal_source=proxy"))
    # the proxy run uses the production model's evaluation window, so the two compare
    assert (
        proxy["result"].decisions["timestamp"].iloc[0]
        == res["result"].decisions["timestamp"].iloc[0]
    )


WARM = 10  # flat bars first: the policy holds nothing until vol_hat exists (8 returns)


def _frame(close: np.ndarray, freq: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    close = np.r_[np.full(WARM, close[0]), close]
    idx = pd.date_range("2024-01-01", periods=len(close), freq=freq, tz="UTC")
    frame = pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=idx
    )
    sig = pd.DataFrame(
        {"p_hat_raw": 1.0, "p_hat": 1.0, "source": "proxy", "fallback_reason": ""}, index=idx
    )
    return frame, sig


def test_accounting_on_a_hand_computed_case() -> None:
    close = np.array([100.0, 101.0, 100.0, 102.0, 102.0, 101.0])
    frame, sig = _frame(close, "15min")
    pol = ReferencePolicy(
        tau=0.0,
        alpha=1.0,
        w_min=0.0,
        epsilon_w=0.0,
        cooldown_bars=0,
        vol_target=1.0,
        profit_cap=0.5,
    )
    trig = np.full(len(frame), TRIGGERS.index("long_allowed"))
    res = run_backtest(
        frame,
        sig,
        trig,
        pol,
        Binding("proxy"),
        symbol="X",
        fee_bps=10.0,
        slippage_bps=0.0,
        timeframe=pd.Timedelta("15min"),
    )
    w = res.decisions["target_weight_final"].to_numpy()
    assert (w[: WARM - 2] == 0).all() and (w[WARM - 2 :] == 0.5).all()
    gross = 0.5 * (close[1:] / close[:-1] - 1).sum()  # flat warm-up bars earn nothing
    assert res.metrics["pnl_gross"] == pytest.approx(gross)
    assert res.metrics["pnl_net"] == pytest.approx(gross - 0.5 * 10e-4)  # one entry, 10 bps on 0.5
    assert res.metrics["trade_count"] == 1 and res.metrics["cost_bps"] == pytest.approx(5.0)
    assert res.metrics["churn"] == 0.0


def test_isolation_compliance_detects_untagged_trades() -> None:
    trades = pd.DataFrame(
        {
            "source": ["model", "model", "proxy"],
            "learning_book": [True, True, False],
            "experiment_id": ["m/v1", "", ""],
            "experiment_variant": ["abc", "abc", ""],
        }
    )
    assert isolation_compliance(trades) == 0.5
    assert isolation_compliance(trades.iloc[[2]]) == 1.0


def test_drawdown_is_positive_and_sign_safe() -> None:
    frame, sig = _frame(np.array([100.0, 90.0, 80.0, 85.0, 100.0]), "1h")
    pol = ReferencePolicy(
        tau=0.0, alpha=1.0, w_min=0.0, epsilon_w=0.0, cooldown_bars=0, vol_target=1.0
    )
    res = run_backtest(
        frame,
        sig,
        np.full(len(frame), 1),
        pol,
        Binding("proxy"),
        symbol="X",
        fee_bps=0,
        slippage_bps=0,
        timeframe=pd.Timedelta("1h"),
    )
    assert res.metrics["max_drawdown"] == pytest.approx(0.1 + 1 / 9)
    assert res.metrics["max_drawdown"] > 0 and res.metrics["pnl_net"] > 0


def test_trigger_column_from_the_data_file(tmp_path) -> None:
    from phat.data.synthetic import SyntheticConfig, generate

    bars = generate(SyntheticConfig(periods=800, seed=2)).bars
    df = bars.reset_index()
    df["Trigger_State"] = np.where(np.arange(len(df)) < 400, "inactive", "short_allowed")
    df.loc[len(df) - 50 :, "Trigger_State"] = "exit_only"
    path = tmp_path / "bars.csv"
    df.to_csv(path, index=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = backtest(
        bt_cfg(
            tmp_path / "o",
            uri,
            "signal_source=proxy",
            f"data.path={path}",
            "policy.trigger.rule=column",
            "backtest.start=2025-01-01",
        )
    )
    d = res["result"].decisions
    assert (d["trigger_state"].iloc[:400] == "inactive").all()
    assert (d["target_weight_final"].iloc[:400] == 0).all()
    assert (d["target_weight_final"].iloc[400:] <= 0).all() and (d["target_weight_final"] < 0).any()
    tail = d["target_weight_final"].abs().iloc[-50:].to_numpy()
    assert (np.diff(tail) <= 0).all()


def test_bars_on_the_proxy_by_decision_are_not_a_failure_to_score(store, tmp_path) -> None:
    """After a calibration alarm (monitor.on_alarm=fallback records phat.alarm.time on the
    version), a backtest bound to the model whose window starts after the alarm succeeds: every
    bar is on the proxy by decision, reason calibration_alarm, none counted as unscored."""
    uri, out = store
    client = MlflowClient(uri)
    v = str(out["model_version"])
    client.set_model_version_tag("phat-bt", v, "phat.alarm.time", "2025-02-01T00:00:00+00:00")
    try:
        res = backtest(
            bt_cfg(tmp_path, uri, f"signal_source=model_v{v}", "backtest.start=2025-02-10")
        )
    finally:
        client.delete_model_version_tag("phat-bt", v, "phat.alarm.time")
    d = res["result"].decisions
    assert len(d) > 100 and (d["fallback_reason"] == "calibration_alarm").all()
    assert (d["signal_source"] == "proxy").all()


@pytest.mark.parametrize(
    ("reasons", "gaps", "cause"),
    [
        ("calendar_mismatch", 0, "outside the model's calendar"),
        ("inference_error", 0, "could not score them \\(fallback_reason inference_error"),
        ("internal_error", 0, "fallback_reason internal_error"),
        ("no_window", 3, "3 gaps split the data"),
        ("no_window", 0, "too short for the model's"),
    ],
)
def test_the_share_rule_names_the_cause_the_bars_record(store, reasons, gaps, cause) -> None:
    import phat

    uri, out = store
    model = phat.load(f"models:/phat-bt/{out['model_version']}")
    n = 400
    p = np.full(n, np.nan)
    p[-20:] = 0.5  # 20 of 273 eligible bars scored
    why = np.array([reasons] * (n - 20) + [""] * 20, dtype=object)
    with pytest.raises(DataValidationError, match=cause):
        model.check_coverage(p, gaps, 0.5, "backtest", reasons=why)
    alarmed = np.array(["calibration_alarm"] * (n - 20) + [""] * 20, dtype=object)
    line = model.check_coverage(p, gaps, 0.5, "backtest", reasons=alarmed)  # decided: fine
    assert "on the proxy by decision" in line


def test_scoring_verbs_read_a_file_the_same_way(store, tmp_path) -> None:
    """One reader of bars under a model's DataSpec: 5-minute bars given to a 15-minute model
    are refused by predict and by backtest alike (training resamples; scoring does not)."""
    from conftest import ohlcv
    from phat.cli.config import compose
    from phat.cli.predict import run as predict

    uri, out = store
    path = tmp_path / "five.parquet"
    ohlcv(3000, start="2025-02-01", freq="5min", seed=4).to_parquet(path)
    v = str(out["model_version"])
    with pytest.raises(DataValidationError) as bt:
        backtest(bt_cfg(tmp_path / "bt", uri, f"signal_source=model_v{v}", f"data.path={path}",
                        "data.symbol=SYNTH"))  # fmt: skip
    cfg = validate("predict", compose("predict", [f"model_uri=models:/phat-bt/{v}",
                   f"data.path={path}", f"tracking.uri={uri}", f"out={tmp_path}/p.parquet"]))  # fmt: skip
    with pytest.raises(DataValidationError) as pr:
        predict(cfg)
    assert "bars are 5m but this model takes 15m bars" in str(bt.value)
    assert str(bt.value) == str(pr.value)
