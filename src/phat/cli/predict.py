"""`phat predict model_uri=... data.path=... out=FILE.parquet` (= `python -m phat.predict`): batch
scoring.

A universe model scores a directory, glob, list or long file of its assets (each under its own
DataSpec; the output has a `symbol` column), or one listed asset's file.

Loads the model through `phat.load` (hash, feature code and horizon verified), validates the
bars with the same loader as training (refusing another timeframe), and writes a Parquet file
indexed by timestamp with `p_hat_raw` and `p_hat`; the model's identity (uri, name/version,
model_hash, feature_version, horizon) goes into the file's metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry
from phat.tagnames import Tag

log = logging.getLogger("phat.predict")


def run(cfg: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phat.pipeline import load_bars
    from phat.registry.client import load
    from phat.registry.recorder import recorder

    recorder(cfg["tracking"])  # the store that models:/ URIs name
    model = load(str(cfg["model_uri"]), horizon_id=cfg["horizon_id"])
    bars, _ = load_bars(cfg, model.label_spec.timeframe, model)  # the model's own reading
    what = f"phat predict with {cfg['model_uri']}"
    min_share = float(cfg["signal"]["min_scored_share"])
    if hasattr(bars, "assets"):  # a universe: every asset under its own map, a symbol column
        preds = model.predict_universe(bars)
        coverage = model.universe_coverage(preds, bars, min_share, what)
    else:
        model = model.for_asset(bars.symbol)  # a universe model: the listed asset's view
        preds = model.predict_bars(bars.frame, bars.segment)
        coverage = model.check_coverage(
            preds["p_hat"].to_numpy(), int(bars.report["gaps"]), min_share, what
        )
    meta = {k: str(v) for k, v in model.metadata.items() if k.startswith((Tag.PREFIX, "registry."))}
    meta[Tag.MODEL_URI] = str(cfg["model_uri"])
    table = pa.Table.from_pandas(preds)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"phat": json.dumps(meta).encode()}
    )
    out = Path(cfg["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    print(
        f"phat predict: {coverage}; by {cfg['model_uri']} (model_hash {model.model_hash[:16]}, "
        f"horizon {model.label_spec.horizon_id}) -> {out}"
    )
    return out


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    call(run, cfg, log, verb="predict")


def main() -> None:
    entry("predict", _hydra_main)


if __name__ == "__main__":
    main()
