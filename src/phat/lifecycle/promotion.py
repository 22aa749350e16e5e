"""Promotion gates and rollback through the MLflow Model Registry.

The registry alias `production` is the source of truth for what is live. A candidate version
reaches it only through the gates below, evaluated on a window the candidate never trained or
calibrated on (its test span by default), against the current production version, or the proxy
when there is none. Gate thresholds live in conf/promotion/.

The decision itself is a pure function (phat.lifecycle.gates); this module collects the
evidence (load, score, backtest, read MLflow) and acts on the decision (tags, alias moves).

The registry side (exclusive hold, append-only history, all-or-nothing moves, fail-safe reads)
is phat.lifecycle.production.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.data import as_utc
from phat.errors import ConfigError, ContractError, PhatError
from phat.lifecycle.gates import (
    Evidence,
    TradingEvidence,
    decide,
    excluded_assets,
    report_dict,
    trading_regressions,
)
from phat.lifecycle.production import (
    RegistryConflict,
    current_production,
    exclusive,
    move_production,
    now_iso,
    read_history,
    require_model,
)
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.data.bars import AssetSlice
    from phat.settings import PromoteConf, RollbackConf

__all__ = ["PromotionRefused", "RegistryConflict", "current_production", "read_history"]

log = logging.getLogger(__name__)


class PromotionRefused(PhatError):
    """The candidate failed a gate, or is not a finished training (the message says which)."""

    reason = "promotion_refused"


# ---------------------------------------------------------------------------------------------
# Evaluation


def _window(
    mv: Any, cfg_start: str | None, cfg_end: str | None
) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    window = json.loads(mv.tags.get(Tag.TRAINING_WINDOW, "{}"))
    learned_until = pd.Timestamp(window["calibration"][1]) if "calibration" in window else None
    start = (
        as_utc(cfg_start)
        if cfg_start
        else (as_utc(window["test"][0]) if "test" in window else None)
    )
    if start is None:
        raise ContractError(
            f"version {mv.version} has no phat.training_window test span; give promotion.window.start"
        )
    if learned_until is not None and start <= learned_until:
        raise ConfigError(
            f"promotion window starts {start.isoformat()}, inside what version {mv.version} was trained or "
            f"calibrated on (until {learned_until.isoformat()}); choose a later window"
        )
    return start, (as_utc(cfg_end) if cfg_end else None)


def _history_days(mv: Any) -> float:
    w = json.loads(mv.tags.get(Tag.TRAINING_WINDOW, "{}"))
    if "train" not in w:
        return 0.0
    last = w.get("calibration", w["train"])[1]
    return (pd.Timestamp(last) - pd.Timestamp(w["train"][0])) / pd.Timedelta(days=1)


def require_candidate(client: Any, name: str, mv: Any) -> None:
    """The refusals that need no evidence, made before any is gathered: crash debris, a
    training run that did not finish, the version already production."""
    _require_finished(client, name, mv)
    if current_production(client, name) == str(mv.version):
        raise ConfigError(f"{name} v{mv.version} is already production")


def _require_finished(client: Any, name: str, mv: Any) -> None:
    """A version whose training run did not finish (a crash, kill -9) is never a candidate."""
    from phat.registry.client import registry_error

    if mv.tags.get(Tag.DEBRIS):
        raise PromotionRefused(
            f"{name} v{mv.version} is crash debris ({mv.tags[Tag.DEBRIS]}); train again"
        )
    if not mv.run_id:
        return
    try:
        status = client.get_run(mv.run_id).info.status
    except Exception as e:
        raise registry_error(e, f"run {mv.run_id} of {name} v{mv.version}") from None
    if status != "FINISHED":
        raise PromotionRefused(
            f"{name} v{mv.version}: its training run {mv.run_id} is {status}, not FINISHED; "
            "`phat doctor` lists what crashes left behind"
        )


def _signals(resolved: Any, parts: list[AssetSlice], proxy: dict[str, Any]) -> Any:
    """p_hat_frame per asset (a universe model scores each asset under its own map; a
    single-asset model and the proxy score every asset alike), rows in the parts' order."""
    from phat.trading.signals import for_asset, p_hat_frame

    frames = []
    for a in parts:
        view = for_asset(resolved, a.symbol)  # a universe model: the asset's own map and alarm
        frames.append(p_hat_frame(view, a.bars.frame, proxy, strict=True))
    return pd.concat(frames)


def _trading(m: dict[str, float]) -> TradingEvidence:
    return TradingEvidence(
        churn=m["churn"],
        cost_bps=m["cost_bps"],
        max_drawdown=m["max_drawdown"],
        isolation_compliance=m["isolation_compliance"],
    )


def evaluate(cfg: PromoteConf, name: str, version: str) -> dict[str, Any]:
    """Collect the evidence for candidate vs baseline on the evaluation window, then decide
    (phat.lifecycle.gates.decide); returns the gate report."""
    from phat.data.load import load_bars
    from phat.evaluation.metrics import brier, ece
    from phat.registry.versions import get_version, registry_client

    pc = cfg.promotion
    client = registry_client()
    mv = get_version(client, name, version)
    _require_finished(client, name, mv)
    cand, base, prod = _sides(client, name, mv)
    lspec = cand.model.label_spec
    start, end = _window(mv, pc.window.start, pc.window.end)
    bars, _ = load_bars(cfg, lspec.timeframe, cand.model)
    parts = bars.members()  # every asset's rows; one asset is a universe of one
    other_data = bool(mv.tags.get(Tag.DATA_HASH)) and bars.data_hash() != mv.tags[Tag.DATA_HASH]
    if other_data and not pc.allow_other_data:
        log.warning(
            "evaluation data differs from the candidate's training data (data_hash); evaluating "
            "anyway (promotion.allow_other_data=true says this is intended)"
        )
    in_win, sig_c, sig_b, y, mask = _scored(cfg, bars, parts, cand, base, lspec, start, end)
    pc_, pb_ = sig_c["p_hat"].to_numpy(), sig_b["p_hat"].to_numpy()
    yy = y[mask]
    # climatology at the candidate's own train base rate (the window's rate if unrecorded)
    train_rate = _recorded(client, mv, "train_base_rate", float(yy.mean()))
    bt_c, bt_b, per_asset_trading = _backtests(
        cfg, parts, in_win, (sig_c, cand), (sig_b, base), lspec.timeframe, lspec.kind
    )
    n_bins = int(cfg.metrics.n_bins)
    universal, rule_p = _universal_evidence(bars, y, mask, pc_, train_rate, mv, cfg.metrics)
    # several assets: each one's trading regressions, and (on the window) the cross-section's
    # significance and per-asset safety; one asset's evidence is the whole window's
    found, per_asset = bars.across_assets(lambda symbols: _universe_evidence(
        symbols, bars.clock, y, mask, pc_, train_rate, rule_p, lspec, pc, n_bins,
        per_asset_trading,
    )) or ({}, None)  # fmt: skip
    universal.update(found)
    wf: dict[str, Any] = {}
    if pc.evidence == "walkforward":
        wf = record_evidence(client, name, mv, prod, lspec.horizon_bars, pc, n_bins)
    if wf.get("per_asset") is not None:  # the record's table is the one the gates read
        per_asset = wf["per_asset"]
    wf.pop("per_asset", None)
    asset_skill = wf.pop("asset_skill", None)
    evidence = Evidence(
        calibration_method=str(json.loads(mv.tags.get(Tag.CALIBRATION, "{}")).get("method", "?")),
        promotable=mv.tags.get(Tag.PROMOTABLE) == "true",
        candidate_ece=ece(yy, pc_[mask], n_bins=n_bins),
        candidate_brier=brier(yy, pc_[mask]),
        baseline_ece=ece(yy, pb_[mask], n_bins=n_bins),
        baseline_brier=brier(yy, pb_[mask]),
        climatology_brier=brier(yy, np.full(len(yy), train_rate)),
        candidate_trading=_trading(bt_c),
        baseline_trading=_trading(bt_b),
        history_days=_history_days(mv),
        evidence=str(pc.evidence),
        window_read=_window_read(bars.index[mask]),
        **{**universal, **wf},
    )
    last = end.isoformat() if end is not None else str(bars.index[-1])
    head = {
        "model_name": name, "candidate_version": str(version),
        "candidate_hash": cand.binding.model_hash,
        "baseline": f"model_v{prod}" if prod else "proxy", "baseline_version": prod,
        "window": [start.isoformat(), last], "samples": int(mask.sum()),
    }  # fmt: skip
    return _report(head, evidence, pc, bt_c, bt_b, per_asset, asset_skill)


def _recorded(client: Any, mv: Any, metric: str, default: float) -> float:
    """A metric the version's training run recorded; `default` for a version without a run
    or a run without it."""
    if not mv.run_id:
        return default
    return float(client.get_run(mv.run_id).data.metrics.get(metric, default))


def _sides(client: Any, name: str, mv: Any) -> tuple[Any, Any, str | None]:
    """(the candidate, the baseline it must beat, the production version): the version in
    production, else the reference proxy; a candidate already in production is refused."""
    from phat.trading.signals import ResolvedSignal, resolve

    version = str(mv.version)
    cand = resolve(f"model_v{version}", name, mv.tags.get(Tag.HORIZON_ID, ""), strict=True)
    horizon_id = cand.model.label_spec.horizon_id
    prod = current_production(client, name)
    if prod == version:
        raise ConfigError(f"{name} v{version} is already production")
    base = (
        resolve(f"model_v{prod}", name, horizon_id, strict=True)
        if prod
        else ResolvedSignal(resolve("proxy", None, horizon_id).binding, None)
    )
    return cand, base, prod


def _window_read(shown: pd.DatetimeIndex) -> str:
    """The scored window as the report names it."""
    if not len(shown):
        return "window: empty"
    return f"window {shown.min():%Y-%m-%d}..{shown.max():%Y-%m-%d}, n={len(shown)}"


def _scored(
    cfg: PromoteConf,
    bars: Any,
    parts: list[AssetSlice],
    cand: Any,
    base: Any,
    lspec: Any,
    start: pd.Timestamp,
    end: pd.Timestamp | None,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """(in the window, the candidate's signals, the baseline's, the labels, the rows both
    scored with a label in the window); fewer than promotion.min_samples such rows is refused."""
    from phat.contract.labels import make_labels

    pc = cfg.promotion
    in_win = bars.index >= start
    if end is not None:
        in_win &= bars.index < end
    proxy_params = dict(cfg.signal.proxy)
    sig_c = _signals(cand, parts, proxy_params)
    sig_b = _signals(base, parts, proxy_params)
    y = make_labels(bars.frame["close"].to_numpy(), bars.segment, lspec, bars.timeline()[0])
    cand_ok = (sig_c["source"] == "model").to_numpy()
    pb_ = sig_b["p_hat"].to_numpy()
    base_ok = (
        (sig_b["source"] == "model").to_numpy() if base.model is not None else np.isfinite(pb_)
    )
    mask = in_win & cand_ok & base_ok & np.isfinite(y)
    if mask.sum() < int(pc.min_samples):
        raise ConfigError(
            f"evaluation window holds {int(mask.sum())} scored samples; need "
            f"promotion.min_samples={pc['min_samples']}"
        )
    return in_win, sig_c, sig_b, y, mask


def _report(
    head: dict[str, Any],
    evidence: Evidence,
    pc: dict[str, Any],
    bt_c: dict[str, float],
    bt_b: dict[str, float],
    per_asset: pd.DataFrame | None,
    asset_skill: Any,
) -> dict[str, Any]:
    """The gate report: what was compared (`head`), the decision, the assets a universe
    model would be promoted without, the backtests and calibration of both sides."""
    return {
        **head,
        **report_dict(decide(evidence, pc)),
        "excluded_assets": excluded_assets(evidence, pc),
        "backtest": {"candidate": bt_c, "baseline": bt_b},
        "calibration": {
            "candidate": {"brier": evidence.candidate_brier, "ece": evidence.candidate_ece},
            "baseline": {"brier": evidence.baseline_brier, "ece": evidence.baseline_ece},
            "climatology_brier": evidence.climatology_brier,
        },
        **(
            {}
            if per_asset is None
            else {"per_asset": json.loads(per_asset.to_json(orient="records"))}
        ),
        **({"asset_skill": asset_skill} if asset_skill else {}),
    }


def _backtests(
    cfg: PromoteConf,
    parts: list[AssetSlice],
    in_win: np.ndarray,
    cand: tuple[pd.DataFrame, Any],
    base: tuple[pd.DataFrame, Any],
    timeframe: str,
    label_kind: str,
) -> tuple[dict[str, float], dict[str, float], Any]:
    """The configured policy (policy=neutral: one market-neutral book across the assets) on
    each asset's own bars in the window, driven by the candidate's and the baseline's signals
    (`cand`, `base`: (signal frame, resolved signal)): both books' aggregate metrics and the
    per-asset trading regressions."""
    from phat.trading.backtest import (
        aggregate_metrics,
        backtest_assets,
        build_policy,
        build_triggers,
        cost_kwargs,
    )

    policy = build_policy(cfg.policy.params, label_kind)  # a relative label: a neutral book
    books: list[dict[str, dict[str, float]]] = []
    for sig, who in (cand, base):
        inputs, costs = {}, {}
        for a in parts:
            win = in_win[a.start : a.stop]
            if win.any():
                rows = slice(a.start, a.stop)
                inputs[a.symbol] = (a.bars.frame[win], sig[rows][win],
                                    build_triggers(cfg, a.bars)[win])  # fmt: skip
                costs[a.symbol] = cost_kwargs(cfg, a.symbol, timeframe)
        done = backtest_assets(inputs, policy, who.binding, costs)
        books.append({s: r.metrics for s, r in done.items()})
    bt_c, bt_b = books
    regressions = trading_regressions(
        {s: _trading(m) for s, m in bt_c.items()},
        {s: _trading(m) for s, m in bt_b.items()},
        cfg.promotion,
    )
    return aggregate_metrics(bt_c), aggregate_metrics(bt_b), regressions


def _universal_evidence(
    bars: Any,
    y: np.ndarray,
    mask: np.ndarray,
    p: np.ndarray,
    train_rate: float,
    mv: Any,
    mc: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray]:
    """What the gates every evidence setting keeps look at, on the evaluation window: exact
    0/1 forecasts, the AUC's block-bootstrap lower bound (resolution), log loss vs the
    climatology's, and the best one-feature rule (fitted on the candidate's training window;
    also returned: its forecasts on the window's samples, NaN when it could not be fitted)."""
    from phat.evaluation.metrics import block_bootstrap_ci, brier, log_loss, roc_auc
    from phat.models.rules import score_rules

    yy, pp = y[mask], p[mask]
    extreme = int(np.sum((pp <= 0.0) | (pp >= 1.0)))
    # metrics.bootstrap_* moving blocks, as training's intervals (a universe's blocks hold
    # that many timestamps of every asset)
    block = int(mc.bootstrap_block) * bars.timeline()[1]  # samples per bar of the timeline
    n_boot = int(mc.bootstrap_n)
    auc_low = block_bootstrap_ci(yy, pp, {"auc": roc_auc}, block=block, n_boot=n_boot, seed=0)
    auc_low = auc_low["auc"][0]
    clim = np.full(len(yy), train_rate)
    window = json.loads(mv.tags.get(Tag.TRAINING_WINDOW, "{}"))
    rule_brier, rule_p = float("inf"), np.full(len(yy), np.nan)
    is_rule = "last_return" if mv.tags.get(Tag.SELECTED_RUNG) == "last_return" else ""
    if "train" in window:
        last = window.get("calibration", window["train"])[1]
        fit = (bars.index >= pd.Timestamp(window["train"][0])) & (bars.index <= pd.Timestamp(last))
        if np.isfinite(y[fit]).sum() > 100:  # the rules need a training window to learn from
            relative = json.loads(mv.tags.get(Tag.LABEL_DEFINITION, "{}")).get("kind") == "relative"
            found = score_rules(
                y, bars, np.flatnonzero(fit), np.flatnonzero(mask), train_rate, None, relative
            )
            names = ["last_sign", "last_return"]
            if is_rule and not relative:  # the candidate is this rule: it is not its own baseline
                names.remove(is_rule)
            rules = tuple(found[n] for n in names)
            if all(np.isfinite(r).all() for r in rules):
                rule_brier = min(brier(yy, r) for r in rules)
                rule_p = min(rules, key=lambda r: brier(yy, r))
    universal = {
        "extreme_p": extreme,
        "auc_low": float(auc_low) if np.isfinite(auc_low) else 0.5,
        "candidate_log_loss": log_loss(yy, np.clip(pp, 1e-15, 1 - 1e-15)),
        "climatology_log_loss": log_loss(yy, clim),
        "rule_brier": rule_brier,
        "candidate_is_rule": is_rule,
    }
    return universal, rule_p


def _universe_evidence(
    symbols: np.ndarray,
    clock: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    p: np.ndarray,
    train_rate: float,
    rule_p: np.ndarray,
    lspec: Any,
    pc: dict[str, Any],
    n_bins: int,
    assets_trading: Any,
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """A universe's evidence: the assets whose own trading regressed (`assets_trading`) and,
    read on the window (under promotion.evidence=walkforward the record gives them), the
    one-sided DM p-values of the pooled forecast against climatology and the best one-feature
    rule on the per-timestamp mean loss differential, and the per-asset table
    (phat.evaluation.universe) with the assets whose calibration test rejects, and whose Brier
    is significantly worse than climatology's, after Benjamini-Hochberg at
    promotion.per_asset_fdr. `symbols`, `clock`: each row's asset and slot on the timeline."""
    from phat.evaluation.significance import universe_diebold_mariano

    if pc.evidence == "walkforward":
        return {"assets_trading": assets_trading}, None
    h = lspec.horizon_bars
    yy, pp = y[mask], p[mask]
    clim = np.full(len(yy), train_rate)
    clock = clock[mask]
    safety, table = asset_safety(
        symbols[mask], yy, pp, clim, rule_p, h, n_bins, float(pc.per_asset_fdr)
    )
    loss = (pp - yy) ** 2
    vs_rule = (
        universe_diebold_mariano(loss, (rule_p - yy) ** 2, clock, h)["pvalue"]
        if np.isfinite(rule_p).all()
        else float("nan")
    )
    found = {
        "assets_trading": assets_trading,
        "universe_pvalue_climatology": universe_diebold_mariano(loss, (clim - yy) ** 2, clock, h)[
            "pvalue"
        ],
        "universe_pvalue_rule": vs_rule,
        **safety,
    }
    return found, table


def asset_safety(
    symbols: np.ndarray, y: np.ndarray, p: np.ndarray, clim: np.ndarray, rule_p: np.ndarray,
    horizon_bars: int, n_bins: int, fdr: float, folds: np.ndarray | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """The per-asset safety the gates read (the window's or the record's rows, with the
    record's `folds`): the per-asset table (phat.evaluation.universe) with the assets whose
    calibration test rejects, and whose Brier is significantly worse than climatology's, after
    Benjamini-Hochberg at `fdr`."""
    from phat.evaluation.significance import benjamini_hochberg
    from phat.evaluation.universe import per_asset_table

    table = per_asset_table(symbols, y, p, clim, rule_p, horizon_bars, n_bins, alpha=fdr,
                            folds=folds)  # fmt: skip
    # "worse than climatology": the one-sided p-value of the other side
    worse = benjamini_hochberg(1.0 - table["dm_pvalue_vs_climatology"].to_numpy())
    table["worse_than_climatology"] = worse < fdr
    return {
        "universe_assets": len(table),
        "assets_miscalibrated": tuple(table.loc[table["miscalibrated"], "symbol"]),
        "assets_worse": tuple(table.loc[table["worse_than_climatology"], "symbol"]),
    }, table


def _wf_record(client: Any, name: str, mv: Any) -> pd.DataFrame:
    """The stitched out-of-sample record of version mv's walk-forward run."""
    import tempfile

    import mlflow

    run_id = mv.tags.get(Tag.WALKFORWARD_RUN_ID)
    if not run_id:
        raise PromotionRefused(
            f"{name} v{mv.version} has no walk-forward record; run `phat walkforward "
            f"walkforward.for_version={mv.version}` on its data first (promotion.evidence=walkforward)"
        )
    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="oos_predictions.parquet", dst_path=d
        )
        return pd.read_parquet(path)


def _versus_production(
    client: Any, name: str, mv: Any, prod: str, rec: pd.DataFrame, pc: dict[str, Any], dm: Any
) -> float:
    """The one-sided DM p-value of version mv's record against production's, on the bars (a
    universe's: the (timestamp, asset) rows) both records hold."""
    universe = "symbol" in rec.columns
    other = _wf_record(client, name, client.get_model_version(name, prod))
    mine = rec.set_index("symbol", append=True) if universe else rec
    if universe and "symbol" in other.columns:
        other = other.set_index("symbol", append=True)
    both = mine.join(other[["p_hat"]], rsuffix="_prod", how="inner")
    if len(both) < int(pc.min_samples):
        raise ConfigError(
            f"the walk-forward records of v{mv.version} and production v{prod} share "
            f"{len(both)} bars; need promotion.min_samples={pc['min_samples']}"
        )
    yb = both["label"].to_numpy()
    times = both.index.get_level_values(0) if universe else both.index
    return dm(
        (both["p_hat"].to_numpy() - yb) ** 2, (both["p_hat_prod"].to_numpy() - yb) ** 2, times
    )


def record_evidence(
    client: Any,
    name: str,
    mv: Any,
    prod: str | None,
    horizon_bars: int,
    pc: dict[str, Any],
    n_bins: int,
) -> dict[str, Any]:
    """The gates' evidence from version mv's whole walk-forward record (every fold, not only
    the version's own test window): its CORP miscalibration; one-sided Diebold-Mariano of its
    Brier losses against climatology and the best one-feature rule (each refitted in every
    fold, as the record holds them) and, when production exists, against production's record
    on the bars both hold; a universe's tests on the per-timestamp mean loss differential, and
    its per-asset safety (calibration test, worse than climatology) after Benjamini-Hochberg
    at promotion.per_asset_fdr on the record's rows."""
    from phat.evaluation.decomposition import corp_brier
    from phat.evaluation.metrics import brier
    from phat.evaluation.significance import diebold_mariano, universe_diebold_mariano

    rec = _wf_record(client, name, mv)
    if len(rec) < int(pc.min_samples):
        raise ConfigError(
            f"{name} v{mv.version}'s walk-forward record holds {len(rec)} bars; need "
            f"promotion.min_samples={pc['min_samples']}"
        )
    y = rec["label"].to_numpy()
    p = rec["p_hat"].to_numpy()
    loss = (p - y) ** 2
    universe = "symbol" in rec.columns  # rows are (timestamp, asset)

    def dm(a: np.ndarray, b: np.ndarray, index: Any) -> float:
        if not universe:
            return float(diebold_mariano(a, b, horizon_bars)["pvalue"])
        return float(
            universe_diebold_mariano(a, b, pd.DatetimeIndex(index).asi8, horizon_bars)["pvalue"]
        )

    clim = rec["p_climatology"].to_numpy()
    rules = {
        r: rec[f"p_{r}"].to_numpy()
        for r in ("last_sign", "last_return")
        if f"p_{r}" in rec.columns and np.isfinite(rec[f"p_{r}"].to_numpy()).all()
    }
    best = min(rules, key=lambda r: brier(y, rules[r])) if rules else "-"
    rule_p = rules[best] if rules else np.full(len(y), np.nan)
    # A candidate whose every fold kept the last-return rung is that rule, fitted as the
    # record's rule is (recipe.fold.fold_rules): the same bits; climatology decides for it.
    is_rule = "last_return" in rules and np.array_equal(p, rules["last_return"])
    folds = int(rec["fold"].nunique()) if "fold" in rec.columns else 0
    found: dict[str, Any] = {
        "wf_mcb": corp_brier(y, p)["mcb"],
        "wf_pvalue_climatology": dm(loss, (clim - y) ** 2, rec.index),
        "wf_pvalue_rule": (
            dm(loss, (rule_p - y) ** 2, rec.index) if rules and not is_rule else float("nan")
        ),
        "wf_rule": best,
        "candidate_is_rule": "last_return" if is_rule else "",
        "wf_read": (
            f"record {rec.index.min():%Y-%m-%d}..{rec.index.max():%Y-%m-%d}, {folds} folds, "
            f"n={len(rec)} (run {mv.tags.get(Tag.WALKFORWARD_RUN_ID, '?')[:12]})"
        ),
    }
    if prod:
        found["wf_pvalue_production"] = _versus_production(client, name, mv, prod, rec, pc, dm)
        found["wf_production"] = str(prod)
    if universe:
        from phat.evaluation.universe import skill_intervals

        symbols = rec["symbol"].to_numpy()
        safety, table = asset_safety(symbols, y, p, clim, rule_p, horizon_bars, n_bins,
                                     float(pc.per_asset_fdr), rec["fold"].to_numpy())  # fmt: skip
        skill = skill_intervals(symbols, y, p, clim, pd.DatetimeIndex(rec.index).asi8,
                                horizon_bars)  # fmt: skip
        found.update(safety, per_asset=table,
                     asset_skill=json.loads(skill.to_json(orient="records")))  # fmt: skip
    return found


def decision_figure(report: dict[str, Any]) -> Any:
    """Per-asset Brier skill against climatology with 95% intervals on the evidence the
    per-asset gates read, the pooled estimate, and the assets the gates named."""
    import tempfile

    from phat.evaluation.plots import asset_skill_plot

    named: dict[str, str] = {}
    for g in report["gates"]:
        text = str(g["candidate"])
        if not g["name"].startswith("asset_") or text == "none":
            continue
        if g["passed"] and "excluded" not in text:
            continue
        for sym in text.replace("excluded: ", "").split(", "):
            named[sym] = f"{named[sym]}, {g['name']}" if sym in named else g["name"]
    read = next((g["read"] for g in report["gates"] if g["name"] == "asset_not_worse"), "")
    title = (f"{report['model_name']} v{report['candidate_version']}: "
             f"{'PASS' if report['passed'] else 'FAIL'}; {read}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        return asset_skill_plot(pd.DataFrame(report["asset_skill"]), named, title,
                                f"{d}/asset_skill.png")  # fmt: skip


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def report_markdown(report: dict[str, Any]) -> str:
    fmt = _fmt

    lines = [
        f"# Promotion gates: {report['model_name']} v{report['candidate_version']} vs {report['baseline']}",
        "",
        f"Window {report['window'][0]} .. {report['window'][1]}, {report['samples']} samples. "
        f"Result: **{'PASS' if report['passed'] else 'FAIL'}**",
        "",
        "| gate | metric | candidate | baseline | threshold | pass | read |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in report["gates"]:
        lines.append(
            f"| {g['name']} | {g['metric']} | {fmt(g['candidate'])} | {fmt(g['baseline'])} | {g['threshold']} | {'yes' if g['passed'] else 'NO'} | {g.get('read', '')} |"
        )
    if report.get("per_asset"):  # a universe model's evidence per asset
        from phat.evaluation.universe import to_markdown

        lines += ["", "## Per asset", "", to_markdown(pd.DataFrame(report["per_asset"]))]
    return "\n".join(lines) + "\n"


def gate_metrics(gates: list[dict[str, Any]]) -> dict[str, float]:
    """Per gate: passed (0/1), and the candidate value, the baseline value and the limit it was
    held to, where they are numbers (a gate against no baseline has none)."""
    out: dict[str, float] = {}
    for g in gates:
        out[f"gate_{g['name']}"] = float(g["passed"])
        for field in ("candidate", "baseline", "limit"):
            value = g.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"gate_{g['name']}_{field}"] = float(value)
    return out


def promote(cfg: PromoteConf) -> dict[str, Any]:
    """Hold the model exclusively, evaluate, log a promotion run, tag the candidate, and on a
    pass move production (all or nothing). A concurrent promote/rollback of the same model
    exits with RegistryConflict having changed nothing."""
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder
    from phat.registry.tracking import flatten

    rec = recorder(cfg.tracking)
    name = model_name_for(cfg)
    version = str(cfg.version)
    client = rec.client
    require_model(client, name)
    with exclusive(client, rec.uri, name) as hold:
        before = current_production(client, name)
        report = evaluate(cfg, name, version)
        dry = bool(cfg.promotion.dry_run)
        md = report_markdown(report)
        tags = {
            Tag.PROMOTION_MODEL_NAME: name,
            Tag.PROMOTION_CANDIDATE: version,
            Tag.PROMOTION_BASELINE: report["baseline"],
            Tag.PROMOTION_PASSED: str(report["passed"]).lower(),
            Tag.PROMOTION_DRY_RUN: str(dry).lower(),
        }
        with rec.run(f"promote-{name}-v{version}", tags=tags) as run:
            run.text(json.dumps(report, indent=2, default=str), "gate_report.json")
            run.text(md, "gate_report.md")
            run.metrics(gate_metrics(report["gates"]))
            if report.get("asset_skill"):  # a universe: the decision in one picture
                run.figure(decision_figure(report), "asset_skill.png")
            run.params(
                {k: v for k, v in flatten({"promotion": cfg.promotion}).items() if v != "None"}
            )
            run_id = run.run_id
        print(md)
        if dry:
            print("dry run: nothing changed")
            return {**report, "run_id": run_id, "promoted": False}
        failed = [g["name"] for g in report["gates"] if not g["passed"]]
        tags = {
            Tag.GATE_STATUS: "passed" if report["passed"] else "failed",
            Tag.GATE_RUN_ID: run_id,
            Tag.GATE_EVALUATED_AT: now_iso(),
            Tag.GATE_BASELINE: report["baseline"],
            Tag.GATE_FAILED: ",".join(failed),
        }
        if report["excluded_assets"] or tags[Tag.GATE_STATUS] == "passed":
            # every binding of this version keeps these assets on the proxy (for_asset)
            tags[Tag.EXCLUDED_ASSETS] = ",".join(report["excluded_assets"])
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
        if not report["passed"]:
            why = "; ".join(
                f"{g['name']}: {g['metric']} {_fmt(g['candidate'])}, needs {g['threshold']}"
                for g in report["gates"] if not g["passed"]
            )  # fmt: skip
            raise PromotionRefused(
                f"{name} v{version} failed gates {failed}; production stays "
                f"{before or 'unset (proxy)'} ({why})"
            )
        event = {
            "action": "promote",
            "version": version,
            "previous": before,
            "at": now_iso(),
            "run_id": run_id,
        }
        move_production(hold, version, expected_current=before, event=event)
    print(f"{name}: production {before or '(none)'} -> {version}"
          + (f" (on the proxy: {', '.join(report['excluded_assets'])})"
             if report["excluded_assets"] else ""))  # fmt: skip
    return {**report, "run_id": run_id, "promoted": True}


def rollback(cfg: RollbackConf) -> dict[str, Any]:
    """Move production back to the version below it in the history: only to a version the
    history shows was production. All or nothing, under the same exclusive hold as promote."""
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder

    rec = recorder(cfg.tracking)
    name = model_name_for(cfg)
    client = rec.client
    require_model(client, name)
    with exclusive(client, rec.uri, name) as hold:
        cur = current_production(client, name)
        if cur is None:
            raise ConfigError(f"{name} has no production version to roll back from")
        stack = read_history(client, name).stack
        if cur not in stack:
            raise RegistryConflict(
                f"{name}: production v{cur} is not in the promotion history (moved outside "
                "phat?); nothing changed. `phat doctor` reports the disagreement"
            )
        below = stack[: len(stack) - 1 - stack[::-1].index(cur)]
        if not below:
            raise ConfigError(
                f"{name}: no earlier production version to return to (production is v{cur}); "
                "use signal_source=proxy in the consumer to stop using the model"
            )
        target = below[-1]
        event = {
            "action": "rollback",
            "version": target,
            "previous": cur,
            "at": now_iso(),
            "reason": str(cfg.reason),
        }
        move_production(hold, target, expected_current=cur, event=event)
    reason = f": {event['reason']}" if event["reason"] else ""
    print(f"{name}: production {cur} -> {target} (rollback{reason})")
    return {"from": cur, "to": target}
