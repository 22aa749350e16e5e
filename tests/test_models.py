"""Baselines: the numpy inference path equals scikit-learn's, and state round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest

from phat.contract.features import FeatureSpec
from phat.contract.labels import LabelSpec, make_labels
from phat.data.synthetic import SyntheticConfig, generate
from phat.errors import ConfigError
from phat.models.baselines import LogisticModel, TreeModel, WindowData
from phat.models.kinds import build_model, model_class


@pytest.fixture(scope="module")
def data():
    m = generate(SyntheticConfig(periods=3000, seed=5))
    spec = FeatureSpec()
    raw = spec.compute_raw(m.bars)
    seg = np.zeros(len(raw), dtype=np.int64)
    y = make_labels(m.bars["close"].to_numpy(), seg, LabelSpec("15m", 1, "15m"))
    ok = np.flatnonzero(spec.valid_end_mask(raw, seg) & ~np.isnan(y))
    spec = spec.fit_normalization(raw, np.arange(0, 2000))
    return WindowData(spec.normalize(raw), spec.window), ok[:2000], ok[2000:], y


@pytest.mark.parametrize("cls", [LogisticModel, TreeModel])
def test_numpy_logits_equal_sklearn_and_state_round_trips(data, cls) -> None:
    wd, tr, te, y = data
    from phat.confdefaults import conf_defaults

    kw = conf_defaults(f"model/{cls.kind}", "params")  # the recipe's defaults
    kw.update({"max_iter": 30} if cls is TreeModel else {"C": 0.1})  # C=auto: the pipeline's
    m = cls(seed=0, **kw)
    m.fit(wd, tr, y[tr])
    z = m.logits(wd, te)
    ref = m._sklearn.decision_function(wd.tabular(te, m.lookback))
    np.testing.assert_allclose(z, ref, rtol=1e-12, atol=1e-12)
    arrays, config = m.state()
    again = cls.from_state(arrays, config)
    np.testing.assert_array_equal(again.logits(wd, te), z)


def test_logistic_learns_the_planted_signal(data) -> None:
    wd, tr, te, y = data
    m = LogisticModel(C=0.1, lookback=4, max_iter=1000)
    m.fit(wd, tr, y[tr])
    z = m.logits(wd, te)
    acc = np.mean((z > 0) == (y[te] == 1))
    assert acc > 0.55


def test_tabular_is_the_last_rows_of_the_window(data) -> None:
    wd, tr, _, _ = data
    t = tr[:3]
    tab = wd.tabular(t, 4)
    np.testing.assert_array_equal(tab, wd.windows(t)[:, -4:, :].reshape(3, -1).astype(np.float64))
    with pytest.raises(ConfigError, match="lookback=65"):
        wd.tabular(t, 65)


def test_unknown_kind_and_bad_params_refused() -> None:
    with pytest.raises(ConfigError, match="model.kind='svm'"):
        model_class("svm")
    with pytest.raises(ConfigError, match="model=logistic"):
        build_model("logistic", {"depth": 3}, seed=0)
    with pytest.raises(ConfigError, match="model.C=0"):
        LogisticModel(C=0, lookback=4, max_iter=1000)
