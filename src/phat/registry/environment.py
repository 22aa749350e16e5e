"""What a logged phat model needs to run anywhere: its code and its pinned environment.

- `code_copy(dst)`: a clean copy of the installed `phat` package (no caches, no build files),
  shipped inside the logged model with MLflow's `code_paths`, so `mlflow models serve` or
  `mlflow.pyfunc.load_model` in a fresh environment imports the code that trained the model,
  not whatever `phat` a package index offers (the public index holds an unrelated `phat`; this
  project's distribution is `phat-ohlcv`, and the model never asks an index for it).
- `requirements(kind)`: the distributions that scoring imports, each pinned to the version
  installed where the model was trained, plus `constraints(...)`: every distribution those
  pull in, transitively, pinned the same way (MLflow stores it beside requirements.txt as
  constraints.txt, so pip resolves nothing by guess).
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path

import phat

# What scoring imports (measured: sys.modules after loading and predicting through pyfunc),
# plus exchange-calendars, which a model on an exchange calendar needs to check its bars.
SCORING = ("mlflow", "numpy", "pandas", "pyarrow", "scipy", "safetensors", "pyyaml")
CALENDARS = ("exchange-calendars",)
TORCH = "torch"
DISTRIBUTION = "phat-ohlcv"  # the import name stays `phat`


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str:
    """The installed version without a local label (torch 2.13.0+cpu -> 2.13.0)."""
    return metadata.version(dist).split("+")[0]


def requirements(kind: str) -> list[str]:
    roots = [*SCORING, *CALENDARS] + ([TORCH] if kind == "tcn" else [])
    return [f"{d}=={_version(d)}" for d in roots]


def constraints(kind: str) -> list[str]:
    """Every installed distribution the scoring requirements reach, pinned (markers evaluated
    for this interpreter and platform; extras followed only where a requirement names them)."""
    from packaging.requirements import Requirement

    roots = [*SCORING, *CALENDARS] + ([TORCH] if kind == "tcn" else [])
    seen: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here is not needed to score
        key = _canon(dist.metadata["Name"])
        if key in seen and not extras:
            continue
        seen[key] = _version(dist.metadata["Name"])
        for line in dist.requires or []:
            req = Requirement(line)
            env_ok = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in (extras or {""})
            )
            if env_ok and _canon(req.name) not in seen:
                todo.append((req.name, frozenset(req.extras)))
    return [f"{name}=={ver}" for name, ver in sorted(seen.items())]


def code_hash(code_dir: Path) -> str:
    """sha256 over the shipped package's files (relative path and bytes, sorted), as recorded
    in `phat.code_hash`; `phat.load` refuses a model whose code/ no longer hashes to it."""
    import hashlib

    h = hashlib.sha256()
    root = Path(code_dir)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def code_copy(dst: Path) -> Path:
    """A copy of the running phat package under dst/phat, without caches; returns it."""
    src = Path(phat.__file__).resolve().parent
    target = Path(dst) / "phat"
    shutil.copytree(
        src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    return target
