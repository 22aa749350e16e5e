"""Exceptions users see. Each message names the thing that is wrong and what was expected."""


class PhatError(Exception):
    """Base class for errors raised by phat."""


class DataValidationError(PhatError, ValueError):
    """Input OHLCV data violates the data contract (column, row or timestamp is named)."""


class ConfigError(PhatError, ValueError):
    """A configuration value is invalid or inconsistent with the contracts."""


class ContractError(PhatError, ValueError):
    """An artifact's contract (hash, feature version, horizon) does not match what is expected."""
