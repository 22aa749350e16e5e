"""phat: calibrated probability that price rises over a fixed horizon, from OHLCV bars.

Importing the package is cheap on purpose: heavy dependencies (torch, Lightning, MLflow,
scikit-learn) are imported inside the functions that need them, so `--help` and config
errors answer fast.
"""

__version__ = "0.1.0"


def load(uri: str, horizon_id: str | None = None):  # type: ignore[no-untyped-def]
    """Load a verified p_hat model: `models:/name/3`, `models:/name@alias`, `runs:/...`, or a
    local directory. Refuses a hash mismatch, foreign feature code, or another horizon.
    Returns an object with `.predict(ohlcv_frame)` and `.metadata`."""
    from phat.registry.client import load as _load

    return _load(uri, horizon_id=horizon_id)
