"""Backtest: what a p_hat source does to trading, per book, under the reference (or a user's)
policy. Pure functions of bars, p_hat and triggers; the `phat backtest` verb is phat.cli.backtest.

Accounting: the weight held after bar t's close earns r_{t+1} = close[t+1]/close[t] - 1. A
rebalance at bar t costs |delta w| * (fee_bps + slippage) / 1e4, slippage = spread/2 in bps of
price where a spread column exists, else `costs.slippage_bps`. Two books: exposure decided from
a model-sourced p_hat is the learning book (its own cap, tagged trades), proxy-sourced exposure
the profit book; each is run by the policy separately and never shares a cap.

Metrics (docs/backtest.md): turnover (sum |delta w| per day), trade_count, churn (sign flips of
the held position per day), cost_bps (total costs in bps of capital), pnl_net (sum of net
returns), max_drawdown (largest peak-to-trough fall of cumulative net return, a positive
number), sharpe (annualized, per-bar net returns), exposure (mean |w|); the same per book with
`learning_` and `profit_` prefixes; isolation_compliance.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from phat.data import as_utc, parse_timeframe
from phat.data.universe import last_return
from phat.errors import ConfigError
from phat.tagnames import Tag

if TYPE_CHECKING:
    from phat.settings import BacktestConf, PromoteConf

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    decisions: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, float]
    equity: pd.Series


def isolation_compliance(trades: pd.DataFrame) -> float:
    """Fraction of model-sourced trades fully tagged (learning_book, experiment_id/variant)."""
    model = trades[trades["source"] == "model"] if len(trades) else trades
    if len(model) == 0:
        return 1.0
    ok = (
        (model["learning_book"] == True)  # noqa: E712 - explicit: a missing tag is not True
        & model["experiment_id"].astype(str).str.len().gt(0)
        & model["experiment_variant"].astype(str).str.len().gt(0)
    )
    return float(ok.mean())


def _book_metrics(
    w: np.ndarray, ret_next: np.ndarray, cost_rate: np.ndarray, days: float, bars_per_year: float
) -> dict[str, float]:
    dw = np.diff(np.concatenate([[0.0], w]))
    costs = np.abs(dw) * cost_rate
    gross = w * ret_next
    net = gross - costs
    eq = np.cumsum(net)
    peak = np.maximum.accumulate(np.concatenate([[0.0], eq]))[1:]
    nz = w[w != 0]
    flips = int(np.sum(np.sign(nz[1:]) != np.sign(nz[:-1]))) if len(nz) > 1 else 0
    sd = net.std()
    return {
        "turnover": float(np.abs(dw).sum() / days),
        "trade_count": float(np.count_nonzero(dw)),
        "churn": float(flips / days),
        "cost_bps": float(costs.sum() * 1e4),
        "pnl_net": float(net.sum()),
        "pnl_gross": float(gross.sum()),
        "max_drawdown": float(np.max(peak - eq)) if len(eq) else 0.0,
        "sharpe": float(net.mean() / sd * np.sqrt(bars_per_year)) if sd > 0 else 0.0,
        "exposure": float(np.abs(w).mean()),
    }


def run_backtest(
    frame: pd.DataFrame,
    signal: pd.DataFrame,
    trigger: np.ndarray,
    policy: Any,
    binding: Any,
    *,
    symbol: str,
    fee_bps: float,
    slippage_bps: float,
    timeframe: pd.Timedelta,
    target: np.ndarray | None = None,
    held: tuple[np.ndarray, np.ndarray] | None = None,
) -> BacktestResult:
    """Pure: bars, per-bar p_hat (with source) and triggers in; decisions, trades, metrics out.
    `target`, `held`: raw targets and the two books' weights set across a universe (a neutral
    book: backtest_assets), else the policy's own per asset."""
    from phat.trading.policy import trigger_names

    close = frame["close"].to_numpy()
    n = len(close)
    ret_next = np.zeros(n)
    ret_next[:-1] = close[1:] / close[:-1] - 1
    vol_hat, cost_rate = _vol_and_costs(frame, policy, fee_bps, slippage_bps)

    is_model = (signal["source"] == "model").to_numpy()
    p_hat = signal["p_hat"].to_numpy()
    if target is None:
        s, target = policy.target_raw(trigger, p_hat, vol_hat)
    else:  # set across the universe (backtest_assets): only the strength is still owed
        s = policy.signal_strength(trigger, p_hat)
    w_learn, w_profit = held or (
        policy.run_book(trigger, target, is_model, policy.learning_cap),
        policy.run_book(trigger, target, ~is_model, policy.profit_cap),
    )
    w = w_learn + w_profit
    dw = np.diff(np.concatenate([[0.0], w]))
    exp_id = binding.experiment_id
    decisions = pd.DataFrame(
        {
            "timestamp": frame.index,
            "symbol": symbol,
            "trigger_state": trigger_names(trigger),
            "signal_source": np.where(is_model, binding.signal_source, "proxy"),
            "model_version": np.where(is_model, binding.model_version, ""),
            "model_hash": np.where(is_model, binding.model_hash, ""),
            "p_hat_raw": signal["p_hat_raw"].to_numpy(),
            "p_hat": signal["p_hat"].to_numpy(),
            "signal_strength": s,
            "fallback_reason": signal["fallback_reason"].to_numpy(),
            "fallback_detail": signal.get(
                "fallback_detail", pd.Series("", signal.index)
            ).to_numpy(),
            "target_weight_raw": target,
            "target_weight_final": w,
            "delta_weight": dw,
            "learning_book": is_model,
            "experiment_id": np.where(is_model, exp_id, ""),
            "weight_learning": w_learn,
            "weight_profit": w_profit,
        }
    )
    trades = _trades(frame.index, symbol, close, cost_rate, w_learn, w_profit, binding)
    days = max(n * timeframe / pd.Timedelta(days=1), 1e-9)
    bars_per_year = pd.Timedelta(days=365) / timeframe
    metrics = _book_metrics(w, ret_next, cost_rate, days, bars_per_year)
    for book, wb in (("learning", w_learn), ("profit", w_profit)):
        metrics.update(
            {
                f"{book}_{k}": v
                for k, v in _book_metrics(wb, ret_next, cost_rate, days, bars_per_year).items()
            }
        )
    metrics["isolation_compliance"] = isolation_compliance(trades)
    metrics["bars"] = float(n)
    metrics["fallback_bars"] = float((~is_model).sum()) if binding.signal_source != "proxy" else 0.0
    equity = pd.Series(
        np.cumsum(w * ret_next - np.abs(dw) * cost_rate), index=frame.index, name="equity"
    )
    return BacktestResult(decisions, trades, metrics, equity)


def backtest_assets(
    inputs: dict[str, tuple[pd.DataFrame, pd.DataFrame, np.ndarray]],
    policy: Any,
    binding: Any,
    costs: dict[str, dict[str, Any]],
) -> dict[str, BacktestResult]:
    """The policy on each asset's bars ({symbol: (bars frame, signal, trigger)}, `costs`:
    cost_kwargs per symbol). A neutral policy (`policy.neutral`) first sets every asset's
    raw target across the universe at each bar (NeutralPolicy.cross_section); any other runs
    each asset alone."""
    targets: dict[str, np.ndarray | None] = dict.fromkeys(inputs)
    held: dict[str, tuple[np.ndarray, np.ndarray] | None] = dict.fromkeys(inputs)
    if getattr(policy, "neutral", False):
        targets, held = _neutral_book(inputs, policy)
    return {
        sym: run_backtest(
            frame,
            signal,
            trigger,
            policy,
            binding,
            **costs[sym],
            target=targets[sym],
            held=held[sym],
        )  # fmt: skip
        for sym, (frame, signal, trigger) in inputs.items()
    }


def _neutral_book(
    inputs: dict[str, tuple[pd.DataFrame, pd.DataFrame, np.ndarray]], policy: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A neutral book's raw targets, set across the universe at each bar (cross_section), and
    its two books' held weights, steps 5-7 taken by the book (run_book_across), per asset."""
    raw, trig, model = {}, {}, {}
    for sym, (frame, signal, trigger) in inputs.items():
        vol_hat = _vol_and_costs(frame, policy, 0.0, 0.0)[0]
        target = policy.target_raw(trigger, signal["p_hat"].to_numpy(), vol_hat)[1]
        raw[sym] = pd.Series(target, index=frame.index)
        trig[sym] = pd.Series(trigger, index=frame.index)
        model[sym] = pd.Series((signal["source"] == "model").to_numpy(), index=frame.index)
    table = pd.DataFrame(raw)  # bars x assets on the union of their timestamps
    table[:] = policy.cross_section(table.to_numpy())
    codes = pd.DataFrame(trig).reindex(table.index).fillna(0).to_numpy(np.int64)
    is_model = pd.DataFrame(model).reindex(table.index).fillna(False).to_numpy(bool)
    books = [
        pd.DataFrame(
            policy.run_book_across(codes, table.to_numpy(), active, cap),
            index=table.index,
            columns=table.columns,
        )  # fmt: skip
        for active, cap in ((is_model, policy.learning_cap), (~is_model, policy.profit_cap))
    ]
    targets, held = {}, {}
    for s in inputs:
        rows = inputs[s][0].index
        targets[s] = table[s].reindex(rows).to_numpy()
        held[s] = tuple(b[s].reindex(rows).to_numpy() for b in books)
    return targets, held


def exposure(results: dict[str, BacktestResult]) -> pd.DataFrame:
    """The book's exposure per bar across its assets: net (the sum of the held weights, long
    minus short), gross (the sum of their sizes) and how many assets had a bar."""
    held = pd.DataFrame(
        {s: r.decisions.set_index("timestamp")["target_weight_final"] for s, r in results.items()}
    ).sort_index()
    return pd.DataFrame({
        "net": held.sum(axis=1), "gross": held.abs().sum(axis=1), "assets": held.notna().sum(axis=1),
    })  # fmt: skip


def _vol_and_costs(
    frame: pd.DataFrame, policy: Any, fee_bps: float, slippage_bps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: the policy's volatility estimate (rolling std of 1-bar log returns over its
    vol_lookback, causal) and the cost rate of trading (fee plus half the spread where the bars
    carry one, else the configured slippage), as fractions of price."""
    close = frame["close"].to_numpy()
    r1 = last_return(close)
    lookback = int(getattr(policy, "vol_lookback", 64))
    vol_hat = pd.Series(r1).rolling(lookback, min_periods=8).std().to_numpy()
    if "spread" in frame.columns:
        slip = 0.5 * frame["spread"].to_numpy() / close  # half-spread, fraction of price
    else:
        slip = np.full(len(close), slippage_bps * 1e-4)
    return vol_hat, fee_bps * 1e-4 + slip


TRADE_COLUMNS = [
    "timestamp", "symbol", "book", "source", "delta_weight", "weight_after", "price", "cost",
    "learning_book", "experiment_id", "experiment_variant",
]  # fmt: skip


def _trades(
    index: pd.DatetimeIndex,
    symbol: str,
    close: np.ndarray,
    cost_rate: np.ndarray,
    w_learn: np.ndarray,
    w_profit: np.ndarray,
    binding: Any,
) -> pd.DataFrame:
    """One row per change of either book's weight: the learning book trades on the model,
    the profit book on the proxy, and only the learning book's trades carry the experiment."""
    exp_id, variant = binding.experiment_id, binding.experiment_variant
    rows = []
    for book, wb in (("learning", w_learn), ("profit", w_profit)):
        d = np.diff(np.concatenate([[0.0], wb]))
        learning = book == "learning"
        for t in np.flatnonzero(d):
            rows.append(
                {
                    "timestamp": index[t],
                    "symbol": symbol,
                    "book": book,
                    "source": "model" if learning else "proxy",
                    "delta_weight": float(d[t]),
                    "weight_after": float(wb[t]),
                    "price": float(close[t]),
                    "cost": float(abs(d[t]) * cost_rate[t]),
                    "learning_book": learning,
                    "experiment_id": exp_id if learning else "",
                    "experiment_variant": variant if learning else "",
                }
            )
    return pd.DataFrame(rows, columns=TRADE_COLUMNS)


def cost_kwargs(cfg: BacktestConf | PromoteConf, symbol: str, timeframe: str) -> dict[str, Any]:
    """`run_backtest`'s market arguments from config: one place for backtest and promotion."""
    return {
        "symbol": symbol,
        "fee_bps": float(cfg.costs.fee_bps),
        "slippage_bps": float(cfg.costs.slippage_bps),
        "timeframe": parse_timeframe(timeframe),
    }


def build_policy(params: dict[str, Any], label_kind: str | None = None) -> Any:
    """The policy object from `policy.params` (`_target_` names the class: the reference policy
    or the user's own); unknown or missing arguments are a ConfigError naming the class. For a
    relative-label model (`label_kind`) the reference policy becomes the neutral one (a belief
    that an asset beats its universe is traded long against short, never as a direction), and
    says so; a user's own class is used as given."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from phat.trading.policy import NeutralPolicy, ReferencePolicy

    def path(cls: type) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    params = dict(params)
    if label_kind == "relative" and params.get("_target_") == path(ReferencePolicy):
        log.warning("the model's label is relative: its book is the market-neutral reference "
                    "(policy=neutral), not the directional one")  # fmt: skip
        params["_target_"] = path(NeutralPolicy)
    try:
        return instantiate(params, _convert_="all")
    except InstantiationException as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"policy.params (_target_={params.get('_target_')}): {first[-1] if first else e}"
        ) from None


def build_triggers(cfg: BacktestConf | PromoteConf, bars: Any) -> np.ndarray:
    """Trigger codes per bar from `policy.trigger` (ema_trend, always_long, or a data column
    `trigger_state`; bars without a value in that column are `inactive`)."""
    from phat.data import read_column, read_table
    from phat.trading.policy import triggers_from

    trig_cfg = dict(cfg.policy.trigger)
    rule = trig_cfg.pop("rule")
    column = None
    if rule == "column":
        trig_cfg = {}
        from phat.data.universe import source_of

        if source_of(cfg.data) == "synthetic":
            raise ConfigError(
                "policy.trigger.rule=column needs data.path with a trigger_state column"
            )
        col = read_column(read_table(cfg.data.path), "trigger_state")
        column = col.reindex(bars.index).fillna("inactive").astype(str).to_numpy()
    return triggers_from(rule, bars.frame["close"].to_numpy(), column=column, **trig_cfg)


def evaluation_start(
    binding: Any, model_name: str | None, cfg_start: str | None
) -> pd.Timestamp | None:
    """Explicit `backtest.start`, else the bound model's test span start. A proxy run takes the
    test start of the production model, or of the newest version when none is live, so proxy
    and model figures compare on one window; with no model at all, the whole history."""
    if cfg_start:
        return as_utc(cfg_start)
    from phat.registry.versions import window_version

    name = binding.model_name or model_name
    if not name:
        return None
    mv = window_version(name, binding.model_version)
    if mv is None:
        return None
    window = json.loads(mv.tags[Tag.TRAINING_WINDOW]) if Tag.TRAINING_WINDOW in mv.tags else {}
    return pd.Timestamp(window["test"][0]) if "test" in window else None


def plot_equity(result: BacktestResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot(result.equity.index, result.equity.to_numpy() * 1e4, lw=1)
    a.set_ylabel("cumulative net return (bps)")
    a.set_title(title)
    d = result.decisions
    b.plot(d["timestamp"], d["weight_learning"], lw=0.8, label="learning book")
    b.plot(d["timestamp"], d["weight_profit"], lw=0.8, label="profit book")
    b.set_ylabel("weight")
    b.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def aggregate_metrics(per_asset: dict[str, dict[str, float]]) -> dict[str, float]:
    """A universe's backtest metrics from its assets' (an equal-weight book of one reference
    policy per asset): P&L, costs, trades and fallback bars summed; churn, turnover, exposure,
    Sharpe and pnl per asset averaged; the worst asset's drawdown; the lowest isolation
    compliance. One asset: its own metrics."""
    if len(per_asset) == 1:
        return dict(next(iter(per_asset.values())))
    rows = list(per_asset.values())
    out: dict[str, float] = {}
    for k in rows[0]:
        vals = [float(m[k]) for m in rows if k in m]
        if k == "max_drawdown":
            out[k] = max(abs(v) for v in vals)
        elif k == "isolation_compliance":
            out[k] = min(vals)
        elif k in ("pnl_net", "pnl_gross", "cost_bps", "trade_count", "fallback_bars", "bars"):
            out[k] = float(np.sum(vals))
        else:
            out[k] = float(np.mean(vals))
    out["assets"] = float(len(rows))
    return out


def plot_equity_panels(results: dict[str, BacktestResult], path: Path, title: str) -> None:
    """The universe's equity (the mean of its assets' cumulative net returns, an equal-weight
    book) above small multiples of each asset's (at most 24 panels, the first in symbol
    order; the title says how many more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {s: r.equity * 1e4 for s, r in sorted(results.items())}
    shown = list(curves)[:24]
    cols = min(6, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig = plt.figure(figsize=(2.4 * cols, 2.6 + 1.8 * rows))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.6] + [1] * rows)
    top = fig.add_subplot(grid[0, :])
    book = pd.concat(curves, axis=1).ffill().fillna(0.0).mean(axis=1)
    top.plot(book.index, book.to_numpy(), lw=1)
    more = len(curves) - len(shown)
    top.set_title(title + (f" ({more} assets not shown below)" if more else ""))
    top.set_ylabel("mean cum. net (bps)")
    for i, sym in enumerate(shown):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        ax.plot(curves[sym].index, curves[sym].to_numpy(), lw=0.7)
        ax.set_title(sym, fontsize=7)
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
