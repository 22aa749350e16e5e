"""FeatureSpec and the causal feature functions.

Every feature at bar t reads bars t-k .. t only (k = its lookback), computed with exact finite
windows (no running sums, no exponential memory), so the value at t does not depend on how much
history precedes the window nor on any later bar. A model sees a window of `window` consecutive
feature rows ending at t, after a z-score normalization whose mean/std are fitted on the train
span only.

`FEATURE_CODE_VERSION` must change whenever any formula below changes: `feature_version` hashes
it together with the canonical spec, and tests/test_features.py holds a fingerprint of the output
on fixed input for each code version, so a formula change without a bump fails the suite.

Default features (formulas; c, o, h, l, v are close, open, high, low, volume of a bar):
  log_return(n)   log(c_t / c_{t-n})                                   n = 1, 4, 16
  log_range       log(h_t / l_t)
  clv             (2 c_t - h_t - l_t) / (h_t - l_t)   (0 when h = l)
  upper_wick      (h_t - max(o_t, c_t)) / (h_t - l_t) (0 when h = l)
  lower_wick      (min(o_t, c_t) - l_t) / (h_t - l_t) (0 when h = l)
  volume_z(n)     z-score of log(1 + v_t) within the last n bars       n = 64
  realized_vol(n) sqrt(mean of log_return(1)^2 over the last n bars)   n = 16, 64
  trend(n)        log c_t - mean(log c over the last n bars)           n = 32
  rsi(n)          (sum gains - sum losses) / (sum gains + sum losses) of 1-bar close changes
                  over the last n bars, in [-1, 1] (= (RSI - 50) / 50)  n = 14
Optional (the spec refuses data without their column): funding_rate, spread_bps
(1e4 * spread / c_t), vwap_dev (log(c_t / vwap_t)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from phat.confdefaults import conf_defaults, from_conf
from phat.data.bars import UNIVERSE_RETURN
from phat.errors import ConfigError, DataValidationError
from phat.hashing import canonical_json, sha256_text
from phat.settings import NORMALIZATIONS, VOLUME_NAN

FEATURE_CODE_VERSION = "1"


# Up to this many windows are reduced as plain slices (the streaming scorer's short tails):
# a strided view costs more to build than the reductions; each window is reduced alike.
_FEW = 4


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of x[..., t-n+1 .. t] along the last axis, NaN for t < n-1; exact per window
    (start-independent: each window is reduced alone, so its bits do not depend on the rows
    around it, nor on how many series are stacked on the leading axes)."""
    out = np.full(x.shape, np.nan)
    m = x.shape[-1] - n + 1  # windows
    if 0 < m <= _FEW:
        for i in range(m):
            out[..., n - 1 + i] = np.add.reduce(x[..., i : i + n], axis=-1) / n  # = .mean()
    elif m > 0:
        out[..., n - 1 :] = sliding_window_view(x, n, axis=-1).mean(axis=-1)
    return out


def _rolling_std(x: np.ndarray, n: int, block: int = 65_536) -> np.ndarray:
    """Std of x[..., t-n+1 .. t]; ndarray.std materialises the deviations, so windows go in
    blocks along time (each window's value is computed alone: blocks change no bit, and
    memory stays bounded)."""
    out = np.full(x.shape, np.nan)
    m = x.shape[-1] - n + 1
    if 0 < m <= _FEW:
        for i in range(m):
            out[..., n - 1 + i] = x[..., i : i + n].std(axis=-1)
    elif m > 0:
        view = sliding_window_view(x, n, axis=-1)
        for i in range(0, view.shape[-2], block):
            out[..., n - 1 + i : n - 1 + i + block] = view[..., i : i + block, :].std(axis=-1)
    return out


def _shift(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    out[..., n:] = x[..., :-n]
    return out


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def _per_vol(a: np.ndarray, vol: np.ndarray) -> np.ndarray:
    """a / vol, 0 where vol is 0 (constant prices), NaN where either is NaN (warm-up)."""
    out = _safe_div(a, vol)
    out[np.isnan(vol) | np.isnan(a)] = np.nan
    return out


# Each feature: (function(columns, **params) -> array, lookback(params) -> bars, columns needed)
def _log_return(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    lc = np.log(c["close"])
    return lc - _shift(lc, n)


def _log_range(c: dict[str, np.ndarray]) -> np.ndarray:
    return np.log(c["high"] / c["low"])


def _clv(c: dict[str, np.ndarray]) -> np.ndarray:
    r = c["high"] - c["low"]
    return _safe_div(2 * c["close"] - c["high"] - c["low"], r)


def _upper_wick(c: dict[str, np.ndarray]) -> np.ndarray:
    return _safe_div(c["high"] - np.maximum(c["open"], c["close"]), c["high"] - c["low"])


def _lower_wick(c: dict[str, np.ndarray]) -> np.ndarray:
    return _safe_div(np.minimum(c["open"], c["close"]) - c["low"], c["high"] - c["low"])


def _volume_z(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    lv = np.log1p(c["volume"])
    mu = _rolling_mean(lv, n)
    sd = _rolling_std(lv, n)
    z = _safe_div(lv - mu, sd)  # NaN sd divides nothing (b > 0 is False); NaN mu: set below
    z[np.isnan(mu)] = np.nan
    return z


def _realized_vol(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    r1 = _log_return(c, 1)
    return np.sqrt(_rolling_mean(r1 * r1, n))


def _vol_return(c: dict[str, np.ndarray], n: int, vol: int) -> np.ndarray:
    return _per_vol(_log_return(c, n), np.sqrt(n) * _realized_vol(c, vol))


def _vol_range(c: dict[str, np.ndarray], vol: int) -> np.ndarray:
    return _per_vol(_log_range(c), _realized_vol(c, vol))


def _vol_ratio(c: dict[str, np.ndarray], n: int, vol: int) -> np.ndarray:
    return _per_vol(_realized_vol(c, n), _realized_vol(c, vol))


def _trend(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    lc = np.log(c["close"])
    return lc - _rolling_mean(lc, n)


def _rsi(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    d = c["close"] - _shift(c["close"], 1)
    gains = _rolling_mean(np.where(d > 0, d, 0.0), n)
    losses = _rolling_mean(np.where(d < 0, -d, 0.0), n)
    tot = gains + losses
    out = _safe_div(gains - losses, tot)
    out[np.isnan(tot)] = np.nan
    return out


def _funding_rate(c: dict[str, np.ndarray]) -> np.ndarray:
    return c["funding_rate"].copy()


def _spread_bps(c: dict[str, np.ndarray]) -> np.ndarray:
    return 1e4 * c["spread"] / c["close"]


def _vwap_dev(c: dict[str, np.ndarray]) -> np.ndarray:
    return np.log(c["close"] / c["vwap"])


def _rel_return(c: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The asset's n-bar log return minus the universe's over the same bars (the sum of the
    universe's mean 1-bar returns, column UNIVERSE_RETURN, at the asset's last n bars)."""
    return _log_return(c, n) - n * _rolling_mean(c[UNIVERSE_RETURN], n)


def _rel_vol_return(c: dict[str, np.ndarray], n: int, vol: int) -> np.ndarray:
    return _per_vol(_rel_return(c, n), np.sqrt(n) * _realized_vol(c, vol))


@dataclass(frozen=True)
class _FeatureFn:
    fn: Callable[..., np.ndarray]
    lookback: Callable[[dict[str, Any]], int]
    columns: tuple[str, ...]
    params: tuple[str, ...] = ()


FEATURES: dict[str, _FeatureFn] = {
    "log_return": _FeatureFn(_log_return, lambda p: p["n"], ("close",), ("n",)),
    "log_range": _FeatureFn(_log_range, lambda p: 0, ("high", "low")),
    "clv": _FeatureFn(_clv, lambda p: 0, ("high", "low", "close")),
    "upper_wick": _FeatureFn(_upper_wick, lambda p: 0, ("open", "high", "low", "close")),
    "lower_wick": _FeatureFn(_lower_wick, lambda p: 0, ("open", "high", "low", "close")),
    "volume_z": _FeatureFn(_volume_z, lambda p: p["n"] - 1, ("volume",), ("n",)),
    "realized_vol": _FeatureFn(_realized_vol, lambda p: p["n"], ("close",), ("n",)),
    "vol_return": _FeatureFn(
        _vol_return, lambda p: max(p["n"], p["vol"]), ("close",), ("n", "vol")
    ),
    "vol_range": _FeatureFn(_vol_range, lambda p: p["vol"], ("high", "low", "close"), ("vol",)),
    "vol_ratio": _FeatureFn(_vol_ratio, lambda p: max(p["n"], p["vol"]), ("close",), ("n", "vol")),
    "trend": _FeatureFn(_trend, lambda p: p["n"] - 1, ("close",), ("n",)),
    "rsi": _FeatureFn(_rsi, lambda p: p["n"], ("close",), ("n",)),
    "funding_rate": _FeatureFn(_funding_rate, lambda p: 0, ("funding_rate",)),
    "spread_bps": _FeatureFn(_spread_bps, lambda p: 0, ("spread", "close")),
    "vwap_dev": _FeatureFn(_vwap_dev, lambda p: 0, ("vwap", "close")),
    # Relative to the universe (a universe's bars carry UNIVERSE_RETURN; one asset's do not)
    "rel_return": _FeatureFn(_rel_return, lambda p: p["n"], ("close", UNIVERSE_RETURN), ("n",)),
    "rel_vol_return": _FeatureFn(
        _rel_vol_return, lambda p: max(p["n"], p["vol"]), ("close", UNIVERSE_RETURN), ("n", "vol")
    ),
}

_CONF = conf_defaults("features/default")  # the default feature set: conf/features/default.yaml
DEFAULT_FEATURES: tuple[dict[str, Any], ...] = tuple(
    {"fn": f["fn"], "params": dict(f["params"])} for f in _CONF["set"].values()
)

# Fixed parts of the missing-data policy (not settings: prices are never filled, bars in warm-up
# or across a gap yield no sample); recorded in every spec so the contract says so.
POLICY_MISSING = {"prices": "refuse", "warmup": "drop", "gaps": "drop"}
# A spec built in code (tests, notebooks) without config: the conf/ defaults of the settings.
DEFAULT_MISSING = {
    **POLICY_MISSING,
    "volume_nan": conf_defaults("data/_base")["volume_nan"],
    **_CONF["missing"],
}


def feature_name(fn: str, params: dict[str, Any]) -> str:
    return fn + "".join(f"_{params[k]}" for k in sorted(params))


@dataclass(frozen=True)
@from_conf("features/default", fields=("window", "normalization", "clip"))
class FeatureSpec:
    """Ordered features, window, normalization and missing-data policy (+ fitted parameters)."""

    features: tuple[dict[str, Any], ...] = DEFAULT_FEATURES
    window: int  # the defaults of window, normalization, clip: conf/features/default.yaml
    normalization: str
    clip: float
    missing: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MISSING))
    code_version: str = FEATURE_CODE_VERSION
    norm_mean: tuple[float, ...] | None = None
    norm_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"features.window={self.window}: expected >= 1")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"features.normalization={self.normalization!r}: expected 'zscore' or 'none'"
            )
        if not self.features:
            raise ConfigError("features.set is empty (every entry dropped?)")
        for f in self.features:
            spec = FEATURES.get(f.get("fn", ""))
            if spec is None:
                raise ConfigError(
                    f"unknown feature {f.get('fn')!r}; expected one of {sorted(FEATURES)}"
                )
            params = dict(f.get("params") or {})
            if set(params) != set(spec.params):
                raise ConfigError(
                    f"feature {f['fn']!r} takes params {list(spec.params)}, got {sorted(params)}"
                )
        if self.missing.get("volume_nan", "refuse") not in VOLUME_NAN:
            raise ConfigError("data.volume_nan: expected 'refuse' or 'zero'")
        names = self.names
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate features in spec: {names}")

    @property
    def names(self) -> list[str]:
        return [feature_name(f["fn"], dict(f.get("params") or {})) for f in self.features]

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def lookback(self) -> int:
        """Bars before t that the features at t read (the feature warm-up)."""
        return max(FEATURES[f["fn"]].lookback(dict(f.get("params") or {})) for f in self.features)

    @property
    def bars_read(self) -> int:
        """Bars a window ending at t reads: t - bars_read + 1 .. t."""
        return self.lookback + self.window

    @property
    def required_columns(self) -> list[str]:
        cols: list[str] = []
        for f in self.features:
            for c in FEATURES[f["fn"]].columns:
                if c not in cols:
                    cols.append(c)
        return cols

    def definition(self) -> dict[str, Any]:
        """Everything that defines the feature math, without fitted parameters."""
        return {
            "features": [
                {"name": n, "fn": f["fn"], "params": dict(f.get("params") or {})}
                for n, f in zip(self.names, self.features, strict=True)
            ],
            "window": self.window,
            "normalization": self.normalization,
            "clip": self.clip,
            "missing": dict(self.missing),
            "code_version": self.code_version,
        }

    @property
    def feature_version(self) -> str:
        """sha256 of the canonical definition (including the feature-code version).

        Fitted normalization parameters are not part of it: they belong to one trained model
        and are covered by that model's hash.
        """
        return sha256_text(canonical_json(self.definition()))

    @property
    def fitted(self) -> bool:
        return self.normalization == "none" or self.norm_mean is not None

    def to_dict(self) -> dict[str, Any]:
        d = self.definition()
        d["feature_version"] = self.feature_version
        d["normalization_params"] = (
            None
            if self.norm_mean is None
            else {"mean": list(self.norm_mean), "std": list(self.norm_std or ())}
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        norm = d.get("normalization_params") or {}
        spec = cls(
            features=tuple(
                {"fn": f["fn"], "params": dict(f.get("params") or {})} for f in d["features"]
            ),
            window=int(d["window"]),
            normalization=d["normalization"],
            clip=float(d["clip"]),
            missing=dict(d["missing"]),
            code_version=str(d["code_version"]),
            norm_mean=tuple(norm["mean"]) if norm.get("mean") is not None else None,
            norm_std=tuple(norm["std"]) if norm.get("std") is not None else None,
        )
        if "feature_version" in d and d["feature_version"] != spec.feature_version:
            raise ConfigError(
                f"feature spec says feature_version {d['feature_version'][:12]} but its "
                f"definition hashes to {spec.feature_version[:12]}"
            )
        return spec

    # -----------------------------------------------------------------------------------------
    def check_data(self, frame: pd.DataFrame) -> None:
        """Refuse data the features cannot describe (the math itself stays finite on it)."""
        if any(f["fn"] == "volume_z" for f in self.features) and len(frame):
            vol = frame["volume"].to_numpy(np.float64)
            if not (vol > 0).any():
                raise DataValidationError(
                    f"column 'volume' is 0 on all {len(frame)} bars, but feature volume_z needs "
                    "traded volume (many FX feeds have none); train with features=no_volume"
                )

    def compute_raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw (unnormalized) features, shape [n_bars, n_features], NaN during warm-up."""
        if self.code_version != FEATURE_CODE_VERSION:
            raise ConfigError(
                f"feature code version {self.code_version!r} is not the installed one "
                f"({FEATURE_CODE_VERSION!r}); this phat cannot reproduce those features"
            )
        cols: dict[str, np.ndarray] = {}
        limit = int(self.missing.get("optional_ffill_bars", 0))

        for col in self.required_columns:
            if col == UNIVERSE_RETURN and col not in frame.columns:
                rel = next(n for n, f in zip(self.names, self.features, strict=True)
                           if UNIVERSE_RETURN in FEATURES[f["fn"]].columns)  # fmt: skip
                raise DataValidationError(
                    f"feature {rel} compares the asset with its universe at the same timestamp; "
                    "one asset has nothing to compare with: give a universe (data.path=<folder, "
                    "glob or list of files>), or a feature set without relative features"
                )
            if col not in frame.columns:
                raise DataValidationError(
                    f"the feature spec needs column {col!r} but the data has only "
                    f"{list(frame.columns)}; it is never zero-filled"
                )
            s = frame[col]
            if col in ("funding_rate", "spread", "vwap"):
                s = s.ffill(limit=limit) if limit > 0 else s
                na = s.isna().to_numpy()
                if na.any():
                    i = int(np.flatnonzero(na)[0])
                    raise DataValidationError(
                        f"column {col!r} is missing at {frame.index[i].isoformat()} beyond the "
                        f"forward-fill limit of {limit} bars (features.missing.optional_ffill_bars)"
                    )
            cols[col] = s.to_numpy(np.float64)
        out = np.empty((len(frame), self.n_features), dtype=np.float64)
        for j, (f, params, _) in enumerate(self._plan):
            out[:, j] = f.fn(cols, **params)
        return out

    def raw_at_last_bar(self, cols: dict[str, np.ndarray], count: np.ndarray) -> np.ndarray:
        """The raw feature row at the last bar of each series, [n_series, n_features], from
        columns [n_series, n_bars] (time last, at least `lookback + 1` bars) of series that
        have had `count` bars so far. Each feature runs the function compute_raw calls on its
        own lookback + 1 bars (on all `count` bars while a series is younger than that, as
        batch scoring's first bars see it): the streaming scorer's row is batch's, bit for bit,
        and a feature has no second definition to forget."""
        n_series, n_bars = next(iter(cols.values())).shape
        out = np.empty((n_series, self.n_features))
        youngest = int(count.min()) if n_series else 0
        for j, (f, params, need) in enumerate(self._plan):
            if youngest >= need:  # the steady state: every series at once, views only
                sub = {k: cols[k][:, n_bars - need :] for k in f.columns}
                out[:, j] = f.fn(sub, **params)[:, -1]
                continue
            full = count >= need
            if full.any():
                sub = {k: cols[k][full, n_bars - need :] for k in f.columns}
                out[full, j] = f.fn(sub, **params)[:, -1]
            for i in np.flatnonzero(~full):  # warming up: one series at a time
                sub = {k: cols[k][i : i + 1, n_bars - int(count[i]) :] for k in f.columns}
                out[i, j] = f.fn(sub, **params)[0, -1]
        return out

    @cached_property
    def _plan(self) -> list[tuple[_FeatureFn, dict[str, Any], int]]:
        """(feature, params, bars it reads at one bar = lookback + 1) per feature, in order."""
        plan = [(FEATURES[f["fn"]], dict(f.get("params") or {})) for f in self.features]
        return [(f, p, f.lookback(p) + 1) for f, p in plan]

    def fit_normalization(self, raw: np.ndarray, rows: np.ndarray) -> FeatureSpec:
        """Return a copy with mean/std fitted on `raw[rows]` (the train span only)."""
        if self.normalization == "none":
            return self
        sub = raw[rows]
        sub = sub[np.isfinite(sub).all(axis=1)]
        if len(sub) < 2:
            raise DataValidationError("too few train rows to fit feature normalization")
        mean = sub.mean(axis=0)
        std = sub.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return replace(self, norm_mean=tuple(map(float, mean)), norm_std=tuple(map(float, std)))

    def normalize(
        self, raw: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply the fitted normalization and clip; returns float32 [n_bars, n_features].
        `mean`/`std` [n_bars, n_features] (a universe's stream: each row its asset's fit)
        replace the spec's own, with the same arithmetic."""
        if self.normalization == "none":
            return raw.astype(np.float32)
        if mean is None or std is None:
            if self.norm_mean is None or self.norm_std is None:
                raise ConfigError("feature normalization is not fitted (fit it on the train span)")
            mean, std = np.asarray(self.norm_mean), np.asarray(self.norm_std)
        z = (raw - mean) / std
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def valid_end_mask(self, raw: np.ndarray, segment: np.ndarray) -> np.ndarray:
        """True at bar t when a full window ending at t exists: all feature rows t-window+1..t
        are finite and bars t-bars_read+1 .. t lie in one segment (no gap inside)."""
        n = len(raw)
        need = self.bars_read
        ok = np.zeros(n, dtype=bool)
        if n < need:
            return ok
        finite = np.isfinite(raw).all(axis=1).astype(np.int64)
        win_finite = sliding_window_view(finite, self.window).sum(axis=1) == self.window
        same_seg = segment[need - 1 :] == segment[: n - need + 1]
        ok[need - 1 :] = same_seg & win_finite[need - self.window :]
        return ok


def windows(features: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows [len(ends), window, n_features] of `features` ending at each bar in `ends`.

    Uses a strided view of the series, so only the selected windows are copied.
    """
    view = sliding_window_view(features, window, axis=0)  # [n-window+1, n_features, window]
    return np.ascontiguousarray(view[np.asarray(ends) - window + 1].transpose(0, 2, 1))
