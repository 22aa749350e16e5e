"""Walk-forward evidence: the CORP decomposition (checked against scikit-learn's isotonic
regression), the Diebold-Mariano test (checked against scipy's paired t-test where they must
agree), folds that only ever score later data, and the verb end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.isotonic import IsotonicRegression

from phat.evaluation.decomposition import corp_brier, pav
from phat.evaluation.significance import diebold_mariano, hac_variance

NO_SIGNAL = (
    "data.synthetic.planted_strength=0",
    "data.synthetic.trend_bias=0",
    "data.synthetic.revert_strength=0",
)


@pytest.mark.parametrize("n", [7, 500, 5000])
def test_pav_equals_sklearn_isotonic_and_corp_adds_up(n: int) -> None:
    rng = np.random.default_rng(n)
    p = np.round(rng.uniform(0, 1, n), 2)  # ties on purpose
    y = (rng.uniform(0, 1, n) < p**1.3).astype(float)
    np.testing.assert_allclose(pav(p, y), IsotonicRegression().fit(p, y).predict(p), atol=1e-12)
    d = corp_brier(y, p)
    assert abs(d["mcb"] - d["dsc"] + d["unc"] - d["brier"]) < 1e-12
    assert d["mcb"] >= -1e-15 and d["dsc"] >= -1e-15


def test_corp_constant_forecast_has_no_discrimination() -> None:
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=2000) < 0.4).astype(float)
    d = corp_brier(y, np.full(2000, 0.5))
    assert d["dsc"] == pytest.approx(0.0, abs=1e-15)
    assert d["mcb"] == pytest.approx((0.5 - y.mean()) ** 2, abs=1e-12)


def test_dm_without_lag_is_the_paired_t_test() -> None:
    """With lag 0 the HAC variance is the plain variance and the HLN factor makes the statistic
    exactly the one-sample t statistic of d: scipy must agree."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 300), rng.normal(0.1, 1, 300)
    dm = diebold_mariano(a, b, horizon_bars=1, lag=0)
    t = stats.ttest_1samp(a - b, 0.0, alternative="less")
    assert dm["stat"] == pytest.approx(t.statistic, rel=1e-12)
    assert dm["pvalue"] == pytest.approx(t.pvalue, rel=1e-10)


def test_hac_variance_by_hand() -> None:
    d = np.array([1.0, -1.0, 2.0, 0.0, -2.0])
    e = d - d.mean()
    g0 = (e @ e) / 5
    g1 = (e[1:] @ e[:-1]) / 5
    g2 = (e[2:] @ e[:-2]) / 5
    want = g0 + 2 * (2 / 3) * g1 + 2 * (1 / 3) * g2
    assert hac_variance(d, 2) == pytest.approx(want, rel=1e-12)


def _wf_cfg(tmp_path: Path, *overrides: str) -> dict:
    from phat.cli.config import compose, validate

    cfg = compose(
        "walkforward",
        [f"out_dir={tmp_path}/o", "metrics.bootstrap_n=20", f"tracking.uri=sqlite:///{tmp_path}/m.db",
         *overrides],
    )  # fmt: skip
    return validate("walkforward", cfg)


@pytest.mark.slow
def test_folds_score_only_later_data(tmp_path) -> None:
    """Changing every bar after fold 1's test window changes nothing in folds 0 and 1."""
    from phat.data.synthetic import SyntheticConfig, generate
    from phat.evidence.walkforward import run_folds

    bars = generate(SyntheticConfig(periods=16000, seed=4)).bars
    wf = ("walkforward.train=60d", "walkforward.calibration=20d", "walkforward.step=20d")
    bars.to_parquet(tmp_path / "a.parquet")
    a = run_folds(_wf_cfg(tmp_path, f"data.path={tmp_path}/a.parquet", *wf))
    cut = a.folds[1].test_end
    later = bars.copy()
    after = later.index >= cut
    later.loc[after, ["open", "high", "low", "close"]] *= 1.5
    later.loc[after, "volume"] *= 0.1
    later.to_parquet(tmp_path / "b.parquet")
    b = run_folds(_wf_cfg(tmp_path, f"data.path={tmp_path}/b.parquet", *wf))
    early_a = a.frame[a.frame["fold"] <= 1]
    early_b = b.frame[b.frame["fold"] <= 1]
    pd.testing.assert_frame_equal(early_a, early_b)
    for f in a.folds:  # windows in order; every scored bar inside its fold's test window
        assert f.train_start <= f.calibration_start < f.test_start < f.test_end
        rows = a.frame[a.frame["fold"] == f.number]
        assert rows.index.min() >= f.test_start and rows.index.max() < f.test_end
    assert a.frame.index.is_monotonic_increasing and not a.frame.index.duplicated().any()


@pytest.mark.slow
def test_walkforward_verb_on_the_planted_signal(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    res = subprocess.run(
        [str(Path(sys.executable).with_name("phat")), "walkforward", f"out_dir={tmp_path}/o",
         "metrics.bootstrap_n=50", f"tracking.uri=sqlite:///{tmp_path}/m.db",
         "walkforward.step=30d"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["dm_pvalue_vs_climatology"] < 0.01
    assert abs(m["oos_mcb"] - m["oos_dsc"] + m["oos_unc"] - m["oos_brier"]) < 1e-9
    assert m["oos_brier_ci_low"] <= m["oos_brier"] <= m["oos_brier_ci_high"]
    rec = pd.read_parquet(tmp_path / "o" / "oos_predictions.parquet")
    cols = {"fold", "label", "p_hat_raw", "p_hat", "p_climatology", "p_proxy", "p_last_sign",
            "p_last_return"}  # fmt: skip
    assert cols <= set(rec.columns) and len(rec) == int(m["oos_n"])
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("phat-walkforward")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    # a year of bars: 180d of training and 90d of calibration leave four monthly test windows
    assert len(parents) == 1 and len(kids) == int(m["folds"]) >= 4
    p = parents[0]
    for k in ("oos_brier", "oos_mcb", "oos_dsc", "oos_unc", "oos_brier_proxy",
              "dm_pvalue_vs_proxy", "dm_stat_vs_climatology", "oos_brier_last_return"):  # fmt: skip
        assert k in p.data.metrics, k
    arts = {a.path for a in client.list_artifacts(p.info.run_id)}
    assert {
        "oos_predictions.parquet",
        "reliability_oos.png",
        "rolling_scores.png",
        "folds.csv",
    } <= arts
    kid = kids[0]
    assert "calibration.method" in kid.data.params and "phat.fold.test_start" in kid.data.tags
    assert "brier" in kid.data.metrics
    assert "vs baseline" in res.stdout and res.stdout.count("  fold ") == int(m["folds"])


@pytest.mark.slow
def test_dm_on_no_signal_data_rarely_rejects(tmp_path) -> None:
    """A handful of seeds without any signal: the 5% test should reject about 1 in 20. (The
    size over 40+ seeds is measured by scripts/bench_dm_size.py.)"""
    from phat.evidence.walkforward import run_folds, summarize

    rejections = 0
    for seed in range(4):
        cfg = _wf_cfg(
            tmp_path, *NO_SIGNAL, f"data.synthetic.seed={100 + seed}",
            "data.synthetic.periods=12000", "walkforward.train=40d",
            "walkforward.calibration=15d", "walkforward.step=15d",
        )  # fmt: skip
        m = summarize(run_folds(cfg), 15, 96, 5, 0)
        rejections += m["dm_pvalue_vs_climatology"] < 0.05
    assert rejections <= 2


@pytest.mark.slow
def test_promotion_on_walkforward_evidence(tmp_path) -> None:
    """promotion.evidence=walkforward (the default): a version without a record gets one first,
    made as `phat walkforward walkforward.for_version=N` makes it (its recipe, this data), and
    with nothing live a candidate whose whole record beats climatology and the best one-feature
    rule significantly is promoted; a second candidate no better than production on the same
    bars is refused at wf_beats_production, naming its p-value; a record whose recipe does not
    match the version is refused; no gate compares with the proxy."""
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import bench_races as races

    phat_bin = str(Path(sys.executable).with_name("phat"))
    uri = f"sqlite:///{tmp_path}/m.db"
    data = ("data.synthetic.periods=20000",)
    wf = ("walkforward.train=60d", "walkforward.calibration=20d", "walkforward.step=20d")
    relaxed = [o for o in races.RELAXED if not o.startswith("promotion.evidence=")]

    def verb(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [phat_bin, *args, *data, f"tracking.uri={uri}"], cwd=tmp_path, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip

    for cal in ("platt", "temperature"):
        r = verb("train", f"calibration={cal}", "metrics.bootstrap_n=5")
        assert r.returncode == 0, r.stderr[-2000:]
    # A recipe that does not match the version is refused before any work.
    r = verb("walkforward", "walkforward.for_version=1", "calibration=isotonic", *wf)
    assert r.returncode == 2 and "walkforward.for_version" in r.stderr
    r = verb("promote", "version=1", *wf, *relaxed)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "has no walk-forward record; making it first" in r.stdout
    assert "evidence for   phat-synth-15m v1" in r.stdout
    assert "wf_beats_climatology" in r.stdout and "wf_beats_rule" in r.stdout
    assert "proxy" not in "".join(ln for ln in r.stdout.splitlines() if "| wf_" in ln)
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("phat-synth-15m", "production").version) == "1"
    exp = client.get_experiment_by_name("phat-walkforward").experiment_id
    assert (
        len(
            client.search_runs(
                [exp], filter_string="tags.`phat.walkforward.for` = 'phat-synth-15m/v1'"
            )
        )
        == 1
    )
    r = verb("promote", "version=2", *wf, *relaxed)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "wf_beats_production: dm_pvalue vs production v1" in r.stderr, r.stderr[-2000:]
    assert str(client.get_model_version_by_alias("phat-synth-15m", "production").version) == "1"


@pytest.mark.slow
def test_a_forecast_without_signal_is_refused_on_its_record(tmp_path) -> None:
    """No planted signal, defaults but for the short history's windows: the record made for
    the version does not beat climatology or the best rule, and the refusal names the gates
    and their p-values (exit 1, production unchanged)."""
    from mlflow.tracking import MlflowClient

    phat_bin = str(Path(sys.executable).with_name("phat"))
    uri = f"sqlite:///{tmp_path}/m.db"
    data = ("data.synthetic.periods=20000", "data.synthetic.planted_strength=0",
            "data.synthetic.trend_bias=0", "data.synthetic.revert_strength=0",
            f"tracking.uri={uri}")  # fmt: skip
    wf = ("walkforward.train=60d", "walkforward.calibration=20d", "walkforward.step=20d")
    r = subprocess.run([phat_bin, "train", *data, "metrics.bootstrap_n=5"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([phat_bin, "promote", "version=1", *data, *wf,
                        "promotion.min_history_days=20"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "wf_beats_climatology: dm_pvalue vs climatology" in line, line
    assert "wf_beats_rule: dm_pvalue vs the best one-feature rule" in line, line
    assert MlflowClient(uri).get_registered_model("phat-synth-15m").aliases == {}


@pytest.mark.parametrize("assets", [0, 3])
def test_a_fold_given_a_trainings_spans_predicts_its_test_p_hat_bit_for_bit(tmp_path, assets):
    """One fold function (recipe.fold.fit_fold): a walk-forward fold cut at a training's own
    boundaries predicts that training's test p_hat bit for bit, one asset and a universe (whose
    training ships per-asset calibration corrections: the fold scores them too)."""
    from conftest import make_cfg
    from phat.contract.splits import resolve_boundaries
    from phat.evidence.walkforward import Fold, _FoldInputs, fold_task
    from phat.pipeline import fit_evaluate
    from phat.recipe.series import prepare

    cfg = make_cfg(tmp_path / "t", "data.synthetic.periods=4000", "metrics.bootstrap_n=5",
                   f"data.synthetic.assets={assets}")  # fmt: skip
    prep = prepare(cfg)
    trained = fit_evaluate(prep, tmp_path / "t")
    ser, spans = prep.series, prep.spans
    assert ser is not None
    bars = ser.bars
    embargo = resolve_boundaries(ser.split_config, prep.label_spec.horizon_bars,
                                 prep.feature_spec.bars_read).embargo  # fmt: skip
    clock, _, slack = bars.timeline()
    if clock is None:
        line, b1, b2 = bars.index, spans["calibration"][0] - embargo, spans["test"][0] - embargo
    else:
        line = bars.grid
        b1 = clock[spans["calibration"][0]] - embargo - slack
        b2 = clock[spans["test"][0]] - embargo - slack
    fold = Fold(0, line[0], line[b1], line[b2], line[-1] + pd.Timedelta("15min"))
    symbols = np.array([a.symbol for a in bars.assets])[bars.asset_of_rows()] if assets else None
    out = fold_task(_FoldInputs(cfg, ser, symbols), fold)
    assert not isinstance(out, str), out
    frame, _ = out
    assert assets == 0 or trained.tags.get("phat.universe")  # a universe: per-asset maps ship
    np.testing.assert_array_equal(frame.index, trained.predictions["test"].timestamps)
    np.testing.assert_array_equal(frame["p_hat"].to_numpy(), trained.predictions["test"].p_hat)


def test_a_record_whose_per_asset_maps_differ_from_the_versions_is_refused_by_name():
    from phat.errors import ConfigError
    from phat.evidence.walkforward import Record, check_recipe

    recipe = {"phat.feature_version": "f", "phat.model_kind": "logistic", "calibration": "platt",
              "phat.asset_maps": "pooled", "phat.pooling": "pooled"}  # fmt: skip
    record = Record(pd.DataFrame(), [], 1, "U", "logistic", {}, recipe)
    version = {"phat.feature_version": "f", "phat.model_kind": "logistic", "phat.pooling": "pooled",
               "phat.calibration": json.dumps({"method": "platt"}),
               "phat.asset_maps": "per_asset shrink_bars=2000"}  # fmt: skip
    with pytest.raises(ConfigError, match="phat.asset_maps='per_asset shrink_bars=2000'"):
        check_recipe(record, version, "u v1")
    check_recipe(record, {**version, "phat.asset_maps": "pooled"}, "u v1")
    older = {k: v for k, v in version.items() if k != "phat.asset_maps"}  # before the tag
    check_recipe(record, older, "u v1")
    with pytest.raises(ConfigError, match="phat.pooling"):
        check_recipe(record, {**older, "phat.pooling": "per_asset"}, "u v1")
