"""Files phat writes for a user: checked before the work, written whole, one writer at a time.

- `check_output`: an output path (`out`, `out_dir`, `monitor.state`, ...) is checked before any
  data is read: not a directory where a file is meant (nor a file where a directory is), a
  suffix the writer knows, and a place this process can really create files in (a probe file is
  created and removed in the nearest existing folder: permission bits alone do not say, e.g.
  for root under /proc or on a read-only mount).
- `write_atomic`: a temporary file in the same folder, flushed to disk, then renamed over the
  target (POSIX rename is atomic): a reader or a `kill -9` sees the old file or the new one,
  never half of either.
- `hold`: an exclusive OS lock (`fcntl.flock` on `<file>.lock`, released by the kernel when the
  process dies), waited for up to a timeout; the holder's pid, host and start time are written
  into the lock file so a refusal can name them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from phat.errors import ConfigError, PhatError


class FileBusy(PhatError):
    """Another process holds the lock of a file phat writes; nothing was changed."""

    reason = "busy"

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def _nearest_existing(path: Path) -> Path:
    for d in (path, *path.parents):
        if d.exists():
            return d
    return Path(".")


def _probe_writable(key: str, path: Path, folder: Path) -> None:
    """Create and remove a file in `folder` (the nearest existing ancestor of `path`)."""
    if not folder.is_dir():
        raise ConfigError(f"{key}={path}: {folder} is a file, so no folder can be made under it")
    probe = folder / f".phat-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"{key}={path}: cannot write in {folder} ({e.strerror or type(e).__name__})"
        ) from None


def check_output(
    key: str, value: str | os.PathLike[str], *, kind: str = "file",
    suffixes: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """Refuse an output path that the work could not write, before the work (module docstring).
    kind `file`: a file (an existing directory is refused; with `suffixes`, its suffix must be
    one of them); kind `dir`: a folder (an existing file is refused). Returns the path."""
    path = Path(value)
    if kind == "file":
        if path.is_dir():
            raise ConfigError(
                f"{key}={path} is a directory; name a file"
                + (f" ending in {' or '.join(suffixes)}" if suffixes else "")
            )
        if suffixes and path.suffix.lower() not in suffixes:
            raise ConfigError(
                f"{key}={path}: unknown suffix {path.suffix or '(none)'!r}; expected "
                f"{' or '.join(suffixes)} (the suffix chooses the format)"
            )
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{key}={path} exists and is not writable")
    elif path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file; name a directory")
    _probe_writable(key, path, _nearest_existing(path if kind == "dir" else path.parent))
    return path


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write `data` to `path` whole (module docstring). `before_replace` runs after the
    temporary file is on disk and before the rename (crash tests pause there)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(part, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def hold(lock_path: str | os.PathLike[str], timeout: float, what: str) -> Iterator[str]:
    """Hold `lock_path` exclusively (module docstring), waiting up to `timeout` seconds (0: do
    not wait); yields the holder line written into the lock file. Raises FileBusy naming the
    holder when the wait runs out."""
    import fcntl

    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    me = f"pid {os.getpid()} on {socket.gethostname()} since {started}"
    deadline = time.monotonic() + max(float(timeout), 0.0)
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise FileBusy(
                        f"{what}: {holder} holds {path}"
                        + (f" (waited {timeout:g} s)" if timeout else "")
                        + "; nothing changed, re-run when it is done",
                        holder,
                    ) from None
                time.sleep(0.05)
        try:
            f.seek(0)
            f.truncate()
            f.write(me)
            f.flush()
            yield me
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
