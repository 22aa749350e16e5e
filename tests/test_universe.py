"""A universe of assets in one command (issue #23): reading many assets under one calendar and
timeframe, timestamp-shared splits, per-asset normalization and calibration, per-asset evidence
with a multiple-testing correction, one artifact that scores any listed asset (batch, stream,
pyfunc) and refuses the others, and bad input as one line with nothing in MLflow.

Every universe here is built by the test (synthetic, with a known Bayes-optimal p per asset)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import RELAXED, make_cfg
from phat.confdefaults import conf_defaults
from phat.data.synthetic import SyntheticConfig, generate_universe
from phat.errors import DataValidationError, HashMismatch

N_ASSETS = 4
PERIODS = 3000
PROXY = conf_defaults("signal/default", "proxy")  # the proxy as every verb reads it


@pytest.fixture(scope="module")
def markets():
    return generate_universe(SyntheticConfig(periods=PERIODS, seed=5), N_ASSETS)


def write_universe(folder: Path, markets, fmt: str = "csv", suffix: str = "-15m") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for sym, m in markets.items():
        frame = m.bars[["open", "high", "low", "close", "volume"]].rename_axis("timestamp")
        if fmt == "csv":
            frame.reset_index().to_csv(folder / f"{sym}{suffix}.csv", index=False)
        else:
            frame.reset_index().to_parquet(folder / f"{sym}{suffix}.parquet")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, markets):
    """One pooled logistic over the synthetic universe, with its artifact."""
    from phat.pipeline import fit_evaluate
    from phat.recipe.series import prepare

    out = tmp_path_factory.mktemp("uni")
    cfg = make_cfg(out, f"data.synthetic.assets={N_ASSETS}", f"data.synthetic.periods={PERIODS}",
                   "data.synthetic.seed=5")  # fmt: skip
    prep = prepare(cfg)
    return prep, fit_evaluate(prep, out)


# -- reading ---------------------------------------------------------------------------------


def test_a_directory_a_glob_a_list_and_a_long_file_read_the_same_universe(tmp_path, markets):
    from phat.data.load import load_bars

    folder = write_universe(tmp_path / "u", markets)
    files = sorted(str(p) for p in folder.iterdir())
    long = pd.concat(
        [m.bars[["open", "high", "low", "close", "volume"]].assign(symbol=s)
         for s, m in markets.items()]
    ).rename_axis("timestamp").reset_index()  # fmt: skip
    long.to_csv(tmp_path / "long.csv", index=False)
    hashes = set()
    for path in (str(folder), str(folder / "*.csv"), files, str(tmp_path / "long.csv")):
        cfg = make_cfg(tmp_path / "o")
        cfg["data"]["path"] = path
        bars, _ = load_bars(cfg, "15m")
        assert [a.symbol for a in bars.assets] == sorted(markets)  # "-15m" stripped
        hashes.add(bars.data_hash())
    assert len(hashes) == 1


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d.mkdir(), "holds no data file"),
        (lambda d: None, "matches no data file"),
        (
            lambda d: (d.mkdir(), (d / "A-15m.csv").write_text("x"), (d / "A.csv").write_text("y")),
            "two files for symbol 'A'",
        ),  # fmt: skip
    ],
)
def test_an_empty_directory_a_glob_matching_nothing_and_two_files_for_one_symbol(
    tmp_path, make, needle
):
    from phat.data.load import load_bars

    d = tmp_path / "u"
    make(d)
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(d) if d.exists() else str(tmp_path / "nothing*.csv")
    with pytest.raises(DataValidationError, match=needle):
        load_bars(cfg, "15m")


def test_a_file_whose_symbol_column_holds_one_symbol_is_one_asset_as_before(tmp_path, markets):
    from phat.data.bars import Bars
    from phat.data.load import load_bars

    m = markets["A00"].bars[["open", "high", "low", "close", "volume"]]
    m.assign(symbol="BTCUSDT").rename_axis("timestamp").reset_index().to_csv(
        tmp_path / "btc.csv", index=False
    )
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(tmp_path / "btc.csv")
    bars, _ = load_bars(cfg, "15m")
    # named as every verb names it without reading the file: data.symbol, else the stem
    assert type(bars) is Bars and bars.symbol == "btc" and len(bars) == PERIODS


def test_the_data_group_names_the_source_and_a_path_that_contradicts_it_is_refused(
    tmp_path, markets
):
    """data=file | universe | synthetic read what data.path alone reads (the same bits, the
    same name), and refuse by name a path that names the other kind, before reading it."""
    from phat.data.load import load_bars
    from phat.data.universe import dataset_name
    from phat.errors import ConfigError

    folder = write_universe(tmp_path / "u", markets)
    one = folder / "A00-15m.csv"
    long = tmp_path / "long.csv"
    pd.concat(
        [m.bars[["open", "high", "low", "close", "volume"]].assign(symbol=s)
         for s, m in markets.items()]
    ).rename_axis("timestamp").reset_index().to_csv(long, index=False)  # fmt: skip

    def read(*ov: str):
        cfg = make_cfg(tmp_path / "o", *ov)
        bars, _ = load_bars(cfg, "15m")
        return dataset_name(cfg.data), bars.data_hash(), [a.symbol for a in bars.members()]

    for path in (one, folder, long):
        kind = "file" if path == one else "universe"
        assert read(f"data={kind}", f"data.path={path}") == read(f"data.path={path}")
    assert read("data=synthetic") == read()
    refused = [
        (("data=file", f"data.path={folder}"), ConfigError, "names many: use data=universe"),
        (("data=file",), ConfigError, "give data.path=FILE"),
        (("data=file", f"data.path={long}"), DataValidationError, f"holds {N_ASSETS} symbols"),
        (("data=universe", f"data.path={one}"), DataValidationError, "holds one: use data=file"),
        (("data=universe",), ConfigError, "data.synthetic.assets=N"),
        (("data=synthetic", f"data.path={one}"), ConfigError, "drop data=synthetic"),
    ]
    for ov, error, needle in refused:
        with pytest.raises(error, match=needle):
            read(*ov)


def test_a_file_alone_and_as_a_member_has_one_name_and_an_earlier_model_keeps_its_name(
    tmp_path, markets
):
    """One naming rule: BTC_USDT-1h.csv alone is the symbol BTC_USDT, as in a folder of assets
    (it was BTC_USDT-1h alone). A model registered under the earlier name (phat-btc_usdt-1h-15m)
    is still the one these settings mean, until one exists under today's name."""
    import mlflow

    from phat.data.load import load_bars
    from phat.registry.client import model_name_for

    folder = tmp_path / "u"
    folder.mkdir()
    for sym in ("BTC_USDT", "ETH_USDT"):
        m = markets["A00" if sym == "BTC_USDT" else "A01"].bars
        m[["open", "high", "low", "close", "volume"]].rename_axis("timestamp").reset_index().to_csv(
            folder / f"{sym}-1h.csv", index=False
        )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = make_cfg(tmp_path / "o", f"data.path={folder / 'BTC_USDT-1h.csv'}", "horizon=15m",
                   f"tracking.uri={uri}")  # fmt: skip
    alone, _ = load_bars(cfg, "15m")
    many, _ = load_bars(make_cfg(tmp_path / "o", f"data.path={folder}"), "15m")
    assert alone.symbol == "BTC_USDT" == many.members()[0].symbol
    assert model_name_for(cfg) == "phat-btc_usdt-15m"
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("phat-btc_usdt-1h-15m")  # trained before the rule
    assert model_name_for(cfg) == "phat-btc_usdt-1h-15m"
    client.create_registered_model("phat-btc_usdt-15m")
    assert model_name_for(cfg) == "phat-btc_usdt-15m"


def test_a_data_source_contradiction_is_one_line_exit_2_before_any_run(tmp_path, markets):
    folder = write_universe(tmp_path / "u", markets)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = _phat(tmp_path, "train", "data=file", f"data.path={folder}", f"tracking.uri={uri}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "use data=universe" in lines[0] and "Traceback" not in r.stderr
    r = _phat(tmp_path, "train", "data=universe", f"data.path={folder}", "--help")
    assert r.returncode == 0 and re.search(r"\bdata +auto, file, synthetic, universe\n", r.stdout)


def test_a_symbol_column_with_nulls_is_refused_by_row(tmp_path, markets):
    from phat.data.load import load_bars

    m = next(iter(markets.values()))
    long = m.bars[["open", "high", "low", "close", "volume"]].assign(symbol="A")
    long.iloc[7, -1] = None
    long.rename_axis("timestamp").reset_index().to_csv(tmp_path / "long.csv", index=False)
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(tmp_path / "long.csv")
    with pytest.raises(DataValidationError, match="empty at 1 rows, first at row 7"):
        load_bars(cfg, "15m")


def test_mixed_timeframes_are_refused_by_name_or_skipped_and_named(tmp_path, markets):
    from phat.data.load import load_bars

    folder = write_universe(tmp_path / "u", markets)
    coarse = markets["A01"].bars.iloc[::2]  # 30-minute bars among 15-minute ones
    (folder / "A01-15m.csv").unlink()
    coarse.rename_axis("timestamp").reset_index().to_csv(folder / "A01.csv", index=False)
    cfg = make_cfg(tmp_path / "o", "horizon=30m")
    cfg["data"]["path"] = str(folder)
    with pytest.raises(DataValidationError, match=r"A01.csv: 30m bars, but the universe's are 15m"):
        load_bars(cfg, "30m")
    cfg["data"]["on_bad_asset"] = "skip"
    bars, _ = load_bars(cfg, "30m")
    assert "A01" not in [a.symbol for a in bars.assets]
    assert "30m bars" in bars.report["skipped"]["A01"]


def test_a_bad_asset_fails_the_run_or_is_left_out_and_named(tmp_path, markets):
    from phat.data.load import load_bars

    folder = write_universe(tmp_path / "u", markets)
    bad = markets["A02"].bars.copy()
    bad.iloc[100, bad.columns.get_loc("high")] = bad["low"].iloc[100] * 0.5  # high below low
    bad.rename_axis("timestamp").reset_index().to_csv(folder / "A02-15m.csv", index=False)
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(folder)
    with pytest.raises(DataValidationError, match=r"A02-15m.csv: .*data.on_bad_asset=skip"):
        load_bars(cfg, "15m")
    cfg["data"]["on_bad_asset"] = "skip"  # the remedy the message names works
    bars, _ = load_bars(cfg, "15m")
    assert [a.symbol for a in bars.assets] == ["A00", "A01", "A03"]
    assert "A02-15m.csv" in bars.report["skipped"]["A02"]


# -- splits and features ---------------------------------------------------------------------


def test_no_asset_trains_on_bars_another_asset_is_tested_on(tmp_path, markets):
    """Split boundaries are timestamps shared by the universe: every train sample's label ends
    before any calibration or test sample's window starts, across assets, also when the
    assets start at different times."""
    from phat.recipe.series import prepare

    folder = write_universe(tmp_path / "u", markets)
    late = markets["A03"].bars.iloc[900:]  # starts later than the others
    late.rename_axis("timestamp").reset_index().to_csv(folder / "A03-15m.csv", index=False)
    cfg = make_cfg(tmp_path / "o", "model=tree", "model.params.max_iter=5")
    cfg["data"]["path"] = str(folder)
    prep = prepare(cfg)
    tf = pd.Timedelta("15min")
    idx = prep.bars.index
    h, read = prep.label_spec.horizon_bars, prep.feature_spec.bars_read
    order = ["train", "validation", "calibration", "test"]
    for i, early in enumerate(order):
        for later in order[i + 1 :]:
            label_end = idx[prep.spans[early]].max() + h * tf
            window_start = idx[prep.spans[later]].min() - (read - 1) * tf
            assert label_end < window_start, (early, later)
    for span in order:  # time order within each span
        assert np.all(np.diff(idx[prep.spans[span]].asi8) >= 0)


def test_features_are_normalized_per_asset_on_its_own_train_rows(tmp_path, markets):
    """The same path at 10x the volatility gets the same normalized returns: a pooled z-score
    would shrink the quiet asset's returns to almost nothing."""
    from phat.recipe.series import prepare

    base = markets["A00"].bars[["open", "high", "low", "close", "volume"]]
    ref = float(np.log(base["close"].iloc[0]))
    loud = np.exp(ref + 10 * (np.log(base) - ref))  # every log price move x10 (order kept)
    loud["volume"] = base["volume"]
    folder = tmp_path / "u"
    folder.mkdir()
    base.rename_axis("timestamp").reset_index().to_csv(folder / "QUIET.csv", index=False)
    loud.rename_axis("timestamp").reset_index().to_csv(folder / "LOUD.csv", index=False)
    # classic: returns in price units (the default set divides them by each asset's own
    # volatility already, so the per-asset z-score would not be what makes them agree)
    cfg = make_cfg(tmp_path / "o", "features=classic")
    cfg["data"]["path"] = str(folder)
    prep = prepare(cfg)
    col = prep.feature_spec.names.index("log_return_1")
    a, b = prep.bars.assets  # LOUD, QUIET
    x_loud = prep.data.features[a.start : a.stop, col]
    x_quiet = prep.data.features[b.start : b.stop, col]
    assert np.allclose(x_loud, x_quiet, atol=1e-4, equal_nan=True)
    specs = prep.asset_specs
    assert specs["LOUD"].norm_std[col] / specs["QUIET"].norm_std[col] == pytest.approx(10, rel=1e-3)


# -- the pooled model against the optimum ----------------------------------------------------


def test_the_pooled_model_is_within_2_percent_of_bayes_and_its_evidence_is_logged(trained):
    prep, res = trained
    m = res.metrics
    assert m["asset_mean_brier_over_bayes"] < 1.02
    table = res.asset_evidence["table"]
    assert list(table["symbol"]) == [f"A{k:02d}" for k in range(N_ASSETS)]
    assert (table["n"] > 0).all()
    # the planted signal is real on every asset: the pooled tests see it
    assert m["universe_dm_pvalue_vs_climatology"] < 0.01
    assert m["assets_beat_climatology"] >= 2
    assert res.tags["phat.universe"] == "SYNTH4" and res.tags["phat.assets"] == str(N_ASSETS)


@pytest.mark.slow
def test_the_pooled_model_beats_per_asset_models_on_an_asset_with_short_history(tmp_path):
    """An asset with a short history: the pooled model, which learned the shared signal from
    every asset, forecasts it better than per-asset models (model.pooling=per_asset: the same
    recipe on each asset's samples alone), on the same test samples; the per-asset artifact
    scores each asset with its own member."""
    from phat.pipeline import fit_evaluate
    from phat.recipe.series import prepare
    from phat.registry.artifact import load_artifact

    big = generate_universe(SyntheticConfig(periods=6000, seed=9), 5)
    folder = write_universe(tmp_path / "u", big)
    short = big["A04"].bars.iloc[4200:]
    short.rename_axis("timestamp").reset_index().to_csv(folder / "A04-15m.csv", index=False)
    split = ["split.method=dates", "split.calibration_start=2025-02-22T00:00:00Z",
             "split.test_start=2025-02-26T00:00:00Z", "split.min_samples=50"]  # fmt: skip
    runs = {}
    for pooling in ("pooled", "per_asset"):
        cfg = make_cfg(tmp_path / pooling, *split, f"model.pooling={pooling}")
        cfg["data"]["path"] = str(folder)
        prep = prepare(cfg)
        runs[pooling] = (prep, fit_evaluate(prep, tmp_path / pooling))
    tables = {k: r.asset_evidence["table"].set_index("symbol") for k, (_, r) in runs.items()}
    assert tables["pooled"].loc["A04", "n"] == tables["per_asset"].loc["A04", "n"] > 400
    assert tables["pooled"].loc["A04", "brier"] < tables["per_asset"].loc["A04", "brier"]
    prep, res = runs["per_asset"]
    assert res.tags["phat.pooling"] == "per_asset"
    model = load_artifact(res.artifact_dir)
    assert model.model.kind == "per_asset" and sorted(model.model.members) == sorted(big)
    a = prep.bars.assets[4]
    view = model.for_asset(a.symbol)
    assert view.model is model.model.members["A04"]
    mine = prep.bars.asset_of_rows()[res.spans["test"]] == 4
    batch = view.predict_bars(a.bars.frame, a.bars.segment)["p_hat"].to_numpy()
    np.testing.assert_array_equal(
        batch[res.spans["test"][mine] - a.start], res.predictions["test"].p_hat[mine]
    )
    scorer = model.stream()
    f = a.bars.frame
    got = [scorer.update({**f.iloc[i].to_dict(), "timestamp": f.index[i]}, a.symbol)
           for i in range(len(f))]  # fmt: skip
    np.testing.assert_array_equal(np.array(got), batch)


# -- the artifact: any listed asset, in batch, stream and pyfunc; others refused ----------------


def test_a_listed_asset_scores_the_same_in_training_batch_and_stream(trained):
    from phat.registry.artifact import load_artifact

    prep, res = trained
    model = load_artifact(res.artifact_dir)
    assert model.assets == [f"A{k:02d}" for k in range(N_ASSETS)]
    asset = prep.bars.asset_of_rows()
    te = res.spans["test"]
    for k, a in enumerate(prep.bars.assets[:2]):
        batch = model.for_asset(a.symbol).predict_bars(a.bars.frame, a.bars.segment)["p_hat"]
        mine = asset[te] == k
        assert np.array_equal(
            batch.to_numpy()[te[mine] - a.start], res.predictions["test"].p_hat[mine]
        )
    frames = {a.symbol: a.bars.frame for a in prep.bars.assets[:2]}
    scorer = model.stream()
    got = {s: [] for s in frames}
    for i in range(len(prep.bars.assets[0].bars.frame)):
        step = {s: {**f.iloc[i].to_dict(), "timestamp": f.index[i]} for s, f in frames.items()}
        for s, p in scorer.update_many(step).items():
            got[s].append(p)
    for a in prep.bars.assets[:2]:
        want = model.for_asset(a.symbol).predict_bars(a.bars.frame, a.bars.segment)["p_hat"]
        np.testing.assert_array_equal(np.array(got[a.symbol]), want.to_numpy())


def test_an_unlisted_asset_is_refused_by_name_everywhere(trained):
    from phat.registry.artifact import load_artifact
    from phat.scoring.stream import StreamRefused

    prep, res = trained
    model = load_artifact(res.artifact_dir)
    frame = prep.bars.assets[0].bars.frame
    with pytest.raises(DataValidationError, match="asset 'ZZZ' is not in universe model 'SYNTH4'"):
        model.for_asset("ZZZ")
    with pytest.raises(StreamRefused, match="unknown_asset"):
        model.stream().update_many(
            {"ZZZ": {**frame.iloc[0].to_dict(), "timestamp": frame.index[0]}}
        )
    with pytest.raises(DataValidationError, match="universe model of 4 assets"):
        model.predict(frame)  # no symbol column: which asset?
    long = frame.assign(symbol="ZZZ")
    with pytest.raises(DataValidationError, match="'ZZZ' is not in universe model"):
        model.predict(long)


def test_a_long_table_is_scored_per_asset_with_a_symbol_column(trained):
    from phat.registry.artifact import load_artifact

    prep, res = trained
    model = load_artifact(res.artifact_dir)
    a, b = prep.bars.assets[:2]
    long = pd.concat([a.bars.frame.assign(symbol=a.symbol), b.bars.frame.assign(symbol=b.symbol)])
    out = model.predict(long)
    assert set(out["symbol"]) == {a.symbol, b.symbol}
    want = model.for_asset(b.symbol).predict_bars(b.bars.frame, b.bars.segment)["p_hat"]
    np.testing.assert_array_equal(
        out[out["symbol"] == b.symbol]["p_hat"].to_numpy(), want.to_numpy()
    )


def test_universe_json_is_inside_the_model_hash(trained, tmp_path):
    import shutil

    from phat.registry.artifact import load_artifact

    _, res = trained
    copy = tmp_path / "model"
    shutil.copytree(res.artifact_dir, copy)
    spec = json.loads((copy / "universe.json").read_text())
    spec["assets"]["A00"]["normalization"]["std"][0] *= 2
    (copy / "universe.json").write_text(json.dumps(spec))
    with pytest.raises(HashMismatch, match="model_hash mismatch"):
        load_artifact(copy)


def test_per_asset_calibration_is_shrunk_by_the_assets_calibration_size():
    from phat.models.calibration import Calibrator, fit_asset_correction

    rng = np.random.default_rng(3)
    n = 4000
    p = rng.uniform(0.3, 0.7, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * np.log(p / (1 - p))))).astype(float)  # slope 2
    many = fit_asset_correction(p, y, shrink_bars=2000)
    few = fit_asset_correction(p[:40], y[:40], shrink_bars=2000)
    assert many["weight"] == pytest.approx(4000 / 6000)
    assert 1.4 < many["slope"] < 1.9  # toward the true slope 2, by 2/3
    assert abs(few["slope"] - 1) < 0.1 and few["weight"] < 0.02  # keeps the pooled map
    cal = Calibrator("platt", {"a": -1.0, "b": 0.0}).with_asset_correction(many)
    z = np.array([-1.0, 0.0, 1.0])
    want = 1 / (1 + np.exp(-(many["slope"] * z + many["intercept"])))
    np.testing.assert_allclose(cal.predict(z), want, rtol=1e-12)


# -- tests across assets -----------------------------------------------------------------------


def test_spiegelhalter_rejects_at_its_level_when_calibrated_and_finds_miscalibration():
    from phat.evaluation.significance import spiegelhalter

    rng = np.random.default_rng(0)
    pvals = []
    for _ in range(300):
        p = rng.uniform(0.2, 0.8, 1000)
        pvals.append(spiegelhalter((rng.random(1000) < p).astype(float), p)["pvalue"])
    assert 0.02 < np.mean(np.array(pvals) < 0.05) < 0.09
    p = rng.uniform(0.2, 0.8, 3000)
    y = (rng.random(3000) < 0.5 + 1.6 * (p - 0.5)).astype(float)  # p is underconfident
    assert spiegelhalter(y, p)["pvalue"] < 0.001


def test_spiegelhalter_on_a_record_holds_its_level_when_each_fold_shares_a_shock():
    """A walk-forward record: 12 folds, each one fit. The forecast is calibrated (E[y | p] = p)
    but every fold's outcomes share a shock (the fold's realised rate moves together), so the
    rows of a fold are one piece of evidence, not 800. Newey-West over rows rejects far above
    the 5% level; the variance clustered by fold (with a t on G-1 degrees of freedom) holds it,
    and still finds a forecast that is miscalibrated in every fold."""
    from phat.evaluation.significance import spiegelhalter

    rng = np.random.default_rng(3)
    folds = np.repeat(np.arange(12), 800)
    rows, clustered = [], []
    for _ in range(300):
        p = np.repeat(rng.uniform(0.35, 0.65, 12), 800)  # one fit per fold: one p per fold
        shock = np.repeat(rng.normal(0.0, 0.03, 12), 800)  # shared within a fold, mean 0
        y = (rng.random(len(p)) < np.clip(p + shock, 0, 1)).astype(float)
        rows.append(spiegelhalter(y, p)["pvalue"] < 0.05)
        clustered.append(spiegelhalter(y, p, clusters=folds)["pvalue"] < 0.05)
    assert np.mean(rows) > 0.2  # the row-level test is fooled by the shared shocks
    assert np.mean(clustered) < 0.09, np.mean(clustered)
    p = np.repeat(rng.uniform(0.35, 0.65, 12), 800)
    y = (rng.random(len(p)) < 0.5 + 1.6 * (p - 0.5)).astype(float)  # underconfident everywhere
    assert spiegelhalter(y, p, clusters=folds)["pvalue"] < 0.01


def test_the_universe_test_counts_assets_that_move_together_once():
    """Ten copies of one asset's losses are one asset's evidence: the per-timestamp test gives
    the single asset's p-value, where a test on the pooled rows would claim far more."""
    from phat.evaluation.significance import diebold_mariano, universe_diebold_mariano

    rng = np.random.default_rng(1)
    n = 600
    lm = rng.uniform(0.2, 0.3, n)
    lb = lm + rng.normal(0.002, 0.02, n)
    one = diebold_mariano(lm, lb, 1)["pvalue"]
    clock = np.tile(np.arange(n), 10)
    uni = universe_diebold_mariano(np.tile(lm, 10), np.tile(lb, 10), clock, 1)["pvalue"]
    pooled = diebold_mariano(np.tile(lm, 10), np.tile(lb, 10), 1)["pvalue"]
    assert uni == pytest.approx(one, rel=1e-9)
    assert pooled < one / 10


def test_benjamini_hochberg_is_scipys_and_keeps_nan():
    from scipy.stats import false_discovery_control

    from phat.evaluation.significance import benjamini_hochberg

    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    out = benjamini_hochberg(p)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3, 4]], false_discovery_control(p[[0, 2, 3, 4]]))


# -- the command line --------------------------------------------------------------------------


def _phat(tmp_path: Path, *args: str):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "phat", *args], capture_output=True, text=True, cwd=tmp_path,
        env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_phat_train_on_a_directory_registers_one_model_with_the_per_asset_evidence(
    tmp_path, markets
):
    import mlflow

    folder = write_universe(tmp_path / "majors", markets, fmt="parquet")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = _phat(tmp_path, "train", f"data.path={folder}", f"tracking.uri={uri}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "registered    models:/phat-majors-15m/1" in r.stdout
    assert "beat climatology" in r.stdout and "universe DM" in r.stdout
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version("phat-majors-15m", "1")
    run = client.get_run(mv.run_id)
    assert run.data.tags["phat.universe"] == "majors"
    files = {f.path for f in client.list_artifacts(mv.run_id)}
    assert {"per_asset.csv", "per_asset.md"} <= files
    assert "plots/reliability_assets.png" in {
        f.path for f in client.list_artifacts(mv.run_id, "plots")
    }
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=mv.run_id, artifact_path="per_asset.csv", tracking_uri=uri))  # fmt: skip
    assert sorted(table["symbol"]) == sorted(markets)
    # the logged pyfunc (what REST serving runs) scores rows of many assets by their symbol
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/phat-majors-15m/1")
    rows = []
    for sym in ("A00", "A03"):
        f = markets[sym].bars[["open", "high", "low", "close", "volume"]].iloc[-200:]
        rows.append(f.assign(symbol=sym, timestamp=f.index.strftime("%Y-%m-%dT%H:%M:%SZ")))
    out = model.predict(pd.concat(rows).reset_index(drop=True))
    assert set(out["symbol"]) == {"A00", "A03"} and out["p_hat"].notna().sum() > 0
    # predict over the directory writes one row per bar with its symbol
    r = _phat(tmp_path, "predict", "model_uri=models:/phat-majors-15m/1", f"data.path={folder}",
              "out=p.parquet", f"tracking.uri={uri}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    p = pd.read_parquet(tmp_path / "p.parquet")
    assert sorted(p["symbol"].unique()) == sorted(markets) and len(p) == N_ASSETS * PERIODS
    # one listed asset's file: monitor and backtest score it with that asset's map
    one = str(folder / "A02-15m.parquet")
    name = ["registry.model_name=phat-majors-15m", f"tracking.uri={uri}"]
    r = _phat(tmp_path, "monitor", f"data.path={one}", "monitor.source=model_v1",
              "monitor.state=\"mon-{asset}-{version}.json\"", *name)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    state = json.loads((tmp_path / "mon-A02-1.json").read_text())
    assert state["model"]["asset"] == "A02"
    r = _phat(tmp_path, "backtest", f"data.path={one}", "signal_source=model_v1", *name)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _phat(tmp_path, "backtest", f"data.path={folder}", "signal_source=model_v1", *name)
    assert r.returncode == 0 and "on universe majors, 4 assets" in r.stdout, r.stderr[-2000:]


def test_a_bad_universe_is_one_line_exit_2_and_leaves_mlflow_empty(tmp_path, markets):
    import mlflow

    folder = write_universe(tmp_path / "u", markets)
    (folder / "A01.csv").write_text((folder / "A01-15m.csv").read_text())  # two files, one symbol
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = _phat(tmp_path, "train", f"data.path={folder}", f"tracking.uri={uri}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "two files for symbol 'A01'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(uri)
        assert client.search_registered_models() == []
        exps = client.search_experiments()
        assert all(not client.search_runs([e.experiment_id]) for e in exps)


def test_walk_forward_on_a_universe_stitches_one_row_per_timestamp_and_asset(tmp_path):
    """Folds cut on the shared timeline, one pooled fit per fold, a record with a symbol
    column, DM on per-timestamp means, and the per-asset table of the stitched record."""
    from phat.cli.config import compose, validate
    from phat.evaluation.significance import universe_diebold_mariano
    from phat.evidence.walkforward import run_folds, summarize

    ov = [f"out_dir={tmp_path}", "data.synthetic.assets=3", "data.synthetic.periods=5000",
          "walkforward.train=21d", "walkforward.calibration=7d", "walkforward.step=7d"]  # fmt: skip
    rec = run_folds(validate("walkforward", compose("walkforward", ov)))
    f = rec.frame
    assert sorted(f["symbol"].unique()) == ["A00", "A01", "A02"]
    assert not f.reset_index().duplicated(["timestamp", "symbol"]).any()
    for fold in rec.folds:  # every asset's rows of a fold lie in that fold's test window
        rows = f[f["fold"] == fold.number]
        assert rows.index.min() >= fold.test_start and rows.index.max() < fold.test_end
        assert rows["symbol"].nunique() == 3
    m = summarize(rec, 10, 50, 20, 0)
    y = f["label"].to_numpy()
    want = universe_diebold_mariano((f["p_hat"] - y) ** 2, (f["p_climatology"] - y) ** 2,
                                    f.index.asi8, rec.horizon_bars)["pvalue"]  # fmt: skip
    assert m["dm_pvalue_vs_climatology"] == pytest.approx(want)
    assert list(rec.per_asset["symbol"]) == ["A00", "A01", "A02"] and m["assets_scored"] == 3


# -- promotion on the universe's evidence -------------------------------------------------------

NO_SIGNAL = ("data.synthetic.planted_strength=0", "data.synthetic.trend_bias=0",
             "data.synthetic.revert_strength=0")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("signal", [True, False])
def test_a_universe_model_is_promoted_on_universe_evidence_or_refused_with_the_reason(
    tmp_path, signal
):
    """Planted signal: walk-forward evidence for the version, then the pooled model passes the
    universe gates (significant across the universe on per-timestamp means, no asset
    miscalibrated or worse than climatology after BH) and the walk-forward gates
    (promotion.evidence=walkforward on the universe record) and becomes production; no signal
    (single-split evidence): refused, a failing universe gate named, production unchanged. The
    gate report holds the per-asset table."""
    import mlflow
    from hydra import compose, initialize_config_dir

    from phat.cli import CONF_DIR
    from phat.cli.config import validate
    from phat.lifecycle.production import current_production
    from phat.lifecycle.promotion import PromotionRefused, promote
    from phat.lifecycle.training import run as train_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    data = ["data.synthetic.assets=4", "data.synthetic.periods=5000", "data.synthetic.seed=4",
            *(() if signal else NO_SIGNAL)]  # fmt: skip
    name = "phat-uni-15m"
    out = train_run(make_cfg(tmp_path / "t", *data, "metrics.bootstrap_n=10",
                             f"registry.model_name={name}", uri=uri))  # fmt: skip
    evidence = []
    if signal:  # the version's walk-forward record on the universe, then promotion on it
        from phat.cli.walkforward import run as walkforward_run

        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            wf = validate("walkforward", compose("walkforward", overrides=[
                f"tracking.uri={uri}", f"registry.model_name={name}", f"out_dir={tmp_path}/wf",
                f"walkforward.for_version={out['model_version']}", "walkforward.train=21d",
                "walkforward.calibration=7d", "walkforward.step=7d", "metrics.bootstrap_n=10",
                *data]))  # fmt: skip
        assert "symbol" in walkforward_run(wf)["record"].frame.columns
        evidence = ["promotion.evidence=walkforward", "promotion.max_mcb=0.01"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = validate("promote", compose("promote", overrides=[
            f"tracking.uri={uri}", f"registry.model_name={name}",
            f"version={out['model_version']}", *data, *RELAXED, *evidence]))  # fmt: skip
    client = mlflow.MlflowClient(uri)
    if signal:
        report = promote(cfg)
        assert report["passed"], [g for g in report["gates"] if not g["passed"]]
        names = {g["name"] for g in report["gates"]}
        assert {"wf_beats_climatology", "wf_beats_rule", "asset_calibration",
                "asset_not_worse"} <= names  # fmt: skip
        record = {g["name"]: g["read"] for g in report["gates"]}
        assert record["wf_beats_rule"].startswith("record ") and "folds" in record["wf_beats_rule"]
        assert record["asset_not_worse"] == record["wf_beats_rule"]  # per-asset safety: the record
        assert record["ece_max"].startswith("window ")
        assert [r["symbol"] for r in report["per_asset"]] == ["A00", "A01", "A02", "A03"]
        assert current_production(client, name) == str(out["model_version"])
        skill = {r["symbol"]: r for r in report["asset_skill"]}  # the decision's picture
        assert list(skill) == ["A00", "A01", "A02", "A03", "pooled"]
        assert all(r["low"] <= r["skill"] <= r["high"] for r in skill.values())
        arts = {a.path for a in client.list_artifacts(report["run_id"])}
        assert "asset_skill.png" in arts
    else:
        with pytest.raises(PromotionRefused, match="universe_beats_"):  # not across the universe
            promote(cfg)
        assert current_production(client, name) is None


# -- monitoring a universe model -----------------------------------------------------------------


@pytest.mark.slow
def test_walk_forward_promote_then_one_drifting_asset_falls_back_alone(tmp_path):
    """The universe flow end to end: train a universe model, walk-forward evidence for it,
    promote it on that evidence (universe gates), then its universe goes on with the planted
    signal flipped in A01 only: the monitor's per-asset e-process alarms on A01 and on no other
    asset; with on_alarm=fallback A01 alone resolves to the proxy (calibration_alarm) from the
    alarm on, the others keep the model; the state file resumes (a second run over the same
    bars changes nothing); one backtest over the universe shows it per asset."""
    import mlflow
    from hydra import compose, initialize_config_dir

    from phat.cli import CONF_DIR
    from phat.cli.config import validate
    from phat.cli.monitor import run as monitor_run
    from phat.lifecycle.training import run as train_run
    from phat.trading.signals import for_asset, p_hat_frame, resolve

    cfg0 = SyntheticConfig(periods=4000, seed=21)
    calm = generate_universe(cfg0, 4)
    flipped = generate_universe(SyntheticConfig(**{**cfg0.__dict__, "planted_flip_at": 3000}), 4)
    train_dir = write_universe(tmp_path / "train" / "u", calm)
    live = dict(calm)
    live["A01"] = flipped["A01"]  # the same bars up to 3000, the signal reversed from there
    live_dir = write_universe(tmp_path / "live" / "u", live)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    name = "phat-u-15m"
    out = train_run(make_cfg(tmp_path / "t", f"data.path={train_dir}", "metrics.bootstrap_n=10",
                             f"registry.model_name={name}", uri=uri))  # fmt: skip
    from phat.cli.walkforward import run as walkforward_run
    from phat.lifecycle.promotion import promote

    base = [f"tracking.uri={uri}", f"registry.model_name={name}", f"data.path={train_dir}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        walkforward_run(validate("walkforward", compose("walkforward", overrides=[
            *base, f"out_dir={tmp_path}/wf", f"walkforward.for_version={out['model_version']}",
            "walkforward.train=14d", "walkforward.calibration=7d", "walkforward.step=7d",
            "metrics.bootstrap_n=10"])))  # fmt: skip
        promoted = promote(validate("promote", compose("promote", overrides=[
            *base, f"version={out['model_version']}", *RELAXED,
            "promotion.evidence=walkforward", "promotion.max_mcb=0.01"])))  # fmt: skip
    assert promoted["promoted"]
    ov = [f"tracking.uri={uri}", f"registry.model_name={name}", f"data.path={live_dir}",
          "monitor.source=production", "monitor.on_alarm=fallback",
          f"monitor.state={tmp_path}/mon.json"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = validate("monitor", compose("monitor", overrides=ov))
    res = monitor_run(cfg)
    assert res["fired"] == ["A01"]
    assert [s for s, st in res["states"].items() if st.alarm] == ["A01"]
    runs = mlflow.MlflowClient(uri).list_artifacts(res["run_id"])
    assert {"monitor.png", "e_values.json"} <= {a.path for a in runs}
    again = monitor_run(cfg)  # resumed: nothing new, no new alarm
    assert again["fired"] == [] and again["universe_e_value"] == res["universe_e_value"]
    mlflow.set_tracking_uri(uri)
    bound = resolve(f"model_v{out['model_version']}", name, "15m", strict=True)
    alarm_at = pd.Timestamp(res["states"]["A01"].alarm["time"])
    for sym, frames in (("A01", live), ("A00", live)):
        sig = p_hat_frame(for_asset(bound, sym), frames[sym].bars, PROXY, strict=True)
        on_proxy = sig["fallback_reason"] == "calibration_alarm"
        if sym == "A01":
            assert on_proxy.any() and (sig.index[on_proxy] >= alarm_at).all()
        else:
            assert not on_proxy.any()
    # one backtest over the universe: A01 trades on the proxy after its alarm, the others not
    from phat.cli.backtest import run as backtest_run

    bt_ov = [f"tracking.uri={uri}", f"registry.model_name={name}", f"data.path={live_dir}",
             "signal_source=production", f"out_dir={tmp_path}/bt"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        bt = backtest_run(validate("backtest", compose("backtest", overrides=bt_ov)))
    assert set(bt["per_asset"]) == {"A00", "A01", "A02", "A03"}
    decisions = pd.read_parquet(tmp_path / "bt" / "decisions.parquet")
    alarmed = decisions[decisions["fallback_reason"] == "calibration_alarm"]
    assert len(alarmed) > 0 and set(alarmed["symbol"]) == {"A01"}
    assert (tmp_path / "bt" / "equity.png").exists()
    assert bt["metrics"]["assets"] == 4 and bt["metrics"]["isolation_compliance"] == 1.0
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):  # the alarm cleared
        monitor_run(validate("monitor", compose("monitor", overrides=[*ov, "monitor.clear=true"])))
    bound = resolve(f"model_v{out['model_version']}", name, "15m", strict=True)
    sig = p_hat_frame(for_asset(bound, "A01"), live["A01"].bars, PROXY, strict=True)
    assert not (sig["fallback_reason"] == "calibration_alarm").any()


def test_one_loud_asset_does_not_raise_the_universe_alarm_but_many_elevated_ones_do():
    """The universe's e-process is the mean of the assets' e-values, each stopped at its own
    alarm: one asset at 10^6 counts as its alarm level, not as 10^6."""
    from phat.evidence.monitor import universe_update

    alpha = 0.01
    last = {f"A{k}": 1.0 for k in range(10)}
    path, alarm = universe_update(last, [("t01", "A0", 150.0), ("t02", "A0", 1e6)], alpha, None)
    assert alarm is None and last["A0"] == 150.0 and path[-1][1] == pytest.approx(15.9)
    pts = [(f"t{3 + k:02d}", f"A{k}", 120.0) for k in range(1, 10)]  # times sort as ISO does
    path, alarm = universe_update(last, pts, alpha, None)
    assert alarm is not None and alarm["e_value"] >= 100 and alarm["time"] == "t11"


def test_an_excluded_asset_is_on_the_proxy_in_every_binding_and_says_why(trained):
    """A version promoted with promotion.exclude_assets=auto carries phat.excluded_assets:
    for_asset gives those assets the proxy with reason excluded_asset; the others the model."""
    from phat.registry.artifact import load_artifact
    from phat.trading.signals import Binding, ResolvedSignal, for_asset, p_hat_frame

    prep, res = trained
    model = load_artifact(res.artifact_dir)
    model.metadata = {**model.metadata, "phat.excluded_assets": "A01,A03"}
    bound = ResolvedSignal(Binding("model_v1", "phat-x", "1", model.model_hash), model)
    frames = {a.symbol: a.bars.frame for a in prep.bars.assets}
    out = p_hat_frame(for_asset(bound, "A01"), frames["A01"], PROXY, strict=True)
    assert (out["source"] == "proxy").all() and (out["fallback_reason"] == "excluded_asset").all()
    ok = p_hat_frame(for_asset(bound, "A00"), frames["A00"], PROXY, strict=True)
    assert (ok["source"] == "model").sum() > 0 and "excluded_asset" not in set(
        ok["fallback_reason"]
    )


def test_a_single_asset_model_refuses_a_table_of_many_symbols(tmp_path, markets):
    """Rows of several assets given to a one-asset model would read as one series (duplicate
    timestamps): refused by name, not scored."""
    from phat.pipeline import train
    from phat.registry.artifact import load_artifact

    res = train(make_cfg(tmp_path, "data.synthetic.periods=3000", "metrics.bootstrap_n=5"),
                tmp_path / "run")  # fmt: skip
    model = load_artifact(res.artifact_dir)
    rows = [markets[s].bars.iloc[-300:].assign(symbol=s) for s in ("A00", "A01")]
    with pytest.raises(DataValidationError, match="holds 2 symbols .* scores one asset"):
        model.predict(pd.concat(rows))
    assert model.predict(rows[0])["p_hat"].notna().any()  # one symbol: scored as before


# -- history in pieces (issue #37) -----------------------------------------------------------


def write_monthly_klines(folder: Path, bars: pd.DataFrame, symbol: str = "BTCUSDT") -> list[Path]:
    """One exchange kline zip per month, as exchanges publish them: a headerless 12-column
    CSV inside, open time in ms before 2025 and in us from 2025."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for period, rows in bars.groupby(bars.index.strftime("%Y-%m")):
        unit = 1000 if period >= "2025" else 1
        t = rows.index.asi8 // 10**6 * unit
        quote = rows["volume"] * rows["close"]
        k = pd.DataFrame({"t": t, "o": rows["open"], "h": rows["high"], "l": rows["low"],
                          "c": rows["close"], "v": rows["volume"], "ct": t + 15 * 60_000 * unit - 1,
                          "q": quote, "n": 100, "tb": rows["volume"] / 2, "tq": quote / 2, "i": 0})  # fmt: skip
        name = f"{symbol}-15m-{period}"
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as z:
            z.writestr(f"{name}.csv", k.to_csv(header=False, index=False))
        out.append(folder / f"{name}.zip")
    return out


def months_of_bars(months: int = 3, seed: int = 5) -> pd.DataFrame:
    from phat.data.synthetic import generate

    b = generate(SyntheticConfig(periods=months * 30 * 96, seed=seed)).bars
    b.index = pd.date_range("2024-11-01", periods=len(b), freq="15min", tz="UTC")
    return b[["open", "high", "low", "close", "volume"]]


def test_dated_pieces_of_one_symbol_are_one_series_equal_to_the_whole_file(tmp_path):
    """Monthly kline zips (ms then us timestamps) read through a glob, a directory or a list
    are one asset whose bars equal the same history in one CSV; overlapping months' repeated
    bars are dropped as exact duplicates, conflicting ones refused by timestamp."""
    from phat.data.load import load_bars
    from phat.data.universe import dataset_name, is_universe, symbol_of

    bars = months_of_bars()
    files = write_monthly_klines(tmp_path / "monthly", bars)
    assert [symbol_of(f) for f in files] == ["BTCUSDT"] * 3  # Nov, Dec, Jan
    whole = tmp_path / "BTCUSDT-15m.csv"
    bars.rename_axis("timestamp").reset_index().to_csv(whole, index=False)
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(whole)
    want, _ = load_bars(cfg, "15m")
    for path in (str(tmp_path / "monthly" / "*.zip"), str(tmp_path / "monthly"),
                 [str(f) for f in files]):  # fmt: skip
        cfg["data"]["path"] = path
        assert not is_universe(path) and dataset_name(cfg["data"]) == "BTCUSDT"
        got, _ = load_bars(cfg, "15m")
        assert not hasattr(got, "assets") and got.symbol == "BTCUSDT"
        pd.testing.assert_frame_equal(got.frame, want.frame, check_freq=False)
    # a month repeated in the next file's head: dropped as exact duplicates
    import zipfile

    with zipfile.ZipFile(files[1]) as z:
        second = z.read(z.namelist()[0]).decode()
    with zipfile.ZipFile(files[0]) as z:
        first = z.read(z.namelist()[0]).decode()
    overlap = "\n".join(first.strip().splitlines()[-10:]) + "\n"
    with zipfile.ZipFile(files[1], "w") as z:
        z.writestr("BTCUSDT-15m-2024-12.csv", overlap + second)
    cfg["data"]["path"] = str(tmp_path / "monthly")
    got, _ = load_bars(cfg, "15m")
    pd.testing.assert_frame_equal(got.frame, want.frame, check_freq=False)
    assert got.report["duplicates_dropped"] == 10
    bad = overlap.replace(",", ",9", 2)  # the first repeated bar now disagrees
    with zipfile.ZipFile(files[1], "w") as z:
        z.writestr("BTCUSDT-15m-2024-12.csv", bad + second)
    with pytest.raises(DataValidationError, match="duplicate timestamp .* conflicting values"):
        load_bars(cfg, "15m")


def test_archives_holding_one_csv_are_read_as_that_csv(tmp_path):
    import gzip
    import zipfile

    from phat.data.io import read_table

    text = months_of_bars(1).iloc[:500].rename_axis("timestamp").reset_index().to_csv(index=False)
    want = read_table(_w(tmp_path / "plain.csv", text.encode()))
    for name, data in (
        ("a.csv.gz", gzip.compress(text.encode())),
        ("b.gz", gzip.compress(text.encode())),
    ):
        pd.testing.assert_frame_equal(read_table(_w(tmp_path / name, data)), want)
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("inner.csv", text)
    pd.testing.assert_frame_equal(read_table(tmp_path / "c.zip"), want)
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("x.csv", text)
        z.writestr("y.csv", text)
    with pytest.raises(DataValidationError, match="zip archive of 2 files"):
        read_table(tmp_path / "two.zip")
    with pytest.raises(DataValidationError, match="not a readable zip"):
        read_table(_w(tmp_path / "broken.zip", b"PK not really"))


def _w(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_assets_that_share_too_little_time_are_refused_naming_their_spans(tmp_path):
    """Three symbols with back-to-back histories (and two same-named files that are not dated
    pieces) are refused in one line each, never a traceback."""
    from phat.data.universe import universe_groups
    from phat.recipe.series import prepare

    bars = months_of_bars(3)
    d = tmp_path / "u"
    d.mkdir()
    for i, sym in enumerate(["AAA", "BBB", "CCC"]):
        part = bars.iloc[i * 2880 : (i + 1) * 2880]
        part.rename_axis("timestamp").reset_index().to_csv(d / f"{sym}-15m.csv", index=False)
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(d)
    with pytest.raises(DataValidationError, match="share too little time to split: AAA 2024-11-01"):
        prepare(cfg)
    (d / "AAA.csv").write_text((d / "AAA-15m.csv").read_text())
    with pytest.raises(DataValidationError, match="two files for symbol 'AAA'"):
        universe_groups(d)


@pytest.mark.slow
def test_seven_monthly_kline_zips_train_as_one_series(tmp_path):
    """The issue's Done-when: seven monthly zips of one symbol, `phat train data.path='m/*.zip'`:
    one asset, registered as phat-btcusdt-15m, trained on every month's bars."""
    import mlflow

    bars = months_of_bars(7)
    write_monthly_klines(tmp_path / "m", bars)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = _phat(tmp_path, "train", f"data.path={tmp_path}/m/*.zip", f"tracking.uri={uri}",
              "metrics.bootstrap_n=5")  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # a fresh store: MLflow's "Registered model ... already exists" is not printed (phat made
    # the registered model itself a moment before)
    assert "already exists" not in r.stderr and "Created version" not in r.stderr, r.stderr
    client = mlflow.MlflowClient(uri)
    (mv,) = client.search_model_versions("name='phat-btcusdt-15m'")
    run = client.get_run(mv.run_id)
    window = json.loads(run.data.tags["phat.training_window"])  # every month, first to last
    assert window["train"][0] < "2024-11-03" and window["test"][1] >= "2025-05-29"
    assert "phat.universe" not in run.data.tags and run.data.tags["phat.symbol"] == "BTCUSDT"


def test_a_universe_names_the_file_it_dropped_rows_of_and_its_calendar_once(
    tmp_path, markets, caplog
):
    import logging

    from phat.data.load import load_bars

    folder = write_universe(tmp_path / "u", markets)
    f = folder / "A02-15m.csv"
    lines = f.read_text().splitlines(True)
    f.write_text("".join(lines[:50] + lines[49:50] + lines[50:]))  # one bar twice
    cfg = make_cfg(tmp_path / "o", "data.calendar=auto")
    cfg["data"]["path"] = str(folder)
    with caplog.at_level(logging.INFO):
        load_bars(cfg, "15m")
    said = [r.getMessage() for r in caplog.records]
    assert f"{f}: dropped 1 exact duplicate rows" in " ".join(said), said
    chose = [m for m in said if "data.calendar=auto chose" in m]
    assert len(chose) == 1 and f"for {N_ASSETS} assets" in chose[0], chose


def test_a_reason_quoted_in_a_summary_is_cut_at_a_word():
    from types import SimpleNamespace

    from phat.errors import shorten
    from phat.registry.tracking import _kind_line
    from phat.tagnames import Tag

    text = "data file 'x.csv': column 'close' has 3 non-positive values, first at 2024-03-01"
    cut = shorten(text, 40)
    assert len(cut) <= 40 and cut.endswith(" ...") and text.startswith(cut[: -len(" ...")])
    assert text.split()[len(cut.split()) - 2] == cut.split()[-2]  # whole words only
    kept = SimpleNamespace(model=SimpleNamespace(kind="logistic"),
                           tags={Tag.MODEL_KIND: "tree", Tag.SELECTED_RUNG: "climatology"})  # fmt: skip
    assert _kind_line(kept) == "tree (kept: climatology)"  # not the kept rung's class alone
    own = SimpleNamespace(model=SimpleNamespace(kind="tree"),
                          tags={Tag.MODEL_KIND: "tree", Tag.SELECTED_RUNG: "tree"})  # fmt: skip
    assert _kind_line(own) == "tree"


def test_skill_intervals_are_the_brier_skill_with_a_hac_interval():
    from phat.evaluation.metrics import brier
    from phat.evaluation.universe import skill_intervals

    rng = np.random.default_rng(0)
    n, syms = 4000, np.array(["A", "B"])
    symbols = syms[rng.integers(0, 2, n)]
    clock = np.arange(n) // 2
    p = np.clip(0.5 + 0.1 * rng.standard_normal(n), 0.05, 0.95)
    y = (rng.random(n) < p).astype(float)
    clim = np.full(n, 0.5)
    t = skill_intervals(symbols, y, p, clim, clock, 1).set_index("symbol")
    for s in ("A", "B"):
        m = symbols == s
        want = 1 - brier(y[m], p[m]) / brier(y[m], clim[m])
        assert t.loc[s, "skill"] == pytest.approx(want)
        assert t.loc[s, "low"] < want < t.loc[s, "high"] and t.loc[s, "n"] == m.sum()
    assert t.loc["pooled", "skill"] > 0 and t.loc["pooled", "low"] > 0  # a real signal


def test_files_whose_symbol_column_names_one_asset_are_its_pieces(tmp_path, markets):
    """part-1 and part-2 each hold half of A00's history with a symbol column saying A00: one
    asset A00 (beside A01, named by its file), equal to A00's whole history; a file whose
    symbol column holds two symbols in a folder of assets is refused by name."""
    from phat.data.load import load_bars

    d = tmp_path / "u"
    d.mkdir()
    frame = markets["A00"].bars[["open", "high", "low", "close", "volume"]].rename_axis("timestamp")
    half = len(frame) // 2
    for i, part in enumerate((frame.iloc[: half + 5], frame.iloc[half:])):  # 5 bars overlap
        part.reset_index().assign(symbol="A00").to_csv(d / f"part-{i + 1}.csv", index=False)
    write_universe(d, {"A01": markets["A01"]})
    cfg = make_cfg(tmp_path / "o")
    cfg["data"]["path"] = str(d)
    bars, _ = load_bars(cfg, "15m")
    assert [a.symbol for a in bars.assets] == ["A00", "A01"]
    a00 = bars.assets[0].bars
    whole = write_universe(tmp_path / "whole", {"A00": markets["A00"]})
    cfg["data"]["path"] = str(whole / "A00-15m.csv")
    want, _ = load_bars(cfg, "15m")
    # the same bars; a member also carries its universe's mean return (relative features)
    pd.testing.assert_frame_equal(
        a00.frame.drop(columns="universe_return"), want.frame, check_freq=False
    )
    frame.iloc[:100].reset_index().assign(symbol=["A02"] * 50 + ["A03"] * 50).to_csv(
        d / "mixed.csv", index=False
    )
    cfg["data"]["path"] = str(d)
    with pytest.raises(DataValidationError, match="mixed.csv' holds 2 symbols"):
        load_bars(cfg, "15m")
