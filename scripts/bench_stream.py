"""Streaming and batch scoring against the bare network forward, measured in the same run.

    .venv/bin/python scripts/bench_stream.py [--bars 1000000] [--threads 1]

Prints (issue #16's targets in brackets):
- single-bar latency p50/p99 of `scorer.update(bar)` (validation, features, window, model,
  calibration) for logistic, tree and TCN; the TCN's as a ratio to one bare forward of one
  window (nn.Module, batch 1) [logistic < 0.3 ms; TCN < 1.0 ms and ratio <= 2]; and the old
  path (predict() on the last bars_read bars) for reference;
- many assets: `update_many` of N assets' bars as one forward, N = 1, 10, 100, 500 [TCN 500
  assets < 50 ms per bar-step];
- batch scoring of a year of 15m windows with predict_bars vs the bare forward of the same
  windows at the same batch size (256) [>= 0.9x, >= 30k windows/s];
- peak memory scoring `--bars` bars (tracemalloc peak of Python/numpy allocations, and the
  process's peak RSS growth) [< 1 GiB].
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _train(kind: str, tmp: str) -> object:
    from phat.cli.config import compose, validate
    from phat.pipeline import train
    from phat.registry.artifact import load_artifact

    ov = [
        f"model={kind}",
        f"out_dir={tmp}/{kind}",
        "metrics.bootstrap_n=5",
        "data.synthetic.periods=8000",
        "trainer.max_epochs=1",
        "model.ladder=off",
    ]  # fmt: skip  (speed of each kind: keep the model, not a rung)
    return load_artifact(
        train(validate("train", compose("train", ov)), f"{tmp}/{kind}").artifact_dir
    )


def _rows(frame) -> list[dict]:
    return [
        {"timestamp": t, **r} for t, r in zip(frame.index, frame.to_dict("records"), strict=True)
    ]


def _latencies(scorer: object, rows: list[dict]) -> list[float]:
    """Milliseconds of each `scorer.update(row)`, in order."""
    out = []
    for r in rows:
        t = time.perf_counter()
        scorer.update(r)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _pct(xs: list[float]) -> str:
    return f"p50 {np.percentile(xs, 50):.3f} ms, p99 {np.percentile(xs, 99):.3f} ms"


def main() -> None:
    import torch

    from phat.data.synthetic import SyntheticConfig, generate
    from phat.models.baselines import WindowData
    from phat.models.tcn import INFER_BATCH, WindowBatches

    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory", help=argparse.SUPPRESS)  # internal: one scoring, own process
    a = ap.parse_args()
    if a.memory:
        torch.set_num_threads(a.threads)
        return memory(a.memory, a.bars)
    default_threads = torch.get_num_threads()  # what a user's process has
    torch.set_num_threads(a.threads)
    year = generate(SyntheticConfig(periods=35_040, seed=3)).bars
    rows = _rows(year.iloc[:3000])
    with tempfile.TemporaryDirectory() as tmp:
        models = {k: _train(k, tmp) for k in ("logistic", "tree", "tcn")}
        tcn = models["tcn"]
        net = tcn.model.net.eval()
        spec = tcn.feature_spec
        feats = spec.normalize(spec.compute_raw(year))
        ends = np.arange(spec.bars_read - 1, len(year))
        ds = WindowBatches(feats, ends, np.zeros(len(ends)), spec.window)

        # The bare forward: one window, batch 1 (the reference for the single-bar ratio).
        bare = []
        with torch.inference_mode():
            for i in range(2000):
                x, _ = ds[[i]]
                t = time.perf_counter()
                net(x)
                bare.append((time.perf_counter() - t) * 1e3)
        bare_p50 = float(np.percentile(bare, 50))
        print(f"bare TCN forward, 1 window: {_pct(bare)}")
        user_loop(tcn, year, default_threads)
        torch.set_num_threads(a.threads)
        for kind, m in models.items():
            lat = _latencies(m.stream(), rows)[spec.bars_read :]  # scored bars (after warm-up)
            old = []
            for i in range(spec.bars_read, spec.bars_read + 200):
                t = time.perf_counter()
                m.predict(year.iloc[i - spec.bars_read + 1 : i + 1])
                old.append((time.perf_counter() - t) * 1e3)
            ratio = f"; ratio to the bare forward {np.percentile(lat, 50) / bare_p50:.2f}"
            print(f"{kind}: stream update {_pct(lat)}{ratio if kind == 'tcn' else ''}; "
                  f"old path (predict on the last {spec.bars_read} bars) p50 "
                  f"{np.percentile(old, 50):.3f} ms", flush=True)  # fmt: skip

        # An exchange calendar: the per-bar closure check (logistic read as XNYS).
        import dataclasses

        import exchange_calendars as xc
        import pandas as pd

        xnys = dataclasses.replace(models["logistic"],
                                   data_spec={**models["logistic"].data_spec, "calendar": "XNYS"})  # fmt: skip
        sessions = xc.get_calendar("XNYS").sessions_in_range("2024-01-16", "2024-03-08")
        opens = [pd.Timestamp(d).tz_localize("UTC") + pd.Timedelta("14h30min") for d in sessions]
        idx = pd.DatetimeIndex([o + k * pd.Timedelta("15min") for o in opens for k in range(26)])
        eq_rows = _rows(year.iloc[: len(idx)].set_axis(idx))
        lat = _latencies(xnys.stream(), eq_rows)
        print(f"logistic under XNYS ({len(sessions)} sessions of 15m bars): stream update "
              f"{_pct(lat)}", flush=True)  # fmt: skip

        # Many assets: one bar-step of N assets, one forward.
        frames = [generate(SyntheticConfig(periods=400, seed=100 + i)).bars for i in range(500)]
        steps = [_rows(f) for f in frames]
        for kind in ("logistic", "tcn"):
            for n in (1, 10, 100, 500):
                sc = models[kind].stream()
                for j in range(spec.bars_read + 5):
                    sc.update_many({f"A{i}": steps[i][j] for i in range(n)})
                lat = []
                for j in range(spec.bars_read + 5, spec.bars_read + 25):
                    step = {f"A{i}": steps[i][j] for i in range(n)}
                    t = time.perf_counter()
                    sc.update_many(step)
                    lat.append((time.perf_counter() - t) * 1e3)
                print(f"{kind}: {n} assets per bar-step {_pct(lat)}", flush=True)

        # Batch: a year of windows, predict_bars vs the bare forward at the same batch size.
        with torch.inference_mode():
            t = time.perf_counter()
            for i in range(0, len(ends), INFER_BATCH):
                x, _ = ds[list(range(i, min(i + INFER_BATCH, len(ends))))]
                net(x)
            bare_s = time.perf_counter() - t
        t = time.perf_counter()
        tcn.predict_bars(year)
        ours = time.perf_counter() - t
        print(f"batch, a year of 15m windows ({len(ends)}): predict_bars {len(ends) / ours:,.0f} "
              f"windows/s (features, validation, calibration included), bare forward "
              f"{len(ends) / bare_s:,.0f} windows/s at batch {INFER_BATCH}; ratio "
              f"{bare_s / ours:.2f}", flush=True)  # fmt: skip
        # The model path alone (WindowData + logits) on the same windows.
        t = time.perf_counter()
        tcn.model.logits(WindowData(feats, spec.window), ends)
        model_only = time.perf_counter() - t
        print(f"  model.logits alone: {len(ends) / model_only:,.0f} windows/s; ratio to the "
              f"bare forward {bare_s / model_only:.2f}")  # fmt: skip

        for kind in ("logistic", "tcn"):  # each in a fresh process: its own peak RSS
            art = Path(tmp) / kind / "model"
            out = subprocess.run([sys.executable, __file__, "--memory", str(art), "--bars",
                                  str(a.bars)], capture_output=True, text=True, check=True)  # fmt: skip
            print(f"{kind}: {out.stdout.strip()}", flush=True)


def plain_tcn(n_features: int, channels: int, levels: int, kernel_size: int) -> object:
    """A causal TCN of the same size written with nothing but nn.Conv1d (left padding by
    F.pad, ReLU, residual 1x1 where widths differ, a linear head on the last step): the
    reference a user would time, independent of phat's module."""
    import torch
    from torch import nn

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList()
            self.skips = nn.ModuleList()
            c_in = n_features
            for lvl in range(levels):
                d = 2**lvl
                self.convs.append(nn.ModuleList([nn.Conv1d(c_in, channels, kernel_size, dilation=d),
                                                 nn.Conv1d(channels, channels, kernel_size, dilation=d)]))  # fmt: skip
                self.skips.append(
                    nn.Conv1d(c_in, channels, 1) if c_in != channels else nn.Identity()
                )
                c_in = channels
            self.head = nn.Linear(channels, 1)

        def forward(self, x):  # [B, F, T]
            for lvl, (c1, c2) in enumerate(self.convs):
                pad = (kernel_size - 1) * 2**lvl
                h = torch.relu(c1(nn.functional.pad(x, (pad, 0))))
                h = torch.relu(c2(nn.functional.pad(h, (pad, 0))))
                x = torch.relu(h + self.skips[lvl](x))
            return self.head(x[:, :, -1])[:, 0]

    return Plain().eval()


def user_loop(tcn: object, year: object, threads: int) -> None:
    """What a user's loop does: torch's default threads, bars as pandas rows (iterrows: a
    Timestamp name and numpy floats), `update(row)` on the last 3,000 bars; against one forward
    of a plain nn.Conv1d TCN of the same size, batch 1, timed in the same process."""
    import cProfile
    import pstats

    import torch

    torch.set_num_threads(threads)
    p = tcn.model.arch  # type: ignore[attr-defined]
    spec = tcn.feature_spec  # type: ignore[attr-defined]
    ref = plain_tcn(spec.n_features, int(p.get("channels", 24)), int(p.get("levels", 5)),
                    int(p.get("kernel_size", 3)))  # fmt: skip
    x = torch.randn(1, spec.n_features, spec.window)
    bare = []
    with torch.inference_mode():
        for _ in range(2000):
            t = time.perf_counter()
            ref(x)
            bare.append((time.perf_counter() - t) * 1e3)
    frame = year.iloc[-3000:]  # type: ignore[attr-defined]
    sc = tcn.stream()  # type: ignore[attr-defined]
    lat = []
    for _, row in frame.iterrows():
        t = time.perf_counter()
        sc.update(row)
        lat.append((time.perf_counter() - t) * 1e3)
    lat = lat[spec.bars_read :]
    ratio = np.percentile(lat, 50) / np.percentile(bare, 50)
    print(f"user loop ({threads} torch threads, pandas rows): TCN update {_pct(lat)}; plain "
          f"nn.Conv1d TCN forward, batch 1: {_pct(bare)}; ratio {ratio:.2f}", flush=True)  # fmt: skip
    sc2 = tcn.stream()  # type: ignore[attr-defined]
    prof = cProfile.Profile()
    prof.enable()
    for _, row in frame.iterrows():
        sc2.update(row)
    prof.disable()
    st = pstats.Stats(prof).sort_stats("cumulative")
    total = max(st.total_tt, 1e-9)  # type: ignore[attr-defined]
    parts = {"validation (_check)": "_check", "features and window (_apply)": "_apply",
             "model + calibration (_score)": "_score"}  # fmt: skip
    shares = []
    for label, fn in parts.items():
        cum = sum(v[3] for k, v in st.stats.items() if k[2] == fn)  # type: ignore[attr-defined]
        shares.append(f"{label} {cum / total:.0%}")
    print("  where the time goes (cProfile, same loop): " + ", ".join(shares), flush=True)


def memory(artifact: str, bars: int) -> None:
    """Score `bars` bars with a loaded model; print the time, the tracemalloc peak (numpy and
    Python allocations) and this process's peak RSS growth over its state before scoring."""
    from phat.data.synthetic import SyntheticConfig, generate
    from phat.registry.artifact import load_artifact

    model = load_artifact(artifact)
    frame = generate(SyntheticConfig(periods=bars, seed=9)).bars
    model.predict_bars(frame.iloc[:2000])  # imports and first-call allocations
    import gc

    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t = time.perf_counter()
    p = model.predict_bars(frame)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scoring {bars:,} bars ({int(p['p_hat'].notna().sum()):,} scored) took {dt:.1f} s; "
          f"peak traced memory {peak:,.0f} MiB; peak RSS growth while scoring "
          f"{max(rss - rss0, 0):,.0f} MiB (process peak {rss:,.0f} MiB, of which the input frame "
          f"{frame.memory_usage().sum() / 2**20:,.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
