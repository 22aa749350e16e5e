"""label=relative on a universe (issue #38): its refusal on one asset, its baselines (the
relative climatology and last-return rule) in the training's ladder, and the market-neutral
reference book (policy=neutral) in a backtest: net exposure near zero, said beside the P&L."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import RELAXED, make_cfg
from phat.cli import CONF_DIR
from phat.cli.config import validate

ROOT = Path(__file__).resolve().parents[1]
UNIVERSE = ("data.synthetic.assets=4", "data.synthetic.periods=2500", "metrics.bootstrap_n=20")


def test_label_relative_on_one_asset_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "phat.train", "label=relative", "data.synthetic.periods=600", "data.calendar=24x7",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"out_dir={tmp_path}/out"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in r.stderr.strip().splitlines() if "Error" in ln]
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines == [lines[-1]] and "one asset has nothing to compare with" in lines[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no store, no run: refused before either


def test_a_relative_model_is_scored_against_the_relative_rules(tmp_path: Path) -> None:
    """The run's labels are relative (half the rows up at each timestamp, about), and its
    last-return baseline reads the asset's last return minus the universe's: it differs from
    the absolute rule fitted on the same rows."""
    from phat.data.universe import cross_section
    from phat.models.rules import score_rules
    from phat.pipeline import train

    cfg = make_cfg(tmp_path, *UNIVERSE, "label=relative")
    res = train(cfg, tmp_path / "run")
    assert (
        res.label_spec.kind == "relative"
        and '"kind":"relative"' in res.tags["phat.label_definition"]
    )
    y = res.predictions["test"].y
    assert 0.4 < y.mean() < 0.6 and "dm_pvalue_vs_last_return" in res.metrics
    clock = res.bars.timeline()[0]
    ends = res.predictions["train"].ends
    labels = np.full(len(res.bars), np.nan)
    for pr in res.predictions.values():
        labels[pr.ends] = pr.y
    # the rows of one timestamp: about half beat the others
    share, n = cross_section(labels, clock)
    assert np.nanmax(np.abs(share[n >= 4] - 0.5)) <= 0.5
    rel = score_rules(labels, res.bars, ends, res.spans["test"], 0.5, None, relative=True)
    ab = score_rules(labels, res.bars, ends, res.spans["test"], 0.5, None, relative=False)
    assert not np.allclose(rel["last_return"], ab["last_return"])
    assert "bayes" not in " ".join(res.metrics)  # the planted P(up) is no relative optimum


def _backtest(tmp_path: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    from phat.cli.backtest import run

    out = tmp_path / "bt"
    ov = [*UNIVERSE[:2], f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "signal_source=proxy",
          f"out_dir={out}", *overrides]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        res = run(validate("backtest", compose("backtest", overrides=ov)))
    return res, pd.read_parquet(out / "exposure.parquet")


def test_the_neutral_book_holds_net_exposure_near_zero(tmp_path: Path) -> None:
    neutral, held = _backtest(tmp_path / "n", "policy=neutral")
    reference, ref_held = _backtest(tmp_path / "r")
    m, r = neutral["metrics"], reference["metrics"]
    assert held["assets"].max() == 4 and len(held) == len(ref_held)
    # the same signal traded long-only-or-short by trend vs demeaned across the assets, the
    # book stepping as one (every asset has every bar here: net zero to rounding)
    assert m["gross_exposure_mean"] > 0.1 and m["net_exposure_max_abs"] < 1e-12
    assert r["net_exposure_mean_abs"] > 0.5 * r["gross_exposure_mean"]
    assert np.isclose(held["net"].abs().mean(), m["net_exposure_mean_abs"])


# -- relative inputs: the asset's moves minus the universe's, batch and stream alike -----------


def _long(bars) -> pd.DataFrame:
    """A universe's bars as one long table (what a user's feed writes), symbol column."""
    cols = ["open", "high", "low", "close", "volume"]
    return pd.concat([a.bars.frame[cols].assign(symbol=a.symbol) for a in bars.members()])


def test_the_universe_return_is_the_mean_of_the_assets_present_never_filled(tmp_path: Path):
    """Each row's universe return is the mean 1-bar return of the assets with a bar (and a
    previous one) at its timestamp: an asset missing there is left out, not carried forward;
    a timestamp with one asset present has none. Changing a later bar of any asset changes
    nothing before it (causal)."""
    from phat.data.load import load_bars

    cfg = make_cfg(tmp_path, "data.synthetic.assets=3", "data.synthetic.periods=300",
                   "data.calendar=24x7")  # fmt: skip
    bars, _ = load_bars(cfg, "15m")
    long = _long(bars)
    a1 = long["symbol"] == "A01"
    t_gap = long.index[a1][100]
    long = long[~(a1 & (long.index == t_gap))]  # A01 misses one bar
    path = tmp_path / "u.csv"
    long.rename_axis("timestamp").reset_index().to_csv(path, index=False)
    cfg["data"]["path"] = str(path)
    cfg["data"]["max_gap"] = 2
    held, _ = load_bars(cfg, "15m")
    frames = {a.symbol: a.bars.frame for a in held.members()}
    r1 = {s: np.log(f["close"]).diff() for s, f in frames.items()}
    for t in (held.index[50], t_gap):
        present = [r[t] for s, r in r1.items() if t in r.index and np.isfinite(r[t])]
        for f in frames.values():
            if t in f.index:
                assert f.loc[t, "universe_return"] == pytest.approx(np.mean(present), abs=1e-15)
    assert t_gap not in frames["A01"].index and len(present) == 2
    first = min(f.index[0] for f in frames.values())
    assert all(np.isnan(f.loc[first, "universe_return"]) for f in frames.values())
    # causal: a later bar of A02 changed, every earlier universe return the same bits
    later = long.copy()
    row = np.flatnonzero((later["symbol"] == "A02").to_numpy())[200]
    later.iloc[row, later.columns.get_loc("close")] *= 1.0001
    later.iloc[row, later.columns.get_loc("high")] *= 1.0001
    later.rename_axis("timestamp").reset_index().to_csv(path, index=False)
    moved, _ = load_bars(cfg, "15m")
    cut = later.index[row]
    for a, b in zip(held.members(), moved.members(), strict=True):
        before = a.bars.index < cut
        assert np.array_equal(
            a.bars.frame["universe_return"].to_numpy()[before],
            b.bars.frame["universe_return"].to_numpy()[before],
            equal_nan=True,
        )


@pytest.fixture(scope="module")
def relative_inputs(tmp_path_factory):
    from phat.pipeline import train
    from phat.registry.artifact import load_artifact

    tmp = tmp_path_factory.mktemp("relin")
    cfg = make_cfg(tmp, *UNIVERSE, "data.synthetic.periods=1500", "features=relative",
                   "label=relative")  # fmt: skip
    res = train(cfg, tmp / "run")
    return res, load_artifact(res.artifact_dir)


def test_relative_inputs_score_the_same_in_training_batch_and_stream(relative_inputs):
    """A model reading relative inputs: its training test p_hat is batch scoring's, and the
    stream fed every present asset's bar of each timestamp together equals batch scoring bit
    for bit, with one asset missing bars (left out of the mean there, in both)."""
    res, model = relative_inputs
    assert "rel_vol_return_16_48" in model.feature_spec.names
    preds = model.predict_members(res.bars)
    te = res.spans["test"]
    assert np.array_equal(preds["p_hat"].to_numpy()[te], res.predictions["test"].p_hat)
    long = _long(res.bars)
    drop = (long["symbol"] == "A02") & np.isin(np.arange(len(long)) % 1500, [700, 701, 900])
    long = long[~drop]
    want = model.predict(long)
    sc = model.stream()
    got: dict[str, list[float]] = {}
    for t, rows in long.groupby(level=0, sort=True):
        step = {r.symbol: {**r._asdict(), "timestamp": t} for r in rows.itertuples(index=False)}
        for s, p in sc.update_many(step).items():
            got.setdefault(s, []).append(p)
    for s, part in want.groupby("symbol"):
        w = part["p_hat"].to_numpy()
        assert np.isfinite(w).mean() > 0.8
        assert np.array_equal(np.array(got[s]), w, equal_nan=True), s


def test_relative_inputs_are_refused_alone_by_name(relative_inputs, tmp_path: Path):
    """One asset's bar alone, or bars of two timestamps, to a relative-input stream: refused
    by name (code `universe`), nothing changed; features=relative on one asset: one line,
    exit 2, no run."""
    from phat.scoring.stream import StreamRefused

    res, model = relative_inputs
    f = res.bars.members()[0].bars.frame
    bar = {**f.iloc[0].to_dict(), "timestamp": f.index[0]}
    sc = model.stream()
    with pytest.raises(StreamRefused, match="alone") as e:
        sc.update(bar, "A00")
    assert e.value.code == "universe" and sc.state()["assets"] == {}
    later = {**f.iloc[1].to_dict(), "timestamp": f.index[1]}
    with pytest.raises(StreamRefused, match="2 timestamps") as e:
        sc.update_many({"A00": bar, "A01": later})
    assert set(e.value.refusals) == {"A00", "A01"} and sc.state()["assets"] == {}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "phat.train", "features=relative", "data.synthetic.periods=600",
         "data.calendar=24x7",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"out_dir={tmp_path}/out"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "feature rel_return_1 compares the asset with its universe" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "rel_return_1" in ln]) == 1


def test_a_relative_label_matures_only_when_every_asset_has_its_bar():
    """The monitor feeds a relative label at t only once every asset has delivered its bar at
    t + h (the last bar all assets have): labelled against the few assets whose bars came
    first, the label is not the one the whole universe gives, and a fed point is final."""
    from phat.contract.labels import LabelSpec, make_labels
    from phat.evidence.monitor import matured

    rng = np.random.default_rng(3)
    idx = pd.date_range("2024-01-01", periods=40, freq="1h", tz="UTC")
    close = {s: 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40))) for s in "ABC"}
    spec = LabelSpec(
        kind="relative", horizon_bars=2, timeframe="1h", horizon_id="2x1h", min_assets=2
    )

    def labels(n_c: int) -> np.ndarray:  # C has delivered n_c bars, A and B all 40
        c = np.concatenate([close["A"], close["B"], close["C"][:n_c]])
        clock = np.concatenate([np.arange(40), np.arange(40), np.arange(n_c)])
        seg = np.repeat([0, 1, 2], [40, 40, n_c])
        return make_labels(c, seg, spec, clock)[:40]  # asset A's

    partial, whole = labels(30), labels(40)
    assert not np.array_equal(partial[28:38], whole[28:38], equal_nan=True)
    until = idx[29]  # C's last bar: the last one every asset has delivered
    fed = matured(idx, partial, 2, until)
    assert fed.any() and not fed[28:].any()  # t + 2 after C's last bar: not yet
    assert np.array_equal(partial[fed], whole[fed])  # what is fed is what the universe gives
    assert matured(idx, whole, 2).sum() > fed.sum()


def test_a_relative_labels_ladder_nests_the_relative_rule_when_the_inputs_have_it():
    """The ladder's last_return rung reads the last bar's return minus the universe's for a
    relative label (when the feature set has it), the own last return for any other label."""
    from phat.models.selection import return_column

    names = ["log_return_1", "vol_return_1_48", "rsi_14", "rel_return_1", "rel_vol_return_1_48"]
    assert return_column(names) == 0 and return_column(names, relative=True) == 3
    assert return_column(names[:3], relative=True) == 0  # no relative input: the own return
    assert return_column(["rel_vol_return_4_48", "rel_vol_return_1_48"], relative=True) == 1


@pytest.mark.slow
def test_a_relative_model_is_promoted_on_its_own_relative_record(tmp_path: Path, caplog) -> None:
    """`phat promote` of a relative-label model with relative inputs, on the walk-forward
    record of its recipe: the record's baselines are the relative ones (its last-return rule
    reads the asset's last return minus the universe's, so at a timestamp the rule never
    points every asset the same way), the gates read that record, and the trading gates trade
    the neutral book (said)."""
    import mlflow

    from phat.cli.walkforward import run as walkforward_run
    from phat.lifecycle.promotion import PromotionRefused, evaluate, promote
    from phat.lifecycle.training import run as train_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    data = ["data.synthetic.assets=4", "data.synthetic.periods=5000", "data.synthetic.seed=4"]
    recipe = [*data, "label=relative", "features=relative"]
    name = "phat-rel-15m"
    out = train_run(make_cfg(tmp_path / "t", *recipe, "metrics.bootstrap_n=10",
                             f"registry.model_name={name}", uri=uri))  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        wf = validate("walkforward", compose("walkforward", overrides=[
            f"tracking.uri={uri}", f"registry.model_name={name}", f"out_dir={tmp_path}/wf",
            f"walkforward.for_version={out['model_version']}", "walkforward.train=21d",
            "walkforward.calibration=7d", "walkforward.step=7d", "metrics.bootstrap_n=10",
            *recipe]))  # fmt: skip
    record = walkforward_run(wf)["record"]
    assert '"kind":"relative"' in str(record.recipe), record.recipe  # the version's recipe
    frame = record.frame
    rule = frame["p_last_return"].groupby(level=0).agg(["min", "max", "size"])
    split = (rule["min"] < 0.5) & (rule["max"] > 0.5)
    assert split[rule["size"] >= 3].mean() > 0.5  # relative: some assets up, some down
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = validate("promote", compose("promote", overrides=[
            f"tracking.uri={uri}", f"registry.model_name={name}",
            f"version={out['model_version']}", *data, *RELAXED,
            "promotion.evidence=walkforward", "promotion.max_mcb=0.01"]))  # fmt: skip
    report = evaluate(cfg, name, str(out["model_version"]))  # what promote decides on
    read = {g["name"]: g["read"] for g in report["gates"]}
    assert read["wf_beats_rule"].startswith("record ") and "folds" in read["wf_beats_rule"]
    assert read["wf_beats_climatology"].startswith("record ")
    if not report["passed"]:  # then promote refuses, naming a gate, production unchanged
        with pytest.raises(PromotionRefused, match="gate"):
            promote(cfg)
        assert "production" not in mlflow.MlflowClient(uri).get_registered_model(name).aliases
    assert "market-neutral reference" in caplog.text
