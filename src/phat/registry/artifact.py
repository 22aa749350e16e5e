"""The model artifact: a directory holding the whole inference function, with no pickles;
saved, hashed and loaded here (loading returns a phat.scoring.model.PHatModel).

    model.json          {"kind", "config", "n_parameters"}
    weights.safetensors named arrays (safetensors: a header plus raw bytes, nothing executes)
    feature_spec.json   FeatureSpec with fitted normalization
    label_spec.json     LabelSpec
    calibration.json    calibrator method and parameters
    data_spec.json      DataSpec: symbol, timeframe, calendar, max_gap (how to read bars to score)
    universe.json       a universe model's assets: per asset its DataSpec, feature normalization
                        and calibration correction (only a universe model has it)
    metadata.json       every phat.* contract tag (identity and lineage; names: tagnames.py)

`model_hash` is the sha256 of the canonical JSON of the contract files and of every metadata field
(but the hash itself) plus the digest of every tensor (name, dtype, shape, bytes): it changes
with any weight, spec, calibration, DataSpec or metadata change and with nothing else. A file
the hash does not cover (anything else in the directory) is refused. The artifact holds no code
(the logged model's shipped code is verified separately: registry/verify_shipped.py), so nothing
from the artifact runs before the hash is verified. `load_artifact` recomputes the hash and refuses a
mismatch before returning. A hash checks itself only against accidental corruption: against
tampering, loaders compare it with the hash the registry recorded. Artifacts written before the
DataSpec existed load with the calendar they were trained under then (24x7, max_gap 2 bars) and
hash as they did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from phat.contract.features import FEATURE_CODE_VERSION, FeatureSpec
from phat.contract.labels import LabelSpec
from phat.errors import (
    FeatureVersionMismatch,
    HashMismatch,
    HorizonMismatch,
    MalformedArtifact,
)
from phat.hashing import canonical_json, sha256_bytes, sha256_text
from phat.models.calibration import Calibrator
from phat.models.kinds import model_class
from phat.scoring.model import LEGACY_DATA_SPEC, PHatModel
from phat.tagnames import Tag

__all__ = ["PHatModel", "compute_model_hash", "load_artifact", "save_artifact"]

FILES = (
    "model.json",
    "weights.safetensors",
    "feature_spec.json",
    "label_spec.json",
    "calibration.json",
    "metadata.json",
)
OPTIONAL_FILES = ("data_spec.json", "universe.json")


def tensors_digest(arrays: dict[str, np.ndarray]) -> str:
    parts = []
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        parts.append(f"{name}|{a.dtype.str}|{a.shape}|".encode() + a.tobytes())
    return sha256_bytes(b"".join(parts))


def compute_model_hash(
    model_json: dict[str, Any],
    arrays: dict[str, np.ndarray],
    feature_spec: dict[str, Any],
    label_spec: dict[str, Any],
    calibration: dict[str, Any],
    data_spec: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    universe: dict[str, Any] | None = None,
) -> str:
    parts = {
        "model": model_json,
        "weights": tensors_digest(arrays),
        "feature_spec": feature_spec,
        "label_spec": label_spec,
        "calibration": calibration,
    }
    if metadata is not None:  # every field but the hash itself
        metadata = {k: v for k, v in metadata.items() if k != Tag.MODEL_HASH}
    # Optional parts (OPTIONAL_FILES, and metadata since the DataSpec) are hashed where they
    # are present: an artifact without one (a legacy model; one asset has no universe.json)
    # hashes as it always has.
    optional = {"data_spec": data_spec, "metadata": metadata, "universe": universe}
    parts.update({k: v for k, v in optional.items() if v is not None})
    return sha256_text(canonical_json(parts))


def save_artifact(
    path: str | Path,
    model: Any,
    feature_spec: FeatureSpec,
    label_spec: LabelSpec,
    calibrator: Calibrator,
    metadata: dict[str, Any],
    data_spec: dict[str, Any],
    universe: dict[str, Any] | None = None,
) -> str:
    """Write the artifact directory; returns model_hash (also written into metadata.json).
    `universe`: a universe model's assets (universe.json, inside the hash)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays, config = model.state()
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    model_json = {"kind": model.kind, "config": config, "n_parameters": int(model.n_parameters)}
    fs, ls, cal = feature_spec.to_dict(), label_spec.to_dict(), calibrator.to_dict()
    model_hash = compute_model_hash(model_json, arrays, fs, ls, cal, data_spec, metadata, universe)
    save_file(arrays, str(path / "weights.safetensors"))
    files = [("universe.json", universe)] if universe is not None else []  # optional: a universe's
    for name, obj in (
        *files,
        ("model.json", model_json),
        ("feature_spec.json", fs),
        ("label_spec.json", ls),
        ("calibration.json", cal),
        ("data_spec.json", data_spec),
        ("metadata.json", {**metadata, Tag.MODEL_HASH: model_hash}),
    ):
        (path / name).write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return model_hash


def _read_json(file: Path) -> dict[str, Any]:
    try:
        obj = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedArtifact(f"artifact file {str(file)!r} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise MalformedArtifact(f"artifact file {str(file)!r}: expected a JSON object")
    return obj


def load_artifact(path: str | Path, horizon_id: str | None = None) -> PHatModel:
    """Load and verify an artifact directory; refuses on any contract mismatch."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_dir():
        raise MalformedArtifact(f"artifact {str(path)!r} is not a directory")
    missing = [f for f in FILES if not (path / f).exists()]
    if missing:
        raise MalformedArtifact(f"artifact {str(path)!r} lacks {missing}")
    # The hash covers every file: anything else in the directory was put there after training.
    foreign = sorted(p.name for p in path.iterdir() if p.name not in FILES + OPTIONAL_FILES)
    if foreign:
        raise HashMismatch(
            f"artifact {str(path)!r} holds files no model_hash covers: {foreign}; refusing to load"
        )
    read = {f: _read_json(path / f) for f in FILES if f.endswith(".json")}
    optional = {f: _read_json(path / f) for f in OPTIONAL_FILES if (path / f).exists()}
    data_spec, universe = optional.get("data_spec.json"), optional.get("universe.json")
    try:
        arrays = load_file(str(path / "weights.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise HashMismatch(f"artifact {str(path)!r}: weights unreadable ({e})") from None
    meta = read["metadata.json"]
    expected = meta.get(Tag.MODEL_HASH)
    actual = compute_model_hash(
        read["model.json"],
        arrays,
        read["feature_spec.json"],
        read["label_spec.json"],
        read["calibration.json"],
        data_spec,
        meta if data_spec is not None else None,  # artifacts before the DataSpec: legacy hash
        universe,
    )
    if expected != actual:
        raise HashMismatch(
            f"artifact {str(path)!r}: model_hash mismatch: metadata.json says {expected}, the "
            f"files hash to {actual}; weights, specs, calibration or metadata were changed after "
            "training"
        )
    fs_dict = read["feature_spec.json"]
    if fs_dict.get("code_version") != FEATURE_CODE_VERSION:
        raise FeatureVersionMismatch(
            f"artifact needs feature code version {fs_dict.get('code_version')!r} "
            f"(feature_version {str(fs_dict.get('feature_version'))[:12]}), but the installed phat "
            f"computes version {FEATURE_CODE_VERSION!r}; install the phat that trained it"
        )
    try:
        fspec = FeatureSpec.from_dict(fs_dict)
        lspec = LabelSpec.from_dict(read["label_spec.json"])
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedArtifact(f"artifact {str(path)!r}: spec files are malformed ({e})") from None
    if horizon_id is not None and lspec.horizon_id != horizon_id:
        raise HorizonMismatch(
            f"horizon mismatch: the caller expects horizon {horizon_id!r} but the model predicts "
            f"{lspec.horizon_id!r} ({lspec.horizon_bars} x {lspec.timeframe})"
        )
    mj = read["model.json"]
    model = model_class(mj["kind"]).from_state(arrays, mj["config"])
    return PHatModel(
        model,
        fspec,
        lspec,
        Calibrator.from_dict(read["calibration.json"]),
        meta,
        data_spec if data_spec is not None else dict(LEGACY_DATA_SPEC),
        universe,
    )
