"""The logged model's code, verified before any of it runs. Standard library only.

A logged phat model ships phat's code (`code/phat/...`, so `mlflow models serve` in a fresh
environment imports the code that trained it). This file is copied unchanged into the logged
model as `code/phat_verify.py` and named as its `loader_module`, beside
`code/phat_manifest.json`: the sha256 of every file under `code/` and the MLmodel loader entry
(`LOADER`). MLflow imports `phat_verify` first and calls `_load_pyfunc`, which

1. hashes every file under the model's `code/` and refuses a file changed, missing or added
   (a module dropped into `code/` would shadow an installed package: `code/` is first on
   sys.path) before any other module of the shipped package is imported;
2. when a tracking store is configured (MLFLOW_TRACKING_URI), compares the manifest's hash with
   the `phat.code_hash` recorded on the training run, so a rewritten manifest is refused too;
3. only then imports `phat.registry.pyfunc_loader`, which verifies the model's data.

`code_hash` of the manifest is the `phat.code_hash` tag of the run and the registry version;
phat's own load paths (`phat.load`, `phat serve`) recompute it from the files and the MLmodel
entry and compare it with the registry's. What this cannot cover: a change to this verifier file
itself, or to MLmodel's loader entry, when the model is loaded by MLflow alone (MLflow trusts its
artifact store); docs/mlflow.md says what a deployment should do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Nothing of phat is imported at module level: MLflow imports this file first, with the model's
# code/ ahead of everything on sys.path, so `import phat...` here would run the shipped
# package's __init__ (and whatever else it imports) before check_files has looked at it.
# tests/test_integrity.py parses this file and refuses any import outside the standard library
# before the check.
MANIFEST = "phat_manifest.json"
VERIFIER = "phat_verify.py"
# The MLmodel python_function entry the manifest pins (loader module and code directory).
LOADER = {"loader_module": "phat_verify", "code": "code"}


class ShippedCodeChanged(Exception):
    """The code shipped in a logged model is not the code that was logged with it."""


def digests(code_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under code_dir (relative POSIX path -> hex), the manifest itself
    and bytecode caches excepted."""
    root = Path(code_dir)
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel == MANIFEST or "__pycache__" in f.parts or f.suffix == ".pyc":
            continue
        out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def code_hash(files: dict[str, str], loader: dict[str, Any]) -> str:
    """The `phat.code_hash` of a manifest: sha256 of its canonical JSON."""
    text = json.dumps({"files": files, "loader": loader}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(code_dir: str | Path) -> str:
    """Write code_dir/phat_manifest.json for the files there now; returns the code hash."""
    files = digests(code_dir)
    (Path(code_dir) / MANIFEST).write_text(json.dumps({"files": files, "loader": LOADER}))
    return code_hash(files, LOADER)


def check_files(code_dir: str | Path) -> str:
    """Refuse code_dir when any file differs from its manifest (named); returns the code hash
    the manifest stands for."""
    root = Path(code_dir)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        want, loader = dict(manifest["files"]), dict(manifest["loader"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShippedCodeChanged(
            f"{root.name}/{MANIFEST} is unreadable ({e}); refusing to load"
        ) from None
    have = digests(root)
    for rel in sorted(set(want) | set(have)):
        if want.get(rel) != have.get(rel):
            what = "added" if rel not in want else "missing" if rel not in have else "changed"
            raise ShippedCodeChanged(
                f"shipped file {root.name}/{rel} was {what} after the model was logged; "
                "refusing to run the model's code"
            )
    return code_hash(want, loader)


def _model_dir(data_path: str | Path) -> Path:
    here = Path(data_path).resolve()
    for d in (here, *here.parents):
        if (d / "MLmodel").is_file():
            return d
    raise ShippedCodeChanged(f"{data_path}: no MLmodel file above it")


def _load_pyfunc(data_path: str, model_config: Any = None) -> Any:
    """MLflow's entry point (loader_module = phat_verify): verify, then hand over."""
    model_dir = _model_dir(data_path)
    try:
        actual = check_files(model_dir / LOADER["code"])
    except ShippedCodeChanged as e:
        raise ShippedCodeChanged(f"{model_dir}: {e}") from None
    # The files are verified: the shipped package may be imported now (the run's record is
    # read by the same helper phat's other load paths use).
    from phat.registry.store import recorded_tags
    from phat.tagnames import Tag

    run = recorded_tags(model_dir)
    recorded = (run[0], run[1].get(Tag.CODE_HASH, "")) if run is not None else None
    if recorded is not None and recorded[1] != actual:
        raise ShippedCodeChanged(
            f"{model_dir}: training run {recorded[0]} recorded phat.code_hash {recorded[1][:16]} "
            f"but the shipped code's manifest hashes to {actual[:16]}; refusing to load"
        )
    from phat.registry.pyfunc_loader import _load_pyfunc as load_verified

    return load_verified(data_path, model_config)
