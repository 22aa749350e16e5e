"""`phat backtest signal_source=... horizon=... [data.path=...]` (= `python -m phat.backtest`):
resolve the signal binding once, score, run the policy per book, log one MLflow run and write
decisions.parquet, trades.parquet and equity.png under out_dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from phat.cli import CONF_DIR, call, entry
from phat.data import as_utc
from phat.errors import RegistryUnavailable
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import BacktestConf

log = logging.getLogger("phat.backtest")


def run(cfg: BacktestConf) -> dict[str, Any]:
    """Resolve the binding once, score, run the reference policy on each asset (one asset is a
    universe of one) under that asset's map and alarm (trading.signals.for_asset; an asset on
    the proxy by its own alarm says so in its decisions), write decisions and trades (with a
    `symbol` column), the book's metrics (aggregate_metrics: one asset's own) and an equity
    figure; log one MLflow run."""
    import pandas as pd

    from phat.data.load import load_bars
    from phat.recipe.specs import horizon_spec
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder
    from phat.trading.backtest import (
        aggregate_metrics,
        build_policy,
        evaluation_start,
        exposure,
    )
    from phat.trading.signals import resolve

    rec = recorder(cfg.tracking)  # the command's one connection
    timeframe, _, horizon_id = horizon_spec(cfg)
    model_name = model_name_for(cfg)
    strict = bool(cfg.signal.strict)
    resolved = resolve(str(cfg.signal_source), model_name, horizon_id, strict=strict)
    binding = resolved.binding
    # A bound model reads the data under its own DataSpec (calendar, max_gap), as in training.
    bars, _ = load_bars(cfg, timeframe, resolved.model)
    try:
        start = evaluation_start(binding, model_name, cfg.backtest.start)
    except RegistryUnavailable as e:  # the proxy needs no registry: carry on, and say so
        log.warning("%s; the backtest window is the whole history (set backtest.start)", e)
        start = None
    window = (start, as_utc(cfg.backtest.end) if cfg.backtest.end else None)
    kind = resolved.model.label_spec.kind if resolved.model is not None else None
    policy = build_policy(cfg.policy.params, kind)  # a relative label: the neutral book
    results, frames = _per_asset(cfg, resolved, bars, window, policy, timeframe)
    metrics = {s: r.metrics for s, r in results.items()}
    book = aggregate_metrics(metrics)
    held = exposure(results)  # the book's net and gross exposure per bar
    if len(results) > 1:
        book.update(net_exposure_mean_abs=float(held["net"].abs().mean()),
                    net_exposure_max_abs=float(held["net"].abs().max()),
                    gross_exposure_mean=float(held["gross"].mean()))  # fmt: skip
    frame = pd.concat(frames).sort_index()  # every asset's bars in the window
    out_dir = _write(cfg, results, bars, f"{binding.signal_source} on {bars.symbol} {horizon_id}")
    if len(results) > 1:
        held.rename_axis("timestamp").to_parquet(out_dir / "exposure.parquet")
    run_id = _log_or_say(rec, cfg, binding, frame, bars, book, out_dir)
    print(_summary(binding, bars, results, book, frame, run_id, out_dir))
    first = next(iter(results.values()))
    return {"run_id": run_id, "binding": binding, "metrics": book, "per_asset": metrics,
            "result": first if len(results) == 1 else None}  # fmt: skip


def _per_asset(
    cfg: BacktestConf, resolved: Any, bars: Any, window: tuple[Any, Any], policy: Any,
    timeframe: str,
) -> tuple[dict[str, Any], list[Any]]:  # fmt: skip
    """Each asset's backtest on its bars in the window, and those bars. A bound model must
    score the window, not hand it to the proxy (check_coverage). An asset with fewer than 2
    bars in the window is left out (said); one asset, or none left, is refused."""
    from phat.errors import DataValidationError
    from phat.trading.backtest import backtest_assets, build_triggers, cost_kwargs
    from phat.trading.signals import for_asset, p_hat_frame

    strict = bool(cfg.signal.strict)
    binding = resolved.binding
    start, end = window
    parts = bars.members()
    inputs, costs = {}, {}
    for a in parts:
        sym, part = a.symbol, a.bars
        view = for_asset(resolved, sym)  # a universe model: the asset's map and alarm
        signal = p_hat_frame(view, part.frame, dict(cfg.signal.proxy), strict=strict)
        keep = np.ones(len(part), dtype=bool)
        if start is not None:
            keep &= part.index >= start
        if end is not None:
            keep &= part.index < end
        if keep.sum() < 2:
            if len(parts) == 1:
                raise DataValidationError(
                    f"evaluation window from {start} to {cfg.backtest.end} holds "
                    f"{int(keep.sum())} bars"
                )
            log.warning("%s: %d bars in the evaluation window; left out", sym, keep.sum())
            continue
        if view.model is not None:
            p_model = np.where(signal["source"].to_numpy() == "model", signal["p_hat"], np.nan)
            who = f"{binding.model_name} v{binding.model_version}"
            view.model.check_coverage(
                p_model[keep], int(part.report.get("gaps", 0)),
                float(cfg.signal.min_scored_share),
                bars.label(f"phat backtest signal_source={binding.signal_source} ({who})", sym),
                from_start=bool(keep[0]), reasons=signal["fallback_reason"].to_numpy()[keep],
            )  # fmt: skip
        inputs[sym] = (part.frame[keep], signal[keep], build_triggers(cfg, part)[keep])
        costs[sym] = cost_kwargs(cfg, sym, timeframe)
    if not inputs:
        raise DataValidationError(f"no asset has 2 bars in the evaluation window {start} .. {end}")
    results = backtest_assets(inputs, policy, binding, costs)  # a neutral book: set together
    return results, [frame for frame, _, _ in inputs.values()]


def _write(cfg: BacktestConf, results: dict[str, Any], bars: Any, title: str) -> Path:
    """decisions.parquet, trades.parquet, equity.png and config.yaml under out_dir; with
    several assets, per_asset.csv and the book's equity above each asset's."""
    import pandas as pd

    from phat.trading.backtest import plot_equity, plot_equity_panels

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for what in ("decisions", "trades"):
        pd.concat(
            [getattr(r, what).assign(symbol=s) for s, r in results.items()], ignore_index=True
        ).to_parquet(out_dir / f"{what}.parquet")
    if len(results) == 1:
        plot_equity(next(iter(results.values())), out_dir / "equity.png", title)
    else:
        pd.DataFrame({s: r.metrics for s, r in results.items()}).T.rename_axis("symbol").to_csv(
            out_dir / "per_asset.csv"
        )
        plot_equity_panels(results, out_dir / "equity.png",
                           f"{title.rsplit(' ', 1)[0]}: equal-weight book")  # fmt: skip
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return out_dir


def _log_or_say(
    rec: Any, cfg: BacktestConf, binding: Any, frame: Any, bars: Any,
    metrics: dict[str, float], out_dir: Path,
) -> str | None:  # fmt: skip
    """The MLflow run's id; None, said, when the store is down (the files are on disk)."""
    try:
        return _log(rec, cfg, f"backtest-{binding.signal_source}-{bars.symbol}", binding, frame,
                    bars, metrics, out_dir)  # fmt: skip
    except Exception as e:
        from phat.errors import is_store_failure

        if not is_store_failure(e):  # a bug in logging: an error (exit 1), the files kept
            log.error(
                "logging the backtest failed; decisions, trades and equity are in %s", out_dir
            )
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning(
            "NOTHING WAS LOGGED to MLflow at %s (%s); decisions, trades and equity are in %s",
            rec.uri, first[:200], out_dir,
        )  # fmt: skip
        return None


def _summary(
    binding: Any, bars: Any, results: dict[str, Any], m: dict[str, float], frame: Any,
    run_id: str | None, out_dir: Path,
) -> str:  # fmt: skip
    """The one line the verb prints."""
    head = (f"phat backtest: {binding.signal_source} (model {binding.model_name or '-'} "
            f"v{binding.model_version or '-'})")  # fmt: skip
    tail = f"run {run_id or '(not logged)'} | files {out_dir}"
    if len(results) == 1:
        return (
            f"{head} on {bars.symbol}, {int(m['bars'])} bars from {frame.index[0]} | pnl_net "
            f"{m['pnl_net'] * 1e4:.1f} bps, sharpe {m['sharpe']:.2f}, max_drawdown "
            f"{m['max_drawdown'] * 1e4:.1f} bps, churn {m['churn']:.3f}/day, cost "
            f"{m['cost_bps']:.1f} bps, trades {int(m['trade_count'])}, isolation "
            f"{m['isolation_compliance']:.2f}, fallback bars {int(m['fallback_bars'])} | {tail}"
        )
    fallback = {s: int(r.metrics["fallback_bars"]) for s, r in results.items()
                if r.metrics["fallback_bars"]}  # fmt: skip
    return (
        f"{head} on universe {bars.symbol}, {len(results)} assets | "
        f"pnl_net {m['pnl_net'] * 1e4:.1f} bps (sum), sharpe {m['sharpe']:.2f} (mean), "
        f"worst drawdown {m['max_drawdown'] * 1e4:.1f} bps, churn {m['churn']:.3f}/day, "
        f"net exposure mean |{m['net_exposure_mean_abs']:.3f}| max |{m['net_exposure_max_abs']:.3f}|"
        f" (gross {m['gross_exposure_mean']:.3f}), "
        f"isolation {m['isolation_compliance']:.2f}, fallback bars "
        f"{', '.join(f'{s} {n}' for s, n in fallback.items()) or 'none'} | {tail}"
    )


def _log(
    rec: Any,
    cfg: BacktestConf,
    run_name: str,
    binding: Any,
    frame: Any,
    bars: Any,
    metrics: dict[str, float],
    out_dir: Path,
) -> str:
    from phat.registry.tracking import flatten

    tags = {
        **binding.tags(),
        Tag.BACKTEST_WINDOW: json.dumps([str(frame.index[0]), str(frame.index[-1])]),
        Tag.SYMBOL: bars.symbol,
        Tag.DATA_HASH: bars.data_hash(),
    }
    with rec.run(run_name, tags=tags) as run:
        # Every setting that shaped the trades, one param each, and what p_hat came from.
        params = {
            k: v
            for k, v in flatten({g: cfg[g] for g in ("policy", "costs", "signal")}).items()
            if v != "None"
        }
        params.update(
            {
                "signal_source": binding.signal_source,
                "model_name": str(binding.model_name or "-"),
                "model_version": str(binding.model_version or "-"),
                "horizon": str(cfg.horizon),
            }
        )
        run.params(params)
        run.metrics(metrics)
        run.artifacts(out_dir)
        return run.run_id


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="backtest")
def _hydra_main(cfg: DictConfig) -> None:
    call(run, cfg, log, verb="backtest")


def main() -> None:
    entry("backtest", _hydra_main)


if __name__ == "__main__":
    main()
