"""The MLflow Model Registry side: log the pyfunc, register a version, and load it back verified.

- `log_and_register` (inside a training run): logs the pyfunc from code with the artifact
  directory, then registers a version under `registry.model_name` (default
  `phat-{symbol}-{horizon_id}`, lower case) whose tags equal the run's `phat.*` tags and whose
  description summarises the model and its test metrics. If anything fails after the version
  exists, the version is deleted again: a failed run registers nothing.
- `load(uri, horizon_id=None)`: `models:/name/3`, `models:/name@alias`, `runs:/<id>/model`, or a
  local directory; downloads, verifies the hash (and, for registry URIs, that the files hash to
  the version's `phat.model_hash` tag), checks the feature code and horizon, returns a
  `PHatModel` with `.predict(ohlcv_frame)` and `.metadata`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from phat.contract.labels import parse_horizon
from phat.errors import (
    HashMismatch,
    MalformedArtifact,
)
from phat.registry.artifact import PHatModel, load_artifact
from phat.registry.store import is_absent, recorded_tags, registry_error
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import WithData

__all__ = [
    "fetch_verified",
    "is_absent",
    "load",
    "log_and_register",
    "recorded_tags",
    "registry_error",
    "resolve_version",
]

LOADER_MODULE = "phat_verify"  # the shipped verifier (registry/verify_shipped.py), then phat


def default_model_name(symbol: str, horizon_id: str) -> str:
    name = f"phat-{symbol}-{horizon_id}".lower()
    return re.sub(r"[^a-z0-9_.-]+", "-", name)


def symbol_of(data: dict[str, Any]) -> str:
    """The data's name as every verb derives it (phat.data.universe.dataset_name): a
    universe's name, else data.symbol, else the file's stem, else SYNTH."""
    from phat.data.universe import dataset_name

    return dataset_name(data)


def model_name_for(cfg: WithData, symbol: str | None = None) -> str:
    """The registered model name, derived the same way by every verb:
    `registry.model_name`, else `phat-<symbol>-<horizon_id>` (lower case)."""
    if cfg.registry.model_name:
        return str(cfg.registry.model_name)
    from phat.data.universe import earlier_name

    _, _, horizon_id = parse_horizon(str(cfg.horizon))
    name = default_model_name(symbol or symbol_of(cfg.data), horizon_id)
    earlier = earlier_name(cfg.data)
    if earlier is None:
        return name
    # A file alone was named by its whole stem before one naming rule (data.universe): a model
    # registered under that name (phat-btcusdt-15m-15m) is still the one these settings mean,
    # until one under today's name exists.
    from phat.errors import RegistryUnavailable
    from phat.registry.recorder import recorder
    from phat.registry.versions import registered

    old = default_model_name(earlier, horizon_id)
    try:
        recorder(cfg.tracking)  # the store these settings name
        return old if registered(old) and not registered(name) else name
    except RegistryUnavailable:  # no store to ask: today's name (the verb says what it needs)
        return name


def _description(tags: dict[str, str], m: dict[str, float]) -> str:
    import json

    t = tags
    method = json.loads(t[Tag.CALIBRATION])["method"]
    return (
        f"phat {t[Tag.MODEL_KIND]} for {t[Tag.SYMBOL]} {t[Tag.HORIZON_ID]} "
        f"({t[Tag.HORIZON_BARS]} x {t[Tag.TIMEFRAME]}), calibration {method}. "
        f"Test: Brier {m['test_brier']:.5f} (raw {m['test_brier_raw']:.5f}, climatology "
        f"{m['test_brier_climatology']:.5f}), ECE {m['test_ece']:.4f} (raw {m['test_ece_raw']:.4f}), "
        f"AUC {m['test_auc']:.4f}. model_hash {t[Tag.MODEL_HASH][:16]}, "
        f"feature_version {t[Tag.FEATURE_VERSION][:16]}, promotable {t[Tag.PROMOTABLE]}."
    )


def model_signature(columns: list[str], keys: tuple[str, ...] = ()) -> Any:
    """Input: `timestamp`, the row's `keys` (Bars.row_keys: a universe model's `symbol`) and
    the bar columns the model reads. Output: timestamp, the keys, p_hat_raw and p_hat
    (optional: null during the warm-up).

    The timestamp is declared as text, read by phat's own timestamp rules (ISO 8601 with or
    without an offset, epoch digits), and optional (a dataframe_split body may carry time in its
    index instead). MLflow 3.17's datetime column type would break CSV bodies (its read_csv
    refuses a datetime64 dtype), refuse offsets such as `Z`, and read 01/02/2024 month-first
    without a word: docs/mlflow.md."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    symbol = [ColSpec("string", k) for k in keys]
    inputs = Schema(
        [ColSpec("string", "timestamp", required=False), *symbol]
        + [ColSpec("double", c) for c in columns]
    )
    outputs = Schema(
        [
            ColSpec("datetime", "timestamp"),
            *symbol,
            ColSpec("double", "p_hat_raw", required=False),
            ColSpec("double", "p_hat", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(result: Any, columns: list[str]) -> Any:
    """The last few bars of the training data, enough for the first full window plus two, with
    time as ISO 8601 UTC text in a `timestamp` column; a universe's of its first two assets,
    with their `symbol`."""
    n = result.feature_spec.bars_read + 2
    parts = []
    for a in result.bars.members()[:2]:
        example = a.bars.frame[columns].iloc[-n:].copy()
        stamps = pd.DatetimeIndex(example.index).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        example.insert(0, "timestamp", list(stamps))
        for i, (key, value) in enumerate(result.bars.keys_of(a.symbol).items()):
            example.insert(1 + i, key, value)
        parts.append(example)
    return pd.concat(parts).reset_index(drop=True)


def log_and_register(
    run: Any, result: Any, model_name: str | None, register: bool
) -> dict[str, Any]:
    """Log the pyfunc into the active run and (optionally) register a version."""

    import mlflow

    from phat.models.kinds import kinds_in
    from phat.registry.environment import constraints, requirements, ship_code
    from phat.registry.tracking import pause_point

    cols = [c for c in ("open", "high", "low", "close", "volume") if c in result.bars.frame.columns]
    cols += [c for c in result.feature_spec.required_columns if c not in cols]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    kinds = kinds_in(result.model)  # a per-asset container: its members' kinds
    with tempfile.TemporaryDirectory(prefix="phat-model-") as tmp:
        pins = Path(tmp) / "constraints.txt"
        pins.write_text("\n".join(constraints(kinds)) + "\n")
        code_paths, digest = ship_code(Path(tmp) / "code")
        result.tags[Tag.CODE_HASH] = digest  # on the run and the version
        run.tags({Tag.CODE_HASH: result.tags[Tag.CODE_HASH]})
        info = mlflow.pyfunc.log_model(
            name=model_name or "phat",  # the logged model carries the registered model's name
            loader_module=LOADER_MODULE,
            data_path=str(result.artifact_dir),
            code_paths=code_paths,
            signature=model_signature(cols, result.bars.row_keys),
            input_example=input_example(result, cols),
            pip_requirements=[*requirements(kinds), f"-c {pins}"],
        )
    pause_point("model_logged")
    if not register:
        return {"model_uri": info.model_uri}
    name = model_name or default_model_name(result.tags[Tag.SYMBOL], result.tags[Tag.HORIZON_ID])
    out = register_logged(run, dict(result.tags), result.metrics, info.model_id, name)
    return {"model_uri": info.model_uri, **out}


# Tags of the run itself (who ran it, what became of it), not of the model it trained.
_RUN_ONLY = {
    Tag.HOST,
    Tag.PID,
    Tag.REGISTERED_MODEL,
    Tag.MODEL_VERSION,
    Tag.DUPLICATE_OF,
    Tag.WARNINGS,
    Tag.ERROR,
}


def register_logged(
    run: Any,
    tags: dict[str, str],
    metrics: dict[str, float],
    model_id: str,
    name: str,
) -> dict[str, Any]:
    """Register logged model `model_id` of `run` (a registry.recorder.RunLog) under `name`, the version's tags the
    run's phat.* contract tags; or, when a version with the same model_hash exists, register
    nothing and tag the run `phat.duplicate_of`. All or nothing: a failure after the version
    exists deletes it again."""
    import mlflow

    from phat.registry.tracking import pause_point

    client, run_id = run.rec.client, run.run_id
    contract = {k: v for k, v in tags.items() if k.startswith(Tag.PREFIX) and k not in _RUN_ONLY}
    contract = {k: v for k, v in contract.items() if not k.startswith(Tag.SWEEP_PREFIX)}
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"phat p_hat models, {name}")
    same = _same_model(client, name, contract[Tag.MODEL_HASH])
    if same is not None:  # an identical inference function: register nothing new, say which
        run.tags({
            Tag.REGISTERED_MODEL: name, Tag.MODEL_VERSION: same, Tag.DUPLICATE_OF: f"{name}/v{same}"
        })  # fmt: skip
        return {"model_name": name, "model_version": int(same), "duplicate_of": int(same)}
    try:
        # mlflow.register_model links both ways: the version records the logged model, and the
        # logged model's page lists "<name> vN" (its mlflow.modelVersions tag).
        with _registry_chatter_filtered():
            mv = mlflow.register_model(
                f"models:/{model_id}", name, tags=contract, await_registration_for=30
            )
        pause_point("version_registered")
        client.update_model_version(name, mv.version, description=_description(contract, metrics))
        run.tags({Tag.REGISTERED_MODEL: name, Tag.MODEL_VERSION: str(mv.version)})
    except BaseException:
        _undo_versions(client, name, run_id, model_id)
        raise
    return {"model_name": name, "model_version": int(mv.version)}


# What mlflow.register_model prints about the registered model phat has just created itself
# ("Registered model 'x' already exists. Creating a new version...", also on a fresh store) and
# the version it made (phat's summary names it as models:/name/N).
_CHATTER = ("already exists. Creating a new version of this model", "Created version '")


@contextlib.contextmanager
def _registry_chatter_filtered() -> Iterator[None]:
    """Run an MLflow registry call with its stderr lines kept, except _CHATTER's."""
    import io
    import sys

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        kept = [ln for ln in buf.getvalue().splitlines(True) if not any(c in ln for c in _CHATTER)]
        sys.stderr.write("".join(kept))


def _undo_versions(client: Any, name: str, run_id: str, model_id: str) -> None:
    """A failed registration leaves no version behind: delete whatever this run registered
    (the store may have created it before the failure reached us), and the logged model's link
    to it (the logged model is this run's own, so its only link is this one)."""
    try:
        for mv in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
            client.delete_model_version(name, mv.version)
        client.delete_logged_model_tag(model_id, Tag.MLFLOW_MODEL_VERSIONS)
    except Exception:  # the store is failing; phat doctor finds what is left (unfinished run)
        pass


def _same_model(client: Any, name: str, model_hash: str) -> str | None:
    """The first version of `name` with this exact model_hash (crash debris excluded)."""
    same = [
        int(mv.version)
        for mv in client.search_model_versions(f"name='{name}'")
        if mv.tags.get(Tag.MODEL_HASH) == model_hash and not mv.tags.get(Tag.DEBRIS)
    ]
    return str(min(same)) if same else None


def _find_artifact_dir(root: Path) -> Path:
    if (root / "model.json").exists():
        return root
    for cand in (root / "data" / "model", root / "artifacts" / "phat_model", root / "model"):
        if (cand / "model.json").exists():
            return cand
    hits = sorted(
        p.parent for p in root.rglob("model.json") if (p.parent / "weights.safetensors").exists()
    )
    if len(hits) == 1:
        return hits[0]
    raise MalformedArtifact(f"no phat artifact (model.json + weights.safetensors) under {root}")


def resolve_version(uri: str) -> Any | None:
    """The ModelVersion a `models:/` URI names (None for other URIs)."""
    from mlflow.tracking import MlflowClient

    m = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w.-]+))", uri)
    if not m:
        return None
    client = MlflowClient()
    name, ver, alias = m.groups()
    try:
        return (
            client.get_model_version(name, ver)
            if ver
            else client.get_model_version_by_alias(name, alias)
        )
    except Exception as e:
        raise registry_error(e, uri) from None


def load(uri: str | Path, horizon_id: str | None = None) -> PHatModel:
    """Load a verified phat model from a registry/run URI or a local directory.

    Every path verifies the artifact's own hash (all files, foreign files refused) and then, where
    a registry knows the model, compares it with the hash recorded there: the version's tag for
    `models:/`, the training run's tag for `runs:/`, and for a local MLflow model directory (one
    with an MLmodel file) the run's tag when MLFLOW_TRACKING_URI is set. The code a logged model
    ships (code/, MLmodel's loader entry) is checked the same way against `phat.code_hash`
    (environment.verify_code). A bare artifact directory outside MLflow can only vouch for
    itself."""

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    local = Path(str(uri))
    if local.exists():
        return _load_local(local, str(uri), horizon_id)
    with tempfile.TemporaryDirectory(prefix="phat-load-") as tmp:
        return fetch_verified(str(uri), Path(tmp), horizon_id)[0]


def fetch_verified(uri: str, dst: Path, horizon_id: str | None = None) -> tuple[PHatModel, Path]:
    """Download a `models:/` or `runs:/` model into dst and verify it whole (artifact, shipped
    code, both against the registry's or the run's record); returns the model and the local
    logged-model directory (what `phat serve` hands to `mlflow models serve`, so the bytes
    served are the bytes verified)."""
    import mlflow

    from phat.registry.environment import verify_code

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mv = resolve_version(uri)
    source = f"models:/{mv.name}/{mv.version}" if mv is not None else uri
    run = re.fullmatch(r"runs:/([0-9a-f]+)/.*", uri)
    tags = dict(mv.tags) if mv is not None else _run_tags(run.group(1)) if run else {}
    who = "the registry" if mv is not None else f"run {run.group(1)}" if run else None
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst)))
    except Exception as e:  # MLflow raises several types for a missing model/run
        raise registry_error(e, f"cannot download model {uri!r}") from None
    model = _load_named(_find_artifact_dir(path), uri, horizon_id)
    if (path / "MLmodel").exists():
        verify_code(path, tags.get(Tag.CODE_HASH), uri)
    if who is not None:
        _same_hash(uri, who, tags.get(Tag.MODEL_HASH), model.model_hash)
    if mv is not None:
        model.metadata = {
            **model.metadata,
            "registry.name": mv.name,
            "registry.version": str(mv.version),
            Tag.ALARM_TIME: mv.tags.get(Tag.ALARM_TIME, ""),
            # a universe model's per-asset alarms (phat monitor; trading.signals.for_asset)
            **{k: v for k, v in mv.tags.items() if k.startswith(Tag.ASSET_ALARM_PREFIX)},
            Tag.EXCLUDED_ASSETS: mv.tags.get(Tag.EXCLUDED_ASSETS, ""),
        }
    return model, path


def _load_local(local: Path, uri: str, horizon_id: str | None) -> PHatModel:
    """A directory on disk: the artifact verified; where it sits in a logged MLflow model,
    its shipped code too, and both against the training run's tags when a store is set."""
    from phat.registry.environment import verify_code

    root = _find_artifact_dir(local)
    model = _load_named(root, uri, horizon_id)
    logged = _logged_dir(local, root)
    if logged is not None:
        recorded = recorded_tags(logged)
        tags = recorded[1] if recorded is not None else {}
        verify_code(logged, tags.get(Tag.CODE_HASH), uri)
        if recorded is not None:
            who = f"training run {recorded[0]}"
            _same_hash(uri, who, tags.get(Tag.MODEL_HASH), model.model_hash)
    return model


def _logged_dir(local: Path, root: Path) -> Path | None:
    """The logged MLflow model directory (its MLmodel file) around an artifact, if any."""
    return next(
        (c for c in (local, root.parent.parent, root.parent) if (c / "MLmodel").exists()), None
    )


def load_copy(local: str | Path, model_hash: str) -> PHatModel:
    """A copy of a model its caller has verified (an engine's executor gets the driver's):
    the artifact and the shipped code checked on their own, and the artifact's hash compared
    with `model_hash`; no tracking store is read (executors need not reach one)."""
    from phat.registry.environment import verify_code

    local = Path(local)
    root = _find_artifact_dir(local)
    model = _load_named(root, str(local), None)
    _same_hash(str(local), "the verified original", model_hash, model.model_hash)
    logged = _logged_dir(local, root)
    if logged is not None:
        verify_code(logged, None, str(local))
    return model


def _run_tags(run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient().get_run(run_id).data.tags)
    except Exception as e:
        raise registry_error(e, f"run {run_id}") from None


def _load_named(root: Path, uri: str, horizon_id: str | None) -> PHatModel:
    """load_artifact, with the URI the caller gave named in a malformed-artifact refusal."""
    try:
        return load_artifact(root, horizon_id=horizon_id)
    except MalformedArtifact as e:
        raise MalformedArtifact(f"{uri}: {e}") from None


def _same_hash(uri: str, who: str, recorded: str | None, actual: str) -> None:
    if recorded != actual:
        raise HashMismatch(
            f"{uri}: {who} recorded phat.model_hash {recorded} but the files hash to {actual}; "
            "refusing a model changed after training"
        )
