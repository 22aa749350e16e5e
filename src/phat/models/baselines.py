"""The model zoo's shared interface and the scikit-learn baselines.

Every model has the same small surface, so one config word swaps one for another:

    fit(data, train_ends, y_train, val_ends=None, y_val=None) -> None
    logits(data, ends) -> float64 raw logits (log-odds of "up"), one per window end
    state() -> (arrays, config)      weights as named numpy arrays + JSON-able hyperparameters
    from_state(arrays, config)       rebuild for inference, no pickles, no code in the weights

Baselines see the last `lookback` rows of the FeatureSpec window, flattened (the same features
the TCN sees, fewer lags). Their inference runs here in numpy from the exported arrays, both in
the training run and after loading, so a reloaded model's output is bitwise identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from phat.contract.features import windows
from phat.errors import ConfigError


@dataclass
class WindowData:
    """Normalized feature rows of a bar series; windows are cut on demand, never all at once."""

    features: np.ndarray  # [n_bars, n_features] float32
    window: int

    def windows(self, ends: np.ndarray) -> np.ndarray:
        return windows(self.features, ends, self.window)

    def tabular(self, ends: np.ndarray, lookback: int) -> np.ndarray:
        """Last `lookback` feature rows of each window, flattened, float64 [n, lookback*F]."""
        if not 1 <= lookback <= self.window:
            raise ConfigError(f"model.lookback={lookback}: expected 1..{self.window}")
        ends = np.asarray(ends)
        rows = ends[:, None] + np.arange(-lookback + 1, 1)[None, :]
        return self.features[rows].reshape(len(ends), -1).astype(np.float64)


class Model(Protocol):
    """What the recipe (phat.recipe.fit) and scoring ask of every model kind: fit on windows
    ending at train samples (and a validation tail, for kinds that stop early), logits of
    windows, its state for the artifact, and its size."""

    kind: str

    def fit(
        self,
        data: WindowData,
        train_ends: np.ndarray,
        y_train: np.ndarray,
        val_ends: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> None: ...

    def logits(self, data: WindowData, ends: np.ndarray) -> np.ndarray: ...

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...

    @property
    def n_parameters(self) -> int: ...


class LogisticModel:
    """L2-regularized logistic regression (scikit-learn, Newton-Cholesky) on the last
    `lookback` rows."""

    kind = "logistic"

    def __init__(self, C: float, lookback: int, max_iter: int, seed: int = 0):
        if C <= 0:
            raise ConfigError(f"model.C={C}: expected > 0")
        self.C = float(C)
        self.lookback = int(lookback)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        self.coef_: np.ndarray | None = None
        self.intercept_: float = 0.0

    def fit(self, data, train_ends, y_train, val_ends=None, y_val=None) -> None:  # type: ignore[no-untyped-def]
        from sklearn.linear_model import LogisticRegression

        X = data.tabular(train_ends, self.lookback)
        # Newton-Cholesky: exact steps, ~20x faster than lbfgs on these inputs (the capacity
        # search fits it 5 x 11 times: models/selection.py), deterministic at fixed threads.
        clf = LogisticRegression(
            C=self.C, solver="newton-cholesky", max_iter=self.max_iter, random_state=self.seed
        )
        clf.fit(X, np.asarray(y_train).astype(int))
        self.coef_ = clf.coef_[0].astype(np.float64)
        self.intercept_ = float(clf.intercept_[0])
        self._sklearn = clf  # kept in memory only, for cross-checks in tests

    def logits(self, data: WindowData, ends: np.ndarray) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("model is not fitted")
        # A per-row reduction, not BLAS gemv: gemv's blocking depends on how many rows are
        # scored together, which changed the last bit of some rows (a live consumer scoring
        # one bar must get the same p_hat as a backtest scoring a year).
        return (data.tabular(ends, self.lookback) * self.coef_).sum(axis=1) + self.intercept_

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        assert self.coef_ is not None
        return (
            {"coef": self.coef_, "intercept": np.array([self.intercept_])},
            {"C": self.C, "lookback": self.lookback, "max_iter": self.max_iter, "seed": self.seed},
        )

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> LogisticModel:
        m = cls(**config)
        m.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        m.intercept_ = float(arrays["intercept"][0])
        return m

    @property
    def n_parameters(self) -> int:
        return 0 if self.coef_ is None else len(self.coef_) + 1


_TREE_FIELDS = (
    "feature_idx",
    "num_threshold",
    "left",
    "right",
    "is_leaf",
    "value",
    "missing_go_to_left",
)


class TreeModel:
    """Histogram gradient boosting (scikit-learn), exported to flat node arrays."""

    kind = "tree"

    def __init__(
        self,
        lookback: int,
        max_iter: int,
        learning_rate: float,
        max_leaf_nodes: int,
        min_samples_leaf: int,
        l2_regularization: float,
        seed: int = 0,
    ):
        self.lookback = int(lookback)
        self.params = {
            "max_iter": int(max_iter),
            "learning_rate": float(learning_rate),
            "max_leaf_nodes": int(max_leaf_nodes),
            "min_samples_leaf": int(min_samples_leaf),
            "l2_regularization": float(l2_regularization),
        }
        self.seed = int(seed)
        self.arrays: dict[str, np.ndarray] | None = None

    def fit(self, data, train_ends, y_train, val_ends=None, y_val=None) -> None:  # type: ignore[no-untyped-def]
        """Fit `max_iter` trees; with a validation tail (purged, after the fit span: the
        pipeline carves it), keep only the first k trees, k the fewest whose tail log loss is
        within one standard error of the best count's (early stopping without noise buying
        trees); `max_iter` then records k."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        X = data.tabular(train_ends, self.lookback)
        clf = HistGradientBoostingClassifier(
            early_stopping=False, random_state=self.seed, **self.params
        )
        clf.fit(X, np.asarray(y_train).astype(int))
        predictors = list(clf._predictors)
        if val_ends is not None and len(val_ends) >= 20:
            k = _trees_to_keep(clf, data.tabular(val_ends, self.lookback), np.asarray(y_val))
            predictors = predictors[:k]
            self.params = {**self.params, "max_iter": k}
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _TREE_FIELDS}
        offsets = [0]
        for (pred,) in predictors:
            nodes = pred.nodes
            for k in _TREE_FIELDS:
                parts[k].append(np.asarray(nodes[k]))
            offsets.append(offsets[-1] + len(nodes))
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        arrays = {
            "feature_idx": arrays["feature_idx"].astype(np.int64),
            "num_threshold": arrays["num_threshold"].astype(np.float64),
            "left": arrays["left"].astype(np.int64),
            "right": arrays["right"].astype(np.int64),
            "is_leaf": arrays["is_leaf"].astype(np.uint8),
            "value": arrays["value"].astype(np.float64),
            "missing_go_to_left": arrays["missing_go_to_left"].astype(np.uint8),
            "tree_offsets": np.asarray(offsets, dtype=np.int64),
            "baseline": np.asarray(clf._baseline_prediction, dtype=np.float64).reshape(-1),
        }
        self.arrays = arrays
        self._sklearn = clf

    def _raw(self, X: np.ndarray, block: int = 2048) -> np.ndarray:
        """Raw scores: every tree walked at once for a block of rows (one numpy step per tree
        level, not per tree: a single row costs about as much as the deepest tree), then the
        leaf values added tree by tree in order (a cumulative sum, sequential like the
        sklearn predictor's loop), so a row's score does not depend on its block."""
        a = self.arrays
        assert a is not None
        leaf = a["is_leaf"].astype(bool)
        base = a["tree_offsets"][:-1]
        out = np.empty(len(X))
        for lo in range(0, len(X), block):
            x_blk = X[lo : lo + block]
            rows = np.arange(len(x_blk))[:, None]
            node = np.broadcast_to(base, (len(x_blk), len(base))).copy()
            while True:
                active = ~leaf[node]
                if not active.any():
                    break
                x = x_blk[rows, a["feature_idx"][node]]
                go_left = np.where(
                    np.isnan(x),
                    a["missing_go_to_left"][node].astype(bool),
                    x <= a["num_threshold"][node],
                )
                nxt = base + np.where(go_left, a["left"][node], a["right"][node])
                node = np.where(active, nxt, node)
            terms = np.empty((len(x_blk), len(base) + 1))
            terms[:, 0] = a["baseline"][0]
            terms[:, 1:] = a["value"][node]
            out[lo : lo + block] = np.cumsum(terms, axis=1)[:, -1]
        return out

    def logits(self, data: WindowData, ends: np.ndarray) -> np.ndarray:
        if self.arrays is None:
            raise RuntimeError("model is not fitted")
        return self._raw(data.tabular(ends, self.lookback))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        assert self.arrays is not None
        return dict(self.arrays), {"lookback": self.lookback, "seed": self.seed, **self.params}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> TreeModel:
        m = cls(**config)
        m.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        return m

    @property
    def n_parameters(self) -> int:
        return 0 if self.arrays is None else int(len(self.arrays["value"]))


def _trees_to_keep(clf: Any, X_val: np.ndarray, y_val: np.ndarray, blocks: int = 10) -> int:
    """The fewest boosting iterations within noise of the best count's validation log loss
    (the one-standard-error rule, phat.models.noise)."""
    from phat.models.noise import simplest_within_noise, time_blocks

    losses = staged_log_losses(clf, X_val, y_val)
    return simplest_within_noise(losses, time_blocks(len(y_val), blocks))[0] + 1


def staged_log_losses(clf: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n_samples, n_iter]: each sample's log loss after 1, 2, ... boosting iterations."""
    from phat.models.calibration import log_losses, sigmoid

    yv = np.asarray(y).astype(np.float64)
    return np.column_stack([log_losses(yv, sigmoid(z)) for z in clf.staged_decision_function(X)])
