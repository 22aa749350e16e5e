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
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import PredictConf

log = logging.getLogger("phat.predict")


def run(cfg: PredictConf) -> Path:
    from phat.data.load import load_bars
    from phat.registry.client import load
    from phat.registry.recorder import recorder

    recorder(cfg.tracking)  # the store that models:/ URIs name
    if str(cfg.engine) == "spark":
        return _on_spark(cfg)
    model = load(str(cfg.model_uri), horizon_id=cfg.horizon_id)
    bars, _ = load_bars(cfg, model.label_spec.timeframe, model)  # the model's own reading
    what = f"phat predict with {cfg.model_uri}"
    min_share = float(cfg.signal.min_scored_share)
    preds, coverage = model.score(bars, min_share, what)  # every member under its own view
    model = bars.view_of(model)  # one asset's output names its view (a universe model's asset)
    out = write_predictions(preds, model.identity(str(cfg.model_uri)), Path(cfg.out))
    print(
        f"phat predict: {coverage}; by {cfg.model_uri} (model_hash {model.model_hash[:16]}, "
        f"horizon {model.label_spec.horizon_id}) -> {out}"
    )
    return out


def write_predictions(preds: Any, identity: dict[str, Any], out: Path) -> Path:
    """The scored bars in the format `out`'s suffix names (phat.cli.config.PREDICT_FORMATS),
    written whole (a temporary file, then renamed): Parquet carries the model's identity in its
    metadata (key `phat`); CSV beside it in `<out>.json`."""
    import io

    from phat.cli.config import PREDICT_FORMATS
    from phat.errors import ConfigError
    from phat.files import write_atomic

    fmt = PREDICT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"out={out}: unknown suffix {out.suffix or '(none)'!r}; expected "
            f"{' or '.join(PREDICT_FORMATS)}"
        )
    if fmt == "csv":
        write_atomic(out, preds.to_csv(date_format="%Y-%m-%dT%H:%M:%S.%fZ"))
        write_atomic(out.with_name(f"{out.name}.json"), json.dumps(identity, indent=1))
        return out
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(preds)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"phat": json.dumps(identity).encode()}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(out, buf.getvalue())
    return out


def _on_spark(cfg: PredictConf) -> Path:
    """engine=spark (phat.engines.spark): every asset a task, out a directory partitioned by
    symbol, each asset all or nothing; a failed asset is one line in the report (and fails
    the command unless data.on_bad_asset=skip)."""
    from phat.data.load import bars_kwargs
    from phat.data.universe import source_of
    from phat.engines.spark import REPORT, score_universe, session
    from phat.errors import DataValidationError

    d = cfg.data
    if source_of(d) == "synthetic":
        raise DataValidationError(
            "engine=spark scores files: give data.path (a directory, glob or list of files, "
            "or a long Parquet table with a symbol column)"
        )
    from pyspark.sql import SparkSession

    started: list[Any] = []
    ours = SparkSession.getActiveSession() is None  # a caller's session is left running

    def spark() -> Any:  # started once the data and the model are checked
        started.append(session(cfg.spark))
        return started[0]

    try:
        report = score_universe(
            spark, str(cfg.model_uri), d.path, str(cfg.out),
            data={**bars_kwargs(d), "symbol": d.symbol},
            horizon_id=cfg.horizon_id, chunk_bars=int(cfg.spark.chunk_bars),
            min_scored_share=float(cfg.signal.min_scored_share),
        )  # fmt: skip
    finally:
        if ours and started:
            started[0].stop()
    out = Path(cfg.out)
    written, failed = report["written"], report["failed"]
    for sym, line in written.items():
        print(f"  {sym}: {line}")
    for sym, why in failed.items():
        print(f"  {sym}: FAILED {why}")
    print(
        f"phat predict (spark, {report['tasks']} tasks): {len(written)} of "
        f"{len(written) + len(failed)} assets written by {cfg.model_uri} (model_hash "
        f"{report['model'].get(Tag.MODEL_HASH, '')[:16]}) -> {out}/symbol=*/; report {out / REPORT}"
    )
    if not written or (failed and str(d.on_bad_asset) != "skip"):
        first = next(iter(failed.items()))
        raise DataValidationError(
            f"{len(failed)} of {len(written) + len(failed)} assets failed and were not written "
            f"(first: {first[0]}: {first[1]}); every reason is in {out / REPORT}"
            + ("; the others were written (data.on_bad_asset=skip accepts a partial universe)"
               if written else "")
        )  # fmt: skip
    return out


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    call(run, cfg, log, verb="predict")


def main() -> None:
    entry("predict", _hydra_main)


if __name__ == "__main__":
    main()
