"""`phat monitor [overrides]` (= `python -m phat.monitor`): watch the bound model's calibration.

    phat monitor data.path=new_bars.csv monitor.state=monitor.json      # a cron job, each batch
    phat monitor monitor.on_alarm=fallback                               # consumers go to the proxy
    phat monitor monitor.clear=true                                      # clear an alarm, explicitly

Scores every bar with the bound model as the policy would (the model's own DataSpec), joins
each p_hat with its outcome only once it has matured (bar t's label is known at t + horizon),
feeds matured bars to the anytime-valid calibration test (phat.evidence.monitor), and on the
first alarm acts: `log` records it; `fallback` tags the version (phat.alarm.time, .e_value,
.bars) so every binding of it resolves to the proxy with reason calibration_alarm from that
time on; `rollback` moves production back as `phat rollback` does. State resumes from
`monitor.state`; a second run over the same bars changes nothing. Each call is an MLflow run in
experiment `phat-monitor` tagged with the model version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry
from phat.errors import PhatError
from phat.files import hold, write_atomic
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import MonitorConf

log = logging.getLogger("phat.monitor")


def run(cfg: MonitorConf) -> dict[str, Any]:
    from phat.contract.labels import parse_horizon
    from phat.data.load import load_bars
    from phat.errors import ModelUnavailable
    from phat.registry.access import require_manage
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder
    from phat.trading.signals import resolve

    mc = cfg.monitor
    rec = recorder(cfg.tracking)  # the command's one connection
    name = model_name_for(cfg)
    # A monitor writes alarms, exclusions and the recalibration: a manager's job on a server.
    require_manage(rec.uri, name, "monitor")
    _, _, horizon_id = parse_horizon(str(cfg.horizon))
    resolved = resolve(str(mc.source), name, horizon_id, strict=True, key="monitor.source")
    model, version = resolved.model, resolved.binding.model_version
    if model is None:
        raise ModelUnavailable(f"monitor.source={mc['source']}: the proxy has nothing to monitor")
    if mc.clear:
        return _clear(rec, name, str(version), model, mc.state)
    bars, _ = load_bars(cfg, model.label_spec.timeframe, model)
    start = _start(rec.client, name, version, mc.start)
    watched = {"model_name": name, "model_version": str(version), "model_hash": model.model_hash}
    # Every asset (one asset: its own) feeds its own e-process (_feed). Their states are kept
    # as the data says: one asset's in its own file (a universe model's asset: monitor.state
    # may hold {asset}), resumed across versions; a universe's in one file with the universe's
    # e-process over them (_watch_universe).
    watch = _watch_universe if bars.pooled else _watch_asset
    return watch(cfg, rec, name, str(version), model, bars, start, watched)


def _watch_asset(
    cfg: MonitorConf, rec: Any, name: str, version: str, model: Any, bars: Any, start: Any,
    watched: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """One asset's monitor step, under its state file's lock: read the state, feed the newly
    matured bars, write it whole, then log and act."""
    from phat.evidence.monitor import rolling_metrics

    mc = cfg.monitor
    asset = bars.view_of(model).metadata.get(Tag.ASSET)  # a universe model's asset
    path = _state_path(mc.state, name, version, str(asset or ""))
    with _held(path, mc.lock_timeout):
        state, moved = _resume(path, _watching(watched, asset), str(mc.source))
        _pause("monitor_state_read")
        states = {} if state is None else {bars.symbol: state}
        had_alarm = state is not None and state.alarm is not None
        fed = _feed(cfg, rec, watched, model, bars, start, states, path)
        state, new = states[bars.symbol], fed.new[bars.symbol]
        if path is not None:
            if moved is not None:  # the previous version's e-process is kept, not overwritten
                write_atomic(moved[0], path.read_bytes())
            _write_state(path, state.to_dict())
        rolling = rolling_metrics(state, int(cfg.metrics.n_bins))
        action = fed.actions.get(bars.symbol, "")
        run_id = _log(rec, cfg, name, version, state, new, rolling, bool(fed.fired), action)
        if state.recal is not None and new:
            # The map's parameters, versioned on the model version they recalibrate.
            recal = {**state.recal.summary(), "as_of": state.last_matured, "run_id": run_id}
            rec.client.set_model_version_tag(name, version, Tag.RECALIBRATION, json.dumps(recal))
    e = state.e_value()
    print(
        f"phat monitor: {name} v{version} ({mc['source']}), {len(new)} newly matured bars "
        f"({state.n_matured} in all, last {state.last_matured}); e-value {e:.3g} "
        f"(alarm at {1 / float(mc['alpha']):.0f}); rolling brier "
        f"{rolling.get('rolling_brier', float('nan')):.5f} vs climatology "
        f"{rolling.get('rolling_brier_climatology', float('nan')):.5f}, ece "
        f"{rolling.get('rolling_ece', float('nan')):.4f}"
        + (f"\n  ALARM at {state.alarm['time']} (e {state.alarm['e_value']:.3g}): {action}"
           if fed.fired else "")
        + (f"\n  alarm raised earlier, at {state.alarm['time']}" if had_alarm else "")
        + (_recal_line(state.recal) if state.recal is not None else "")
        + (f"\n  {moved[1]}" if moved is not None else "")
        + f"\n  run {run_id}"
    )  # fmt: skip
    return {"state": state, "new": new, "fired": bool(fed.fired), "run_id": run_id,
            "rolling": rolling}  # fmt: skip


def _watch_universe(
    cfg: MonitorConf, rec: Any, name: str, version: str, model: Any, bars: Any, start: Any,
    watched: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """A universe model on its universe: one anytime-valid calibration e-process per asset
    (false alarms per asset at most monitor.alpha), and the universe's from the mean of the
    assets' e-values (phat.evidence.monitor.universe_update). An asset's alarm acts on that
    asset alone (lifecycle.alarms.act with the asset); the universe's alarm acts on the version
    (every asset to the proxy, or rollback). One state file holds every asset's state."""
    import numpy as np

    from phat.errors import ConfigError
    from phat.evidence.monitor import universe_update
    from phat.lifecycle.alarms import act

    mc = cfg.monitor
    if mc.recalibrate != "none":
        raise ConfigError(
            "monitor.recalibrate=online on a universe is not built yet: monitor one asset's "
            "file (data.path=FILE) to recalibrate it"
        )
    alpha = float(mc.alpha)
    path = _state_path(mc.state, name, version, "universe")
    with _held(path, mc.lock_timeout):
        saved, states = _read_universe_state(path)
        _pause("monitor_state_read")
        if saved and saved.get("model") != watched:
            raise ConfigError(
                f"monitor.state={path} watched {saved.get('model')}, not {watched}; use another "
                "state file (monitor.state may hold {version})"
            )
        last = {a.symbol: float(saved.get("e", {}).get(a.symbol, 1.0)) for a in bars.members()}
        uni_alarm = saved.get("universe_alarm")
        had_uni = uni_alarm is not None
        fed = _feed(cfg, rec, watched, model, bars, start, states, path)
        upath, uni_alarm = universe_update(last, fed.points, alpha, uni_alarm)
        actions = [f"{s}: {text}" for s, text in fed.actions.items()]
        if uni_alarm is not None and not had_uni:
            uni_alarm["asset_alarms"] = sorted(s for s, st in states.items() if st.alarm)
            uni_alarm["bars"] = int(sum(st.n_matured for st in states.values()))
            actions.append(f"universe: {act(rec, cfg, name, version, uni_alarm)}")
        if path is not None:
            _write_state(path, {
                "model": watched, "assets": {s: st.to_dict() for s, st in states.items()},
                "e": last, "universe_alarm": uni_alarm,
            })  # fmt: skip
        run_id = _log_universe(rec, cfg, name, version, states, last, upath, uni_alarm, actions)
    ue = float(np.mean(list(last.values())))
    alarmed = sorted(s for s, st in states.items() if st.alarm)
    print(
        f"phat monitor: {name} v{version} ({mc['source']}), universe of {len(last)} "
        f"assets, {len(fed.points)} newly matured bars; universe e-value {ue:.3g} (alarm at "
        f"{1 / alpha:.0f}); assets with an alarm: {', '.join(alarmed) or 'none'}"
        + "".join(f"\n  ALARM {line}" for line in actions)
        + f"\n  run {run_id}"
    )
    return {"states": states, "universe_e_value": ue, "universe_alarm": uni_alarm,
            "fired": fed.fired, "run_id": run_id}  # fmt: skip


@dataclass
class _Fed:
    """What one monitor step fed: per asset its new (time, e-value) points, the (time, asset,
    e-value) points of all, the assets whose alarm fired now, and what each alarm did."""

    new: dict[str, list[tuple[Any, float]]]
    points: list[tuple[Any, str, float]]
    fired: list[str]
    actions: dict[str, str]


def _feed(
    cfg: MonitorConf, rec: Any, watched: dict[str, str], model: Any, bars: Any, start: Any,
    states: dict[str, Any], path: Path | None,
) -> _Fed:  # fmt: skip
    """Every member's bars scored as the policy would (its own view), each one's newly
    matured bars (bar t's label is known at t + horizon; a relative label once every asset
    has delivered its bar at t + h) fed to its own e-process (`states`, by symbol: updated in
    place, a fresh one where none, bound to the version `watched`); an asset's first alarm
    acts on that asset."""
    import numpy as np

    from phat.contract.labels import make_labels
    from phat.data.timeframes import parse_timeframe
    from phat.evidence.monitor import matured, update
    from phat.lifecycle.alarms import act

    mc = cfg.monitor
    name, version = watched["model_name"], watched["model_version"]
    lspec = model.label_spec
    h, alpha = int(lspec.horizon_bars), float(mc.alpha)
    # Streams follow the bar's absolute number (time / timeframe), not its row in this batch's
    # file, so batches that start at different rows keep each bar in the same stream.
    step_ns = int(parse_timeframe(lspec.timeframe).value)
    # labels on all the bars (a relative label compares the assets at each timestamp; the
    # others are each asset's own, a universe's assets' segments numbered apart)
    y_all = make_labels(bars.frame["close"].to_numpy(), bars.segment, lspec, bars.timeline()[0])
    until = min(a.bars.index[-1] for a in bars.members()) if lspec.kind == "relative" else None
    fed = _Fed({}, [], [], {})
    for a in bars.members():
        view = model.for_asset(a.symbol)
        frame = a.bars.frame
        p = view.predict_bars(frame, view.segments(frame))["p_hat"].to_numpy()
        y = y_all[a.start : a.stop]
        pos = np.flatnonzero(
            matured(frame.index, y, h, until) & np.isfinite(p) & np.asarray(frame.index >= start)
        )
        asset = view.metadata.get(Tag.ASSET)  # a universe model's: its alarm is the asset's
        st = states.get(a.symbol) or _new_state(cfg, h, _watching(watched, asset))
        _check_fits(path, st, h, cfg)
        had = st.alarm is not None
        new = update(
            st, frame.index[pos], frame.index.asi8[pos] // step_ns, p[pos], y[pos],
            frame.index[pos + h], alpha, int(mc.rolling),
        )  # fmt: skip
        states[a.symbol] = st
        fed.new[a.symbol] = new
        fed.points += [(t, a.symbol, e) for t, e in new]
        if st.alarm is not None and not had:
            fed.fired.append(a.symbol)
            fed.actions[a.symbol] = act(rec, cfg, name, version, st.alarm, asset)
    return fed


def _watching(watched: dict[str, str], asset: Any) -> dict[str, str]:
    """What one e-process watches: the version (name, version, model_hash), and the asset of
    a universe model's view."""
    return {**watched, "asset": str(asset)} if asset else dict(watched)


def _new_state(cfg: MonitorConf, h: int, watched: dict[str, str]) -> Any:
    """A fresh e-process for what it `watched`, with the online map if asked for."""
    from phat.evidence.monitor import MonitorState, OnlineRecalibrator

    mc = cfg.monitor
    state = MonitorState.new(h, int(mc.bins))
    state.model = watched
    if mc.recalibrate == "online":
        state.recal = OnlineRecalibrator(h, float(mc.recal_prior_bars), float(mc.recal_half_life))
    return state


def _check_fits(path: Path | None, state: Any, h: int, cfg: MonitorConf) -> None:
    """A resumed state must have been kept for this horizon, bin count and recalibration."""
    from phat.errors import ConfigError

    mc = cfg.monitor
    if state.horizon_bars != h or state.bins != int(mc.bins):
        raise ConfigError(
            f"monitor.state={path}: saved for horizon {state.horizon_bars} bars and "
            f"{state.bins} bins, asked for {h} and {mc['bins']}; use a new state file"
        )
    if (state.recal is not None) != (mc.recalibrate == "online"):
        raise ConfigError(
            f"monitor.state={path}: saved with monitor.recalibrate="
            f"{'online' if state.recal else 'none'}, asked for {mc['recalibrate']}; "
            "use a new state file"
        )


def _log_universe(
    rec: Any,
    cfg: MonitorConf,
    name: str,
    version: str,
    states: dict[str, Any],
    last: dict[str, float],
    upath: list[tuple[str, float]],
    alarm: dict[str, Any] | None,
    actions: list[str],
) -> str:
    """One MLflow run: the universe's e-value path (metric universe_e_value by matured point),
    every asset's e-value and matured bars, the alarms, and e_values.json."""
    tags = {Tag.REGISTERED_MODEL: name, Tag.MODEL_VERSION: str(version), Tag.UNIVERSE: "true"}
    with rec.run(f"monitor-{name}-v{version}", tags=tags) as run:
        run.params({k: v for k, v in cfg.monitor.items() if k != "clear"})
        run.series("universe_e_value", [e for _, e in upath])
        run.metrics({f"e_value_{s}": v for s, v in last.items()})
        run.metrics({"assets_alarmed": sum(st.alarm is not None for st in states.values())})
        run.dict({"e": last, "alarms": {s: st.alarm for s, st in states.items() if st.alarm},
                  "universe_alarm": alarm}, "e_values.json")  # fmt: skip
        if alarm:
            run.tags({f"{Tag.ALARM_PREFIX}{k}": v for k, v in alarm.items()})
        if actions:
            run.tags({Tag.ALARM_ACTION: " | ".join(actions)})
        if upath:
            from phat.evaluation.plots import universe_monitor_plot

            run.figure(universe_monitor_plot({s: st.path for s, st in states.items()}, upath,
                                             float(cfg.monitor.alpha)), "monitor.png")  # fmt: skip
        return run.run_id


def _recal_line(recal: Any) -> str:
    r = recal.summary()
    return (
        f"\n  online recalibration: q = sigmoid({r['recal_slope']:.4f} logit(p) "
        f"{r['recal_intercept']:+.4f}); Brier over {int(r['recal_bars'])} matured bars: "
        f"online {r['brier_online']:.5f} vs model {r['brier_static']:.5f}"
    )


def _start(client: Any, name: str, version: str, given: str | None) -> Any:
    """The first bar to watch: monitor.start, else the version's test span start."""
    import pandas as pd

    from phat.data.timeframes import as_utc
    from phat.errors import ContractError

    if given:
        return as_utc(given)
    window = json.loads(client.get_model_version(name, version).tags.get(Tag.TRAINING_WINDOW, "{}"))
    if "test" not in window:
        raise ContractError(
            f"{name} v{version} has no phat.training_window test span; give monitor.start"
        )
    return pd.Timestamp(window["test"][0])


def _state_path(template: str | None, name: str, version: str, asset: str = "") -> Path | None:
    """monitor.state, with {name}, {version} and {asset} (a universe model's asset) filled in
    (one state file per version, and per asset)."""
    if not template:
        return None
    text = str(template).replace("{name}", name).replace("{version}", version)
    return Path(text.replace("{asset}", asset))


class StateDamaged(PhatError):
    """A monitor state file that cannot be resumed: named, never reset."""

    reason = "bad_state"


def _held(path: Path | None, timeout: float) -> Any:
    """The state file's lock (phat.files.hold on <state>.lock), taken before the state is read
    and kept until it is written; a second monitor on it waits `timeout` seconds
    (monitor.lock_timeout), then exits 2 naming the holder, having changed nothing. No state
    file: nothing to hold."""
    import contextlib

    if path is None:
        return contextlib.nullcontext()
    return hold(path.with_name(f"{path.name}.lock"), float(timeout),
                f"monitor.state={path}")  # fmt: skip


def _aside(path: Path) -> Path:
    from datetime import UTC, datetime

    return path.with_name(f"{path.name}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%S}")


def _damaged(path: Path, what: str) -> StateDamaged:
    return StateDamaged(
        f"monitor.state={path} is damaged ({what}); it is left as it is. To start afresh, run "
        "once with monitor.clear=true (it keeps the old file aside as "
        f"{path.name}.damaged-<time>)"
    )


def _read_json(path: Path) -> Any:
    """The state file's JSON; unreadable or not JSON is StateDamaged (the file untouched)."""
    if path.is_dir():
        raise _damaged(path, "it is a directory, not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise _damaged(path, f"unreadable: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise _damaged(path, "empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _damaged(path, f"not valid JSON at byte {e.pos} of {len(text)}: {e.msg}") from None


def _parse_asset_state(path: Path, raw: Any, where: str = "") -> Any:
    """One asset's MonitorState from its saved dict; a wrong shape is StateDamaged."""
    from phat.evidence.monitor import MonitorState

    if not isinstance(raw, dict):
        got = {list: "an array", type(None): "null", str: "a string"}.get(type(raw), "a number")
        raise _damaged(path, f"{where}expected a JSON object, got {got}")
    try:
        state = MonitorState.from_dict(raw)
        state.e_value()  # the arrays have the shape the e-process needs
    except (KeyError, TypeError, ValueError, IndexError) as e:
        what = f"no field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:120]
        raise _damaged(path, f"{where}not a monitor state: {what}") from None
    return state


def _read_universe_state(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the saved universe state, {symbol: MonitorState}); ({}, {}) when there is none yet."""
    if path is None or not path.exists():
        return {}, {}
    saved = _read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("assets"), dict):
        raise _damaged(path, "expected a universe state: a JSON object with 'assets'")
    if not isinstance(saved.get("e", {}), dict):
        raise _damaged(path, "field 'e' is not an object")
    states = {s: _parse_asset_state(path, d, f"asset {s}: ") for s, d in saved["assets"].items()}
    return saved, states


def _check_state(path: Path) -> None:
    """Raise StateDamaged unless `path` holds a state this command could resume (one asset's,
    or a universe's: a JSON object with 'assets')."""
    raw = _read_json(path)
    if isinstance(raw, dict) and "assets" in raw:
        _read_universe_state(path)
    else:
        _parse_asset_state(path, raw)


def _write_state(path: Path, data: dict[str, Any]) -> None:
    """The state, whole (phat.files.write_atomic); crash tests pause before the rename."""
    write_atomic(path, json.dumps(data), before_replace=lambda: _pause("monitor_state"))


def _pause(point: str) -> None:
    from phat.registry.tracking import pause_point

    pause_point(point)


def _clear(rec: Any, name: str, version: str, model: Any, template: str | None) -> dict:
    """monitor.clear=true: clear the version's alarm, and set aside a damaged state file so the
    next run starts afresh (a healthy state is left as it is)."""
    from phat.lifecycle import alarms

    lines, aside = [], []
    if template:
        # every file a state may be in: one asset's, a universe's and each listed asset's
        assets = ["", *(["universe", *model.assets] if model.assets else [])]
        for path in dict.fromkeys(_state_path(template, name, version, a) for a in assets):
            if path is None or not path.exists():
                continue
            try:
                with _held(path, 0.0):
                    _check_state(path)
            except StateDamaged:
                kept = _aside(path)
                path.rename(kept)
                aside.append(kept)
                lines.append(
                    f"damaged state {path} kept aside as {kept}; the next run starts afresh"
                )
    had = alarms.clear(rec, name, version)
    if had is None:
        lines.insert(0, f"phat monitor: {name} v{version} has no alarm; nothing to clear")
    else:
        lines.insert(0, f"phat monitor: alarm of {had} cleared on {name} v{version}")
    print("\n  ".join(lines))
    return {"cleared": had is not None, "set_aside": aside}


def _resume(path: Path | None, watched: dict[str, str], source: str) -> tuple[Any, Any]:
    """(the saved state to resume or None for a fresh one, (kept_path, note) when production
    moved on). A state is resumed only for the model it watched: same registered model,
    version and model_hash. When an alias (production) now binds another version of the same
    model, a fresh e-process starts for it and the old state is kept beside the file; any other
    mismatch is refused, naming both."""
    from phat.errors import ConfigError
    from phat.trading.signals import parse_source

    if path is None or not path.exists():
        return None, None
    state = _parse_asset_state(path, _read_json(path))
    was = state.model
    if was is None:
        raise ConfigError(
            f"monitor.state={path} records no model (written before states were bound to "
            f"their model); it cannot be resumed for {watched['model_name']} "
            f"v{watched['model_version']}: use a new state file"
        )
    if was == watched:
        return state, None
    if was.get("asset") != watched.get("asset"):
        raise ConfigError(
            f"monitor.state={path} watched asset {was.get('asset')} of {was['model_name']} "
            f"v{was['model_version']}, not {watched.get('asset')}; use one state file per asset "
            "(monitor.state may hold {asset})"
        )
    moved_on = (
        parse_source(source)[0] == "alias"
        and was["model_name"] == watched["model_name"]
        and was["model_version"] != watched["model_version"]
    )
    if not moved_on:
        raise ConfigError(
            f"monitor.state={path} watched {was['model_name']} v{was['model_version']} "
            f"(model_hash {was['model_hash'][:12]}), not {watched['model_name']} "
            f"v{watched['model_version']} (model_hash {watched['model_hash'][:12]}); use "
            "another state file (monitor.state may hold {version}: one file per version)"
        )
    kept = path.with_name(f"{path.stem}.v{was['model_version']}{path.suffix}")
    note = (
        f"{source} moved from v{was['model_version']} to v{watched['model_version']}: a fresh "
        f"e-process starts for v{watched['model_version']}; v{was['model_version']}'s state is "
        f"kept in {kept}"
    )
    return None, (kept, note)


def _log(
    rec: Any,
    cfg: MonitorConf,
    name: str,
    version: str,
    state: Any,
    new: list,
    rolling: dict[str, float],
    fired: bool,
    action: str,
) -> str:
    tags = {Tag.REGISTERED_MODEL: name, Tag.MODEL_VERSION: str(version)}
    with rec.run(f"monitor-{name}-v{version}", tags=tags) as run:
        run.params({k: v for k, v in cfg.monitor.items() if k != "clear"})
        # the e-value by matured bar: step = the bar's count among all matured bars
        run.series("e_value", [e for _, e in new], first_step=state.n_matured - len(new) + 1)
        run.metrics({**rolling, "matured_bars": float(state.n_matured)})
        if state.alarm:
            run.tags({f"{Tag.ALARM_PREFIX}{k}": v for k, v in state.alarm.items()})
        if fired:
            run.tags({Tag.ALARM_ACTION: action})
        if state.recal is not None:
            recal = state.recal.summary()
            run.metrics(recal, step=state.n_matured)
            run.dict({**state.recal.to_dict(), **recal}, "recalibration.json")
        if state.path:
            from phat.evaluation.plots import monitor_plot

            times, values = zip(*state.path, strict=True)
            run.figure(monitor_plot(times, values, float(cfg.monitor.alpha), state.recent,
                                    (state.alarm or {}).get("time")), "monitor.png")  # fmt: skip
        return run.run_id


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="monitor")
def _hydra_main(cfg: DictConfig) -> Any:
    return call(run, cfg, log, verb="monitor")


def main() -> None:
    entry("monitor", _hydra_main)


if __name__ == "__main__":
    main()
