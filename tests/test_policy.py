"""The reference policy: permission gates, direction, decay, caps, band, cooldown, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phat.errors import ConfigError
from phat.trading.policy import TRIGGERS, ReferencePolicy, ema_trend_triggers, triggers_from

CODE = {n: i for i, n in enumerate(TRIGGERS)}
POL = ReferencePolicy(
    tau=0.1, vol_target=0.003, w_min=0.0, epsilon_w=0.0, cooldown_bars=0, alpha=0.5
)


def _run(
    trig: np.ndarray,
    p: np.ndarray,
    vol: float = 0.001,
    pol: ReferencePolicy = POL,
    cap: float = 1.0,
) -> np.ndarray:
    _, tgt = pol.target_raw(trig, p, np.full(len(p), vol))
    return pol.run_book(trig, tgt, np.ones(len(p), bool), cap)


def test_inactive_gives_zero_even_at_certainty() -> None:
    trig = np.full(50, CODE["inactive"])
    assert (_run(trig, np.ones(50)) == 0).all()
    assert (_run(trig, np.zeros(50)) == 0).all()
    # inactive after a long position: flat at once
    trig = np.r_[np.full(20, CODE["long_allowed"]), np.full(5, CODE["inactive"])]
    w = _run(trig, np.ones(25))
    assert w[19] > 0 and (w[20:] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    p=st.lists(st.floats(0, 1), min_size=5, max_size=60),
    side=st.sampled_from(["long_allowed", "short_allowed"]),
)
def test_p_hat_never_inverts_direction(p, side) -> None:
    arr = np.array(p)
    w = _run(np.full(len(arr), CODE[side]), arr)
    assert (w >= 0).all() if side == "long_allowed" else (w <= 0).all()


def test_p_hat_sets_magnitude_through_deadband_and_vol_scaling() -> None:
    trig = np.full(3, CODE["long_allowed"])
    s, tgt = POL.target_raw(trig, np.array([0.52, 0.8, 1.0]), np.array([0.001, 0.001, 0.006]))
    np.testing.assert_allclose(s, [0.04, 0.6, 1.0])
    # 0.04 < tau: 0; 0.6 -> (0.6-0.1)/0.9; 1.0 at vol 2x target -> 0.5
    np.testing.assert_allclose(tgt, [0.0, 0.5 / 0.9, 0.5])
    _, short = POL.target_raw(np.full(1, CODE["short_allowed"]), np.array([0.2]), np.array([0.001]))
    assert short[0] == pytest.approx(-(0.6 - 0.1) / 0.9)


@settings(max_examples=30, deadline=None)
@given(n_hold=st.integers(5, 40), alpha=st.floats(0.05, 1.0))
def test_exit_only_decays_monotonically_to_zero(n_hold, alpha) -> None:
    pol = ReferencePolicy(alpha=alpha, w_min=0.0, epsilon_w=0.01, cooldown_bars=0)
    trig = np.r_[np.full(n_hold, CODE["long_allowed"]), np.full(200, CODE["exit_only"])]
    w = _run(trig, np.full(len(trig), 0.95), pol=pol)
    tail = np.abs(w[n_hold - 1 :])
    assert (np.diff(tail) <= 0).all()
    assert tail[-1] == 0.0


def test_caps_band_and_cooldown() -> None:
    trig = np.full(30, CODE["long_allowed"])
    assert np.abs(_run(trig, np.ones(30), cap=0.25)).max() == pytest.approx(0.25)
    pol = ReferencePolicy(alpha=1.0, w_min=0.0, epsilon_w=0.05, cooldown_bars=3, tau=0.0)
    p = np.r_[np.full(5, 0.9), np.full(5, 0.91), np.full(10, 0.6)]
    w = _run(trig[:20], p, pol=pol)
    moves = np.flatnonzero(np.diff(np.r_[0.0, w]))
    assert moves[0] == 0
    assert all(
        b - a > 3 for a, b in zip(moves, moves[1:], strict=False)
    )  # cooldown between rebalances
    assert w[5] == w[4]  # a 0.02 move is inside the 0.05 band


def test_same_inputs_same_weights() -> None:
    rng = np.random.default_rng(0)
    trig = rng.integers(0, 4, 500)
    p = rng.random(500)
    vol = rng.uniform(0.001, 0.01, 500)
    _, t1 = POL.target_raw(trig, p, vol)
    _, t2 = POL.target_raw(trig.copy(), p.copy(), vol.copy())
    a = POL.run_book(trig, t1, np.ones(500, bool), 1.0)
    b = POL.run_book(trig, t2, np.ones(500, bool), 1.0)
    assert a.tobytes() == b.tobytes()


def test_triggers_and_bad_params() -> None:
    close = np.r_[np.linspace(100, 200, 300), np.linspace(200, 100, 300)]
    t = ema_trend_triggers(close, fast=10, slow=50)
    assert (
        (t[:50] == CODE["inactive"]).all()
        and t[200] == CODE["long_allowed"]
        and t[590] == CODE["short_allowed"]
    )
    assert (triggers_from("always_long", close) == CODE["long_allowed"]).all()
    col = np.array(["long_allowed", "exit_only"])
    assert list(triggers_from("column", close[:2], column=col)) == [
        CODE["long_allowed"],
        CODE["exit_only"],
    ]
    with pytest.raises(ConfigError, match="not in"):
        triggers_from("column", close[:1], column=np.array(["buy"]))
    with pytest.raises(ConfigError, match="tau=1.5"):
        ReferencePolicy(tau=1.5)


def test_the_neutral_policy_demeans_targets_across_the_universe() -> None:
    """policy=neutral: a signed strength per asset (long above 0.5, short below, the trigger
    only permits), then at each bar the targets minus their mean over the assets present,
    scaled together so none exceeds w_max: net zero wherever two assets have a bar."""
    from phat.trading.policy import NeutralPolicy

    pol = NeutralPolicy(tau=0.0, vol_target=1.0, w_min=0.0, w_max=0.5, learning_cap=0.8)
    long_, short = CODE["long_allowed"], CODE["short_allowed"]
    s, t = pol.target_raw(np.array([long_, short, CODE["inactive"]]), np.array([0.3, 0.8, 0.9]),
                          np.full(3, 0.001))  # fmt: skip
    assert s[0] < 0 < s[1] and s[2] == 0.0  # direction from p, not from the trigger
    assert t[0] < 0 < t[1] and t[2] == 0.0
    raw = np.array([[0.5, 0.1, -0.2], [0.4, np.nan, 0.0], [0.3, np.nan, np.nan]])
    d = pol.cross_section(raw)
    np.testing.assert_allclose(np.nansum(d[:2], axis=1), 0.0, atol=1e-12)
    assert np.isnan(d[1, 1]) and np.isnan(d[2, 1:]).all() and d[2, 0] == 0.0
    assert np.nanmax(np.abs(d)) <= 0.5 + 1e-12
    # the widest row (0.5 - 0.1333 = 0.3667, -0.2 - 0.1333 = -0.3333) fits; a wider one scales
    wide = pol.cross_section(np.array([[1.0, -1.0]]))
    np.testing.assert_allclose(wide, [[0.5, -0.5]])
    # the model book's cap binds first when it is the smaller: scaled to it, still net zero
    capped = NeutralPolicy(w_max=0.5, learning_cap=0.25).cross_section(np.array([[1.0, -1.0]]))
    np.testing.assert_allclose(capped, [[0.25, -0.25]])


def test_a_relative_label_is_traded_by_the_neutral_book() -> None:
    """A relative-label model's belief is "beats the others", never a direction: the reference
    policy becomes the neutral one for it (backtest and promotion's trading gates); any other
    label, or a user's own policy class, is used as given."""
    from phat.confdefaults import conf_defaults
    from phat.trading.backtest import build_policy
    from phat.trading.policy import NeutralPolicy

    params = conf_defaults("policy/reference")["params"]
    assert type(build_policy(params, "relative")) is NeutralPolicy
    assert type(build_policy(params, "sign")) is ReferencePolicy
    assert type(build_policy(params)) is ReferencePolicy
    own = {**params, "_target_": "phat.trading.policy.ReferencePolicy", "tau": 0.2}
    assert build_policy(own, "relative").tau == 0.2  # the settings carry over


def test_a_book_steps_as_one_and_one_asset_is_a_book_of_one() -> None:
    """Steps 5-7 have one home (run_book_across; run_book is its one-column case): assets that
    all want the same moves move as each would alone; zero-sum targets from a flat book stay
    zero-sum at every bar (the neutral book's net zero), an asset without a bar holds, and
    one cooldown holds the whole book."""
    from phat.trading.policy import NeutralPolicy

    pol = NeutralPolicy(alpha=0.5, cooldown_bars=2, epsilon_w=0.02)
    rng = np.random.default_rng(5)
    n = 400
    trig = rng.choice([CODE["long_allowed"], CODE["short_allowed"], CODE["exit_only"],
                       CODE["inactive"]], n, p=[0.45, 0.45, 0.05, 0.05])  # fmt: skip
    target = np.clip(np.cumsum(rng.normal(0, 0.03, n)), -0.4, 0.4)
    active = rng.random(n) > 0.1
    alone = pol.run_book(trig, target, active, 0.25)
    three = pol.run_book_across(np.repeat(trig[:, None], 3, 1), np.repeat(target[:, None], 3, 1),
                                np.repeat(active[:, None], 3, 1), 0.25)  # fmt: skip
    assert np.array_equal(three, np.repeat(alone[:, None], 3, 1)) and np.abs(alone).max() > 0.1
    both = np.stack([target, -target], axis=1)
    held = pol.run_book_across(
        np.full((n, 2), CODE["long_allowed"]), both, np.ones((n, 2), bool), 1.0
    )
    assert np.abs(held.sum(axis=1)).max() < 1e-15 and np.abs(held).max() > 0.1
    both[100:140, 1] = np.nan  # the second asset has no bar: it holds, the first moves
    gap = pol.run_book_across(
        np.full((n, 2), CODE["long_allowed"]), both, np.ones((n, 2), bool), 1.0
    )
    assert (gap[100:140, 1] == gap[99, 1]).all() and not (gap[100:140, 0] == gap[99, 0]).all()
    moved = np.flatnonzero(np.any(np.diff(held, axis=0) != 0, axis=1)) + 1
    assert (np.diff(moved) > 2).all()  # after any move the book waits out its cooldown
