"""The reference policy (evaluation only; a user's own plugs in through Hydra `_target_`).

p_hat modulates magnitude only; direction and permission come from `trigger_state`
(`inactive`, `long_allowed`, `short_allowed`, `exit_only`). Per bar, in this order:

1. signal_strength s: long_allowed: clamp(2(p-0.5), 0, 1); short_allowed: clamp(2(0.5-p), 0, 1);
   inactive and exit_only: 0.
2. deadband: s_db = 0 if s < tau else (s - tau) / (1 - tau).
3. volatility scaling: v = clamp(vol_target / max(vol_hat, eps), 0, 1); m = s_db * v.
4. bounds: m = min(m, w_max); a nonzero m below w_min becomes 0 (no dust positions).
   target_raw = +m (long) / -m (short) / 0.
5. smoothing toward the target: w = w_prev + alpha * (target - w_prev); exit_only always targets
   0, so it decays monotonically to 0 (snapped to 0 below epsilon_w).
6. risk cap of the book: |w| <= cap (`learning_cap` for model-sourced exposure, `profit_cap`
   for proxy-sourced exposure; the two books never share a cap).
7. overrides: `inactive` forces 0 immediately (no permission, no exposure).
Then a rebalance smaller than epsilon_w is skipped (while exiting, such a step goes flat instead,
so a decay can never stall), and a rebalance starts a cooldown of `cooldown_bars` bars during
which only moves to 0 are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phat.confdefaults import from_conf
from phat.errors import ConfigError

TRIGGERS = ("inactive", "long_allowed", "short_allowed", "exit_only")
_CODE = {name: i for i, name in enumerate(TRIGGERS)}


@dataclass(frozen=True)
@from_conf("policy/reference", "params")  # the defaults: conf/policy/reference.yaml
class ReferencePolicy:
    tau: float
    vol_target: float
    eps: float
    w_min: float
    w_max: float
    alpha: float
    epsilon_w: float
    cooldown_bars: int
    learning_cap: float
    profit_cap: float
    vol_lookback: int  # bars of 1-bar log returns behind vol_hat

    def __post_init__(self) -> None:
        if not 0 <= self.tau < 1:
            raise ConfigError(f"policy.params.tau={self.tau}: expected 0 <= tau < 1")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"policy.params.alpha={self.alpha}: expected 0 < alpha <= 1")
        if not 0 <= self.w_min <= self.w_max:
            raise ConfigError(
                f"policy bounds w_min={self.w_min}, w_max={self.w_max}: expected 0 <= w_min <= w_max"
            )
        if self.cooldown_bars < 0 or self.epsilon_w < 0:
            raise ConfigError(
                "policy.params.cooldown_bars and policy.params.epsilon_w must be >= 0"
            )

    def signal_strength(self, trigger: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
        p = np.nan_to_num(np.asarray(p_hat, dtype=np.float64), nan=0.5)
        s = np.zeros(len(p))
        long_ = trigger == _CODE["long_allowed"]
        short = trigger == _CODE["short_allowed"]
        s[long_] = np.clip(2 * (p[long_] - 0.5), 0, 1)
        s[short] = np.clip(2 * (0.5 - p[short]), 0, 1)
        return s

    def target_raw(
        self, trigger: np.ndarray, p_hat: np.ndarray, vol_hat: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(signal_strength, raw target weight) per bar: steps 1-4, vectorized."""
        s = self.signal_strength(trigger, p_hat)
        s_db = np.where(s < self.tau, 0.0, (s - self.tau) / (1 - self.tau))
        v = np.clip(
            self.vol_target / np.maximum(np.nan_to_num(vol_hat, nan=np.inf), self.eps), 0, 1
        )
        m = np.minimum(s_db * v, self.w_max)
        m = np.where(m < self.w_min, 0.0, m)
        direction = np.where(
            trigger == _CODE["long_allowed"],
            1.0,
            np.where(trigger == _CODE["short_allowed"], -1.0, 0.0),
        )
        return s, direction * m

    def run_book(
        self, trigger: np.ndarray, target: np.ndarray, active: np.ndarray, cap: float
    ) -> np.ndarray:
        """Held weight per bar for one book: steps 5-7, rebalance band and cooldown.

        `active` marks bars where this book owns the signal; elsewhere it targets 0 (exits).
        """
        col = self.run_book_across(trigger[:, None], np.asarray(target, dtype=np.float64)[:, None],
                                   np.asarray(active)[:, None], cap)  # fmt: skip
        return col[:, 0]  # one asset: a book of one (the same rules, one home)

    def run_book_across(
        self, trigger: np.ndarray, target: np.ndarray, active: np.ndarray, cap: float
    ) -> np.ndarray:
        """Held weights [bars, assets] of one book, steps 5-7 taken by the book as a whole
        (one decision per bar for every asset; one asset is run_book): all assets move toward
        their targets together by the same smoothing step, the rebalance band is the book's
        largest move (a move inside it is held, an exit inside it goes flat), and one cooldown
        holds the whole book. The same step applied to a zero-sum target from a zero-sum book
        stays zero-sum: the neutral book holds net zero, where books run per asset drift
        apart. An asset without a bar (NaN target) holds its weight; `inactive` forces 0."""
        n, k = target.shape
        w = np.zeros((n, k))
        alpha, eps = self.alpha, self.epsilon_w
        inactive, exit_only = _CODE["inactive"], _CODE["exit_only"]
        # plain floats, asset by asset: a one-asset book (every backtest's) runs at the speed
        # of scalar Python, and each asset's arithmetic is the same whatever the book's size
        trig_rows, tgt_rows, act_rows = trigger.tolist(), target.tolist(), active.tolist()
        prev = [0.0] * k
        cool = 0
        for t in range(n):
            want, goal = list(prev), [None] * k  # no bar (NaN target): hold
            for i, x in enumerate(tgt_rows[t]):
                if x != x:
                    continue
                trig = trig_rows[t][i]
                g = x if act_rows[t][i] and trig != exit_only else 0.0
                if trig == inactive:
                    v = 0.0
                else:
                    v = prev[i] + alpha * (g - prev[i])
                    if g == 0.0 and abs(v) < eps:
                        v = 0.0
                want[i], goal[i] = min(max(v, -cap), cap), g
            if cool > 0:  # cooldown: hold, unless going flat
                want = [0.0 if v == 0.0 else p for v, p in zip(want, prev, strict=True)]
            moves = [abs(v - p) for v, p in zip(want, prev, strict=True)]
            if 0.0 < max(moves, default=0.0) < eps:  # the book's band: moves held, exits go flat
                want = [
                    (0.0 if g == 0.0 else p) if m != 0.0 and v != 0.0 else v
                    for v, p, g, m in zip(want, prev, goal, moves, strict=True)
                ]
            if any(v != p for v, p in zip(want, prev, strict=True)):
                cool = self.cooldown_bars
            elif cool > 0:
                cool -= 1
            w[t] = want
            prev = want
        return w


@dataclass(frozen=True)
class NeutralPolicy(ReferencePolicy):
    """The reference policy for a market-neutral book (`policy=neutral`, for a relative-label
    model: p_hat is the belief that an asset beats its universe). Per asset, steps 1-4 with a
    signed strength 2(p - 0.5) in [-1, 1] (long above 0.5, short below; the trigger only
    permits: inactive and exit_only give 0); then across the universe at each bar the targets
    are demeaned over the assets present and scaled down together when one exceeds w_max
    (`cross_section`), so the book's net target is zero; steps 5-7 by the book as a whole
    (run_book_across, backtest_assets), so its held weights stay net zero too."""

    neutral = True

    def signal_strength(self, trigger: np.ndarray, p_hat: np.ndarray) -> np.ndarray:
        p = np.nan_to_num(np.asarray(p_hat, dtype=np.float64), nan=0.5)
        allowed = (trigger == _CODE["long_allowed"]) | (trigger == _CODE["short_allowed"])
        return np.where(allowed, np.clip(2 * (p - 0.5), -1, 1), 0.0)

    def target_raw(
        self, trigger: np.ndarray, p_hat: np.ndarray, vol_hat: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.signal_strength(trigger, p_hat)
        a = np.abs(s)
        s_db = np.where(a < self.tau, 0.0, (a - self.tau) / (1 - self.tau))
        v = np.clip(
            self.vol_target / np.maximum(np.nan_to_num(vol_hat, nan=np.inf), self.eps), 0, 1
        )
        m = np.minimum(s_db * v, self.w_max)
        m = np.where(m < self.w_min, 0.0, m)
        return s, np.sign(s) * m

    def cross_section(self, targets: np.ndarray) -> np.ndarray:
        """[bars, assets] raw targets (NaN: the asset has no bar then) -> demeaned over the
        assets present at each bar, scaled together so no |target| exceeds w_max or the model
        book's cap (learning_cap: a target clipped by the book alone would leave the book
        long or short); NaN stays NaN."""
        present = np.isfinite(targets)
        n = present.sum(axis=1, keepdims=True)
        mean = np.divide(np.nansum(targets, axis=1, keepdims=True), n,
                         out=np.zeros((len(targets), 1)), where=n > 0)  # fmt: skip
        d = np.where(present, targets - mean, np.nan)
        peak = np.nanmax(np.abs(np.where(present, d, 0.0)), axis=1, keepdims=True)
        top = min(self.w_max, self.learning_cap)
        scale = np.where(peak > top, top / np.maximum(peak, 1e-300), 1.0)
        return d * scale


def ema_trend_triggers(close: np.ndarray, *, fast: int, slow: int) -> np.ndarray:
    """long_allowed when EMA(fast) > EMA(slow) of close, else short_allowed; inactive until
    `slow` bars of history exist."""

    def ema(x: np.ndarray, n: int) -> np.ndarray:
        a = 2.0 / (n + 1)
        out = np.empty(len(x))
        acc = x[0]
        for i, v in enumerate(x):
            acc = a * v + (1 - a) * acc
            out[i] = acc
        return out

    c = np.asarray(close, dtype=np.float64)
    trig = np.where(ema(c, fast) > ema(c, slow), _CODE["long_allowed"], _CODE["short_allowed"])
    trig[:slow] = _CODE["inactive"]
    return trig


def triggers_from(
    rule: str, close: np.ndarray, column: np.ndarray | None = None, **params
) -> np.ndarray:  # type: ignore[no-untyped-def]
    if rule == "ema_trend":
        return ema_trend_triggers(close, **params)
    if rule == "always_long":
        return np.full(len(close), _CODE["long_allowed"])
    if rule == "column":
        if column is None:
            raise ConfigError("policy.trigger.rule=column needs a trigger_state column in the data")
        bad = sorted(set(map(str, column)) - set(TRIGGERS))
        if bad:
            raise ConfigError(f"trigger_state values {bad[:5]} not in {list(TRIGGERS)}")
        return np.array([_CODE[str(v)] for v in column])
    raise ConfigError(f"policy.trigger.rule={rule!r}: expected ema_trend, always_long or column")


def trigger_names(codes: np.ndarray) -> np.ndarray:
    return np.array(TRIGGERS, dtype=object)[codes]
