"""What is live, and how it moves: the `production` alias, its append-only history, and the
exclusive hold that makes a promotion or rollback all-or-nothing (docs/promotion.md).

- **Exclusive hold** per registered model, taken before production is read and held until the
  move is committed or undone. Local stores (SQLite, file): an OS file lock (`fcntl.flock`,
  released by the kernel if the process dies) beside the database. A tracking server: a lease,
  the model tag `phat.lease` = {owner, expires}, written, then read back after a settle delay;
  the holder re-verifies it before every write, and a writer that finds another owner backs off
  having changed nothing. A second promote/rollback of the same model meanwhile exits with
  `RegistryConflict`, having changed nothing.
- **History**: one tag per event, `phat.history.<seq>` (zero-padded, never rewritten), with the
  version, the production it replaced, time, run id and reason. The stack of production
  versions is replayed from the events; rollback returns only to a version the history shows
  was production.
- **Moves** are transactional: the event is appended, then the aliases `production` and
  `previous` and the stage mirror are written; if any call fails, everything written is undone
  (event tag deleted, aliases and stages restored) before the error is raised.
- **Reads are fail-safe**: only "the alias does not exist" means "no production"; any other
  registry error aborts with the store named.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phat.errors import PhatError, RegistryUnavailable
from phat.registry.client import is_absent
from phat.tagnames import Tag

log = logging.getLogger(__name__)
LEASE_SECONDS = 600.0
LEASE_SETTLE_SECONDS = 0.5


class RegistryConflict(PhatError):
    """Another promote/rollback holds the model, or production moved; nothing was changed."""

    reason = "registry_conflict"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unavailable(e: Exception, what: str) -> RegistryUnavailable:
    import mlflow

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return RegistryUnavailable(
        f"registry at {mlflow.get_tracking_uri()}: {what} failed ({first[:200]}); nothing changed"
    )


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points at; None only when the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception as e:
        if is_absent(e):
            return None
        raise _unavailable(e, f"reading {name}@{alias}") from None


def current_production(client: Any, name: str) -> str | None:
    return alias_version(client, name, "production")


# ---------------------------------------------------------------------------------------------
# History


@dataclass
class History:
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (seq, event)

    @property
    def next_seq(self) -> int:
        return (self.events[-1][0] + 1) if self.events else 1

    @property
    def stack(self) -> list[str]:
        """Production versions, oldest first, replayed from the events."""
        stack: list[str] = []
        for _, e in self.events:
            if e["action"] == "promote":
                prev = e.get("previous")
                if prev and (not stack or stack[-1] != prev):
                    stack.append(str(prev))  # was production before phat managed it
                stack.append(str(e["version"]))
            elif e["action"] == "rollback":
                target = str(e["version"])
                while stack and stack[-1] != target:
                    stack.pop()
                if not stack:
                    stack.append(target)
        return stack

    def as_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "events": [e for _, e in self.events]}


def require_model(client: Any, name: str) -> Any:
    """The registered model, or ModelUnavailable naming the models that do exist (or
    RegistryUnavailable when the store cannot answer)."""
    from phat.registry.client import registry_error

    try:
        return client.get_registered_model(name)
    except Exception as e:
        raise registry_error(e, f"registered model {name!r}") from None


def read_history(client: Any, name: str) -> History:
    tags = require_model(client, name).tags or {}
    events = sorted(
        (int(k[len(Tag.HISTORY_PREFIX) :]), json.loads(v))
        for k, v in tags.items()
        if k.startswith(Tag.HISTORY_PREFIX) and k[len(Tag.HISTORY_PREFIX) :].isdigit()
    )
    if not events and tags.get(Tag.LEGACY_HISTORY):
        legacy = json.loads(tags[Tag.LEGACY_HISTORY])
        events = [
            (0, {"action": "promote", "version": v, "previous": None}) for v in legacy["stack"]
        ]
    return History(events)


def event_key(seq: int) -> str:
    return f"{Tag.HISTORY_PREFIX}{seq:06d}"


# ---------------------------------------------------------------------------------------------
# Exclusive hold


def _local_db(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).resolve()
    if uri.startswith("file:"):
        return Path(uri[len("file:") :].lstrip("/")).resolve()
    if "://" not in uri:
        return Path(uri).resolve()
    return None


@dataclass
class Hold:
    """Proof of the exclusive hold; `check()` before every write."""

    client: Any
    name: str
    owner: str
    lease: bool

    def check(self) -> None:
        if not self.lease:
            return  # an OS lock cannot be taken away while the process lives
        try:
            raw = (self.client.get_registered_model(self.name).tags or {}).get(Tag.LEASE, "{}")
        except Exception as e:
            raise _unavailable(e, f"verifying the lease on {self.name}") from None
        if json.loads(raw).get("owner") != self.owner:
            raise RegistryConflict(
                f"{self.name}: another promote/rollback took the lease; this one backs off"
            )


@contextlib.contextmanager
def exclusive(client: Any, uri: str, name: str) -> Iterator[Hold]:
    """Hold `name` exclusively for one promote/rollback (see the module docstring)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    db = _local_db(uri)
    if db is not None:
        from phat.files import FileBusy, hold

        try:
            with hold(db.parent / ".phat-locks" / f"{name}.lock", 0, name) as me:
                yield Hold(client, name, me, lease=False)
        except FileBusy as e:
            raise RegistryConflict(
                f"{name}: {e.holder} is promoting or rolling back this model; nothing changed, "
                "re-run when it is done"
            ) from None
        return
    yield from _lease(client, name, owner)


def _lease(client: Any, name: str, owner: str) -> Iterator[Hold]:
    raw = (require_model(client, name).tags or {}).get(Tag.LEASE)
    if raw:
        held = json.loads(raw)
        if held.get("expires", 0) > time.time():
            raise RegistryConflict(
                f"{name}: {held.get('owner')} holds the lease until "
                f"{datetime.fromtimestamp(held['expires'], UTC):%H:%M:%S} UTC; nothing changed"
            )
    lease = json.dumps({"owner": owner, "expires": time.time() + LEASE_SECONDS})
    try:
        client.set_registered_model_tag(name, Tag.LEASE, lease)
    except Exception as e:
        raise _unavailable(e, f"taking the lease on {name}") from None
    time.sleep(LEASE_SETTLE_SECONDS)  # a concurrent writer's lease lands before we read back
    hold = Hold(client, name, owner, lease=True)
    hold.check()
    try:
        yield hold
    finally:
        with contextlib.suppress(Exception):
            mine = (client.get_registered_model(name).tags or {}).get(Tag.LEASE, "{}")
            if json.loads(mine).get("owner") == owner:
                client.delete_registered_model_tag(name, Tag.LEASE)


# ---------------------------------------------------------------------------------------------
# The move


def _stage(client: Any, name: str, version: str | None) -> str | None:
    if not version:
        return None
    return str(client.get_model_version(name, version).current_stage or "None")


def _set_stage(client: Any, name: str, version: str, stage: str) -> None:
    import warnings

    with warnings.catch_warnings():  # stages are deprecated since MLflow 2.9; mirrored only
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(name, version, stage)


def move_production(
    hold: Hold,
    new: str,
    *,
    expected_current: str | None,
    event: dict[str, Any],
) -> History:
    """Point `production` at `new` and `previous` at the version below it, append the event,
    mirror the stages; all or nothing. Refuses if production is not `expected_current`."""
    client, name = hold.client, hold.name
    hold.check()
    cur = current_production(client, name)
    if cur != expected_current:
        raise RegistryConflict(
            f"{name}: production is {cur}, not {expected_current} as when this command started; "
            "nothing changed, re-run"
        )
    history = read_history(client, name)
    seq = history.next_seq
    after = History([*history.events, (seq, event)])
    stack = after.stack
    below = stack[-2] if len(stack) >= 2 else None
    old_prev = alias_version(client, name, "previous")
    try:
        old_stages = {v: _stage(client, name, v) for v in {new, cur} if v}
    except Exception as e:
        raise _unavailable(e, f"reading the stages of {name}") from None
    undo: list[Any] = []
    try:
        hold.check()
        client.set_registered_model_tag(name, event_key(seq), json.dumps(event, sort_keys=True))
        undo.append(lambda: client.delete_registered_model_tag(name, event_key(seq)))
        hold.check()
        client.set_registered_model_alias(name, "production", new)
        undo.append(lambda: _restore_alias(client, name, "production", cur))
        if below:
            client.set_registered_model_alias(name, "previous", below)
        elif old_prev:
            client.delete_registered_model_alias(name, "previous")
        undo.append(lambda: _restore_alias(client, name, "previous", old_prev))
        _set_stage(client, name, new, "Production")
        undo.append(lambda: _set_stage(client, name, new, old_stages[new] or "None"))
        if cur and cur != new:
            _set_stage(client, name, cur, "Archived")
            undo.append(lambda: _set_stage(client, name, cur, old_stages[cur] or "None"))
        hold.check()
    except Exception as e:
        log.error("registry error while moving production of %s; undoing what was written", name)
        for step in reversed(undo):
            try:
                step()
            except Exception as undo_error:  # pragma: no cover - a second fault while undoing
                log.error("undo step failed (%s); run `phat doctor`", undo_error)
        if isinstance(e, PhatError):
            raise
        raise _unavailable(e, f"moving production of {name}") from None
    return after


def append_event(hold: Hold, event: dict[str, Any]) -> History:
    """Append an event that moves nothing (a calibration alarm, its clearing) to the history;
    the stack replay ignores actions other than promote and rollback."""
    client, name = hold.client, hold.name
    hold.check()
    history = read_history(client, name)
    seq = history.next_seq
    try:
        client.set_registered_model_tag(name, event_key(seq), json.dumps(event, sort_keys=True))
    except Exception as e:
        raise _unavailable(e, f"appending to the history of {name}") from None
    return History([*history.events, (seq, event)])


def _restore_alias(client: Any, name: str, alias: str, version: str | None) -> None:
    """Put `alias` back on `version`, or remove it when it did not exist."""
    if version:
        client.set_registered_model_alias(name, alias, version)
    else:
        try:
            client.delete_registered_model_alias(name, alias)
        except Exception as e:
            if not is_absent(e):
                raise
