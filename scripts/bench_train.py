"""Lightning path vs a plain PyTorch loop: same TCN, same windows, same batches.

    python scripts/bench_train.py [--epochs 4] [--periods 35040] [--threads 2]

Epochs alternate (plain, Lightning, plain, ...) because this machine is shared and noisy: the
ratio of medians over interleaved epochs is what holds. Each side trains its own copy of the
network from the same initial weights on one year of 15m synthetic bars (the default data) and
runs one validation pass per epoch. The last line is `lightning_over_plain=<median ratio>`
(target <= 1.15). Also prints the parameter count, peak RSS, and single-window inference
latency (p50/p99) and throughput over a year of windows.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--periods", type=int, default=35040)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-samples", type=int, default=300)
    args = ap.parse_args()

    import lightning as L
    import torch

    from phat.contract.features import FeatureSpec
    from phat.contract.labels import LabelSpec, make_labels
    from phat.data.synthetic import SyntheticConfig, generate
    from phat.models.tcn import (
        INFER_BATCH,
        WindowBatches,
        build_net,
        lightning_module,
        make_loader,
        set_determinism,
    )

    set_determinism(0, args.threads)
    bars = generate(SyntheticConfig(periods=args.periods)).bars
    spec = FeatureSpec()
    raw = spec.compute_raw(bars)
    seg = np.zeros(len(bars), dtype=np.int64)
    y = make_labels(bars["close"].to_numpy(), seg, LabelSpec("15m", 1, "15m"))
    ends = np.flatnonzero(spec.valid_end_mask(raw, seg) & ~np.isnan(y))
    spec = spec.fit_normalization(raw, np.arange(len(raw)))
    feats = spec.normalize(raw)
    cut = int(len(ends) * 0.85)
    tr, va = ends[:cut], ends[cut + 128 :]
    train_ds = WindowBatches(feats, tr, y[tr], spec.window)
    val_ds = WindowBatches(feats, va, y[va], spec.window)

    net0 = build_net(spec.n_features, channels=24, levels=5, kernel_size=3, dropout=0.1)
    n_params = sum(p.numel() for p in net0.parameters())
    plain_net = copy.deepcopy(net0)
    opt = torch.optim.AdamW(plain_net.parameters(), lr=2e-3, weight_decay=1e-4)
    module = lightning_module(copy.deepcopy(net0), 2e-3, 1e-4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def plain_epoch(epoch: int) -> float:
        t = time.perf_counter()
        plain_net.train()
        for x, yy in make_loader(train_ds, 256, True, epoch):
            opt.zero_grad(set_to_none=True)
            loss = bce(plain_net(x), yy)
            loss.backward()
            opt.step()
        plain_net.eval()
        with torch.no_grad():
            for x, yy in make_loader(val_ds, INFER_BATCH, False, 0):
                bce(plain_net(x), yy)
        return time.perf_counter() - t

    def lightning_epoch(epoch: int) -> float:
        # A fresh one-epoch Trainer per call continues from the module's current weights.
        t = time.perf_counter()
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(
            module,
            make_loader(train_ds, 256, True, epoch),
            make_loader(val_ds, INFER_BATCH, False, 0),
        )
        return time.perf_counter() - t

    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(
        f"windows train={len(tr)} val={len(va)}  TCN parameters={n_params}  threads={args.threads}"
    )
    plain_t, light_t = [], []
    for e in range(args.epochs):
        p = plain_epoch(e)
        lt = lightning_epoch(e)
        plain_t.append(p)
        light_t.append(lt)
        print(f"epoch {e}: plain {p:6.2f} s   lightning {lt:6.2f} s   ratio {lt / p:5.3f}")

    # Inference: single-window latency and a year of windows in fixed batches.
    net = plain_net.eval()
    lat = []
    with torch.inference_mode():
        for i in range(args.latency_samples):
            x, _ = val_ds[[i % len(val_ds)]]
            t = time.perf_counter()
            net(x)
            lat.append((time.perf_counter() - t) * 1e3)
        all_ds = WindowBatches(feats, ends, y[ends], spec.window)
        t = time.perf_counter()
        for i in range(0, len(ends), INFER_BATCH):
            x, _ = all_ds[list(range(i, min(i + INFER_BATCH, len(ends))))]
            net(x)
        thr = len(ends) / (time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"single-window latency p50={np.percentile(lat, 50):.3f} ms p99={np.percentile(lat, 99):.3f} ms"
    )
    print(f"throughput={thr:,.0f} windows/s over {len(ends)} windows (batches of {INFER_BATCH})")
    print(
        f"peak_rss_mb={peak_mb:.0f}  feature_matrix_mb={feats.nbytes / 2**20:.1f}  "
        f"(all windows materialized would be {len(ends) * spec.window * spec.n_features * 4 / 2**20:.0f} MB)"
    )
    print(
        f"plain_median_s={statistics.median(plain_t):.2f} lightning_median_s={statistics.median(light_t):.2f}"
    )
    print(f"lightning_over_plain={statistics.median(light_t) / statistics.median(plain_t):.3f}")


if __name__ == "__main__":
    main()
