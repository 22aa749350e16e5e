"""phat: calibrated probability that price rises over a fixed horizon, from OHLCV bars.

Importing the package is cheap on purpose: heavy dependencies (torch, Lightning, MLflow,
scikit-learn) are imported inside the functions that need them, so `--help` and config
errors answer fast.
"""

__version__ = "0.1.0"
