"""`phat serve model_uri=... [host=...] [port=...]` (= `python -m phat.serve`): REST scoring of a
registered model with `mlflow models serve`, after phat has verified it.

The model is downloaded once into a private directory and verified whole there (the artifact's
hash, every shipped code file and MLmodel's loader entry, each against the registry's record:
registry.client.fetch_verified); a mismatch is one line and exit 2, and no server starts. Then
`mlflow models serve --env-manager local` serves that verified directory (not the store, which
could change between the check and the load) with this interpreter's environment, until it
stops; its exit code is this command's.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry

log = logging.getLogger("phat.serve")


def serve(cfg: dict) -> int:
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from phat.registry.client import fetch_verified, load
    from phat.registry.recorder import recorder

    uri = recorder(cfg.tracking).uri
    model_uri = str(cfg.model_uri)
    with tempfile.TemporaryDirectory(prefix="phat-serve-") as tmp:
        if Path(model_uri).exists():
            model, path = load(model_uri), Path(model_uri)
        else:
            model, path = fetch_verified(model_uri, Path(tmp))
        print(
            f"phat.serve: {model_uri} verified (model_hash {model.model_hash[:16]}, shipped code "
            f"checked); serving on http://{cfg.host}:{cfg.port}/invocations",
            flush=True,
        )
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
               "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
        cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", str(path),
               "--env-manager", "local", "--host", str(cfg.host), "--port", str(cfg.port)]  # fmt: skip
        return subprocess.call(cmd, env=env)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="serve")
def _hydra_main(cfg: DictConfig) -> None:
    import sys

    sys.exit(call(serve, cfg, log, verb="serve"))


def main() -> None:
    entry("serve", _hydra_main)


if __name__ == "__main__":
    main()
