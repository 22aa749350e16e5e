"""Promotion gates and rollback through the MLflow Model Registry.

The registry alias `production` is the source of truth for what is live. A candidate version
reaches it only through the gates below, evaluated on a window the candidate never trained or
calibrated on (its test span by default), against the current production version, or the proxy
when there is none. Gate thresholds live in conf/promotion/.

Why not `mlflow.models.MetricThreshold`: it expresses a minimum *improvement* over a baseline
(`min_absolute_change` > 0, `min_relative_change` in (0, 1]); these gates are tolerated
*regressions* ("churn no worse than baseline x 1.10"), which it cannot state. The comparison
here is sign-safe: the allowance is `tolerance * |baseline|`, so a negative baseline (a Sharpe,
or a drawdown stored as a negative number) widens the limit instead of flipping the test.

History: the registered model's tag `phat.production_history` holds the stack of production
versions (oldest first) and the last events; alias `previous` points at the version below the
top. Stages (Production / Archived) are mirrored while the installed MLflow still has them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from phat.data import as_utc
from phat.errors import ConfigError, ContractError, PhatError

log = logging.getLogger(__name__)
HISTORY_TAG = "phat.production_history"
MAX_EVENTS = 25


class PromotionRefused(PhatError):
    """The candidate failed a gate (the report says which)."""


class RegistryConflict(PhatError):
    """Production moved while this command was deciding; nothing was changed."""


def allowed_limit(
    baseline: float, rel_tolerance: float, higher_is_better: bool, min_slack: float = 0.0
) -> float:
    """The worst value still accepted: baseline worsened by rel_tolerance of its magnitude."""
    slack = max(rel_tolerance * abs(baseline), min_slack)
    return baseline - slack if higher_is_better else baseline + slack


@dataclass
class Gate:
    name: str
    metric: str
    candidate: float | str
    baseline: float | str
    threshold: str
    passed: bool


def _at_most(
    name: str, metric: str, candidate: float, baseline: float | str, limit: float, text: str
) -> Gate:
    return Gate(name, metric, candidate, baseline, text, bool(candidate <= limit))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# History


def read_history(client: Any, name: str) -> dict[str, Any]:
    rm = client.get_registered_model(name)
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


def evaluate(cfg: dict[str, Any], name: str, version: str) -> dict[str, Any]:
    """Candidate vs baseline on the evaluation window; returns the gate report."""
    from hydra.utils import instantiate
    from mlflow.tracking import MlflowClient

    from phat.backtest import build_triggers, cost_kwargs, run_backtest
    from phat.labels import make_labels
    from phat.metrics import brier, ece
    from phat.pipeline import load_bars
    from phat.signals import ResolvedSignal, p_hat_frame, resolve

    pc = cfg["promotion"]
    client = MlflowClient()
    mv = client.get_model_version(name, version)
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
    start, end = _window(
        mv, (pc.get("window") or {}).get("start"), (pc.get("window") or {}).get("end")
    )
    bars, _ = load_bars(cfg, lspec.timeframe, "refuse")
    if (
        mv.tags.get("phat.data_hash")
        and bars.data_hash() != mv.tags["phat.data_hash"]
        and not pc.get("allow_other_data", False)
    ):
        log.warning(
            "evaluation data differs from the candidate's training data (data_hash); evaluating anyway"
        )
    in_win = bars.index >= start
    if end is not None:
        in_win &= bars.index < end
    proxy_params = dict(cfg["signal"]["proxy"])
    sig_c = p_hat_frame(cand, bars.frame, bars.segment, proxy_params, strict=True)
    sig_b = p_hat_frame(base, bars.frame, bars.segment, proxy_params, strict=True)
    y = make_labels(bars.frame["close"].to_numpy(), bars.segment, lspec)
    pc_, pb_ = sig_c["p_hat"].to_numpy(), sig_b["p_hat"].to_numpy()
    cand_ok = (sig_c["source"] == "model").to_numpy()
    base_ok = (
        (sig_b["source"] == "model").to_numpy() if base.model is not None else np.isfinite(pb_)
    )
    mask = in_win & cand_ok & base_ok & np.isfinite(y)
    if mask.sum() < int(pc.get("min_samples", 200)):
        raise ConfigError(
            f"evaluation window holds {int(mask.sum())} scored samples; need promotion.min_samples={pc.get('min_samples', 200)}"
        )
    yy = y[mask]
    train_rate = (
        float(client.get_run(mv.run_id).data.metrics.get("train_base_rate", yy.mean()))
        if mv.run_id
        else float(yy.mean())
    )
    calib = {
        "candidate": {"brier": brier(yy, pc_[mask]), "ece": ece(yy, pc_[mask])},
        "baseline": {"brier": brier(yy, pb_[mask]), "ece": ece(yy, pb_[mask])},
        "climatology_brier": brier(yy, np.full(len(yy), train_rate)),
    }
    policy = instantiate(cfg["policy"]["params"], _convert_="all")
    trigger = build_triggers(cfg, bars)
    kw = cost_kwargs(cfg, bars.symbol, lspec.timeframe)
    frame = bars.frame[in_win]
    bt_c = run_backtest(frame, sig_c[in_win], trigger[in_win], policy, cand.binding, **kw).metrics
    bt_b = run_backtest(frame, sig_b[in_win], trigger[in_win], policy, base.binding, **kw).metrics

    reg = pc["max_regression"]
    slack = pc.get("min_slack") or {}
    cand_c, base_c = calib["candidate"], calib["baseline"]
    method = json.loads(mv.tags.get("phat.calibration", "{}")).get("method", "?")
    gates = [
        Gate(
            "calibrated",
            "calibration",
            method,
            "-",
            "not none",
            mv.tags.get("phat.promotable") == "true",
        ),
        _at_most("ece_max", "ece", cand_c["ece"], "-", pc["max_ece"], f"<= {pc['max_ece']}"),
        _at_most(
            "brier_vs_baseline",
            "brier",
            cand_c["brier"],
            base_c["brier"],
            base_c["brier"] + pc["brier_tolerance"],
            f"<= baseline + {pc['brier_tolerance']}",
        ),
        _at_most(
            "brier_vs_climatology",
            "brier",
            cand_c["brier"],
            calib["climatology_brier"],
            calib["climatology_brier"] + pc["brier_tolerance"],
            f"<= climatology + {pc['brier_tolerance']}",
        ),
        _at_most(
            "ece_vs_baseline",
            "ece",
            cand_c["ece"],
            base_c["ece"],
            base_c["ece"] + pc["ece_tolerance"],
            f"<= baseline + {pc['ece_tolerance']}",
        ),
    ]
    for gate, metric in (
        ("churn", "churn"),
        ("slippage", "cost_bps"),
        ("drawdown", "max_drawdown"),
    ):
        lim = allowed_limit(
            bt_b[metric],
            float(reg[gate]),
            higher_is_better=False,
            min_slack=float(slack.get(gate, 0.0)),
        )
        gates.append(
            _at_most(f"{gate}_regression", metric, bt_c[metric], bt_b[metric], lim, f"<= {lim:.6g}")
        )
    iso = bt_c["isolation_compliance"]
    gates.append(Gate("isolation", "isolation_compliance", iso, "-", "== 1.0", iso == 1.0))
    days = _history_days(mv)
    gates.append(
        Gate(
            "min_history",
            "training_days",
            days,
            "-",
            f">= {pc['min_history_days']}",
            days >= float(pc["min_history_days"]),
        )
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
        "gates": [asdict(g) for g in gates],
        "passed": all(g.passed for g in gates),
        "backtest": {"candidate": bt_c, "baseline": bt_b},
        "calibration": calib,
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

    from phat.tracking import tracking_uri, use_experiment

    uri = tracking_uri(cfg["tracking"].get("uri"))
    mlflow.set_tracking_uri(uri)
    name = (cfg.get("registry") or {}).get("model_name")
    version = cfg.get("version")
    if not name or version is None:
        raise ConfigError("promote needs registry.model_name=NAME and version=N")
    version = str(version)
    client = MlflowClient()
    before = current_production(client, name)
    report = evaluate(cfg, name, version)
    dry = bool(cfg["promotion"].get("dry_run", False))
    md = report_markdown(report)
    use_experiment(uri, str(cfg["tracking"].get("experiment") or "phat-promotion"))
    with (
        mlflow.start_run(run_name=f"promote-{name}-v{version}") as run,
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

    from phat.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(cfg["tracking"].get("uri")))
    name = (cfg.get("registry") or {}).get("model_name")
    if not name:
        raise ConfigError("rollback needs registry.model_name=NAME")
    client = MlflowClient()
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
        "reason": str(cfg.get("reason") or ""),
    }
    move_production(client, name, target, expected_current=cur, event=event, stack=stack)
    client.set_model_version_tag(name, cur, "phat.rolled_back_at", event["at"])
    print(
        f"{name}: production {cur} -> {target} (rollback{': ' + event['reason'] if event['reason'] else ''})"
    )
    return {"from": cur, "to": target}
