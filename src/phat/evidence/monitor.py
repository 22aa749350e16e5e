"""Live calibration monitor: matured outcomes and an anytime-valid test of calibration.

Null hypothesis: p_hat is calibrated, E[y_t | p_t, past] = p_t. Testing by betting (Shafer &
Vovk; Ramdas, Grunwald, Vovk & Shafer, "Game-theoretic statistics and safe anytime-valid
inference", Statistical Science 2023; Waudby-Smith & Ramdas, "Estimating means of bounded
random variables by betting", JRSS-B 2024): a gambler who, for each matured bar whose p_hat
falls in bin b, stakes a fraction lambda on y - p multiplies their wealth by 1 + lambda (y - p).
Under the null each factor has conditional mean 1, so the wealth is a nonnegative martingale
starting at 1 (a test martingale) and, by Ville's inequality, P(sup_t wealth >= 1/alpha) <= alpha:
the monitor may look after every bar and alarm the first time the e-value reaches 1/alpha.

Construction: for each p_hat bin (`monitor.bins` equal-width bins) and each of three forgetting
rates, one gambler whose stake is predictable: lambda_t = clip(m / v, -0.5, 0.5), with m and v
exponentially weighted means of the residual y - p and its square over the bin's earlier matured
bars (half-lives of 250, 1,000 and 4,000 of them; a GRAPA-style plug-in: Waudby-Smith & Ramdas
2024, section 5). Under the null m hovers near 0, so the stakes stay small and the wealth does
not decay the way a constant stake's does (a fixed stake loses about lambda^2 var / 2 per bar
when there is nothing to find, and would need that much longer to recover after a drift); after
a drift m follows the new bias and the wealth grows. The stake uses only outcomes already
matured, so each gambler's wealth is a test martingale, and the e-value is their average.
Betting per bin catches miscalibration that cancels overall (too high on one side, too low on
the other).

Overlapping labels: with a horizon of h bars, y_t and y_(t+1) share h - 1 returns, so bets
placed bar by bar are not fair given the past. Bars are split into h streams by their position
modulo h: within a stream consecutive labels do not overlap, each stream's gamblers form a test
martingale, and the e-value is the average over streams (as the issue asks; for h = 1 there is
one stream). A label is used only after it matures (bar t + h is known).

Online recalibration (`monitor.recalibrate=online`, `OnlineRecalibrator`): q = sigmoid(a
logit(p) + b) on top of the frozen model, starting at the identity (the trained calibration) and
pulled back toward it by a Gaussian prior; fitted by one Newton (Laplace / Kalman-style) step per
matured outcome with exponential forgetting, so it follows a drift. The forecast for bar t uses
only outcomes matured by t (the map as it stood h matured bars earlier). The slope is kept at or
above MIN_SLOPE > 0: the map is strictly increasing at every step, so it never reverses or
flattens the model's ranking (resolution is not traded for calibration; after a sign flip it
can only fall back toward climatology).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

HALF_LIVES = np.array([250.0, 1000.0, 4000.0])  # in the bin's own matured bars
DECAY = 0.5 ** (1.0 / HALF_LIVES)
MAX_STAKE = 0.5
KEEP_PATH = 20_000  # e-value points kept in the state file; MLflow's e_value metric has them all
MIN_SLOPE = 0.05
EPS = 1e-6


def _logit(p: float) -> float:
    q = min(max(p, EPS), 1.0 - EPS)
    return float(np.log(q / (1.0 - q)))


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


@dataclass
class OnlineRecalibrator:
    """q = sigmoid(a logit(p) + b), fitted online to matured outcomes.

    Objective at bar t: the outcomes' log loss discounted by half-life `half_life` (matured
    bars) plus a Gaussian prior centred on the identity (a = 1, b = 0: the trained calibration)
    worth `prior_bars` calibrated bars of Fisher information (0.25 diag(E[logit^2], 1), so the
    prior means the same whatever the model's spread). One Newton step per outcome (a Laplace /
    Kalman-style recursion): precision P <- rho P + (1 - rho) P0 + q(1 - q) x x';
    theta <- theta + P^-1 [(y - q) x + (1 - rho) P0 (theta0 - theta)]."""

    horizon_bars: int
    prior_bars: float
    half_life: float
    theta: list[float] = field(default_factory=lambda: [1.0, 0.0])
    precision: list[list[float]] | None = None
    logit_sq: float = 0.0  # discounted mean of logit(p)^2, scales the prior
    lagged: list[list[float]] = field(default_factory=list)  # theta after each of the last h
    n: int = 0
    sq_static: float = 0.0  # sums of squared errors over the bars scored by both
    sq_online: float = 0.0

    def forecast(self, p: float) -> float:
        """The recalibrated p for the next bar to mature, with the map as it stood when that
        bar was scored (h matured outcomes ago): no outcome that matured later is used."""
        a, b = self.lagged[0] if len(self.lagged) >= self.horizon_bars else (1.0, 0.0)
        return _sigmoid(a * _logit(p) + b)

    def learn(self, p: float, y: float) -> float:
        """Score bar (p, y) with the lagged map, then update; returns the recalibrated p."""
        q_fore = self.forecast(p)
        self.n += 1
        self.sq_static += (y - p) ** 2
        self.sq_online += (y - q_fore) ** 2
        rho = 0.5 ** (1.0 / self.half_life)
        z = _logit(p)
        self.logit_sq = z * z if self.n == 1 else rho * self.logit_sq + (1.0 - rho) * z * z
        p0 = self.prior_bars * 0.25 * np.diag([max(self.logit_sq, 1e-4), 1.0])
        prec = p0 if self.precision is None else np.asarray(self.precision)
        x = np.array([z, 1.0])
        th = np.asarray(self.theta)
        q = _sigmoid(float(th @ x))
        prec = rho * prec + (1.0 - rho) * p0 + q * (1.0 - q) * np.outer(x, x)
        grad = (y - q) * x + (1.0 - rho) * p0 @ (np.array([1.0, 0.0]) - th)
        th = th + np.linalg.solve(prec, grad)
        th[0] = max(th[0], MIN_SLOPE)
        self.theta = [float(th[0]), float(th[1])]
        self.precision = prec.tolist()
        self.lagged = [*self.lagged, list(self.theta)][-self.horizon_bars :]
        return q_fore

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "recal_slope": self.theta[0],
            "recal_intercept": self.theta[1],
            "recal_bars": float(self.n),
            "brier_static": self.sq_static / n,
            "brier_online": self.sq_online / n,
        }

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class MonitorState:
    """Everything a monitor needs to resume: serialisable to JSON (monitor.state=PATH)."""

    horizon_bars: int
    bins: int
    log_wealth: list[list[list[float]]]  # [stream][bin][gambler]
    resid_mean: list[list[list[float]]]  # EWMA of y - p, same shape
    resid_sq: list[list[list[float]]]  # EWMA of (y - p)^2
    last_matured: str | None = None  # ISO timestamp of the last bar whose outcome was used
    n_matured: int = 0
    path: list[tuple[str, float]] = field(default_factory=list)  # (matured-at time, e-value)
    alarm: dict[str, Any] | None = None
    recent: list[tuple[float, ...]] = field(default_factory=list)  # (p, y[, q]), newest last
    recal: OnlineRecalibrator | None = None
    # What this state watched: model_name, model_version, model_hash (a state is never
    # resumed for another model: phat.cli.monitor).
    model: dict[str, str] | None = None

    @classmethod
    def new(cls, horizon_bars: int, bins: int) -> MonitorState:
        def zeros(v: float) -> list[list[list[float]]]:
            return [[[v] * len(HALF_LIVES) for _ in range(bins)] for _ in range(horizon_bars)]

        return cls(horizon_bars, bins, zeros(0.0), zeros(0.0), zeros(0.25))

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon_bars": self.horizon_bars,
            "bins": self.bins,
            "log_wealth": self.log_wealth,
            "resid_mean": self.resid_mean,
            "resid_sq": self.resid_sq,
            "last_matured": self.last_matured,
            "n_matured": self.n_matured,
            "path": [list(x) for x in self.path],
            "alarm": self.alarm,
            "recent": [list(x) for x in self.recent],
            "recal": self.recal.to_dict() if self.recal else None,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MonitorState:
        return cls(
            int(d["horizon_bars"]),
            int(d["bins"]),
            d["log_wealth"],
            d["resid_mean"],
            d["resid_sq"],
            d["last_matured"],
            int(d["n_matured"]),
            [(str(a), float(b)) for a, b in d["path"]],
            d["alarm"],
            [tuple(float(v) for v in x) for x in d["recent"]],
            OnlineRecalibrator(**d["recal"]) if d.get("recal") else None,
            dict(d["model"]) if d.get("model") else None,
        )

    def e_value(self) -> float:
        lw = np.asarray(self.log_wealth, dtype=np.float64)
        per_stream = np.exp(lw).mean(axis=(1, 2))
        return float(per_stream.mean())


def update(
    state: MonitorState,
    timestamps: Any,
    positions: np.ndarray,
    p: np.ndarray,
    y: np.ndarray,
    matured_at: Any,
    alpha: float,
    keep_recent: int,
) -> list[tuple[str, float]]:
    """Feed matured bars (time order) newer than state.last_matured; returns the new path
    points. Sets state.alarm the first time the e-value reaches 1/alpha."""
    new: list[tuple[str, float]] = []
    lw = np.asarray(state.log_wealth, dtype=np.float64)
    mm = np.asarray(state.resid_mean, dtype=np.float64)
    vv = np.asarray(state.resid_sq, dtype=np.float64)
    h, k = state.horizon_bars, state.bins
    last = state.last_matured
    for ts, pos, pi, yi, mat in zip(timestamps, positions, p, y, matured_at, strict=True):
        iso = ts.isoformat()
        if last is not None and iso <= last:
            continue  # already used: a second run over the same bars changes nothing
        b = min(int(pi * k), k - 1)
        s_ = int(pos) % h
        r = yi - pi
        stake = np.clip(mm[s_, b] / np.maximum(vv[s_, b], 1e-6), -MAX_STAKE, MAX_STAKE)
        lw[s_, b] += np.log1p(stake * r)  # stake fixed before r was known
        mm[s_, b] = DECAY * mm[s_, b] + (1 - DECAY) * r
        vv[s_, b] = DECAY * vv[s_, b] + (1 - DECAY) * r * r
        state.n_matured += 1
        last = iso
        e = float(np.exp(lw).mean(axis=(1, 2)).mean())
        point = (mat.isoformat(), e)
        new.append(point)
        state.path.append(point)
        if state.recal is not None:
            state.recent.append((float(pi), float(yi), state.recal.learn(float(pi), float(yi))))
        else:
            state.recent.append((float(pi), float(yi)))
        if state.alarm is None and e >= 1.0 / alpha:
            state.alarm = {"time": mat.isoformat(), "e_value": e, "bars": state.n_matured}
    if len(state.recent) > keep_recent:
        state.recent = state.recent[-keep_recent:]
    if len(state.path) > KEEP_PATH:
        state.path = state.path[-KEEP_PATH:]
    state.last_matured = last
    state.log_wealth = lw.tolist()
    state.resid_mean = mm.tolist()
    state.resid_sq = vv.tolist()
    return new


def rolling_metrics(state: MonitorState, n_bins: int) -> dict[str, float]:
    from phat.evaluation.metrics import brier, ece

    if not state.recent:
        return {}
    width = min(len(x) for x in state.recent)
    arr = np.asarray([x[:width] for x in state.recent], dtype=np.float64)
    p, y = arr[:, 0], arr[:, 1]
    out = {
        "rolling_brier": brier(y, p),
        "rolling_ece": ece(y, p, n_bins=n_bins),
        "rolling_brier_climatology": brier(y, np.full(len(y), y.mean())),
        "rolling_n": float(len(y)),
    }
    if width == 3:
        out["rolling_brier_online"] = brier(y, arr[:, 2])
        out["rolling_ece_online"] = ece(y, arr[:, 2], n_bins=n_bins)
    return out


def matured(index: Any, y: np.ndarray, horizon_bars: int, until: Any = None) -> np.ndarray:
    """Bars whose label is known by the last bar: t + horizon <= last, and the label exists;
    with `until` (a relative label: compared with every asset's move), only those whose
    t + horizon bar is not after `until`, the last bar every asset has delivered: a label
    is never fed against the few assets whose bars arrived first (it would not be the label
    the complete universe gives, and a fed point is not fed again)."""
    n = len(index)
    ok = np.zeros(n, dtype=bool)
    if n > horizon_bars:
        ok[: n - horizon_bars] = True
        if until is not None:
            ok[: n - horizon_bars] &= np.asarray(index[horizon_bars:] <= until)
    return ok & np.isfinite(y)


def universe_update(
    last: dict[str, float],
    points: list[tuple[str, str, float]],
    alpha: float,
    alarm: dict[str, Any] | None,
) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
    """The universe's e-process: at every matured point (time, asset, that asset's e-value),
    in time order, the mean over the universe's assets of their latest e-values (`last`: every
    asset, 1.0 before its first bar; updated in place), each asset's stopped at its own alarm
    (the first time it reaches 1/alpha: that asset is handled alone, and one loud asset must
    not raise the universe's alarm by itself). A stopped test supermartingale is one, and a
    mean of them on one filtration is one, so Ville's bound holds without independence between
    assets: the universe alarms (the mean reaches 1/alpha) falsely with probability at most
    alpha. Returns (the new path points, the alarm: the one given, or the first one now)."""
    path: list[tuple[str, float]] = []
    for t, sym, e in sorted(points):
        if last[sym] < 1.0 / alpha:  # stopped once it alarmed
            last[sym] = e
        mean = float(np.mean(list(last.values())))
        path.append((t, mean))
        if alarm is None and mean >= 1.0 / alpha:
            alarm = {"time": t, "e_value": mean, "asset_alarms": None}
    return path, alarm
