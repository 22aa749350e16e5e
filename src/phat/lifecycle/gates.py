"""Promotion gates as a pure function: evidence + thresholds -> gate report. No registry, no
files, no clock: phat.lifecycle.promotion collects the evidence and acts on the decision.

Why not `mlflow.models.MetricThreshold`: it expresses a minimum *improvement* over a baseline
(`min_absolute_change` > 0, `min_relative_change` in (0, 1]); these gates are tolerated
*regressions* ("churn no worse than baseline x 1.10"), which it cannot state. The comparison
here is sign-safe: the allowance is `tolerance * |baseline|`, so a negative baseline (a Sharpe)
widens the limit instead of flipping the test, and a drawdown is compared by its magnitude, so
one stored as a negative number (-0.05) means the same as 0.05.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from phat.confdefaults import conf_defaults


@dataclass(frozen=True)
class Gate:
    name: str
    metric: str
    candidate: float | str
    baseline: float | str
    threshold: str
    passed: bool
    limit: float | None = None  # the number `threshold` holds the candidate to, where one
    read: str = ""  # the evidence the gate read: the record or the window, its span and n


@dataclass(frozen=True)
class TradingEvidence:
    churn: float  # position sign flips per day
    cost_bps: float  # fees + slippage
    max_drawdown: float  # either sign; compared by magnitude
    isolation_compliance: float  # share of model trades fully tagged


@dataclass(frozen=True)
class Evidence:
    """Everything the gates look at, measured on one evaluation window."""

    calibration_method: str
    promotable: bool  # the candidate's phat.promotable tag
    candidate_ece: float
    candidate_brier: float
    baseline_ece: float
    baseline_brier: float
    climatology_brier: float
    candidate_trading: TradingEvidence
    baseline_trading: TradingEvidence
    history_days: float  # train start .. calibration end
    # Checked whatever the evidence setting (on the evaluation window):
    extreme_p: int = 0  # p_hat exactly 0 or 1
    auc_low: float = 1.0  # block-bootstrap 95% lower bound of the candidate's AUC
    candidate_log_loss: float = 0.0
    climatology_log_loss: float = 1.0
    rule_brier: float = float("inf")  # the best one-feature rule's Brier (last sign, last return)
    candidate_is_rule: str = ""  # the ladder kept this rule (e.g. last_return): not its baseline
    # promotion.evidence=walkforward: the version's whole walk-forward record (every fold)
    evidence: str = conf_defaults("promotion/default")["evidence"]
    wf_mcb: float = float("nan")
    wf_pvalue_climatology: float = float("nan")  # one-sided DM (a universe: per-timestamp means)
    wf_pvalue_rule: float = float("nan")  # vs the best one-feature rule, refitted per fold
    wf_rule: str = "-"  # which rule that is (last_sign, last_return)
    wf_pvalue_production: float = float("nan")  # vs production's record on their shared bars
    wf_production: str = ""  # production's version when one exists
    wf_read: str = ""  # what the record gates read: span, folds, n
    window_read: str = ""  # what the window gates read: span, n
    # A universe model on its universe (universe_assets > 0): pooled significance on
    # per-timestamp means, and the assets that fail per-asset safety after Benjamini-Hochberg
    universe_assets: int = 0
    universe_pvalue_climatology: float = float("nan")
    universe_pvalue_rule: float = float("nan")
    assets_miscalibrated: tuple[str, ...] = ()
    assets_worse: tuple[str, ...] = ()
    assets_trading: tuple[str, ...] = ()  # own churn, costs or drawdown regressed


def allowed_limit(
    baseline: float, rel_tolerance: float, higher_is_better: bool, min_slack: float = 0.0
) -> float:
    """The worst value still accepted: baseline worsened by rel_tolerance of its magnitude
    (at least `min_slack`, for baselines near zero)."""
    slack = max(rel_tolerance * abs(baseline), min_slack)
    return baseline - slack if higher_is_better else baseline + slack


def _at_most(
    name: str, metric: str, candidate: float, baseline: float | str, limit: float, text: str,
    read: str = "",
) -> Gate:  # fmt: skip
    return Gate(name, metric, candidate, baseline, text, bool(candidate <= limit), float(limit),
                read)  # fmt: skip


def _universal(ev: Evidence) -> list[Gate]:
    """Gates no evidence setting can waive: a forecast without resolution, certainty (p of
    exactly 0 or 1), a log loss above the climatology's, and beating no baseline at all."""
    best_simple = min(ev.climatology_brier, ev.rule_brier)
    return [
        _no_certainty(ev),
        Gate("resolution", "auc 95% lower bound", ev.auc_low, 0.5, "> 0.5", ev.auc_low > 0.5, 0.5),
        _at_most(
            "log_loss_vs_climatology",
            "log_loss",
            ev.candidate_log_loss,
            ev.climatology_log_loss,
            ev.climatology_log_loss,
            "<= climatology's",
        ),
        Gate(
            "beats_a_baseline",
            "brier"
            + (f" (the candidate is the {_rule_words(ev)})" if ev.candidate_is_rule else ""),
            ev.candidate_brier,
            best_simple,
            "< climatology's or a one-feature rule's"
            + (" (another rule's)" if ev.candidate_is_rule else ""),
            ev.candidate_brier < best_simple,
            best_simple,
        ),
    ]


def _significant(name: str, metric: str, p: float, alpha: float, read: str) -> Gate:
    return Gate(name, metric, p, "-", f"< {alpha}", bool(p < alpha), alpha, read)


def _walkforward(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    """The record's gates: every fold of the version's walk-forward record (months to years,
    where an edge of a few 1e-4 of Brier can be told from noise). The proxy is not among the
    significance baselines: it is a poor forecaster by design, a comparison nothing fails."""
    alpha, read = float(t["alpha"]), ev.wf_read
    per_ts = " (per-timestamp means)" if ev.universe_assets else ""
    gates = [
        _at_most("wf_mcb", "oos_mcb", ev.wf_mcb, "-", float(t["max_mcb"]), f"<= {t['max_mcb']}",
                 read),
        _significant("wf_beats_climatology", f"dm_pvalue vs climatology{per_ts}",
                     ev.wf_pvalue_climatology, alpha, read),
        _significant("wf_beats_rule", f"dm_pvalue vs the best one-feature rule ({ev.wf_rule}){per_ts}",
                     ev.wf_pvalue_rule, alpha, read),
    ]  # fmt: skip
    if ev.candidate_is_rule:  # it is that rule, fitted as the record's rule: not its baseline
        words = _rule_words(ev)
        gates[2] = Gate("wf_beats_rule", f"the candidate is the {words} (the same fit, every fold)",
                        "is the rule", "-", "climatology decides (wf_beats_climatology)", True,
                        None, read)  # fmt: skip
    if ev.wf_production:
        gates.append(_significant("wf_beats_production",
                                  f"dm_pvalue vs production v{ev.wf_production}'s record (shared bars)",
                                  ev.wf_pvalue_production, alpha, read))  # fmt: skip
    return gates


def _rule_words(ev: Evidence) -> str:
    return f"{ev.candidate_is_rule.replace('_', '-')} rule"


def _no_certainty(ev: Evidence) -> Gate:
    return Gate(
        "no_certainty", "p_hat in {0, 1}", ev.extreme_p, "-", "== 0", ev.extreme_p == 0, 0.0
    )


def _window(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    """What only this one fit can show, on its own test window (decide names the window as
    what they read): no certainty, calibrated ECE."""
    return [
        _no_certainty(ev),
        _at_most("ece_max", "ece", ev.candidate_ece, "-", t["max_ece"], f"<= {t['max_ece']}"),
    ]


def decide(ev: Evidence, thresholds: dict[str, Any]) -> list[Gate]:
    """Every gate's outcome; the candidate passes when all pass. `thresholds` is the
    `promotion` config section (conf/promotion/default.yaml holds the defaults).
    `promotion.evidence=walkforward` (the default): significance (vs climatology, the best
    one-feature rule and production's record) and per-asset safety from the version's whole
    walk-forward record; no certainty, ECE and trading from this fit's own window.
    `single_split`: every comparison on the window, as before."""
    t = thresholds
    if ev.evidence == "walkforward":
        assets = _asset_gates(ev, t) if ev.universe_assets else []
        gates = [_calibrated(ev), *_window(ev, t), *_walkforward(ev, t), *assets,
                 *_trading_gates(ev, t)]  # fmt: skip
    else:
        extra = _universe(ev, t) if ev.universe_assets else []
        gates = [_calibrated(ev), *_universal(ev), *_split_gates(ev, t), *extra,
                 *_trading_gates(ev, t)]  # fmt: skip
    return [g if g.read else replace(g, read=ev.window_read) for g in gates]


def _universe(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    """A universe model: better than climatology and than the best one-feature rule across the
    universe, significantly (one-sided DM on the per-timestamp mean loss differential, at
    promotion.alpha); no asset miscalibrated and none significantly worse than climatology
    after Benjamini-Hochberg at promotion.per_asset_fdr (the failing assets are named), or,
    with promotion.exclude_assets=auto, those assets excluded (they stay on the proxy; the
    pooled gates above still count them, which only makes passing harder)."""
    alpha = float(t["alpha"])
    gates = [
        Gate(f"universe_beats_{name}", f"dm_pvalue vs {name} (per-timestamp means)", p, "-",
             f"< {alpha}", bool(p < alpha), alpha)
        for name, p in (("climatology", ev.universe_pvalue_climatology),
                        ("rule", ev.universe_pvalue_rule))
    ]  # fmt: skip
    return gates + _asset_gates(ev, t)


def _asset_gates(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    """Per-asset safety after Benjamini-Hochberg (the record's rows under walk-forward
    evidence, the window's otherwise) and per-asset trading (the window)."""
    fdr = float(t["per_asset_fdr"])
    exclude = str(t.get("exclude_assets", "none")) == "auto"
    wf = ev.evidence == "walkforward"
    gates: list[Gate] = []
    for name, failing, what, read in (
        ("asset_calibration", ev.assets_miscalibrated, "calibration test rejects",
         ev.wf_read if wf else ev.window_read),
        ("asset_not_worse", ev.assets_worse, "Brier worse than climatology",
         ev.wf_read if wf else ev.window_read),
        ("asset_trading", ev.assets_trading, "churn, costs or drawdown regressed", ev.window_read),
    ):  # fmt: skip
        named = ", ".join(failing) if failing else "none"
        if exclude and failing:  # promotion.exclude_assets=auto: they stay on the proxy
            named = f"excluded: {named}"
        gates.append(
            Gate(name, f"assets whose {what}" + (f" (BH {fdr})" if name != "asset_trading" else ""),
                 named, f"of {ev.universe_assets}",
                 "none" if not exclude else "none, or excluded (exclude_assets=auto)",
                 not failing or exclude, 0.0, read)
        )  # fmt: skip
    return gates


def excluded_assets(ev: Evidence, t: dict[str, Any]) -> list[str]:
    """The assets a universe model is promoted without (promotion.exclude_assets=auto): those
    that fail a per-asset gate; [] otherwise."""
    if str(t.get("exclude_assets", "none")) != "auto":
        return []
    return sorted(set(ev.assets_miscalibrated) | set(ev.assets_worse) | set(ev.assets_trading))


def _calibrated(ev: Evidence) -> Gate:
    return Gate(
        "calibrated",
        "calibration",
        ev.calibration_method,
        "-",
        "not none, has resolution",
        ev.promotable,
        read="the version's phat.promotable tag",
    )


def _split_gates(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    return [
        _at_most("ece_max", "ece", ev.candidate_ece, "-", t["max_ece"], f"<= {t['max_ece']}"),
        _at_most(
            "brier_vs_baseline",
            "brier",
            ev.candidate_brier,
            ev.baseline_brier,
            ev.baseline_brier + t["brier_tolerance"],
            f"<= baseline + {t['brier_tolerance']}",
        ),
        _at_most(
            "brier_vs_climatology",
            "brier",
            ev.candidate_brier,
            ev.climatology_brier,
            ev.climatology_brier + t["brier_tolerance"],
            f"<= climatology + {t['brier_tolerance']}",
        ),
        _at_most(
            "ece_vs_baseline",
            "ece",
            ev.candidate_ece,
            ev.baseline_ece,
            ev.baseline_ece + t["ece_tolerance"],
            f"<= baseline + {t['ece_tolerance']}",
        ),
    ]


def _trading_gates(ev: Evidence, t: dict[str, Any]) -> list[Gate]:
    gates: list[Gate] = []
    c, b = ev.candidate_trading, ev.baseline_trading
    for gate, metric, cand, base in (
        ("churn", "churn", c.churn, b.churn),
        ("slippage", "cost_bps", c.cost_bps, b.cost_bps),
        ("drawdown", "max_drawdown", abs(c.max_drawdown), abs(b.max_drawdown)),
    ):
        lim = allowed_limit(
            base,
            float(t["max_regression"][gate]),
            higher_is_better=False,
            min_slack=float(t["min_slack"][gate]),
        )
        gates.append(_at_most(f"{gate}_regression", metric, cand, base, lim, f"<= {lim:.6g}"))
    iso = c.isolation_compliance
    gates.append(Gate("isolation", "isolation_compliance", iso, "-", "== 1.0", iso == 1.0, 1.0))
    gates.append(
        Gate(
            "min_history",
            "training_days",
            ev.history_days,
            "-",
            f">= {t['min_history_days']}",
            ev.history_days >= float(t["min_history_days"]),
            float(t["min_history_days"]),
            "the version's training window",
        )
    )
    return gates


def trading_regressions(
    candidate: dict[str, TradingEvidence], baseline: dict[str, TradingEvidence], t: dict[str, Any]
) -> tuple[str, ...]:
    """The assets whose own churn, costs or drawdown regress beyond the limits the book's
    trading gates use (allowed_limit with promotion.max_regression and min_slack)."""
    bad = []
    for sym in sorted(candidate):
        c, b = candidate[sym], baseline.get(sym)
        if b is None:
            continue
        for gate, cand, base in (
            ("churn", c.churn, b.churn),
            ("slippage", c.cost_bps, b.cost_bps),
            ("drawdown", abs(c.max_drawdown), abs(b.max_drawdown)),
        ):
            lim = allowed_limit(base, float(t["max_regression"][gate]), False,
                                float(t["min_slack"][gate]))  # fmt: skip
            if cand > lim:
                bad.append(sym)
                break
    return tuple(bad)


def report_dict(gates: list[Gate]) -> dict[str, Any]:
    return {"gates": [asdict(g) for g in gates], "passed": all(g.passed for g in gates)}
