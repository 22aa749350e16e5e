"""Promotion gates and rollback through the MLflow Model Registry.

The registry alias `production` is the source of truth for what is live. A candidate version
reaches it only through the gates below, evaluated on a window the candidate never trained or
calibrated on (its test span by default), against the current production version, or the proxy
when there is none. Gate thresholds live in conf/promotion/.

The decision itself is a pure function (phat.lifecycle.gates); this module collects the
evidence (load, score, backtest, read MLflow) and acts on the decision (tags, alias moves).

History: the registered model's tag `phat.production_history` holds the stack of production
versions (oldest first) and the last events; alias `previous` points at the version below the
top. Stages (Production / Archived) are mirrored while the installed MLflow still has them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from phat.data import as_utc
from phat.errors import ConfigError, ContractError, PhatError
from phat.lifecycle.gates import Evidence, TradingEvidence, decide, report_dict

log = logging.getLogger(__name__)
HISTORY_TAG = "phat.production_history"
MAX_EVENTS = 25


class PromotionRefused(PhatError):
    """The candidate failed a gate (the report says which)."""


class RegistryConflict(PhatError):
    """Production moved while this command was deciding; nothing was changed."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# History


def require_model(client: Any, name: str) -> Any:
    """The registered model, or ModelUnavailable naming the models that do exist."""
    from phat.registry.client import registry_error

    try:
        return client.get_registered_model(name)
    except Exception as e:
        raise registry_error(e, f"registered model {name!r}") from None


def read_history(client: Any, name: str) -> dict[str, Any]:
    rm = require_model(client, name)
    raw = (rm.tags or {}).get(HISTORY_TAG)
    if not raw:
        return {"stack": [], "events": []}
    return json.loads(raw)


def current_production(client: Any, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, "production").version)
    except Exception:
        return None


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def _mirror_stages(client: Any, name: str, production: str, archived: str | None) -> None:
    """Best effort: stages are deprecated since MLflow 2.9; the alias is what counts."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage(name, production, "Production")
            if archived and archived != production:
                client.transition_model_version_stage(name, archived, "Archived")
    except Exception as e:  # pragma: no cover - depends on the installed MLflow
        log.info("stage mirror skipped: %s", e)


def _restore_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Put `alias` back on `version`, or remove it when it did not exist."""
    if version:
        client.set_registered_model_alias(name, alias, version)
    else:
        with contextlib.suppress(Exception):
            client.delete_registered_model_alias(name, alias)


def move_production(
    client: Any,
    name: str,
    new: str,
    *,
    expected_current: str | None,
    event: dict[str, Any],
    stack: list[str],
) -> None:
    """Point `production` at `new`, `previous` at the version below it, and record the event.

    Compare-and-set: refuses if production is no longer `expected_current`. If any registry call
    fails part-way, the aliases and the history tag are put back as they were, then it re-raises.
    """
    cur = current_production(client, name)
    if cur != expected_current:
        raise RegistryConflict(
            f"{name}: production moved from {expected_current} to {cur} while deciding; nothing changed, re-run"
        )
    old_prev = _alias_version(client, name, "previous")
    old_tag = (client.get_registered_model(name).tags or {}).get(HISTORY_TAG)
    hist = read_history(client, name)
    hist["stack"] = stack
    hist["events"] = (hist.get("events", []) + [event])[-MAX_EVENTS:]
    try:
        client.set_registered_model_alias(name, "production", new)
        below = stack[-2] if len(stack) >= 2 else None
        if below:
            client.set_registered_model_alias(name, "previous", below)
        elif old_prev:
            client.delete_registered_model_alias(name, "previous")
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist, separators=(",", ":")))
    except Exception:
        log.error("registry error while moving production; restoring the previous state")
        _restore_alias(client, name, "production", expected_current)
        _restore_alias(client, name, "previous", old_prev)
        if old_tag is not None:
            client.set_registered_model_tag(name, HISTORY_TAG, old_tag)
        else:
            with contextlib.suppress(Exception):
                client.delete_registered_model_tag(name, HISTORY_TAG)
        raise
    after = current_production(client, name)
    if after != new:  # another writer got in between our CAS read and our write
        raise RegistryConflict(f"{name}: production is {after} after setting it to {new}; re-run")
    _mirror_stages(client, name, new, expected_current)


# ---------------------------------------------------------------------------------------------
# Evaluation


def _window(
    mv: Any, cfg_start: str | None, cfg_end: str | None
) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    window = json.loads(mv.tags.get("phat.training_window", "{}"))
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
    w = json.loads(mv.tags.get("phat.training_window", "{}"))
    if "train" not in w:
        return 0.0
    last = w.get("calibration", w["train"])[1]
    return (pd.Timestamp(last) - pd.Timestamp(w["train"][0])) / pd.Timedelta(days=1)


def _trading(m: dict[str, float]) -> TradingEvidence:
    return TradingEvidence(
        churn=m["churn"],
        cost_bps=m["cost_bps"],
        max_drawdown=m["max_drawdown"],
        isolation_compliance=m["isolation_compliance"],
    )


def evaluate(cfg: dict[str, Any], name: str, version: str) -> dict[str, Any]:
    """Collect the evidence for candidate vs baseline on the evaluation window, then decide
    (phat.lifecycle.gates.decide); returns the gate report."""
    from mlflow.tracking import MlflowClient

    from phat.contract.labels import make_labels
    from phat.evaluation.metrics import brier, ece
    from phat.pipeline import load_bars
    from phat.registry.client import registry_error
    from phat.trading.backtest import build_policy, build_triggers, cost_kwargs, run_backtest
    from phat.trading.signals import ResolvedSignal, p_hat_frame, resolve

    pc = cfg["promotion"]
    client = MlflowClient()
    try:
        mv = client.get_model_version(name, version)
    except Exception as e:
        raise registry_error(e, f"{name} v{version}") from None
    cand = resolve(f"model_v{version}", name, mv.tags.get("phat.horizon_id", ""), strict=True)
    lspec = cand.model.label_spec
    prod = current_production(client, name)
    if prod == str(version):
        raise ConfigError(f"{name} v{version} is already production")
    base = (
        resolve(f"model_v{prod}", name, lspec.horizon_id, strict=True)
        if prod
        else ResolvedSignal(resolve("proxy", None, lspec.horizon_id).binding, None)
    )
    start, end = _window(mv, pc["window"]["start"], pc["window"]["end"])
    bars, _ = load_bars(cfg, lspec.timeframe, cand.model.data_spec)
    other_data = (
        bool(mv.tags.get("phat.data_hash")) and bars.data_hash() != mv.tags["phat.data_hash"]
    )
    if other_data and not pc["allow_other_data"]:
        log.warning(
            "evaluation data differs from the candidate's training data (data_hash); evaluating "
            "anyway (promotion.allow_other_data=true says this is intended)"
        )
    in_win = bars.index >= start
    if end is not None:
        in_win &= bars.index < end
    proxy_params = dict(cfg["signal"]["proxy"])
    sig_c = p_hat_frame(cand, bars.frame, proxy_params, strict=True)
    sig_b = p_hat_frame(base, bars.frame, proxy_params, strict=True)
    y = make_labels(bars.frame["close"].to_numpy(), bars.segment, lspec)
    pc_, pb_ = sig_c["p_hat"].to_numpy(), sig_b["p_hat"].to_numpy()
    cand_ok = (sig_c["source"] == "model").to_numpy()
    base_ok = (
        (sig_b["source"] == "model").to_numpy() if base.model is not None else np.isfinite(pb_)
    )
    mask = in_win & cand_ok & base_ok & np.isfinite(y)
    if mask.sum() < int(pc["min_samples"]):
        raise ConfigError(
            f"evaluation window holds {int(mask.sum())} scored samples; need "
            f"promotion.min_samples={pc['min_samples']}"
        )
    yy = y[mask]
    train_rate = (
        float(client.get_run(mv.run_id).data.metrics.get("train_base_rate", yy.mean()))
        if mv.run_id
        else float(yy.mean())
    )
    policy = build_policy(cfg["policy"]["params"])
    trigger = build_triggers(cfg, bars)
    kw = cost_kwargs(cfg, bars.symbol, lspec.timeframe)
    frame = bars.frame[in_win]
    bt_c = run_backtest(frame, sig_c[in_win], trigger[in_win], policy, cand.binding, **kw).metrics
    bt_b = run_backtest(frame, sig_b[in_win], trigger[in_win], policy, base.binding, **kw).metrics
    calib_tag = mv.tags.get("phat.calibration", "{}")
    evidence = Evidence(
        calibration_method=str(json.loads(calib_tag).get("method", "?")),
        promotable=mv.tags.get("phat.promotable") == "true",
        candidate_ece=ece(yy, pc_[mask]),
        candidate_brier=brier(yy, pc_[mask]),
        baseline_ece=ece(yy, pb_[mask]),
        baseline_brier=brier(yy, pb_[mask]),
        climatology_brier=brier(yy, np.full(len(yy), train_rate)),
        candidate_trading=_trading(bt_c),
        baseline_trading=_trading(bt_b),
        history_days=_history_days(mv),
    )
    return {
        "model_name": name,
        "candidate_version": str(version),
        "candidate_hash": cand.binding.model_hash,
        "baseline": f"model_v{prod}" if prod else "proxy",
        "baseline_version": prod,
        "window": [
            start.isoformat(),
            (end.isoformat() if end is not None else str(bars.index[-1])),
        ],
        "samples": int(mask.sum()),
        **report_dict(decide(evidence, pc)),
        "backtest": {"candidate": bt_c, "baseline": bt_b},
        "calibration": {
            "candidate": {"brier": evidence.candidate_brier, "ece": evidence.candidate_ece},
            "baseline": {"brier": evidence.baseline_brier, "ece": evidence.baseline_ece},
            "climatology_brier": evidence.climatology_brier,
        },
    }


def report_markdown(report: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    lines = [
        f"# Promotion gates: {report['model_name']} v{report['candidate_version']} vs {report['baseline']}",
        "",
        f"Window {report['window'][0]} .. {report['window'][1]}, {report['samples']} samples. "
        f"Result: **{'PASS' if report['passed'] else 'FAIL'}**",
        "",
        "| gate | metric | candidate | baseline | threshold | pass |",
        "|---|---|---|---|---|---|",
    ]
    for g in report["gates"]:
        lines.append(
            f"| {g['name']} | {g['metric']} | {fmt(g['candidate'])} | {fmt(g['baseline'])} | {g['threshold']} | {'yes' if g['passed'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def promote(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, log a promotion run, tag the candidate, and move production on a pass."""
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.tracking import MlflowClient

    from phat.registry.client import model_name_for
    from phat.registry.tracking import tracked_run, tracking_uri

    uri = tracking_uri(cfg["tracking"]["uri"])
    mlflow.set_tracking_uri(uri)
    name = model_name_for(cfg)
    version = str(cfg["version"])
    client = MlflowClient()
    before = current_production(client, name)
    report = evaluate(cfg, name, version)
    dry = bool(cfg["promotion"]["dry_run"])
    md = report_markdown(report)
    with (
        tracked_run(uri, str(cfg["tracking"]["experiment"]), f"promote-{name}-v{version}") as run,
        tempfile.TemporaryDirectory() as d,
    ):
        (Path(d) / "gate_report.json").write_text(json.dumps(report, indent=2, default=str))
        (Path(d) / "gate_report.md").write_text(md)
        mlflow.log_artifacts(d)
        mlflow.set_tags(
            {
                "phat.promotion.model_name": name,
                "phat.promotion.candidate": version,
                "phat.promotion.baseline": report["baseline"],
                "phat.promotion.passed": str(report["passed"]).lower(),
                "phat.promotion.dry_run": str(dry).lower(),
            }
        )
        mlflow.log_metrics({f"gate_{g['name']}": float(g["passed"]) for g in report["gates"]})
        run_id = run.info.run_id
    print(md)
    if dry:
        print("dry run: nothing changed")
        return {**report, "run_id": run_id, "promoted": False}
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    tags = {
        "phat.gate.status": "passed" if report["passed"] else "failed",
        "phat.gate.run_id": run_id,
        "phat.gate.evaluated_at": _now(),
        "phat.gate.baseline": report["baseline"],
        "phat.gate.failed": ",".join(failed),
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if not report["passed"]:
        raise PromotionRefused(
            f"{name} v{version} failed gates {failed}; production stays {before or 'unset (proxy)'}"
        )
    hist = read_history(client, name)
    stack = [v for v in hist.get("stack", []) if v != version]
    if before and (not stack or stack[-1] != before):
        stack.append(before)  # production set outside phat: keep it reachable by rollback
    stack.append(version)
    event = {
        "action": "promote",
        "version": version,
        "previous": before,
        "at": _now(),
        "run_id": run_id,
    }
    move_production(client, name, version, expected_current=before, event=event, stack=stack)
    print(f"{name}: production {before or '(none)'} -> {version}")
    return {**report, "run_id": run_id, "promoted": True}


def rollback(cfg: dict[str, Any]) -> dict[str, Any]:
    """Move production back to the version below it in the history stack."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from phat.registry.client import model_name_for
    from phat.registry.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(cfg["tracking"]["uri"]))
    name = model_name_for(cfg)
    client = MlflowClient()
    require_model(client, name)
    cur = current_production(client, name)
    hist = read_history(client, name)
    stack = list(hist.get("stack", []))
    if cur is None:
        raise ConfigError(f"{name} has no production version to roll back from")
    if stack and stack[-1] == cur:
        stack.pop()
    if not stack:
        raise ConfigError(
            f"{name}: no earlier production version to return to (production is v{cur}); "
            "use signal_source=proxy in the consumer to stop using the model"
        )
    target = stack[-1]
    event = {
        "action": "rollback",
        "version": target,
        "previous": cur,
        "at": _now(),
        "reason": str(cfg["reason"]),
    }
    move_production(client, name, target, expected_current=cur, event=event, stack=stack)
    client.set_model_version_tag(name, cur, "phat.rolled_back_at", event["at"])
    print(
        f"{name}: production {cur} -> {target} (rollback{': ' + event['reason'] if event['reason'] else ''})"
    )
    return {"from": cur, "to": target}
