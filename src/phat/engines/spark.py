"""Batch scoring of a universe on Spark: `phat predict engine=spark`, or inside your own job:

    from phat.engines.spark import score_universe
    report = score_universe(spark, "models:/phat-majors-15m@production", "bars/", "p_hat/")

The input is a universe as `phat predict` reads one: a directory, glob or list of files, one
per asset (the symbol is the file's name, `ADA_BTC-5m.parquet` -> ADA_BTC), or a long Parquet
table with a `symbol` column (one file, or a dataset directory, `symbol=...` partitions too).
One Spark task scores one asset; an asset longer than `chunk_bars` rows is scored in time
chunks, one task each, every chunk carrying the model's window of earlier bars so its first
p_hat is the one a whole-history run gives.

Each task reads its asset with phat's own reader and the model's DataSpec (the reading
in-process predict does), so p_hat_raw and p_hat are bit-identical to `phat predict`
(tests/test_engines.py). The driver verifies the model once (phat.registry.client: hash,
shipped code, the registry's record) and ships the verified directory to the executors
(SparkContext.addFile); each Python worker loads it once (registry.client.load_copy: the
artifact and shipped code checked again, the hash compared with the driver's; executors need
no access to the tracking store).

Output: Parquet partitioned by symbol (`out/symbol=BTC/part-*.parquet`: timestamp, p_hat_raw,
p_hat; NaN during warm-up, as in-process), and `out/_phat_report.json`: the model's identity,
per asset its coverage line or the one-line reason it failed. An asset is all or nothing: one
whose data is bad (or scored below signal.min_scored_share) fails alone, with its reason in the
report, and none of its rows is written; the assets written replace only their own partitions
(a failed asset's earlier output is left as it was). The files on a cluster: the data paths and
`out` must be readable/writable by every executor (a shared filesystem, HDFS, S3).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from phat.engines import require
from phat.errors import ConfigError, DataValidationError

_PANDAS_WARNING = "PySpark does not yet fully support pandas"
_TIMESTAMP_TYPE = "spark.sql.parquet.outputTimestampType"
REPORT = "_phat_report.json"
_LOG4J = Path(__file__).with_name(
    "spark-log4j2.properties"
)  # a leading underscore: Spark and pyarrow readers skip it
# What a task emits: p_hat rows (timestamp set) and one status row per task (timestamp null).
_ROWS = (
    "symbol string, chunk long, timestamp timestamp, p_hat_raw double, p_hat double, "
    "n_bars long, scored long, gaps long, error string"
)
_MODELS: dict[str, Any] = {}  # a Python worker's loaded models, by staged name
_STAGED: dict[str, str] = {}  # shipped with addFile: "<application id>/<model_hash>" -> name


@dataclass(frozen=True)
class Source:
    symbol: str
    path: str
    long: bool  # a long table's rows for `symbol` (else the asset's own file)
    n_rows: int | None  # known before reading (Parquet metadata), else None


def session(settings: dict[str, Any]) -> Any:
    """A SparkSession from `spark.*` settings (master, app_name, conf); an active session is
    reused as it is. Local masters run the workers on this interpreter."""
    require("spark")
    import logging

    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines are not phat's output
    master = str(settings["master"])
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # PySpark 4.3 warns on pandas 3 in every worker; phat's path is tested on it (test_engines)
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{_PANDAS_WARNING}:FutureWarning")
    warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
    builder = SparkSession.builder.master(master).appName(str(settings["app_name"]))
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.executorEnv.PYTHONWARNINGS": f"ignore:{_PANDAS_WARNING}:FutureWarning",
    }
    if master.startswith("local"):  # a cluster's own JVM options (spark-defaults) stay its own
        # the JVM's log: errors only (its start-up warnings are not a user's to act on)
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={_LOG4J}"
    conf.update({str(k): str(v) for k, v in dict(settings.get("conf") or {}).items()})
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _long_table(p: Path) -> tuple[Any, str] | None:
    """(pyarrow dataset, its symbol column) when `p` is a long Parquet table: one file, or a
    dataset directory (`symbol=...` partitions too); None otherwise."""
    import pyarrow.dataset as ds

    hive = p.is_dir() and any(c.name.startswith("symbol=") for c in p.iterdir())
    if not (hive or (p.is_file() and p.suffix.lower() in (".parquet", ".pq"))):
        return None
    dataset = ds.dataset(str(p), partitioning="hive" if hive else None)
    col = next((n for n in dataset.schema.names if n.strip().lower() == "symbol"), None)
    return None if col is None else (dataset, col)


def sources(path: Any, symbol: str | None = None) -> list[Source]:
    """The assets of `path` (module docstring), sorted by symbol, with their row counts where
    the files tell them without being read."""
    from phat.data.universe import file_groups, long_symbols
    from phat.errors import DataValidationError

    p = Path(str(path)) if not isinstance(path, list | tuple) else None
    long = _long_table(p) if p is not None else None
    if long is not None:
        dataset, col = long
        symbols = long_symbols(dataset.to_table(columns=[col]).to_pandas())  # blank: refused
        assert symbols is not None
        n = symbols.value_counts()
        return [Source(str(s), str(p), True, int(n[s])) for s in sorted(n.index)]
    out = []
    for sym, files in file_groups(path, symbol).items():
        if len(files) > 1:
            raise DataValidationError(
                f"{sym} comes in {len(files)} dated pieces ({files[0].name} .. {files[-1].name}); "
                "engine=spark scores one file per asset: score them in process (engine=local) "
                "or join the pieces into one file"
            )
        out.append(Source(sym, str(files[0]), False, _parquet_rows(files[0])))
    return out


def _parquet_rows(path: Path) -> int | None:
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # unreadable: the task that reads it says why, for that asset
        return None


def read_source(src: Source) -> pd.DataFrame:
    """An asset's raw rows, as in-process predict reads them (phat.data.read_table; a long
    table's rows of one symbol without the symbol column)."""
    from phat.data import read_table

    if not src.long:
        return read_table(src.path)
    import pyarrow.dataset as ds

    long = _long_table(Path(src.path))
    assert long is not None, src.path
    dataset, col = long
    rows = dataset.to_table(filter=ds.field(col) == src.symbol).to_pandas()
    if not len(rows):  # a symbol written with spaces around it: compare as read_table's reader
        all_rows = dataset.to_table().to_pandas()
        rows = all_rows[all_rows[col].astype(str).str.strip() == src.symbol]
    return rows.drop(columns=[col])


def _stage(model_dir: Path, model_hash: str, spark: Any) -> str:
    """Ship the verified model directory to the executors once per driver and model."""
    key = f"{spark.sparkContext.applicationId}/{model_hash}"  # a new context ships again
    name = _STAGED.get(key)
    if name is None:
        name = f"phat-model-{model_hash[:24]}"
        root = Path(tempfile.mkdtemp(prefix="phat-spark-"))
        atexit.register(shutil.rmtree, root, True)
        shutil.copytree(model_dir, root / name)
        spark.sparkContext.addFile(str(root / name), recursive=True)
        _STAGED[key] = name
    return name


def _model(name: str, model_hash: str) -> Any:
    """The staged model in this Python worker, loaded once: the driver's verified copy,
    checked again here (artifact, shipped code, the driver's hash), no tracking store read."""
    if name not in _MODELS:
        from pyspark import SparkFiles

        from phat.registry.client import load_copy

        _MODELS[name] = load_copy(SparkFiles.get(name), model_hash)
    return _MODELS[name]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"


def _score_task(name: str, model_hash: str, data_kwargs: dict[str, Any], task: Any) -> pd.DataFrame:
    """One task: an asset (or one chunk of it) read, validated and scored; a status row last."""
    sym, chunk = str(task.symbol), int(task.chunk)
    status = {"symbol": sym, "chunk": chunk, "timestamp": pd.NaT, "p_hat_raw": math.nan,
              "p_hat": math.nan, "n_bars": 0, "scored": 0, "gaps": 0, "error": None}  # fmt: skip
    try:
        view = _model(name, model_hash).for_asset(sym)
        src = Source(sym, str(task.path), bool(task.long), None)
        bars = view.read_bars(read_source(src), **{**data_kwargs, "symbol": sym})
        n = len(bars.frame)
        lo, hi = int(task.lo), n if task.hi < 0 else min(int(task.hi), n)
        start = max(lo - (view.feature_spec.bars_read - 1), 0)  # the window before the chunk
        p = view.predict_bars(bars.frame.iloc[start:hi], bars.segment[start:hi]).iloc[lo - start :]
    except Exception as e:  # this asset's failure, reported; the others go on
        return _for_arrow(pd.DataFrame([{**status, "error": _one_line(e)}]))
    rows = pd.DataFrame(
        {
            "symbol": sym,
            "chunk": chunk,
            "timestamp": p.index,
            "p_hat_raw": p["p_hat_raw"].to_numpy(),
            "p_hat": p["p_hat"].to_numpy(),
            "n_bars": 0,
            "scored": 0,
            "gaps": 0,
            "error": None,
        }
    )
    status.update(n_bars=n, scored=int(p["p_hat"].notna().sum()), gaps=int(bars.report["gaps"]))
    return _for_arrow(pd.concat([rows, pd.DataFrame([status])], ignore_index=True))


def _for_arrow(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python objects: PySpark 4.3 cannot convert pandas 3's Arrow-backed
    strings (a ChunkedArray) when it sends a task's rows back."""
    return frame.astype({"symbol": object, "error": object})


def _tasks(srcs: list[Source], chunk_bars: int) -> pd.DataFrame:
    rows = []
    for s in srcs:
        k = max(1, math.ceil((s.n_rows or 0) / chunk_bars))
        for c in range(k):
            lo, hi = c * chunk_bars, (c + 1) * chunk_bars if c < k - 1 else -1
            rows.append({"symbol": s.symbol, "path": s.path, "long": s.long, "chunk": c,
                         "lo": lo, "hi": hi})  # fmt: skip
    return pd.DataFrame(rows)


def score_universe(
    spark: Any,  # a SparkSession, or a callable making one once the input and model are checked
    model_uri: str,
    path: Any,
    out: str | Path,
    *,
    data: dict[str, Any] | None = None,
    horizon_id: str | None = None,
    chunk_bars: int | None = None,
    min_scored_share: float | None = None,
) -> dict[str, Any]:
    """Score every asset of `path` with the model at `model_uri` on `spark`, writing `out`
    (module docstring). `data`: the reading settings (data.load.READ_SETTINGS: calendar,
    volume_nan, timestamp_format, dayfirst; data.* of the config) and `symbol` (one asset's
    file); `chunk_bars`, `min_scored_share`: spark.chunk_bars and signal.min_scored_share
    (None: the config's defaults). Returns the report (also written to out/_phat_report.json):
    `written` {symbol: coverage line}, `failed` {symbol: reason}, the model's identity."""
    from phat.confdefaults import conf_defaults

    if min_scored_share is None:
        min_scored_share = float(conf_defaults("signal/default")["min_scored_share"])
    if chunk_bars is None:
        chunk_bars = int(conf_defaults("spark/default")["chunk_bars"])
    spark, model, name, data_kwargs, srcs = _checked_and_staged(
        spark, model_uri, path, data, horizon_id
    )
    model_hash = model.model_hash
    tasks = _tasks(srcs, int(chunk_bars))
    frame = spark.createDataFrame(tasks).repartition(len(tasks))

    def run(batches: Any) -> Any:
        for batch in batches:
            for task in batch.itertuples(index=False):
                yield _score_task(name, model_hash, data_kwargs, task)

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # timestamps written as UTC instants (Spark's default INT96 reads back as naive times)
    previous = spark.conf.get(_TIMESTAMP_TYPE, None)
    spark.conf.set(_TIMESTAMP_TYPE, "TIMESTAMP_MICROS")
    result = frame.mapInPandas(run, _ROWS).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        status = result.where(F.col("timestamp").isNull()).drop("timestamp").toPandas()
        written, failed = _verdicts(model, status, min_scored_share)
        good = result.where(F.col("timestamp").isNotNull() & ~F.col("symbol").isin(list(failed)))
        if written:
            # a task's rows are one asset (or chunk) in time order: no shuffle before writing
            (good.select("symbol", "timestamp", "p_hat_raw", "p_hat")
                 .sortWithinPartitions("symbol", "timestamp")
                 .write.partitionBy("symbol").mode("overwrite")
                 .option("partitionOverwriteMode", "dynamic")
                 .parquet(str(out)))  # fmt: skip
    finally:
        result.unpersist()
        if previous is None:  # the caller's session as it was
            spark.conf.unset(_TIMESTAMP_TYPE)
        else:
            spark.conf.set(_TIMESTAMP_TYPE, previous)
    report = {
        "model": model.identity(str(model_uri)),
        "engine": "spark",
        "master": spark.sparkContext.master,
        "chunk_bars": int(chunk_bars),
        "tasks": len(tasks),
        "written": written,
        "failed": failed,
    }
    _write_report(out, report)
    return report


def _checked_and_staged(
    spark: Any, model_uri: str, path: Any, data: dict[str, Any] | None, horizon_id: str | None
) -> tuple[Any, Any, str, dict[str, Any], list[Any]]:
    """The reading settings, the assets of `path` and the model checked before Spark starts
    (a bad path, an unlisted asset, a single-asset model given many assets), then the
    verified model staged for the executors: (the session, made now if `spark` makes one,
    the model, its staged name, reading settings, sources)."""
    from phat.data.bars import UNIVERSE_RETURN
    from phat.data.load import READ_SETTINGS, refuse_universe_for_one
    from phat.registry.client import fetch_verified, load

    data_kwargs = dict(data or {})
    symbol = data_kwargs.pop("symbol", None)
    unknown = sorted(set(data_kwargs) - set(READ_SETTINGS))
    if unknown:
        raise ConfigError(
            f"data: {unknown} are not reading settings; expected {list(READ_SETTINGS)}"
        )
    srcs = sources(path, symbol)  # bad paths and an unlisted asset fail before Spark starts
    with tempfile.TemporaryDirectory(prefix="phat-spark-fetch-") as tmp:
        if Path(str(model_uri)).exists():
            model, local = load(model_uri, horizon_id=horizon_id), Path(str(model_uri))
        else:
            model, local = fetch_verified(str(model_uri), Path(tmp), horizon_id)
        refuse_universe_for_one(model, f"{path} ({len(srcs)} assets)", len(srcs) > 1)
        for s in srcs:
            model.for_asset(s.symbol)  # an unlisted asset is refused by name, before any task
        if UNIVERSE_RETURN in model.feature_spec.required_columns:
            raise ConfigError(
                "engine=spark scores each asset in its own task, but the model's features are "
                "relative to its universe (all assets at each timestamp): score it with "
                "engine=local"
            )
        if callable(spark):
            spark = spark()
        return spark, model, _stage(local, model.model_hash, spark), data_kwargs, srcs


def _verdicts(
    model: Any, status: pd.DataFrame, min_share: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Per asset, from its tasks' status rows: its coverage line (every chunk scored, enough
    bars scored: the rule in-process predict applies) or the reason it failed."""
    written: dict[str, str] = {}
    failed: dict[str, str] = {}
    for sym, rows in status.sort_values(["symbol", "chunk"]).groupby("symbol", sort=True):
        errors = rows["error"].dropna()
        if len(errors):
            failed[str(sym)] = str(errors.iloc[0])
            continue
        try:
            written[str(sym)] = model.for_asset(str(sym)).coverage_of(
                int(rows["scored"].sum()), int(rows["n_bars"].iloc[0]),
                int(rows["gaps"].iloc[0]), min_share, f"phat predict, asset {sym}",
            )  # fmt: skip
        except DataValidationError as e:
            failed[str(sym)] = _one_line(e)
    return written, failed


def _write_report(out: str | Path, report: dict[str, Any]) -> None:
    """out/_phat_report.json, on whatever filesystem `out` names (local, HDFS, S3: pyarrow)."""
    import pyarrow.fs as pafs

    text = json.dumps(report, indent=2, sort_keys=True).encode()
    target = str(out)
    if "://" in target:
        fs, root = pafs.FileSystem.from_uri(target)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(target).resolve())
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{REPORT}") as f:
        f.write(text)
