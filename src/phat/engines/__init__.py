"""Engines past one machine, unchanged in results: Ray for fits that fan out, Spark for batch
scoring of a universe (docs/scale.md).

    phat walkforward engine=ray                        # folds as Ray tasks (a local cluster)
    phat walkforward engine=ray ray.address=ray://head:10001
    phat train model.pooling=per_asset engine=ray      # one task per asset's fit
    phat predict engine=spark model_uri=... data.path=universe/ out=p_hat/
    phat train -m model=logistic,tree hydra/launcher=ray

`engine=local` (the default) runs everything in this process. The engines are optional at run
time: `require` turns a missing one into one line naming the extra that installs it (`make
setup` installs both, so the tests run the real engines).
"""

from __future__ import annotations

import importlib
from typing import Any

from phat.errors import ConfigError

# The engines each verb can run on (checked with the config, before any work).
ENGINES = {
    "predict": ("local", "spark"),
    "train": ("local", "ray"),
    "walkforward": ("local", "ray"),
}
EXTRAS = {"spark": "pyspark", "ray": "ray"}


def require(engine: str) -> Any:
    """The engine's module (pyspark or ray), or one line naming the extra to install."""
    module = EXTRAS[engine]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"engine={engine} needs {module}, which is not installed here: "
            f"pip install 'phat-ohlcv[{engine}]' (in a checkout: pip install -e '.[{engine}]'; "
            "make setup installs both engines)"
        ) from None
