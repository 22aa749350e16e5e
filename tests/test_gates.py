"""Promotion gates as a pure function, table-tested at their edges with the DEFAULT thresholds
(conf/promotion/default.yaml, composed as the promote verb sees it): just passing, just failing,
and sign cases (negative Sharpe, drawdown stored negative, zero baseline)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phat.cli.config import compose, validate
from phat.lifecycle.gates import Evidence, TradingEvidence, allowed_limit, decide

T = validate("promote", compose("promote", ["version=1"]))["promotion"]
EPS = 1e-9

BASE_TRADING = TradingEvidence(
    churn=1.0, cost_bps=50.0, max_drawdown=0.05, isolation_compliance=1.0
)
GOOD = Evidence(
    calibration_method="platt",
    promotable=True,
    candidate_ece=0.01,
    candidate_brier=0.240,
    baseline_ece=0.01,
    baseline_brier=0.240,
    climatology_brier=0.250,
    candidate_trading=BASE_TRADING,
    baseline_trading=BASE_TRADING,
    history_days=365.0,
    extreme_p=0,
    auc_low=0.55,
    candidate_log_loss=0.67,
    climatology_log_loss=0.69,
    rule_brier=0.249,
    evidence="single_split",  # the table below is the window's gates; GOOD_WF the record's
)
GOOD_WF = replace(GOOD, evidence="walkforward", wf_mcb=0.001, wf_pvalue_climatology=0.01,
                  wf_pvalue_rule=0.02, wf_rule="last_return", wf_read="record", window_read="window")  # fmt: skip


def outcome(ev: Evidence, gate: str) -> bool:
    gates = {g.name: g for g in decide(ev, T)}
    return gates[gate].passed


def cand_trading(**kw: float) -> Evidence:
    return replace(GOOD, candidate_trading=replace(BASE_TRADING, **kw))


def base_trading(ev: Evidence, **kw: float) -> Evidence:
    return replace(ev, baseline_trading=replace(BASE_TRADING, **kw))


def test_defaults_are_the_ones_this_table_was_written_for() -> None:
    # If a default changes, these edges move with it: the table reads T, but say so loudly.
    assert T["max_ece"] == 0.03 and T["brier_tolerance"] == 0.0 and T["ece_tolerance"] == 0.005
    assert T["max_regression"] == {"churn": 0.10, "slippage": 0.10, "drawdown": 0.10}
    assert T["min_history_days"] == 180
    assert T["alpha"] == 0.05 and T["per_asset_fdr"] == 0.05


def test_good_candidate_passes_every_gate() -> None:
    gates = decide(GOOD, T)
    assert all(g.passed for g in gates), [g for g in gates if not g.passed]
    assert {g.name for g in gates} == {
        "calibrated",
        "no_certainty",
        "resolution",
        "log_loss_vs_climatology",
        "beats_a_baseline",
        "ece_max",
        "brier_vs_baseline",
        "brier_vs_climatology",
        "ece_vs_baseline",
        "churn_regression",
        "slippage_regression",
        "drawdown_regression",
        "isolation",
        "min_history",
    }


CASES = [
    # gate, evidence, passes
    ("calibrated", GOOD, True),
    ("calibrated", replace(GOOD, promotable=False, calibration_method="none"), False),
    ("ece_max", replace(GOOD, candidate_ece=T["max_ece"], baseline_ece=T["max_ece"]), True),
    ("ece_max", replace(GOOD, candidate_ece=T["max_ece"] + EPS, baseline_ece=0.03), False),
    ("brier_vs_baseline", replace(GOOD, candidate_brier=0.240), True),
    ("brier_vs_baseline", replace(GOOD, candidate_brier=0.240 + 1e-7), False),
    ("brier_vs_climatology", replace(GOOD, candidate_brier=0.25, baseline_brier=0.26), True),
    (
        "brier_vs_climatology",
        replace(GOOD, candidate_brier=0.25 + 1e-7, baseline_brier=0.26),
        False,
    ),
    # climatology of zero (a one-outcome window): only a perfect forecast passes
    ("brier_vs_climatology", replace(GOOD, candidate_brier=0.0, climatology_brier=0.0), True),
    ("brier_vs_climatology", replace(GOOD, candidate_brier=1e-7, climatology_brier=0.0), False),
    ("ece_vs_baseline", replace(GOOD, candidate_ece=0.015, baseline_ece=0.01), True),
    ("ece_vs_baseline", replace(GOOD, candidate_ece=0.015 + 1e-7, baseline_ece=0.01), False),
    ("churn_regression", cand_trading(churn=1.1), True),
    ("churn_regression", cand_trading(churn=1.1 + 1e-7), False),
    # zero baseline: the absolute min_slack is the allowance
    ("churn_regression", base_trading(cand_trading(churn=0.01), churn=0.0), True),
    ("churn_regression", base_trading(cand_trading(churn=0.01 + 1e-7), churn=0.0), False),
    ("slippage_regression", cand_trading(cost_bps=55.0), True),
    ("slippage_regression", cand_trading(cost_bps=55.0 + 1e-6), False),
    ("slippage_regression", base_trading(cand_trading(cost_bps=1.0), cost_bps=0.0), True),
    ("slippage_regression", base_trading(cand_trading(cost_bps=1.0 + 1e-7), cost_bps=0.0), False),
    ("drawdown_regression", cand_trading(max_drawdown=0.055), True),
    ("drawdown_regression", cand_trading(max_drawdown=0.055 + 1e-9), False),
    # drawdown stored negative means the same as positive: a deeper one still fails
    (
        "drawdown_regression",
        base_trading(cand_trading(max_drawdown=-0.055), max_drawdown=-0.05),
        True,
    ),
    (
        "drawdown_regression",
        base_trading(cand_trading(max_drawdown=-0.06), max_drawdown=-0.05),
        False,
    ),
    ("drawdown_regression", base_trading(cand_trading(max_drawdown=0.0), max_drawdown=0.0), True),
    (
        "drawdown_regression",
        base_trading(cand_trading(max_drawdown=1e-4 + 1e-9), max_drawdown=0.0),
        False,
    ),
    ("isolation", cand_trading(isolation_compliance=1.0), True),
    ("isolation", cand_trading(isolation_compliance=0.999), False),
    ("min_history", replace(GOOD, history_days=180.0), True),
    ("min_history", replace(GOOD, history_days=180.0 - 1e-6), False),
    # Gates no evidence setting waives.
    ("no_certainty", replace(GOOD, extreme_p=1), False),
    ("resolution", replace(GOOD, auc_low=0.5), False),  # a constant forecast's AUC is 0.5
    ("resolution", replace(GOOD, auc_low=0.5 + 1e-9), True),
    ("log_loss_vs_climatology", replace(GOOD, candidate_log_loss=0.69), True),
    ("log_loss_vs_climatology", replace(GOOD, candidate_log_loss=0.69 + 1e-9), False),
    ("beats_a_baseline", replace(GOOD, candidate_brier=0.249 - 1e-9), True),
    ("beats_a_baseline", replace(GOOD, candidate_brier=0.249, baseline_brier=0.25), False),
]


@pytest.mark.parametrize(("gate", "ev", "passes"), CASES)
def test_gate_edges_at_default_thresholds(gate: str, ev: Evidence, passes: bool) -> None:
    assert outcome(ev, gate) is passes


def test_every_gate_has_a_failing_edge_case() -> None:
    failing = {g for g, _, p in CASES if not p}
    assert failing == {g.name for g in decide(GOOD, T)}


def test_walkforward_evidence_replaces_the_single_window_comparisons() -> None:
    """Significance from the whole record (climatology, the best rule, production when one
    exists), never against the proxy; no certainty and ECE from the window; each gate says
    which evidence it read."""
    gates = {g.name: g for g in decide(GOOD_WF, T)}
    assert all(g.passed for g in gates.values()), [g for g in gates.values() if not g.passed]
    assert {"wf_mcb", "wf_beats_climatology", "wf_beats_rule", "no_certainty", "ece_max"} <= set(
        gates
    )
    assert not {"brier_vs_baseline", "ece_vs_baseline", "wf_beats_production"} & set(gates)
    assert not any("proxy" in g.metric for g in gates.values())
    assert {g.read for n, g in gates.items() if n.startswith("wf_")} == {"record"}
    assert gates["ece_max"].read == "window" and gates["no_certainty"].read == "window"
    alpha, max_mcb = T["alpha"], T["max_mcb"]
    for gate, field in (("wf_beats_climatology", "wf_pvalue_climatology"),
                        ("wf_beats_rule", "wf_pvalue_rule")):  # fmt: skip
        assert not outcome(replace(GOOD_WF, **{field: alpha}), gate)  # not significant
        assert outcome(replace(GOOD_WF, **{field: alpha - 1e-9}), gate)
        assert not outcome(replace(GOOD_WF, **{field: float("nan")}), gate)  # no record
    assert not outcome(replace(GOOD_WF, wf_mcb=max_mcb + 1e-9), "wf_mcb")
    live = replace(GOOD_WF, wf_production="3", wf_pvalue_production=0.2)
    assert not outcome(live, "wf_beats_production")  # no better than production's record
    assert outcome(replace(live, wf_pvalue_production=0.01), "wf_beats_production")
    for bad in (dict(extreme_p=3), dict(candidate_ece=T["max_ece"] + 1e-9)):  # the window's
        ev = replace(GOOD_WF, **bad)
        assert not all(g.passed for g in decide(ev, T)), bad


@pytest.mark.parametrize(
    ("baseline", "higher_is_better", "limit"),
    [
        (1.0, True, 0.9),  # a Sharpe of 1.0 may fall to 0.9
        (-1.0, True, -1.1),  # negative Sharpe: the limit is below it, never above
        (0.05, False, 0.055),  # a drawdown of 5% may grow to 5.5%
        (0.0, False, 0.0),  # zero baseline, no slack: no regression allowed
    ],
)
def test_allowed_limit_is_sign_safe(baseline: float, higher_is_better: bool, limit: float) -> None:
    got = allowed_limit(baseline, 0.10, higher_is_better)
    assert got == pytest.approx(limit)
    # The limit is never better than the baseline, whatever the sign.
    assert (got <= baseline) if higher_is_better else (got >= baseline)


GOOD_UNIVERSE = replace(
    GOOD, universe_assets=10, universe_pvalue_climatology=0.001, universe_pvalue_rule=0.01
)


def test_a_universe_model_gets_its_gates_and_they_pass_on_good_evidence() -> None:
    gates = {g.name: g for g in decide(GOOD_UNIVERSE, T)}
    universe = {"universe_beats_climatology", "universe_beats_rule", "asset_calibration",
                "asset_not_worse"}  # fmt: skip
    assert universe <= set(gates) and all(gates[n].passed for n in universe)
    assert not universe & {g.name for g in decide(GOOD, T)}  # one asset: none of them


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"universe_pvalue_climatology": 0.05}, "universe_beats_climatology"),  # not < alpha
        ({"universe_pvalue_rule": 0.05 + EPS}, "universe_beats_rule"),
        ({"universe_pvalue_rule": float("nan")}, "universe_beats_rule"),  # no rule: not shown
        ({"assets_miscalibrated": ("A03",)}, "asset_calibration"),
        ({"assets_worse": ("A01", "A07")}, "asset_not_worse"),
        ({"assets_trading": ("A02",)}, "asset_trading"),
    ],
)
def test_universe_gates_fail_at_their_edges_and_name_the_assets(change, gate) -> None:
    assert outcome(
        replace(GOOD_UNIVERSE, universe_pvalue_climatology=0.05 - EPS), "universe_beats_climatology"
    )
    gates = {g.name: g for g in decide(replace(GOOD_UNIVERSE, **change), T)}
    assert not gates[gate].passed
    for key in ("assets_miscalibrated", "assets_worse", "assets_trading"):
        for sym in change.get(key, ()):
            assert sym in str(gates[gate].candidate)


def test_exclude_assets_auto_passes_the_per_asset_gates_and_names_the_excluded() -> None:
    from phat.lifecycle.gates import excluded_assets

    bad = replace(GOOD_UNIVERSE, assets_miscalibrated=("A03",), assets_worse=("A07", "A03"))
    assert not outcome(bad, "asset_calibration") and excluded_assets(bad, T) == []
    auto = {**T, "exclude_assets": "auto"}
    gates = {g.name: g for g in decide(bad, auto)}
    assert gates["asset_calibration"].passed and gates["asset_not_worse"].passed
    assert gates["asset_not_worse"].candidate == "excluded: A07, A03"
    assert excluded_assets(bad, auto) == ["A03", "A07"]
    # the pooled gates are not waived
    assert not {g.name: g for g in decide(replace(bad, universe_pvalue_rule=0.5), auto)}[
        "universe_beats_rule"
    ].passed


def test_an_asset_whose_own_trading_regresses_is_named() -> None:
    from phat.lifecycle.gates import trading_regressions

    calm = {"A": BASE_TRADING, "B": BASE_TRADING}
    churny = {"A": BASE_TRADING, "B": replace(BASE_TRADING, churn=1.2)}  # > 1.0 * 1.10
    edge = {"A": BASE_TRADING, "B": replace(BASE_TRADING, churn=1.1 - EPS)}
    assert trading_regressions(churny, calm, T) == ("B",)
    assert trading_regressions(edge, calm, T) == ()
