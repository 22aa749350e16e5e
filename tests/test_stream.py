"""The streaming scorer equals batch scoring bit for bit (logistic, tree, TCN) over random
histories with warm-up, small holes and gaps; refuses bad bars by reason code without changing
anything; resumes from saved state; scores many assets in one forward; and the TCN's inference
does not depend on the batch it is scored in."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_cfg
from phat.data.synthetic import random_walk
from phat.models.kinds import recipes
from phat.pipeline import train
from phat.registry.artifact import load_artifact
from phat.scoring.stream import StreamRefused

# Every recipe kind in KINDS (a new kind is covered without a line here), kept small.
SMALL = {
    "tree": ("model.params.max_iter=40",),
    "tcn": ("model.params.channels=8", "model.params.levels=3", "trainer.max_epochs=1",
            "threads=1"),
}  # fmt: skip
MODELS = {k: (f"model={k}", *SMALL.get(k, ())) for k in recipes()}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    cfg = make_cfg(out, "data.synthetic.periods=3000", "metrics.bootstrap_n=5",
                   *MODELS[request.param])  # fmt: skip
    return load_artifact(train(cfg, out).artifact_dir)


def _history(seed: int, n: int, holes: list[tuple[int, int]]) -> pd.DataFrame:
    """A random walk with `holes`: (position, bars removed) pairs; 1-2 bars are tolerated by
    the model's max_gap of 2, longer ones are gaps that start a new segment."""
    df = random_walk(n, seed=seed)
    keep = np.ones(n, dtype=bool)
    for pos, width in holes:
        keep[pos : pos + width] = False
    keep[0] = True
    return df[keep]


def _stream(model, df: pd.DataFrame) -> np.ndarray:
    sc = model.stream()
    return np.array([sc.update(row) for _, row in df.iterrows()])


def _batch(model, df: pd.DataFrame) -> np.ndarray:
    return model.predict(df)["p_hat"].to_numpy()


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(140, 600),
    holes=st.lists(st.tuples(st.integers(1, 599), st.sampled_from([1, 2, 3, 9, 40])), max_size=3),
)
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_stream_equals_batch_bit_for_bit(model, seed: int, n: int, holes) -> None:
    holes = [h for h in holes if h[0] < n]
    df = _history(seed, n, holes)
    got, want = _stream(model, df), _batch(model, df)
    if all(w <= 2 for _, w in holes):  # one segment: the comparison covers real values too
        assert np.isfinite(want).any()
    assert np.array_equal(np.isnan(got), np.isnan(want))  # warm-up and gaps agree
    assert np.array_equal(got, want, equal_nan=True)  # and every value, to the last bit


def test_refused_bars_change_nothing_and_name_their_reason(model) -> None:
    df = random_walk(200, seed=3)
    rows = [r for _, r in df.iterrows()]
    sc = model.stream(now=df.index[-1])
    for r in rows[:150]:
        sc.update(r)
    before = json.dumps(sc.state())
    last = rows[149]

    def bar(**change) -> dict:
        b = {"timestamp": last.name, **last.to_dict()}
        b.update(change)
        return b

    cases = {
        "duplicate": bar(),
        "out_of_order": bar(timestamp=rows[100].name),
        "misaligned": bar(timestamp=last.name + pd.Timedelta("7min")),
        "future": bar(timestamp=last.name + pd.Timedelta(days=3)),
        "bad_value": bar(timestamp=rows[150].name, high=last["low"] * 0.5),
        "timestamp": bar(timestamp="03/04/2024 10:00"),
    }
    for code, b in cases.items():
        with pytest.raises(StreamRefused) as e:
            sc.update(b)
        assert e.value.code == code, (code, str(e.value))
        assert json.dumps(sc.state()) == before, code
    nan_price = bar(timestamp=rows[150].name, close=float("nan"))
    with pytest.raises(StreamRefused, match="bad_value: column 'close' is nan"):
        sc.update(nan_price)
    # After the refusals the stream goes on exactly as batch scoring of the clean history.
    got = [sc.update(r) for r in rows[150:]]
    assert np.array_equal(got, _batch(model, df)[150:], equal_nan=True)


def test_calendar_refusal_under_an_fx_model(model) -> None:
    fx = dataclasses.replace(model, data_spec={**model.data_spec, "calendar": "fx"})
    sc = fx.stream()
    sc.update({"timestamp": "2024-01-05T19:45:00Z", "open": 1, "high": 1, "low": 1, "close": 1,
               "volume": 1})  # fmt: skip
    with pytest.raises(StreamRefused) as e:  # Saturday noon: the FX week is closed
        sc.update({"timestamp": "2024-01-06T12:00:00Z", "open": 1, "high": 1, "low": 1,
                   "close": 1, "volume": 1})  # fmt: skip
    assert e.value.code == "calendar" and "closure" in str(e.value)


def test_saved_state_resumes_exactly(model) -> None:
    df = _history(7, 400, [(180, 2), (250, 30)])
    rows = [r for _, r in df.iterrows()]
    sc = model.stream()
    first = [sc.update(r) for r in rows[:210]]
    saved = json.loads(json.dumps(sc.state()))  # through JSON, as a file would
    resumed = model.stream(state=saved)
    rest = [resumed.update(r) for r in rows[210:]]
    assert np.array_equal(first + rest, _batch(model, df), equal_nan=True)
    other = dataclasses.replace(model, metadata={**model.metadata, "phat.model_hash": "0" * 64})
    with pytest.raises(Exception, match="stream state was saved for model"):
        other.stream(state=saved)


def test_many_assets_in_one_forward_equal_each_assets_batch(model) -> None:
    frames = {f"A{i}": _history(100 + i, 260, [(60 + 10 * i, 1)]) for i in range(5)}
    sc = model.stream()
    got: dict[str, list[float]] = {s: [] for s in frames}
    times = sorted(set().union(*(f.index for f in frames.values())))
    for t in times:
        step = {s: f.loc[t] for s, f in frames.items() if t in f.index}
        for s, p in sc.update_many(step).items():
            got[s].append(p)
    for s, f in frames.items():
        assert np.array_equal(got[s], _batch(model, f), equal_nan=True), s
    # All or nothing: one bad bar refuses the step and no asset moves.
    before = json.dumps(sc.state())
    nxt = times[-1] + pd.Timedelta("15min")
    good = {"timestamp": nxt, "open": 100, "high": 101, "low": 99, "close": 100, "volume": 5}
    with pytest.raises(StreamRefused) as e:
        sc.update_many({"A0": good, "A1": {**good, "close": -1.0}})
    assert e.value.symbol == "A1" and set(e.value.refusals) == {"A1"}
    assert json.dumps(sc.state()) == before


def test_tcn_logits_do_not_depend_on_the_batch() -> None:
    """Every batch size from 1 to 300, and windows at any offset, give the same bits."""
    import torch

    from phat.models.tcn import build_net, infer

    torch.manual_seed(0)
    net = build_net(12, channels=24, levels=5, kernel_size=3, dropout=0.0).eval()
    x = torch.randn(300, 12, 64)
    with torch.inference_mode():
        ref = infer(net, x)
        for bs in (*range(1, 20), 63, 64, 65, 255, 256, 257, 300):
            assert torch.equal(infer(net, x[:bs]), ref[:bs]), bs
        assert torch.equal(infer(net, x[17:18]), ref[17:18])
        assert (infer(net, x) - net(x)).abs().max() < 1e-5  # the training graph, to float32 noise


def test_exchange_calendar_closures_are_bridged_as_in_batch(model) -> None:
    """Under an exchange calendar (XNYS) overnight, weekend and holiday closures are not gaps:
    the stream bridges them exactly as batch scoring does (MLK day 2024-01-15 inside)."""
    import exchange_calendars as xc

    xnys = dataclasses.replace(model, data_spec={**model.data_spec, "calendar": "XNYS"})
    sessions = xc.get_calendar("XNYS").sessions_in_range("2024-01-08", "2024-01-26")
    opens = [pd.Timestamp(d).tz_localize("UTC") + pd.Timedelta("14h30min") for d in sessions]
    idx = pd.DatetimeIndex([o + k * pd.Timedelta("15min") for o in opens for k in range(26)])
    df = random_walk(len(idx), seed=4).set_axis(idx.rename("timestamp"))
    want = _batch(xnys, df)
    assert np.isfinite(want).any()
    assert np.array_equal(_stream(xnys, df), want, equal_nan=True)


def test_bars_are_read_by_batch_reading_names_and_a_row_number_is_no_timestamp(model) -> None:
    """Rows of a file read as is (a `Date` column, `Vol` for volume, a RangeIndex) stream like
    the frame batch scoring reads; a Series named by its row number has no timestamp and is
    refused, never read as 1970 epoch nanoseconds."""
    df = random_walk(300, seed=8)
    raw = df.rename(columns={"volume": "Vol", "close": "Close"}).rename_axis("Date").reset_index()
    got = _stream(model, raw)
    assert np.array_equal(got, _batch(model, df), equal_nan=True)
    csv_like = raw.rename(columns={"Date": "Unnamed: 0"})  # a CSV's unnamed first column
    assert np.array_equal(_stream(model, csv_like), got, equal_nan=True)
    row = df.reset_index(drop=True).iloc[5]  # name: 5
    with pytest.raises(StreamRefused) as e:
        model.stream().update(row)
    assert e.value.code == "timestamp" and "no timestamp" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", recipes())
def test_every_kind_fits_the_same_bits_twice_and_loads_what_it_trained(kind, tmp_path) -> None:
    """The suite every kind in KINDS gets: trained twice on the same data and seed, the same
    model hash; its artifact, loaded, scores the training's test span to the same bits (and
    test_stream_equals_batch_bit_for_bit above streams it)."""
    runs = []
    for rep in ("a", "b"):
        cfg = make_cfg(tmp_path / rep, "data.synthetic.periods=3000", "metrics.bootstrap_n=5",
                       *MODELS[kind])  # fmt: skip
        runs.append(train(cfg, tmp_path / rep))
    a, b = runs
    assert a.tags["phat.model_hash"] == b.tags["phat.model_hash"]
    loaded = load_artifact(a.artifact_dir)
    p = loaded.predict_bars(a.bars.frame, a.bars.segment)["p_hat"].to_numpy()
    assert np.array_equal(p[a.spans["test"]], a.predictions["test"].p_hat)
