"""What a logged phat model needs to run anywhere: its code and its pinned environment.

- `ship_code(dir)`: a clean copy of the installed `phat` package (no caches, no build files),
  its verifier and their manifest, shipped inside the logged model with MLflow's `code_paths`,
  so `mlflow models serve` or `mlflow.pyfunc.load_model` in a fresh environment imports the
  code that trained the model (after verifying it: registry/verify_shipped.py), not whatever
  `phat` a package index offers (the public index holds an unrelated `phat`; this project's
  distribution is `phat-ohlcv`, and the model never asks an index for it).
- `verify_code(model_dir, recorded, uri)`: phat's own check of that code against the recorded
  `phat.code_hash`, on every load path phat controls.
- `requirements(kinds)`: the distributions that scoring imports, each pinned to the version
  installed where the model was trained, plus `constraints(...)`: every distribution those
  pull in, transitively, pinned the same way (MLflow stores it beside requirements.txt as
  constraints.txt, so pip resolves nothing by guess).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from phat.errors import HashMismatch

# The installed phat package (registry/ is one of its folders): what a logged model ships.
PACKAGE_DIR = Path(__file__).resolve().parents[1]

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


def _roots(kinds: Iterable[str]) -> list[str]:
    """What scoring a model made of these kinds imports (models.kinds says which need torch)."""
    from phat.models.kinds import needs_torch

    return [*SCORING, *CALENDARS] + ([TORCH] if needs_torch(kinds) else [])


def requirements(kinds: Iterable[str]) -> list[str]:
    roots = _roots(kinds)
    return [f"{d}=={_version(d)}" for d in roots]


def constraints(kinds: Iterable[str]) -> list[str]:
    """Every installed distribution the scoring requirements reach, pinned (markers evaluated
    for this interpreter and platform; extras followed only where a requirement names them)."""
    from packaging.requirements import Requirement

    roots = _roots(kinds)
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


def legacy_code_hash(code_dir: Path) -> str:
    """The phat.code_hash of models logged before 2026-12-01 (no manifest, loader module
    phat.registry.pyfunc_loader): sha256 over code/phat's files (relative path and bytes)."""
    import hashlib

    h = hashlib.sha256()
    root = Path(code_dir)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def ship_code(code_dir: Path) -> tuple[list[str], str]:
    """Lay out what a logged model ships under code_dir: a clean copy of the running phat
    package (code_dir/phat), the verifier as phat_verify.py (the model's loader_module) and
    the manifest of both. Returns (the paths for MLflow's code_paths, phat.code_hash)."""
    from phat.registry import verify_shipped as vs

    src = PACKAGE_DIR
    code_dir.mkdir(parents=True, exist_ok=True)
    target = code_dir / "phat"
    shutil.copytree(
        src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    shutil.copyfile(Path(vs.__file__), code_dir / vs.VERIFIER)
    digest = vs.write_manifest(code_dir)
    return [str(target), str(code_dir / vs.VERIFIER), str(code_dir / vs.MANIFEST)], digest


def mlmodel_loader(model_dir: Path) -> dict[str, Any]:
    """The python_function loader entry of a logged model's MLmodel (loader_module, code)."""
    import yaml

    try:
        conf = yaml.safe_load((Path(model_dir) / "MLmodel").read_text()) or {}
        pf = conf["flavors"]["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
        raise HashMismatch(f"{model_dir}/MLmodel: no python_function entry ({e})") from None
    return {"loader_module": pf.get("loader_module"), "code": pf.get("code")}


def verify_code(model_dir: Path, recorded: str | None, uri: str) -> None:
    """phat's own check of the code a logged model ships, before anything runs it: every
    file under code/ and MLmodel's loader entry hash to `recorded` (the registry's or the
    training run's phat.code_hash); with no record (a bare directory, no tracking store),
    the files must match the shipped manifest and the loader entry must be phat's verifier.
    Raises HashMismatch naming the model; models logged before the manifest existed are
    checked by their legacy hash."""
    from phat.registry import verify_shipped as vs

    model_dir = Path(model_dir)
    code = model_dir / vs.LOADER["code"]
    if not (code / vs.MANIFEST).exists():
        if (code / vs.VERIFIER).exists():
            raise HashMismatch(f"{uri}: the model's code/ has no {vs.MANIFEST}; refusing it")
        if recorded and (code / "phat").is_dir() and legacy_code_hash(code / "phat") != recorded:
            raise HashMismatch(
                f"{uri}: the phat code shipped in the model (code/phat) no longer hashes to "
                f"the recorded phat.code_hash {recorded[:16]}...; refusing a model whose code "
                "was changed after training (mlflow models serve would run it)"
            )
        return
    loader = mlmodel_loader(model_dir)
    if recorded:
        actual = vs.code_hash(vs.digests(code), loader)
        if actual != recorded:
            try:
                vs.check_files(code)  # name the file when the manifest can
            except vs.ShippedCodeChanged as e:
                raise HashMismatch(f"{uri}: {e}") from None
            raise HashMismatch(
                f"{uri}: the shipped code and MLmodel's loader entry hash to {actual[:16]} but "
                f"the recorded phat.code_hash is {recorded[:16]}; refusing to run it"
            )
        return
    try:
        vs.check_files(code)
    except vs.ShippedCodeChanged as e:
        raise HashMismatch(f"{uri}: {e}") from None
    if loader != vs.LOADER:
        raise HashMismatch(
            f"{uri}: MLmodel's loader entry is {loader}, not phat's verifier {vs.LOADER}; "
            "refusing to run it"
        )
