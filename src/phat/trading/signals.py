"""Signal sources: where a consumer's p_hat comes from, switched by one config key.

    signal_source=proxy        rule-based p_hat (no model)
    signal_source=model_v3     version 3 of registry.model_name
    signal_source=production   the registry alias `production`, resolved once and pinned

A binding is resolved once at the start of a run and never changes inside it. A model source
fails closed: when the model cannot be loaded (`model_unavailable`), fails verification
(`hash_mismatch`, `feature_version_mismatch`), predicts another horizon (`horizon_mismatch`),
or fails on a bar (`inference_error`), those bars take the proxy's p_hat and say why in
`fallback_reason`; `signal.strict=true` raises instead. Bars before the model has a full window
(warm-up, right after a gap) also take the proxy, with `no_window`.

Proxy: p_hat = 0.5 * (1 + tanh(k * z_t)), z_t = z-score of the momentum log(c_t / c_{t-n})
against its own mean/std over the last `zscore_window` bars (causal, finite windows).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from phat.confdefaults import conf_defaults
from phat.errors import (
    CalendarMismatch,
    ConfigError,
    ModelUnavailable,
    PhatError,
    first_line,
    is_store_failure,
    reason_of,
)
from phat.models.rules import proxy_p_hat
from phat.tagnames import Tag

log = logging.getLogger(__name__)
FALLBACK_REASONS = (
    "model_unavailable",
    "registry_unavailable",
    "malformed_artifact",
    "hash_mismatch",
    "feature_version_mismatch",
    "horizon_mismatch",
    "inference_error",
    "calendar_mismatch",
    "no_window",
    "calibration_alarm",
    "excluded_asset",  # a universe model promoted without this asset (exclude_assets=auto)
    "internal_error",  # a bug, not a refusal: fallback_detail holds its first line
)

_SIGNAL = conf_defaults("signal/default")  # signal.* defaults for code callers


@dataclass(frozen=True)
class Binding:
    signal_source: str
    model_name: str = ""
    model_version: str = ""
    model_hash: str = ""
    feature_version: str = ""
    horizon_id: str = ""
    fallback_signal_source: str = "proxy"

    def tags(self) -> dict[str, str]:
        return {f"{Tag.BINDING_PREFIX}{k}": str(v) for k, v in asdict(self).items()}

    @property
    def experiment_id(self) -> str:
        return f"{self.model_name}/v{self.model_version}" if self.model_version else ""

    @property
    def experiment_variant(self) -> str:
        return self.model_hash[:12]


def classify_load_error(err: BaseException) -> str:
    """The fallback reason of a load failure: from the exception's class (phat.errors), never
    from its message."""
    return reason_of(err)


def parse_source(source: str) -> tuple[str, str | None]:
    """('proxy', None) | ('version', '3') | ('alias', 'production')."""
    s = str(source).strip()
    if s == "proxy":
        return "proxy", None
    m = re.fullmatch(r"model_v(\d+)", s)
    if m:
        return "version", m.group(1)
    if re.fullmatch(r"[A-Za-z][\w-]*", s):
        return "alias", s
    raise ConfigError(
        f"signal_source={source!r}: expected proxy, model_v<N> or a registry alias such as production"
    )


@dataclass
class ResolvedSignal:
    binding: Binding
    model: Any | None  # a loaded PHatModel, or None (proxy / fallback)
    fallback_reason: str = ""  # set when a model was asked for but is not usable
    fallback_detail: str = ""  # the failure's first line (what went wrong, for the record)
    # `phat monitor` raised a calibration alarm on this version (tag phat.alarm.time): from
    # then on every consumer gets the proxy, reason calibration_alarm.
    alarm_time: pd.Timestamp | None = None


def for_asset(resolved: ResolvedSignal, symbol: str) -> ResolvedSignal:
    """The binding for one asset: a universe model's view of it (its own map; an unlisted
    asset is refused by name), with the alarm that applies to it: the version's (every asset)
    or this asset's own (tag phat.alarm.asset.<symbol>, set by `phat monitor` on a universe),
    whichever came first; an asset the version was promoted without (phat.excluded_assets)
    gets the proxy, reason excluded_asset. A single-asset model is its own view and has no
    asset's alarm or exclusion: as it is; the proxy too."""
    from dataclasses import replace

    if resolved.model is None:
        return resolved
    excluded = str(resolved.model.metadata.get(Tag.EXCLUDED_ASSETS) or "").split(",")
    if symbol in excluded:
        return replace(
            resolved, model=None, fallback_reason="excluded_asset",
            fallback_detail=f"{resolved.binding.model_name} v{resolved.binding.model_version} "
            f"was promoted without {symbol} (promotion.exclude_assets=auto)",
        )  # fmt: skip
    view = resolved.model.for_asset(symbol)
    own = view.metadata.get(f"{Tag.ASSET_ALARM_PREFIX}{symbol}")
    times = [t for t in (resolved.alarm_time, pd.Timestamp(own) if own else None) if t is not None]
    return replace(resolved, model=view, alarm_time=min(times) if times else None)


def resolve(
    source: str,
    model_name: str | None,
    horizon_id: str,
    strict: bool = _SIGNAL["strict"],
    key: str = "signal_source",
) -> ResolvedSignal:
    """Resolve and pin the binding once. Registry and verification failures fail closed.
    `key`: the setting the user wrote the source in (refusals name it)."""
    from phat.registry.client import load

    kind, ref = parse_source(source)
    if kind == "proxy":
        return ResolvedSignal(Binding("proxy", horizon_id=horizon_id), None)
    if not model_name:
        raise ConfigError(f"{key}={source} needs registry.model_name")
    version = ref
    try:
        if kind == "alias":
            from phat.registry.client import resolve_version

            version = str(resolve_version(f"models:/{model_name}@{ref}").version)
        model = load(f"models:/{model_name}/{version}", horizon_id=horizon_id)
        alarm = model.metadata.get(Tag.ALARM_TIME)
    except Exception as e:  # registry/verification failures fail closed to the proxy
        reason = classify_load_error(e)
        if strict:
            if isinstance(e, PhatError):  # same class (same reason), message says where
                raise type(e)(f"{key}={source}: {reason}: {e}") from None
            if is_store_failure(e):
                raise ModelUnavailable(f"{key}={source}: {reason}: {e}") from e
            raise  # a bug: strict mode shows it as it is
        log.warning(
            "signal_source=%s unusable (%s): %s; FALLING BACK TO THE PROXY for every bar",
            source,
            reason,
            e,
        )
        return ResolvedSignal(
            Binding(source, model_name, version or "", horizon_id=horizon_id),
            None,
            fallback_reason=reason,
            fallback_detail=first_line(e),
        )
    b = Binding(
        signal_source=source,
        model_name=model_name,
        model_version=str(version),
        model_hash=model.model_hash,
        feature_version=model.feature_spec.feature_version,
        horizon_id=model.label_spec.horizon_id,
    )
    return ResolvedSignal(b, model, alarm_time=pd.Timestamp(alarm) if alarm else None)


def p_hat_frame(
    resolved: ResolvedSignal,
    frame: pd.DataFrame,
    proxy_params: dict[str, Any],
    strict: bool = _SIGNAL["strict"],
) -> pd.DataFrame:
    """Per bar: p_hat_raw, p_hat, source ('model'|'proxy'), fallback_reason.

    The model reads the bars under its own DataSpec (calendar, max_gap), exactly as in
    training; bars of another calendar fall back with `calendar_mismatch`."""
    proxy = proxy_p_hat(frame["close"].to_numpy(), **proxy_params)
    out = pd.DataFrame(
        {
            "p_hat_raw": proxy,
            "p_hat": proxy,
            "source": "proxy",
            "fallback_reason": resolved.fallback_reason,
            "fallback_detail": resolved.fallback_detail,
        },
        index=frame.index,
    )
    if resolved.model is None:
        return out
    try:  # the model reads the bars under its own calendar and max_gap
        pm = resolved.model.predict_bars(frame, resolved.model.segments(frame))
        bad = ~np.isfinite(pm["p_hat"].to_numpy())
    except Exception as e:
        if strict:
            raise
        if isinstance(e, CalendarMismatch):
            reason = e.reason
        else:  # a refusal of the bars, or a bug (internal_error): never a refusal's code
            reason = "inference_error" if isinstance(e, PhatError) else "internal_error"
        log.warning("model unusable (%s: %s); FALLING BACK TO THE PROXY for every bar", reason, e)
        out["fallback_reason"] = reason
        out["fallback_detail"] = first_line(e)
        return out
    ok = ~bad
    alarmed = np.zeros(len(out), dtype=bool)
    if resolved.alarm_time is not None:
        alarmed = np.asarray(out.index >= resolved.alarm_time)
        ok &= ~alarmed
    out.loc[ok, "p_hat_raw"] = pm["p_hat_raw"].to_numpy()[ok]
    out.loc[ok, "p_hat"] = pm["p_hat"].to_numpy()[ok]
    out.loc[ok, "source"] = "model"
    # Bars where the model has no full window (warm-up, after a gap) are not errors: the proxy
    # takes them and says so.
    out.loc[bad & ~alarmed, "fallback_reason"] = "no_window"
    out.loc[alarmed, "fallback_reason"] = "calibration_alarm"
    return out
