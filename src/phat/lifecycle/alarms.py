"""What a calibration alarm does to the registry, beside promotion and rollback.

`phat monitor` decides (evidence.monitor: the e-process); this module acts, under the same
exclusive hold on the registered model as promote and rollback, and records each act in the
model's promotion history (phat.history.<seq>), where `phat doctor` and the policy read it:

- `act`: monitor.on_alarm = log (history only), fallback (tags phat.alarm.* on the version:
  every binding resolves to the proxy from the alarm's time; one asset of a universe model:
  phat.alarm.asset.<symbol>, that asset alone) or rollback (lifecycle.promotion.rollback).
- `clear`: remove the version's alarm tags (the whole version's and every asset's), recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phat.lifecycle.production import append_event, exclusive, now_iso
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import MonitorConf


def record(rec: Any, name: str, event: dict[str, Any]) -> None:
    """Append an event to the model's history under the exclusive hold (moves nothing)."""
    with exclusive(rec.client, rec.uri, name) as hold:
        append_event(hold, event)


def act(rec: Any, cfg: MonitorConf, name: str, version: str, alarm: dict, asset: str = "") -> str:
    """The configured action on an alarm (see the module docstring); returns what it did."""
    on = str(cfg.monitor.on_alarm)
    record(rec, name, {
        "action": "alarm", "version": str(version), "at": now_iso(), "on_alarm": on,
        "alarm_time": alarm["time"], "e_value": alarm["e_value"], "bars": alarm.get("bars"),
        **({"asset": asset} if asset else {}),
    })  # fmt: skip
    if on == "log":
        return "logged (monitor.on_alarm=log)"
    client = rec.client
    if asset:
        client.set_model_version_tag(
            name, version, f"{Tag.ASSET_ALARM_PREFIX}{asset}", alarm["time"]
        )
        return (
            f"{asset} alone resolves to the proxy (calibration_alarm) from {alarm['time']}; "
            "the other assets keep the model; `phat monitor monitor.clear=true` clears it"
        )
    if on == "fallback":
        client.set_model_version_tag(name, version, Tag.ALARM_TIME, alarm["time"])
        client.set_model_version_tag(name, version, Tag.ALARM_E_VALUE, f"{alarm['e_value']:.6g}")
        client.set_model_version_tag(name, version, Tag.ALARM_BARS, str(alarm["bars"]))
        return (
            f"every binding of v{version} now resolves to the proxy (calibration_alarm) from "
            f"{alarm['time']}; `phat monitor monitor.clear=true` clears it"
        )
    from phat.lifecycle.promotion import rollback
    from phat.settings import RollbackConf

    out = rollback(RollbackConf(
        data=cfg.data, horizon=cfg.horizon, registry=cfg.registry, tracking=cfg.tracking,
        reason=f"calibration alarm at {alarm['time']}",
    ))  # fmt: skip
    return f"rolled back: production is now v{out.get('production', '?')}"


def clear(rec: Any, name: str, version: str) -> str | None:
    """Remove the version's alarm tags; returns what was cleared (None: there was no alarm)."""
    from phat.registry.client import is_absent

    client = rec.client
    tags = client.get_model_version(name, version).tags
    assets = sorted(k for k in tags if k.startswith(Tag.ASSET_ALARM_PREFIX))
    had = tags.get(Tag.ALARM_TIME) or (", ".join(assets) if assets else None)
    for k in (Tag.ALARM_TIME, Tag.ALARM_E_VALUE, Tag.ALARM_BARS, *assets):
        try:
            client.delete_model_version_tag(name, version, k)
        except Exception as e:  # a tag that is not there is cleared already; else raise
            if not is_absent(e):
                raise
    if had is not None:
        record(rec, name, {"action": "alarm_cleared", "version": str(version),
                           "alarm_time": had, "at": now_iso()})  # fmt: skip
    return had
