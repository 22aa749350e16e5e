"""Past one machine on the real engines (issue #26): Spark in `local[2]` for scoring a universe,
Ray with 2 CPUs for walk-forward folds, per-asset fits and sweeps; each compared with the
in-process run bit for bit, and a killed worker seen as a FAILED run, never a hang or a gap.

The module shares one Spark session and one Ray cluster (started once, stopped at the end);
the CLI tests start their own, as a user's command does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from phat.cli.config import compose, validate
from phat.errors import ConfigError

PHAT = str(Path(sys.executable).with_name("phat"))
N_ASSETS, PERIODS = 20, 1000


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PHAT_"))}
    return {**env, **extra}


# -- fast: settings and a missing engine -----------------------------------------------------


def test_each_verb_takes_only_its_engines() -> None:
    with pytest.raises(ConfigError, match=r"engine='spark': expected one of \['local', 'ray'\]"):
        validate("walkforward", compose("walkforward", ["engine=spark"]))
    with pytest.raises(ConfigError, match=r"engine='ray': expected one of \['local', 'spark'\]"):
        validate("predict", compose("predict", ["engine=ray", "model_uri=x"]))
    with pytest.raises(ConfigError, match=r"ray.num_cpus=0: expected >= 1"):
        validate("train", compose("train", ["engine=ray", "ray.num_cpus=0"]))
    with pytest.raises(ConfigError, match=r"spark.chunk_bars=0: expected >= 1"):
        validate("predict", compose("predict", ["spark.chunk_bars=0", "model_uri=x"]))


def test_a_master_with_brackets_names_the_quoting_that_works() -> None:
    from phat.cli.config import precheck

    want = "a value with brackets needs quotes: \"spark.master='local[2]'\""
    with pytest.raises(ConfigError, match=re.escape(want)):
        precheck("predict", ["engine=spark", "spark.master=local[2]", "model_uri=x"])
    precheck("predict", ["engine=spark", "spark.master='local[2]'", "model_uri=x"])  # the remedy


@pytest.mark.parametrize(("verb", "engine", "module"), [("walkforward", "ray", "ray"),
                                                        ("predict", "spark", "pyspark")])  # fmt: skip
def test_a_missing_engine_is_one_line_naming_the_extra_that_installs_it(
    tmp_path, verb, engine, module
) -> None:
    where = (
        f"'out_dir={tmp_path}'" if verb == "walkforward" else f"'out={tmp_path}/p', 'model_uri=x'"
    )
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        f"sys.argv = ['phat', {verb!r}, 'engine={engine}', {where}];"
        "from phat.cli import " + verb + " as v; v.main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=_env())  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0] == (
        f"ConfigError: engine={engine} needs {module}, which is not installed here: pip install "
        f"'phat-ohlcv[{engine}]' (in a checkout: pip install -e '.[{engine}]'; make setup "
        "installs both engines)"
    )


def test_the_extras_the_message_names_exist_and_install_the_engines() -> None:
    """The remedy works: pyproject's extras hold the engines the message names, pinned as the
    lock file pins them (make setup installs them through these extras)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    lock = set((root / "requirements.lock").read_text().split())
    assert extras["spark"] == ["pyspark==4.3.0"] and "pyspark==4.3.0" in lock
    assert extras["ray"] == ["ray==2.60.0"] and "ray==2.60.0" in lock
    assert '".[dev,spark,ray]"' in (root / "Makefile").read_text()


# -- Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster (2 CPUs) for the module: in-process tests use it as it is; the
    commands the tests run join it by its address (`ray.address`, the launcher's
    `init.address`), as a user's command joins an existing cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_address(ray_cluster) -> str:
    return str(ray_cluster.get_runtime_context().gcs_address)


def _wf(tmp_path: Path, name: str, *extra: str):
    ov = [f"out_dir={tmp_path}/{name}", f"tracking.uri=sqlite:///{tmp_path}/{name}.db",
          "data.synthetic.assets=3", "data.synthetic.periods=5000", "metrics.bootstrap_n=20",
          "walkforward.train=21d", "walkforward.calibration=7d", "walkforward.step=7d",
          "threads=1", *extra]  # fmt: skip
    return validate("walkforward", compose("walkforward", ov))


def _runs(uri: str, experiment: str) -> tuple[object, list[object]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], sorted(kids, key=lambda r: r.info.run_name)


@pytest.mark.slow
def test_a_universe_walkforward_on_ray_is_the_serial_run_and_writes_the_same_runs(
    tmp_path, ray_cluster
) -> None:
    from phat.cli.walkforward import run

    serial = run(_wf(tmp_path, "serial"))
    on_ray = run(_wf(tmp_path, "ray", "engine=ray"))
    a, b = serial["record"], on_ray["record"]
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert len(a.folds) == len(b.folds) >= 4 and a.frame["symbol"].nunique() == 3
    for x, y in zip(a.folds, b.folds, strict=True):
        assert (x.metrics, x.calibration, x.rung, x.n_train) == (
            y.metrics,
            y.calibration,
            y.rung,
            y.n_train,
        )
    timing = {k for k in serial["metrics"] if k.startswith("timing")}
    assert {k: v for k, v in serial["metrics"].items() if k not in timing} == {
        k: v for k, v in on_ray["metrics"].items() if k not in timing
    }
    # the same MLflow runs: one parent, a child per fold, equal but for the engine's settings
    p1, k1 = _runs(f"sqlite:///{tmp_path}/serial.db", "phat-walkforward")
    p2, k2 = _runs(f"sqlite:///{tmp_path}/ray.db", "phat-walkforward")
    mine = ("engine", "ray.", "out_dir", "tracking.")
    assert {k: v for k, v in p1.data.params.items() if not k.startswith(mine)} == {
        k: v for k, v in p2.data.params.items() if not k.startswith(mine)
    }
    assert p2.data.params["engine"] == "ray" and p1.info.status == p2.info.status == "FINISHED"
    assert [r.info.run_name for r in k1] == [r.info.run_name for r in k2]
    for x, y in zip(k1, k2, strict=True):
        assert x.data.params == y.data.params
        assert {k: v for k, v in x.data.metrics.items() if k != "seconds"} == {
            k: v for k, v in y.data.metrics.items() if k != "seconds"
        }


@pytest.mark.slow
def test_per_asset_fits_on_ray_are_the_serial_fits(tmp_path, ray_cluster) -> None:
    from phat.recipe.fit import fit_recipe
    from phat.recipe.series import prepare

    fits = []
    for engine in ("local", "ray"):
        cfg = validate("train", compose("train", [
            f"out_dir={tmp_path}", "data.synthetic.assets=3", "data.synthetic.periods=3000",
            "model.pooling=per_asset", f"engine={engine}"]))  # fmt: skip
        p = prepare(cfg)
        f = fit_recipe(cfg, p.seed, p.threads, p.data, p.y, p.spans, p.label_spec,
                       p.feature_spec, bars=p.bars)  # fmt: skip
        every = np.concatenate([p.spans["train"], p.spans["calibration"], p.spans["test"]])
        fits.append((f.model.logits(p.data, every), f.calibrator.to_dict(), f.rung, f.tables))
    (la, ca, ra, ta), (lb, cb, rb, tb) = fits
    assert np.array_equal(_bits(la), _bits(lb)) and (ca, ra) == (cb, rb)
    assert json.dumps(ta, sort_keys=True, default=str) == json.dumps(
        tb, sort_keys=True, default=str
    )


@pytest.mark.slow
def test_tasks_the_cluster_cannot_place_are_refused_not_waited_for(tmp_path, ray_cluster) -> None:
    from phat.evidence.walkforward import run_folds

    with pytest.raises(ConfigError, match=r"threads=3: each Ray task reserves that many CPUs, "
                       r"and the cluster has 2; set threads <= 2"):  # fmt: skip
        run_folds(_wf(tmp_path, "big", "engine=ray", "threads=3", "data.synthetic.assets=1"))


def _pause_and_kill(cmd: list[str], cwd: Path, point: str, timeout: float = 240):
    """Run `cmd` with a pause point; kill -9 the process that paused there (a Ray worker)."""
    pause = cwd / "paused"
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(PHAT_PAUSE_AT=point, PHAT_PAUSE_FILE=str(pause)))  # fmt: skip
    t0 = time.monotonic()
    while not pause.exists() or not pause.read_text().strip():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the pause point was never reached"
        time.sleep(0.2)
    name, pid = pause.read_text().split()
    assert name == point and int(pid) != proc.pid  # a worker, not the command's own process
    os.kill(int(pid), 9)
    out, err = proc.communicate(timeout=timeout)  # never a hang
    return proc.returncode, out, err


@pytest.mark.slow
def test_a_killed_ray_worker_fails_its_fold_visibly(tmp_path, ray_address) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [PHAT, "walkforward", "engine=ray", f"ray.address={ray_address}", "threads=1",
           f"out_dir={tmp_path}/o",
           f"tracking.uri={uri}", "metrics.bootstrap_n=10", "data.synthetic.periods=6000",
           "walkforward.train=21d", "walkforward.calibration=7d", "walkforward.step=7d"]  # fmt: skip
    rc, out, err = _pause_and_kill(cmd, tmp_path, "fold_1")
    said = f"stdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"  # what a failure shows
    assert rc == 1, said
    last = err.strip().splitlines()[-1]
    assert last.startswith("TaskDied: walk-forward fold 1 (") and "Ray worker died" in last, said
    assert "fold  0" in out and "fold  1" not in out, said  # fold 0 collected, fold 1 never
    parent, kids = _runs(uri, "phat-walkforward")
    assert parent.info.status == "FAILED" and "fold 1" in parent.data.tags["phat.error"]
    assert [(k.info.run_name[:7], k.info.status) for k in kids] == [
        ("fold-00", "FINISHED"),
        ("fold-01", "FAILED"),
    ], said
    assert "WorkerCrashedError" in kids[1].data.tags["phat.error"], kids[1].data.tags
    assert kids[1].data.tags["phat.fold.test_start"] > kids[0].data.tags["phat.fold.test_start"]
    assert not (tmp_path / "o" / "metrics.json").exists()  # no summary of a record with a gap


def _sweep(tmp_path: Path, address: str, *args: str) -> list[str]:
    return [PHAT, "train", "-m", *args, "hydra/launcher=ray", "data.synthetic.periods=3000",
            "metrics.bootstrap_n=10", f"tracking.uri=sqlite:///{tmp_path}/m.db", "threads=1",
            f"hydra.sweep.dir={tmp_path}/multirun", f"++hydra.launcher.ray.init.address={address}"]  # fmt: skip


@pytest.mark.slow
def test_a_sweep_on_the_ray_launcher_is_one_parent_with_its_children(tmp_path, ray_address) -> None:
    """On an existing cluster (the module's): its workers do not inherit the command's
    environment, so the sweep's parent run reaches the jobs through Ray's runtime_env."""
    r = subprocess.run(_sweep(tmp_path, ray_address, "model=logistic", "seed=1,2"), cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    parent, kids = _runs(f"sqlite:///{tmp_path}/m.db", "phat")
    assert parent.info.status == "FINISHED" and len(kids) == 2
    assert all(k.info.status == "FINISHED" for k in kids)
    assert len({k.data.tags["phat.pid"] for k in kids} - {str(os.getpid())}) >= 1
    assert parent.data.tags["phat.sweep.best_run"] in {k.info.run_id for k in kids}
    assert MlflowClient(f"sqlite:///{tmp_path}/m.db").search_registered_models() == []


@pytest.mark.slow
def test_a_killed_sweep_job_on_ray_is_a_failed_child_and_the_sweep_says_so(
    tmp_path, ray_address
) -> None:
    cmd = _sweep(tmp_path, ray_address, "model=logistic")
    rc, out, err = _pause_and_kill(cmd, tmp_path, "run_started")
    assert rc != 0
    assert "FAILED: the sweep stopped before its last job ended" in err, err[-3000:]
    parent, kids = _runs(f"sqlite:///{tmp_path}/m.db", "phat")
    assert (
        parent.info.status == "FAILED"
        and "re-run the same command" in parent.data.tags["phat.error"]
    )
    assert [k.info.status for k in kids] == ["FAILED"]
    assert "its worker died" in kids[0].data.tags["phat.error"]


# -- Spark -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    from phat.engines.spark import session

    s = session({"master": "local[2]", "app_name": "phat-tests",
                 "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    """A registered pooled logistic over a 20-asset synthetic universe, the universe as one
    Parquet file per asset and as one long table, and in-process predict's output."""
    from phat.cli.predict import run as predict
    from phat.data.synthetic import SyntheticConfig, generate_universe
    from phat.lifecycle.training import run as train

    root = tmp_path_factory.mktemp("spark")
    uri = f"sqlite:///{root}/m.db"
    cfg = validate("train", compose("train", [
        f"out_dir={root}/train", f"tracking.uri={uri}", f"data.synthetic.assets={N_ASSETS}",
        f"data.synthetic.periods={PERIODS}", "data.synthetic.seed=7", "model.params.C=0.1",
        "metrics.bootstrap_n=10", "data.universe_name=twenty"]))  # fmt: skip
    train(cfg)
    files = root / "files"
    files.mkdir()
    markets = generate_universe(SyntheticConfig(periods=PERIODS, seed=7), assets=N_ASSETS)
    for sym, m in markets.items():
        m.bars.rename_axis("timestamp").reset_index().to_parquet(files / f"{sym}-15m.parquet")
    long = pd.concat(
        [m.bars.rename_axis("timestamp").reset_index().assign(symbol=s) for s, m in markets.items()]
    )
    long.to_parquet(root / "long.parquet", index=False)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_to_dataset(pa.Table.from_pandas(long, preserve_index=False), root / "hive",
                        partition_cols=["symbol"])  # fmt: skip
    model = "models:/phat-twenty-15m/1"
    pcfg = validate("predict", compose("predict", [
        f"model_uri={model}", f"data.path={files}", f"out={root}/local.parquet",
        f"tracking.uri={uri}"]))  # fmt: skip
    predict(pcfg)
    local = pd.read_parquet(root / "local.parquet").reset_index()
    return {"root": root, "uri": uri, "model": model, "files": files, "local": local}


def _same_bits(local: pd.DataFrame, out: Path) -> int:
    got = pd.read_parquet(out)
    got["symbol"] = got["symbol"].astype(str)
    got = got.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    want = local.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    assert len(got) == len(want) and list(got["symbol"]) == list(want["symbol"])
    assert (got["timestamp"].dt.tz is not None) and got["timestamp"].equals(
        want["timestamp"].astype(got["timestamp"].dtype)
    )
    for col in ("p_hat_raw", "p_hat"):
        assert np.array_equal(_bits(got[col].to_numpy()), _bits(want[col].to_numpy())), col
    return int(got["p_hat"].notna().sum())


@pytest.mark.slow
def test_a_universe_scored_on_spark_is_in_process_predict_bit_for_bit(spark, universe) -> None:
    """20 assets, one file each, as one long table and as a dataset partitioned by symbol; in
    chunks of 500 rows (each carrying the model's window of earlier bars) and whole: every bit
    of in-process predict."""
    from mlflow import set_tracking_uri

    from phat.engines.spark import REPORT, score_universe

    set_tracking_uri(universe["uri"])
    root = universe["root"]
    for name, path, chunk in (("files", universe["files"], 500),
                              ("long", root / "long.parquet", 1_000_000),
                              ("hive", root / "hive", 1_000_000)):  # fmt: skip
        report = score_universe(
            spark, universe["model"], path, root / f"out-{name}", chunk_bars=chunk
        )
        assert report["failed"] == {} and len(report["written"]) == N_ASSETS
        assert report["tasks"] == (N_ASSETS * 2 if chunk == 500 else N_ASSETS)
        scored = _same_bits(universe["local"], root / f"out-{name}")
        assert scored == int(universe["local"]["p_hat"].notna().sum()) > 0
        on_disk = json.loads((root / f"out-{name}" / REPORT).read_text())
        assert on_disk["model"]["phat.model_uri"] == universe["model"] and on_disk["written"]


@pytest.mark.slow
def test_a_bad_asset_fails_alone_on_spark_and_nothing_of_it_is_written(
    spark, universe, tmp_path
) -> None:
    """One asset's bad row: that asset is one line in the report and none of its rows is
    written (its earlier output stays as it was); the others are written; the command exits 2
    naming it (0 with data.on_bad_asset=skip)."""
    from phat.cli.predict import run as predict
    from phat.engines.spark import REPORT
    from phat.errors import DataValidationError

    files = tmp_path / "files"
    shutil.copytree(universe["files"], files)
    bad = pd.read_parquet(files / "A03-15m.parquet")
    bad.loc[700, "high"] = bad.loc[700, "low"] * 0.5  # high below low
    bad.to_parquet(files / "A03-15m.parquet")
    out = tmp_path / "out"
    old = out / "symbol=A03" / "part-old.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier run's output")

    def cfg(*extra: str):
        return validate("predict", compose("predict", [
            f"model_uri={universe['model']}", f"data.path={files}", f"out={out}", "engine=spark",
            f"tracking.uri={universe['uri']}", *extra]))  # fmt: skip

    with pytest.raises(DataValidationError) as e:
        predict(cfg())
    msg = str(e.value)
    assert msg.startswith("1 of 20 assets failed and were not written (first: A03: ")
    assert "the others were written" in msg and REPORT in msg
    report = json.loads((out / REPORT).read_text())
    assert list(report["failed"]) == ["A03"] and len(report["written"]) == N_ASSETS - 1
    assert "high" in report["failed"]["A03"] and "\n" not in report["failed"]["A03"]
    assert old.read_bytes() == b"an earlier run's output"  # untouched, and nothing added
    assert sorted(p.name for p in (out / "symbol=A03").iterdir()) == ["part-old.parquet"]
    good = pd.read_parquet(out / "symbol=A04")
    want = universe["local"][universe["local"]["symbol"] == "A04"]
    assert np.array_equal(_bits(good["p_hat"].to_numpy()), _bits(want["p_hat"].to_numpy()))
    assert spark.sparkContext._jsc is not None  # the CLI path left the caller's session running
    predict(cfg("data.on_bad_asset=skip"))  # a partial universe accepted: exit 0


@pytest.mark.slow
def test_an_executor_refuses_a_copy_that_is_not_the_verified_model(universe, tmp_path) -> None:
    """What each Spark worker loads (registry.client.load_copy): the driver's verified copy,
    checked again without a tracking store; a changed file or another hash is refused."""
    from mlflow import set_tracking_uri

    from phat.errors import HashMismatch
    from phat.registry.client import fetch_verified, load_copy

    set_tracking_uri(universe["uri"])
    model, local = fetch_verified(universe["model"], tmp_path / "fetched")
    assert load_copy(local, model.model_hash).model_hash == model.model_hash
    with pytest.raises(HashMismatch, match="the verified original recorded phat.model_hash 0+"):
        load_copy(local, "0" * 64)
    code = next(local.rglob("code/phat/errors.py"))
    code.write_text(code.read_text() + "\n# changed\n")
    with pytest.raises(HashMismatch, match="errors.py"):  # the shipped code, by its manifest
        load_copy(local, model.model_hash)
    code.write_text(code.read_text().removesuffix("\n# changed\n"))
    assert load_copy(local, model.model_hash).model_hash == model.model_hash
    weights = next(local.rglob("weights.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(HashMismatch):  # the artifact's own hash
        load_copy(local, model.model_hash)
