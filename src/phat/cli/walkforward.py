"""`phat walkforward [overrides]` (= `python -m phat.walkforward`): refit the configured model on
rolling (or expanding) windows, score each next step, and test the stitched out-of-sample record.

    phat walkforward model=logistic horizon=15m
    phat walkforward walkforward.train=expanding walkforward.step=7d
    phat walkforward data.path=btc.parquet data.symbol=BTCUSDT model=tree

Reads top to bottom: config checks, then every fold (data errors fail here, before any MLflow
run exists; one line per fold), then one parent MLflow run (experiment `phat-walkforward`) with
the stitched record, its decomposition and significance, and one nested child per fold.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from phat.cli import CONF_DIR, call, entry
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import WalkforwardConf

log = logging.getLogger("phat.walkforward")


def run(cfg: WalkforwardConf) -> dict[str, Any]:
    from phat.evidence.walkforward import check_windows, run_folds, summarize
    from phat.recipe.specs import validate_config

    validate_config(cfg)
    check_windows(cfg.walkforward)  # before any data is read

    def progress(fold: Any) -> None:
        m = fold.metrics
        print(
            f"  fold {fold.number:>2}  test {fold.test_start:%Y-%m-%d} .. {fold.test_end:%Y-%m-%d}  "
            f"n {fold.n_test:>5}  brier {m['brier']:.5f} (climatology {m['brier_climatology']:.5f})  "
            f"ece {m['ece']:.4f}  {fold.seconds:.1f} s",
            flush=True,
        )

    for_version = cfg.walkforward.for_version
    target = _version_for(cfg, for_version) if for_version is not None else None
    from phat.engines.fanout import TaskDied

    try:
        record = run_folds(cfg, progress)
    except TaskDied as died:  # a worker died: the run says which fold, and what was done
        run_id = log_walkforward(cfg, None, {}, None, died)
        raise TaskDied(
            f"{died.label} (MLflow run {run_id} FAILED; folds done before it: {len(died.done)})",
            died.detail, died.done, died.item,
        ) from None  # fmt: skip
    if target is not None:
        from phat.evidence.walkforward import check_recipe

        check_recipe(record, target[1].tags, f"{target[0]} v{for_version}")
    mc = cfg.metrics
    metrics = summarize(
        record,
        int(mc.n_bins),
        int(mc.bootstrap_block),
        int(mc.bootstrap_n),
        int(cfg.seed),
    )
    metrics["timing_total_s"] = record.timings["total_s"]
    out_dir = Path(cfg.out_dir)
    write_files(record, metrics, out_dir, int(mc.n_bins))
    run_id = log_walkforward(cfg, record, metrics, out_dir)
    if target is not None:
        from phat.registry.recorder import recorder

        rec = recorder(cfg.tracking)
        rec.on(run_id).tags({Tag.WALKFORWARD_FOR: f"{target[0]}/v{for_version}"})
        rec.client.set_model_version_tag(
            target[0], str(for_version), Tag.WALKFORWARD_RUN_ID, run_id
        )
        print(f"  evidence for   {target[0]} v{for_version} (tag phat.walkforward.run_id)")
    lines = summary_lines(record, metrics, run_id)
    print("\n".join(lines))
    return {"run_id": run_id, "metrics": metrics, "record": record}


def _version_for(cfg: WalkforwardConf, version: int) -> tuple[str, Any]:
    """(model name, ModelVersion) of `walkforward.for_version`, checked before any work."""
    from phat.registry.client import model_name_for, registry_error
    from phat.registry.recorder import recorder

    client = recorder(cfg.tracking).client
    name = model_name_for(cfg)
    try:
        return name, client.get_model_version(name, str(version))
    except Exception as e:
        raise registry_error(e, f"walkforward.for_version={version}: {name} v{version}") from None


def write_files(record: Any, metrics: dict[str, float], out_dir: Path, n_bins: int) -> None:
    import pandas as pd

    from phat.evaluation.plots import reliability_diagram, rolling_scores_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    f = record.frame
    f.to_parquet(out_dir / "oos_predictions.parquet")
    folds = pd.DataFrame(
        [
            {
                "fold": x.number,
                "train_start": x.train_start,
                "calibration_start": x.calibration_start,
                "test_start": x.test_start,
                "test_end": x.test_end,
                "n_train": x.n_train,
                "n_calibration": x.n_calibration,
                "n_test": x.n_test,
                "calibration": x.calibration["method"],
                **x.metrics,
                "seconds": x.seconds,
            }
            for x in record.folds
        ]
    )
    folds.to_csv(out_dir / "folds.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    y = f["label"].to_numpy()
    reliability_diagram(
        y, {"raw": f["p_hat_raw"].to_numpy(), "calibrated": f["p_hat"].to_numpy()},
        out_dir / "reliability_oos.png", n_bins=n_bins,
        title=f"{record.model_kind}: stitched out-of-sample record ({len(record.folds)} folds)",
    )  # fmt: skip
    losses = {
        "model": (f["p_hat"] - f["label"]) ** 2,
        "climatology": (f["p_climatology"] - f["label"]) ** 2,
        "proxy": ((f["p_proxy"] - f["label"]) ** 2).dropna(),
    }
    fold_ece = pd.Series(folds["ece"].to_numpy(), index=pd.DatetimeIndex(folds["test_start"]))
    if record.per_asset is not None:  # a universe: losses averaged per timestamp over assets
        losses = {k: v.groupby(level=0).mean() for k, v in losses.items()}
    rolling_scores_plot(losses, fold_ece, out_dir / "rolling_scores.png")
    if record.per_asset is not None:
        from phat.evaluation.plots import reliability_panels
        from phat.evaluation.universe import to_markdown

        record.per_asset.to_csv(out_dir / "per_asset.csv", index=False)
        (out_dir / "per_asset.md").write_text(to_markdown(record.per_asset))
        reliability_panels(
            y, f["p_hat"].to_numpy(), f["symbol"].to_numpy(), out_dir / "reliability_assets.png",
            title=f"{record.symbol}: stitched out-of-sample record per asset",
        )  # fmt: skip


def log_walkforward(
    cfg: WalkforwardConf,
    record: Any,
    metrics: dict[str, float],
    out_dir: Path | None,
    died: Any = None,
) -> str:
    """The parent run (params, metrics, files) and one child per fold. With `died` (a worker
    died: phat.engines.fanout.TaskDied) the parent is FAILED with the reason, the folds done
    before it are its children, and the dead fold is a FAILED child naming it."""
    from phat.engines.fanout import TaskDied
    from phat.registry.recorder import recorder
    from phat.registry.tracking import run_params

    rec = recorder(cfg.tracking)
    kind = str(cfg.model.kind)
    symbol = record.symbol if record is not None else _data_name(cfg)
    name = f"walkforward-{kind}-{cfg.horizon}-{symbol}-{cfg.calibration.method}-s{cfg.seed}"
    tags = {Tag.SYMBOL: symbol, Tag.MODEL_KIND: kind}
    folds = record.folds if record is not None else [f for _, f in died.done]
    with contextlib.suppress(TaskDied), rec.run(name, tags=tags) as parent:
        parent.params(run_params(cfg))
        if died is not None:
            parent.tags({Tag.ERROR: str(died)})
            raise died  # ends the parent run FAILED (and is suppressed here)
        parent.metrics(metrics)
        parent.artifacts(out_dir)
    for fold in folds:
        child = _fold_run(rec, parent, fold)
        cal = fold.calibration
        child.params({"calibration.method": cal["method"], **{
            f"calibration.{p}": json.dumps(x)[:500] for p, x in cal.get("params", {}).items()
        }})  # fmt: skip
        child.metrics({**fold.metrics, "n_train": fold.n_train, "seconds": fold.seconds})
        child.finish("FINISHED")
    if died is not None:  # the dead fold: a FAILED child with the reason, no metrics
        child = _fold_run(rec, parent, died.item)
        child.tags({Tag.ERROR: str(died)})
        child.finish("FAILED")
    return parent.run_id


def _data_name(cfg: WalkforwardConf) -> str:
    from phat.data.universe import dataset_name

    return dataset_name(cfg.data)


def _fold_run(rec: Any, parent: Any, fold: Any) -> Any:
    """A fold's child run, named and tagged with its windows."""
    return rec.create(
        parent.experiment_id,
        f"fold-{fold.number:02d}-{fold.test_start:%Y-%m-%d}",
        {
            Tag.FOLD_TRAIN_START: fold.train_start.isoformat(),
            Tag.FOLD_CALIBRATION_START: fold.calibration_start.isoformat(),
            Tag.FOLD_TEST_START: fold.test_start.isoformat(),
            Tag.FOLD_TEST_END: fold.test_end.isoformat(),
        },
        parent=parent.run_id,
    )


def summary_lines(record: Any, m: dict[str, float], run_id: str) -> list[str]:
    from phat.evidence.walkforward import BASELINES

    f = record.frame
    lines = [
        "",
        f"phat.walkforward: {record.model_kind} on {record.symbol}, {len(record.folds)} folds, "
        f"{len(f)} out-of-sample bars {f.index[0]:%Y-%m-%d} .. {f.index[-1]:%Y-%m-%d} "
        f"({record.timings['total_s']:.0f} s)",
        f"  run id        {run_id}",
        f"  brier         {m['oos_brier']:.5f} [{m['oos_brier_ci_low']:.5f}, {m['oos_brier_ci_high']:.5f}]"
        f"   = MCB {m['oos_mcb']:.5f} - DSC {m['oos_dsc']:.5f} + UNC {m['oos_unc']:.5f}",
        f"  ece           {m['oos_ece']:.4f}   log loss {m['oos_log_loss']:.5f}   auc {m['oos_auc']:.4f}",
        f"  {'vs baseline':<14}{'brier':>10}   DM stat   p (model better; lag {int(m['dm_lag'])})",
    ]
    for b in BASELINES:
        lines.append(
            f"  {b:<14}{m[f'oos_brier_{b}']:>10.5f}   {m[f'dm_stat_vs_{b}']:>7.2f}   "
            f"{m[f'dm_pvalue_vs_{b}']:.4f}"
        )
    if record.per_asset is not None:
        n = int(m["assets_scored"])
        lines[-len(BASELINES) - 1] += " on per-timestamp means over assets"
        lines.append(
            f"  per asset     {int(m['assets_beat_climatology'])} of {n} beat climatology, "
            f"{int(m['assets_miscalibrated'])} of {n} miscalibrated (Benjamini-Hochberg, 5%); "
            "table per_asset.md"
        )
    return lines


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="walkforward")
def _hydra_main(cfg: DictConfig) -> Any:
    return call(run, cfg, log, verb="walkforward")


def main() -> None:
    entry("walkforward", _hydra_main)


if __name__ == "__main__":
    main()
