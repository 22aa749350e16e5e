"""What crashes leave behind in an MLflow store, found and repaired (`phat doctor`).

A `kill -9` (or a power cut) in the middle of a training leaves a run RUNNING forever, maybe a
logged model PENDING, and maybe a registry version whose run never finished. None of these may
reach production. The doctor finds them and, unless `--dry-run`:

- a RUNNING run whose process is gone (same host, pid not alive: phat tags `phat.host` and
  `phat.pid` on every run it starts), or older than `stale_after_hours` -> KILLED;
- a PENDING logged model whose run is no longer RUNNING -> FAILED (found by reading every
  logged model's status: MLflow 3.17's SQLite store answers a `status = 'PENDING'` filter with
  nothing while the unfiltered search lists the model as PENDING);
- a KILLED or FAILED training run still tagged `phat.promotable=true` -> `phat.promotable=false`
  (a stale run the doctor kills gets the same tag as it is killed);
- a version whose training run is not FINISHED -> tagged `phat.debris` and
  `phat.promotable=false` (promote refuses it anyway);
- a production alias that the promotion history does not account for is reported (moved outside
  phat, or a crash between two writes); it is not changed: the alias is the source of truth and
  a person decides.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from phat.tagnames import Tag


@dataclass(frozen=True)
class Finding:
    kind: str  # stale_run | promotable_debris | pending_model | unfinished_version | history_disagrees
    what: str  # run id, model id, "name vN"
    detail: str
    repair: str  # what the doctor does (or would do)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find(client: Any, stale_after_hours: float, now: float | None = None) -> list[Finding]:
    """Every piece of crash debris in the store the client points at."""
    from phat.lifecycle.production import current_production, read_history

    now = time.time() if now is None else now
    host = socket.gethostname()
    out: list[Finding] = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    running: set[str] = set()
    for exp in experiments:
        for r in client.search_runs([exp], filter_string="attributes.status = 'RUNNING'"):
            tags = r.data.tags
            age_h = (now - r.info.start_time / 1000.0) / 3600.0
            pid = tags.get(Tag.PID, "")
            if tags.get(Tag.HOST) == host and pid.isdigit() and not _alive(int(pid)):
                why = f"its process {pid} on this host is gone"
            elif age_h > stale_after_hours:
                why = f"RUNNING for {age_h:.1f} h (> doctor.stale_after_hours={stale_after_hours})"
            else:
                running.add(r.info.run_id)
                continue
            out.append(Finding("stale_run", r.info.run_id, f"{r.info.run_name}: {why}", "KILLED"))
    stale = {f.what for f in out}
    for exp in experiments:
        for r in client.search_runs([exp], filter_string="attributes.status != 'RUNNING' and "
                                    "attributes.status != 'FINISHED'"):  # fmt: skip
            if r.data.tags.get(Tag.PROMOTABLE) == "true" and r.info.run_id not in stale:
                out.append(Finding("promotable_debris", r.info.run_id,
                                   f"{r.info.run_name}: {r.info.status} but {Tag.PROMOTABLE}=true",
                                   f"{Tag.PROMOTABLE}=false"))  # fmt: skip
    for m in pending_models(client, experiments):
        if m.source_run_id in running:
            continue  # still being written by a live process
        out.append(
            Finding("pending_model", m.model_id, f"{m.name} of run {m.source_run_id}", "FAILED")
        )
    for rm in client.search_registered_models():
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            if mv.tags.get(Tag.DEBRIS) or not mv.run_id or mv.run_id in running:
                continue
            status = "KILLED" if mv.run_id in stale else _status(client, mv.run_id)
            if status != "FINISHED":
                out.append(
                    Finding(
                        "unfinished_version",
                        f"{rm.name} v{mv.version}",
                        f"training run {mv.run_id} is {status}",
                        "tag phat.debris, phat.promotable=false",
                    )
                )
        prod = current_production(client, rm.name)
        stack = read_history(client, rm.name).stack
        if prod and stack and stack[-1] != prod:
            out.append(
                Finding(
                    "history_disagrees",
                    rm.name,
                    f"alias production is v{prod}, the history's last production is v{stack[-1]}",
                    "report only: decide with phat promote / phat rollback",
                )
            )
    return out


def pending_models(client: Any, experiments: list[str]) -> list[Any]:
    """Every logged model whose status is PENDING, read from the unfiltered search page by
    page (the store's status filter cannot be trusted: module docstring)."""
    found: list[Any] = []
    if not experiments:
        return found
    token = None
    while True:
        page = client.search_logged_models(experiments, page_token=token)
        found += [m for m in page if str(getattr(m.status, "name", m.status)).endswith("PENDING")]
        token = page.token
        if not token:
            return found


def _status(client: Any, run_id: str) -> str:
    """The run's status; MISSING only when the store answers that the run is not there. Any
    other failure (a timeout, a server error) stops the doctor before it changes anything: a
    healthy version must never be tagged debris because its run could not be read."""
    from phat.registry.client import is_absent, registry_error

    try:
        return str(client.get_run(run_id).info.status)
    except Exception as e:
        if is_absent(e):
            return "MISSING"
        raise registry_error(e, f"phat doctor stopped, nothing changed: run {run_id}") from None


def repair(rec: Any, findings: list[Finding]) -> int:
    """Apply each finding's repair (`rec`: the command's registry.recorder.Recorder); returns
    how many were repaired."""
    client = rec.client
    done = 0
    for f in findings:
        if f.kind == "stale_run":
            if client.get_run(f.what).data.tags.get(Tag.PROMOTABLE) == "true":
                rec.on(f.what).tags({Tag.PROMOTABLE: "false"})  # before it reads as finished
            rec.on(f.what).finish("KILLED")
        elif f.kind == "promotable_debris":
            rec.on(f.what).tags({Tag.PROMOTABLE: "false"})
        elif f.kind == "pending_model":
            client.finalize_logged_model(f.what, "FAILED")
        elif f.kind == "unfinished_version":
            name, version = f.what.rsplit(" v", 1)
            client.set_model_version_tag(name, version, Tag.DEBRIS, f.detail)
            client.set_model_version_tag(name, version, Tag.PROMOTABLE, "false")
        else:
            continue
        done += 1
    return done


def report(findings: list[Finding], dry_run: bool) -> str:
    if not findings:
        return "phat doctor: no crash debris found"
    lines = [
        f"phat doctor: {len(findings)} findings{' (dry run: nothing changed)' if dry_run else ''}"
    ]
    for f in findings:
        lines.append(f"  {f.kind:<19} {f.what:<36} {f.detail}  -> {f.repair}")
    return "\n".join(lines)


def summary(findings: list[Finding]) -> str:
    return json.dumps([f.__dict__ for f in findings])
