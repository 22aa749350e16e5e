"""The verbs of `phat` and where their config lives: read by the console script, the config
loader (phat.cli.config) and each verb's module, so none of them imports another for it."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# verb -> (module with main(), config name, one line)
VERBS: dict[str, tuple[str, str, str]] = {
    "train": ("phat.cli.train", "train", "train, calibrate, evaluate and register one p_hat model"),
    "predict": ("phat.cli.predict", "predict", "score OHLCV bars with a verified model"),
    "walkforward": (
        "phat.cli.walkforward",
        "walkforward",
        "refit on rolling windows, score the next step, test the stitched record",
    ),
    "monitor": (
        "phat.cli.monitor",
        "monitor",
        "watch a live model's calibration on matured outcomes; alarm anytime-validly",
    ),
    "backtest": (
        "phat.cli.backtest",
        "backtest",
        "run the reference policy on a signal source (proxy, model_vN, production)",
    ),
    "promote": ("phat.cli.promote", "promote", "gate a registered version and make it production"),
    "rollback": ("phat.cli.rollback", "rollback", "move production back to the previous version"),
    "serve": (
        "phat.cli.serve",
        "serve",
        "verify a registered model, then serve it over REST (mlflow models serve)",
    ),
    "doctor": (
        "phat.cli.doctor",
        "doctor",
        "list and repair what crashes left in the MLflow store",
    ),
}
