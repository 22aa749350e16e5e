"""The model artifact: a directory holding the whole inference function, with no pickles.

    model.json          {"kind", "config", "n_parameters"}
    weights.safetensors named arrays (safetensors: a header plus raw bytes, nothing executes)
    feature_spec.json   FeatureSpec with fitted normalization
    label_spec.json     LabelSpec
    calibration.json    calibrator method and parameters
    data_spec.json      DataSpec: symbol, timeframe, calendar, max_gap (how to read bars to score)
    metadata.json       every phat.* tag of DESIGN.md (identity and lineage)

`model_hash` is the sha256 of the canonical JSON of the contract files and of every metadata field
(but the hash itself) plus the digest of every tensor (name, dtype, shape, bytes): it changes
with any weight, spec, calibration, DataSpec or metadata change and with nothing else. A file
the hash does not cover (anything else in the directory) is refused. The artifact holds no code:
the pyfunc's loader is installed code (phat.registry.pyfunc_loader), so nothing from the
artifact runs before the hash is verified. `load_artifact` recomputes the hash and refuses a
mismatch before returning. A hash checks itself only against accidental corruption: against
tampering, loaders compare it with the hash the registry recorded. Artifacts written before the
DataSpec existed load with the calendar they were trained under then (24x7, max_gap 2 bars) and
hash as they did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phat.contract.features import FEATURE_CODE_VERSION, FeatureSpec
from phat.contract.labels import LabelSpec
from phat.errors import (
    FeatureVersionMismatch,
    HashMismatch,
    HorizonMismatch,
    MalformedArtifact,
)
from phat.hashing import canonical_json, sha256_bytes, sha256_text
from phat.models.baselines import WindowData, model_class
from phat.models.calibration import Calibrator

FILES = (
    "model.json",
    "weights.safetensors",
    "feature_spec.json",
    "label_spec.json",
    "calibration.json",
    "metadata.json",
)
OPTIONAL_FILES = ("data_spec.json",)
LEGACY_DATA_SPEC = {"calendar": "24x7", "max_gap_bars": 2}
SCORE_BLOCK = 65_536  # windows scored per model call


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
) -> str:
    parts = {
        "model": model_json,
        "weights": tensors_digest(arrays),
        "feature_spec": feature_spec,
        "label_spec": label_spec,
        "calibration": calibration,
    }
    if data_spec is not None:
        parts["data_spec"] = data_spec
    if metadata is not None:  # every field but the hash itself
        parts["metadata"] = {k: v for k, v in metadata.items() if k != "phat.model_hash"}
    return sha256_text(canonical_json(parts))


@dataclass
class PHatModel:
    """A loaded, verified inference function: OHLCV bars in, p_hat per bar out."""

    model: Any
    feature_spec: FeatureSpec
    label_spec: LabelSpec
    calibrator: Calibrator
    metadata: dict[str, Any] = field(default_factory=dict)
    data_spec: dict[str, Any] = field(default_factory=lambda: dict(LEGACY_DATA_SPEC))

    @property
    def model_hash(self) -> str:
        return str(self.metadata.get("phat.model_hash", ""))

    def predict_bars(self, frame: pd.DataFrame, segment: np.ndarray | None = None) -> pd.DataFrame:
        """p_hat_raw and p_hat for every bar of validated bars (NaN where no full window)."""
        self.feature_spec.check_data(frame)  # every scoring path: predict, backtest, promote
        raw = self.feature_spec.compute_raw(frame)
        seg = np.zeros(len(frame), dtype=np.int64) if segment is None else segment
        ok = self.feature_spec.valid_end_mask(raw, seg)
        data = WindowData(self.feature_spec.normalize(raw), self.feature_spec.window)
        ends = np.flatnonzero(ok)
        p_raw = np.full(len(frame), np.nan)
        p_cal = np.full(len(frame), np.nan)
        if len(ends):
            # In blocks of windows: every model's logit is per window (the TCN's batch-invariant),
            # so blocks change no bit and bound the memory of tabular copies to one block.
            z = np.concatenate(
                [self.model.logits(data, ends[i : i + SCORE_BLOCK])
                 for i in range(0, len(ends), SCORE_BLOCK)]
            )  # fmt: skip
            p_raw[ends] = Calibrator("none").predict(z)
            p_cal[ends] = self.calibrator.predict(z)
        return pd.DataFrame({"p_hat_raw": p_raw, "p_hat": p_cal}, index=frame.index)

    def stream(
        self, state: dict[str, Any] | None = None, volume_nan: str = "refuse", now: Any = None
    ) -> Any:
        """A streaming scorer (phat.registry.stream.StreamScorer): `update(bar)` per new bar,
        `update_many({symbol: bar})` per bar-step of many assets, equal to predict() bit for
        bit; `state` resumes a saved `scorer.state()`."""
        from phat.registry.stream import StreamScorer

        return StreamScorer(self, state=state, volume_nan=volume_nan, now=now)

    @property
    def calendar(self) -> str:
        return str(self.data_spec["calendar"])

    def read_bars(self, ohlcv: pd.DataFrame, **data_kwargs: Any) -> Any:
        """Validate raw bars under this model's DataSpec (its timeframe, calendar and max_gap):
        the same reading as in training, so windows break at the same places. Data of another
        timeframe or calendar is refused by name. `data_kwargs`: calendar (auto or the model's),
        volume_nan, timestamp_format, dayfirst, symbol."""
        from phat.data import prepare_bars

        return prepare_bars(
            ohlcv,
            timeframe=self.label_spec.timeframe,
            allow_resample=False,
            max_gap=int(self.data_spec["max_gap_bars"]),
            model_calendar=self.calendar,
            now=pd.Timestamp.now(tz="UTC"),
            **{"calendar": "auto", **data_kwargs},
        )

    def segments(self, frame: pd.DataFrame) -> np.ndarray:
        """Segment ids of already validated bars under this model's calendar and max_gap
        (refuses bars inside the calendar's closures)."""
        from phat.data.bars import find_segments
        from phat.data.calendars import check_follows, resolve
        from phat.data.timeframes import parse_timeframe

        tf = parse_timeframe(self.label_spec.timeframe)
        cal = resolve(self.calendar)
        index = pd.DatetimeIndex(frame.index)
        check_follows(
            index, tf, cal, "the model's calendar", f"this model scores only {cal.name} data"
        )
        seg, _ = find_segments(index, tf, tf * int(self.data_spec["max_gap_bars"]), cal)
        return seg

    def check_coverage(
        self,
        p_hat: np.ndarray,
        gaps: int,
        min_share: float,
        what: str,
        from_start: bool = True,
        reasons: np.ndarray | None = None,
    ) -> str:
        """Refuse scoring that scores nothing, or less than `min_share` of the bars that could
        have a window (all of them, less the first warm-up when `p_hat` starts at the data's
        first bar); returns the one-line coverage summary otherwise.

        `reasons` (a binding's fallback_reason per bar): bars on the proxy by a recorded
        decision (a calibration alarm) were not meant to be scored and are not counted; when
        the rule fires, the message names the cause the unscored bars record (calendar,
        an inference failure) or else gaps or a history shorter than the window."""
        from phat.errors import DataValidationError

        warm = self.feature_spec.bars_read - 1
        start = warm if from_start else 0
        why = np.asarray(reasons if reasons is not None else [""] * len(p_hat), dtype=object)
        decided = why == "calibration_alarm"
        n_decided = int(decided[start:].sum())
        eligible = max(len(p_hat) - start - n_decided, 0)
        scored = int(np.isfinite(p_hat).sum())
        share = scored / eligible if eligible else 0.0
        line = (
            f"{scored} of {len(p_hat)} bars scored ({share:.0%} of {eligible} eligible) "
            f"under the model's calendar {self.calendar}, max_gap "
            f"{self.data_spec['max_gap_bars']} bars; {gaps} gaps"
        )
        if n_decided:
            line += f"; {n_decided} on the proxy by decision (calibration_alarm)"
            if eligible == 0:
                return line  # every bar that could be scored is on the proxy by decision
        if scored == 0 or share < min_share:
            unscored = why[~np.isfinite(p_hat) & ~decided]
            recorded = [r for r in unscored if r not in ("", "no_window")]
            if recorded:
                top = max(set(recorded), key=recorded.count)
                cause = (
                    f"the bars fall outside the model's calendar {self.calendar} "
                    "(fallback_reason calendar_mismatch); read data of that calendar"
                    if top == "calendar_mismatch"
                    else f"the model could not score them (fallback_reason {top}; see "
                    "fallback_detail in the decisions)"
                )
            elif gaps:
                cause = (
                    f"{gaps} gaps split the data and each costs a {warm + 1}-bar window before "
                    "scoring resumes; if they are scheduled closures, train with the data's "
                    "calendar (data.calendar=...), if short outages, with a larger data.max_gap"
                )
            else:
                cause = f"the data is too short for the model's {warm + 1}-bar window"
            raise DataValidationError(
                f"{what}: {line}, below signal.min_scored_share={min_share}: {cause}"
            )
        return line

    def predict(self, ohlcv: pd.DataFrame, **data_kwargs: Any) -> pd.DataFrame:
        """p_hat_raw and p_hat per bar of `ohlcv` (any layout the file loader accepts), read
        under the model's DataSpec (see read_bars); NaN where no full window exists."""
        bars = self.read_bars(ohlcv, **data_kwargs)
        return self.predict_bars(bars.frame, bars.segment)


def save_artifact(
    path: str | Path,
    model: Any,
    feature_spec: FeatureSpec,
    label_spec: LabelSpec,
    calibrator: Calibrator,
    metadata: dict[str, Any],
    data_spec: dict[str, Any],
) -> str:
    """Write the artifact directory; returns model_hash (also written into metadata.json)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays, config = model.state()
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    model_json = {"kind": model.kind, "config": config, "n_parameters": int(model.n_parameters)}
    fs, ls, cal = feature_spec.to_dict(), label_spec.to_dict(), calibrator.to_dict()
    model_hash = compute_model_hash(model_json, arrays, fs, ls, cal, data_spec, metadata)
    save_file(arrays, str(path / "weights.safetensors"))
    for name, obj in (
        ("model.json", model_json),
        ("feature_spec.json", fs),
        ("label_spec.json", ls),
        ("calibration.json", cal),
        ("data_spec.json", data_spec),
        ("metadata.json", {**metadata, "phat.model_hash": model_hash}),
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
    data_spec = _read_json(path / "data_spec.json") if (path / "data_spec.json").exists() else None
    try:
        arrays = load_file(str(path / "weights.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise HashMismatch(f"artifact {str(path)!r}: weights unreadable ({e})") from None
    meta = read["metadata.json"]
    expected = meta.get("phat.model_hash")
    actual = compute_model_hash(
        read["model.json"],
        arrays,
        read["feature_spec.json"],
        read["label_spec.json"],
        read["calibration.json"],
        data_spec,
        meta if data_spec is not None else None,  # artifacts before the DataSpec: legacy hash
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
    )
