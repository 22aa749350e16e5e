"""Shared fixtures: real configs composed by Hydra, small synthetic data, a session MLflow DB."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from phat.cli import CONF_DIR
from phat.cli.config import validate
from phat.data.synthetic import SyntheticConfig, generate

# Promotion settings a short synthetic history can meet (the gates themselves are table-tested
# at the defaults in tests/test_gates.py).
RELAXED = (
    # a month of synthetic bars has no room for a walk-forward record: the window's gates
    "promotion.evidence=single_split",
    "promotion.min_history_days=20",
    "promotion.max_regression.churn=10.0",
    "promotion.max_regression.slippage=10.0",
    "promotion.max_regression.drawdown=10.0",
    "promotion.brier_tolerance=0.01",
    "promotion.ece_tolerance=0.05",
    "promotion.max_ece=0.08",
)


def make_cfg(out_dir: Path, *overrides: str, uri: str | None = None) -> dict[str, Any]:
    """The real conf/ composed with overrides, as the plain dict phat.train.run takes."""
    ov = [f"out_dir={out_dir}"]
    if uri:
        ov.append(f"tracking.uri={uri}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("train", overrides=[*ov, *overrides])
    return validate("train", cfg)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking DB for the session (creating one runs MLflow's migrations, ~2 s)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="session")
def small_market():
    return generate(SyntheticConfig(periods=3000, seed=11))


def ohlcv(
    n: int = 50, start: str = "2024-01-01", freq: str = "15min", seed: int = 0
) -> pd.DataFrame:
    """A small valid OHLCV frame with a UTC DatetimeIndex."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n))
    vol = rng.uniform(1, 10, n)
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=idx
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend) on 127.0.0.1, started once, stopped by its pid."""
    d = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    log_file = open(d / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            mlflow_bin,
            "server",
            "--backend-store-uri",
            f"sqlite:///{d}/db.sqlite",
            "--artifacts-destination",
            str(d / "art"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from mlflow_server import wait_healthy

    if not wait_healthy(url, proc, 120):
        os.killpg(proc.pid, signal.SIGTERM)
        raise RuntimeError(f"mlflow server did not start: {(d / 'server.log').read_text()[-2000:]}")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log_file.close()
