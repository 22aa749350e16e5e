"""LabelSpec: what "price rises over the horizon" means, as a hashed contract.

For a sample at bar t (decided at the close of bar t), the horizon return is
`ret = log(close[t + horizon_bars] / close[t])` (`aggregation="log_return_sum"`, the sum of the
per-bar log returns over bars t+1 .. t+horizon_bars).

- kind="sign":      y = 1 if ret > 0 else 0 (an unchanged close counts as "not up").
- kind="threshold": y = 1 if ret > +threshold, 0 if ret < -threshold; inside the band
                    |ret| <= threshold the sample is dropped (`neutral="drop"`) or labelled 0
                    (`neutral="down"`: "up by more than the threshold" vs everything else).
- kind="relative":  a universe only: y = 1 if ret beats the universe's `relative_to` (mean or
                    median) of ret over the assets with a return at the same timestamp, 0 if it
                    falls short; equal: dropped (`neutral="drop"`) or 0 (`"down"`). A timestamp
                    where fewer than `min_assets` assets have a return gives no label. What a
                    market-neutral book trades: which assets beat the others, not the market.

A label is unavailable (NaN) for the last `horizon_bars` bars and wherever bars t .. t+h do not
all belong to one segment (a gap lies inside the horizon).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from phat.confdefaults import from_conf
from phat.data.universe import cross_section
from phat.durations import DURATION, is_duration
from phat.errors import ConfigError
from phat.hashing import canonical_json, sha256_text
from phat.settings import AGGREGATIONS, LABEL_KINDS, NEUTRAL, RELATIVE_TO

KINDS = LABEL_KINDS  # the values of each label setting: declared with its schema (settings)
_HORIZON_RE = re.compile(rf"^(?:(\d+)x)?({DURATION})$")


@dataclass(frozen=True)
@from_conf(
    "label/sign",
    fields=("kind", "threshold_bps", "aggregation", "neutral", "relative_to", "min_assets"),
)
class LabelSpec:
    timeframe: str
    horizon_bars: int
    horizon_id: str
    kind: str  # the defaults of these four: conf/label/sign.yaml
    threshold_bps: float
    aggregation: str
    neutral: str
    relative_to: str  # kind=relative only (not in the contract of the other kinds)
    min_assets: int

    def __post_init__(self) -> None:
        if not isinstance(self.horizon_bars, int) or self.horizon_bars < 1:
            raise ConfigError(f"label horizon_bars={self.horizon_bars!r}: expected an integer >= 1")
        if self.kind not in KINDS:
            raise ConfigError(f"label kind={self.kind!r}: expected one of {list(KINDS)}")
        if self.neutral not in NEUTRAL:
            raise ConfigError(f"label neutral={self.neutral!r}: expected one of {list(NEUTRAL)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"label aggregation={self.aggregation!r}: expected one of {list(AGGREGATIONS)}"
            )
        if self.kind == "threshold" and not self.threshold_bps > 0:
            raise ConfigError(
                f"label kind=threshold needs threshold_bps > 0, got {self.threshold_bps!r}"
            )
        if self.kind == "sign" and self.threshold_bps != 0:
            raise ConfigError("label kind=sign takes no threshold_bps (use kind=threshold)")
        if self.kind == "relative":
            if self.threshold_bps != 0:
                raise ConfigError("label kind=relative takes no threshold_bps")
            if self.relative_to not in RELATIVE_TO:
                raise ConfigError(
                    f"label relative_to={self.relative_to!r}: expected one of {list(RELATIVE_TO)}"
                )
            if not isinstance(self.min_assets, int) or self.min_assets < 2:
                raise ConfigError(
                    f"label min_assets={self.min_assets!r}: expected an integer >= 2 (an asset "
                    "is compared with the others)"
                )

    def to_dict(self) -> dict[str, Any]:
        """The contract: relative_to and min_assets only for kind=relative, so every other
        label's definition (and hash) is what it was before relative labels existed."""
        d = asdict(self)
        d["threshold_bps"] = float(d["threshold_bps"])
        if self.kind != "relative":
            del d["relative_to"], d["min_assets"]
        return d

    def canonical(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        return sha256_text(self.canonical())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        return cls(**d)


def parse_horizon(text: str) -> tuple[str, int, str]:
    """`horizon=15m` -> ('15m', 1, '15m'); `4x15m` -> ('15m', 4, '4x15m'); `1d`, `2h`, `3x1h`.

    One rule for every horizon: `<bars>x<timeframe>` predicts the close `bars` bars of
    `timeframe` ahead; a bare timeframe predicts the next bar."""
    m = _HORIZON_RE.match(str(text).strip().lower())
    if not m or (m.group(1) is not None and int(m.group(1)) < 1) or not is_duration(m.group(2)):
        raise ConfigError(
            f"horizon={text!r}: expected a timeframe such as 15m, 1h, 1d (predict the next bar) "
            "or <bars>x<timeframe> such as 4x15m (predict 4 bars ahead)"
        )
    bars = int(m.group(1) or 1)
    tf = m.group(2).replace("min", "m")  # one spelling per timeframe in ids and model names
    return tf, bars, (tf if bars == 1 else f"{bars}x{tf}")


def horizon_returns(close: np.ndarray, segment: np.ndarray, horizon_bars: int) -> np.ndarray:
    """log(close[t+h]/close[t]); NaN where t+h is past the end or in another segment."""
    n = len(close)
    out = np.full(n, np.nan)
    h = horizon_bars
    if n <= h:
        return out
    lc = np.log(close)
    same = segment[h:] == segment[:-h]
    ret = lc[h:] - lc[:-h]
    out[:-h] = np.where(same, ret, np.nan)
    return out


def make_labels(
    close: np.ndarray, segment: np.ndarray, spec: LabelSpec, clock: np.ndarray | None = None
) -> np.ndarray:
    """Label per bar as float (1.0, 0.0, or NaN where unavailable or dropped as neutral).
    `clock`: each row's slot on a universe's shared timeline (Bars.timeline), which
    kind=relative compares assets on; None (one asset) refuses kind=relative."""
    ret = horizon_returns(np.asarray(close, dtype=np.float64), segment, spec.horizon_bars)
    y = np.full(len(ret), np.nan)
    ok = ~np.isnan(ret)
    if spec.kind == "relative":
        if clock is None:
            raise ConfigError(
                "label=relative compares each asset with its universe at the same timestamp; "
                "one asset has nothing to compare with: give a universe (data.path=<folder, "
                "glob or list of files>), or label=sign"
            )
        return _relative(ret, np.asarray(clock), spec)
    if spec.kind == "sign":
        y[ok] = (ret[ok] > 0).astype(np.float64)
        return y
    thr = spec.threshold_bps * 1e-4
    up = ok & (ret > thr)
    down = ok & (ret < -thr)
    band = ok & ~up & ~down
    y[up] = 1.0
    y[down] = 0.0
    if spec.neutral == "down":
        y[band] = 0.0
    return y


def _relative(ret: np.ndarray, clock: np.ndarray, spec: LabelSpec) -> np.ndarray:
    center, count = cross_section(ret, clock, spec.relative_to)
    y = np.full(len(ret), np.nan)
    ok = np.isfinite(ret) & (count >= spec.min_assets)
    up = ok & (ret > center)
    down = ok & (ret < center)
    y[up] = 1.0
    y[down] = 0.0
    if spec.neutral == "down":
        y[ok & ~up & ~down] = 0.0
    return y
