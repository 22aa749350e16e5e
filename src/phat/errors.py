"""Exceptions users see. Each message names the thing that is wrong and what was expected.

Refusals a consumer must tell apart have their own class, and the reason code written into
decision records comes from the class (`reason`), never from the message text.
"""


class PhatError(Exception):
    """Base class for errors raised by phat."""

    reason = "error"


class DataValidationError(PhatError, ValueError):
    """Input OHLCV data violates the data contract (column, row or timestamp is named)."""

    reason = "bad_data"


class CalendarMismatch(DataValidationError):
    """Bars that follow another calendar than the one they are read under (e.g. Saturday bars
    given to a model trained on the FX week)."""

    reason = "calendar_mismatch"


class ConfigError(PhatError, ValueError):
    """A configuration value is invalid or inconsistent with the contracts."""

    reason = "bad_config"


class ContractError(PhatError, ValueError):
    """An artifact's contract (hash, feature version, horizon) does not match what is expected."""

    reason = "model_unavailable"


class HashMismatch(ContractError):
    """The artifact's files do not hash to the recorded model_hash, or weights are unreadable."""

    reason = "hash_mismatch"


class HorizonMismatch(ContractError):
    """The model predicts another horizon than the consumer asked for."""

    reason = "horizon_mismatch"


class FeatureVersionMismatch(ContractError):
    """The model needs feature code that the installed phat does not compute."""

    reason = "feature_version_mismatch"


class MalformedArtifact(ContractError):
    """An artifact file is missing or cannot be parsed."""

    reason = "malformed_artifact"


class ModelUnavailable(ContractError):
    """The registry has no such model, version or alias."""

    reason = "model_unavailable"


class RegistryUnavailable(PhatError):
    """The tracking/registry store could not be reached or answered with an error."""

    reason = "registry_unavailable"


# Packages whose exceptions mean "the MLflow store failed" (its client, HTTP stack, database).
STORE_PACKAGES = ("mlflow", "requests", "urllib3", "sqlalchemy")


def is_store_failure(err: BaseException) -> bool:
    """The tracking/registry store failed (as opposed to a bug in phat)."""
    return isinstance(err, RegistryUnavailable) or (
        type(err).__module__.split(".")[0] in STORE_PACKAGES
    )


def reason_of(err: BaseException) -> str:
    """The reason code of a failure: a refusal's from its class, a store failure
    `registry_unavailable`, anything else (a bug) `internal_error`, never a refusal's code."""
    if isinstance(err, PhatError):
        return err.reason
    return "registry_unavailable" if is_store_failure(err) else "internal_error"


def first_line(err: BaseException) -> str:
    """`Type: first line of the message`, for a decision record or a one-line report."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def shorten(text: str, width: int) -> str:
    """`text` cut at a word boundary to at most `width` characters, marked when cut (a reason
    quoted in a summary line is never cut mid-word)."""
    import textwrap

    return textwrap.shorten(str(text), width=width, placeholder=" ...")
