"""`phat backtest signal_source=... horizon=... [data.path=...]` (= `python -m phat.backtest`):
resolve the signal binding once, score, run the policy per book, log one MLflow run and write
decisions.parquet, trades.parquet and equity.png under out_dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from phat.cli import CONF_DIR, call, entry
from phat.data import as_utc
from phat.errors import RegistryUnavailable
from phat.tagnames import Tag

log = logging.getLogger("phat.backtest")


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve the binding once, score, run the policy, log one MLflow run."""
    from phat.pipeline import horizon_spec, load_bars
    from phat.registry.client import model_name_for
    from phat.registry.recorder import recorder
    from phat.trading.backtest import (
        build_policy,
        build_triggers,
        cost_kwargs,
        evaluation_start,
        plot_equity,
        run_backtest,
    )
    from phat.trading.signals import for_asset, p_hat_frame, resolve

    rec = recorder(cfg["tracking"])  # the command's one connection
    timeframe, _, horizon_id = horizon_spec(cfg)
    policy = build_policy(cfg["policy"]["params"])
    model_name = model_name_for(cfg)
    strict = bool(cfg["signal"]["strict"])
    resolved = resolve(str(cfg["signal_source"]), model_name, horizon_id, strict=strict)
    binding = resolved.binding
    # A bound model reads the data under its own DataSpec (calendar, max_gap), as in training.
    bars, _ = load_bars(cfg, timeframe, resolved.model)
    try:
        start = evaluation_start(binding, model_name, cfg["backtest"]["start"])
    except RegistryUnavailable as e:  # the proxy needs no registry: carry on, and say so
        log.warning("%s; the backtest window is the whole history (set backtest.start)", e)
        start = None
    end = cfg["backtest"]["end"]
    if hasattr(bars, "assets"):  # a universe binding on its universe: every asset
        return _run_universe(cfg, rec, resolved, bars, start, end, policy, timeframe)
    resolved = for_asset(resolved, bars.symbol)  # a universe model: the asset's map and alarm
    signal = p_hat_frame(resolved, bars.frame, dict(cfg["signal"]["proxy"]), strict=strict)
    trigger = build_triggers(cfg, bars)
    keep = np.ones(len(bars), dtype=bool)
    if start is not None:
        keep &= bars.index >= start
    if end:
        keep &= bars.index < as_utc(end)
    if keep.sum() < 2:
        from phat.errors import DataValidationError

        raise DataValidationError(
            f"evaluation window from {start} to {end} holds {int(keep.sum())} bars"
        )
    frame = bars.frame[keep]
    if resolved.model is not None:  # a bound model must score the window, not hand it to the proxy
        p_model = np.where(signal["source"].to_numpy() == "model", signal["p_hat"], np.nan)
        resolved.model.check_coverage(
            p_model[keep],
            int(bars.report["gaps"]),
            float(cfg["signal"]["min_scored_share"]),
            f"phat backtest signal_source={binding.signal_source} ({binding.model_name} "
            f"v{binding.model_version})",
            from_start=bool(keep[0]),
            reasons=signal["fallback_reason"].to_numpy()[keep],
        )
    result = run_backtest(
        frame,
        signal[keep],
        trigger[keep],
        policy,
        binding,
        **cost_kwargs(cfg, bars.symbol, timeframe),
    )
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    result.decisions.to_parquet(out_dir / "decisions.parquet")
    result.trades.to_parquet(out_dir / "trades.parquet")
    plot_equity(
        result,
        out_dir / "equity.png",
        f"{binding.signal_source} on {bars.symbol} {horizon_id}",
    )
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    run_name = f"backtest-{binding.signal_source}-{bars.symbol}"
    try:
        run_id = _log(rec, cfg, run_name, binding, frame, bars, result.metrics, out_dir)
    except Exception as e:
        from phat.errors import is_store_failure

        if not is_store_failure(e):  # a bug in logging: an error (exit 1), the files kept
            log.error(
                "logging the backtest failed; decisions, trades and equity are in %s", out_dir
            )
            raise
        # the store is down: the decisions are on disk, say where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning(
            "NOTHING WAS LOGGED to MLflow at %s (%s); decisions, trades and equity are in %s",
            rec.uri,
            first[:200],
            out_dir,
        )
        run_id = None
    m = result.metrics
    print(
        f"phat backtest: {binding.signal_source} (model {binding.model_name or '-'} "
        f"v{binding.model_version or '-'}) on {bars.symbol}, {int(m['bars'])} bars from "
        f"{frame.index[0]} | pnl_net {m['pnl_net'] * 1e4:.1f} bps, sharpe {m['sharpe']:.2f}, "
        f"max_drawdown {m['max_drawdown'] * 1e4:.1f} bps, churn {m['churn']:.3f}/day, cost "
        f"{m['cost_bps']:.1f} bps, trades {int(m['trade_count'])}, isolation "
        f"{m['isolation_compliance']:.2f}, fallback bars {int(m['fallback_bars'])} | "
        f"run {run_id or '(not logged)'} | files {out_dir}"
    )
    return {"run_id": run_id, "binding": binding, "metrics": result.metrics, "result": result}


def _run_universe(
    cfg: dict[str, Any],
    rec: Any,
    resolved: Any,
    bars: Any,
    start: Any,
    end: Any,
    policy: Any,
    timeframe: str,
) -> dict[str, Any]:
    """A universe binding on its universe: the reference policy on each asset under that
    asset's map and alarm (trading.signals.for_asset; an asset on the proxy by its own alarm
    says so in its decisions), decisions and trades per asset (files with a `symbol` column,
    learning-book tags as for one asset), the book's metrics (aggregate_metrics) and an
    equity figure of the book and of each asset; one MLflow run."""
    import pandas as pd

    from phat.trading.backtest import (
        aggregate_metrics,
        build_triggers,
        cost_kwargs,
        plot_equity_panels,
        run_backtest,
    )
    from phat.trading.signals import for_asset, p_hat_frame

    strict = bool(cfg["signal"]["strict"])
    binding = resolved.binding
    results, metrics, frames = {}, {}, []
    for a in bars.assets:
        view = for_asset(resolved, a.symbol)
        signal = p_hat_frame(view, a.bars.frame, dict(cfg["signal"]["proxy"]), strict=strict)
        keep = np.ones(len(a.bars), dtype=bool)
        if start is not None:
            keep &= a.bars.index >= start
        if end:
            keep &= a.bars.index < as_utc(end)
        if keep.sum() < 2:
            log.warning("%s: %d bars in the evaluation window; left out", a.symbol, keep.sum())
            continue
        if view.model is not None:  # a bound model must score the window (as for one asset)
            p_model = np.where(signal["source"].to_numpy() == "model", signal["p_hat"], np.nan)
            view.model.check_coverage(
                p_model[keep], int(a.bars.report.get("gaps", 0)),
                float(cfg["signal"]["min_scored_share"]),
                f"phat backtest signal_source={binding.signal_source}, asset {a.symbol}",
                from_start=bool(keep[0]), reasons=signal["fallback_reason"].to_numpy()[keep],
            )  # fmt: skip
        trigger = build_triggers(cfg, a.bars)
        r = run_backtest(a.bars.frame[keep], signal[keep], trigger[keep], policy, binding,
                         **cost_kwargs(cfg, a.symbol, timeframe))  # fmt: skip
        results[a.symbol], metrics[a.symbol] = r, r.metrics
        frames.append(a.bars.frame[keep])
    if not results:
        from phat.errors import DataValidationError

        raise DataValidationError(f"no asset has 2 bars in the evaluation window {start} .. {end}")
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for what in ("decisions", "trades"):
        pd.concat(
            [getattr(r, what).assign(symbol=s) for s, r in results.items()], ignore_index=True
        ).to_parquet(out_dir / f"{what}.parquet")
    pd.DataFrame(metrics).T.rename_axis("symbol").to_csv(out_dir / "per_asset.csv")
    plot_equity_panels(results, out_dir / "equity.png",
                       f"{binding.signal_source} on {bars.symbol}: equal-weight book")  # fmt: skip
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    book = aggregate_metrics(metrics)
    frame = pd.concat(frames).sort_index()
    run_id = _log(rec, cfg, f"backtest-{binding.signal_source}-{bars.symbol}", binding, frame,
                  bars, book, out_dir)  # fmt: skip
    fallback = {s: int(m["fallback_bars"]) for s, m in metrics.items() if m["fallback_bars"]}
    print(
        f"phat backtest: {binding.signal_source} (model {binding.model_name or '-'} "
        f"v{binding.model_version or '-'}) on universe {bars.symbol}, {len(results)} assets | "
        f"pnl_net {book['pnl_net'] * 1e4:.1f} bps (sum), sharpe {book['sharpe']:.2f} (mean), "
        f"worst drawdown {book['max_drawdown'] * 1e4:.1f} bps, churn {book['churn']:.3f}/day, "
        f"isolation {book['isolation_compliance']:.2f}, fallback bars "
        f"{', '.join(f'{s} {n}' for s, n in fallback.items()) or 'none'} | run {run_id} | "
        f"files {out_dir}"
    )
    return {"run_id": run_id, "binding": binding, "metrics": book, "per_asset": metrics}


def _log(
    rec: Any,
    cfg: dict[str, Any],
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
                "horizon": str(cfg["horizon"]),
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
