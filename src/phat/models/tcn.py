"""A small causal TCN trained with PyTorch Lightning, behind the same Model interface.

Network: residual blocks of two dilated causal Conv1d (left padding only, so output at step s
sees inputs <= s), ReLU and channel dropout (Dropout1d: element dropout cost 39% of a step
here), dilations 1, 2, 4, ...; the last step's channels feed a linear head that gives one
logit. With kernel 3 and 5 levels the receptive field is 1 + 2*(3-1)*(1+2+4+8+16) = 125 >= the
64-bar window.

Data path: the normalized feature rows [n_bars, F] stay one tensor; a batch of windows is cut
from its strided view (`unfold`) by index, so the series is never copied 64 times.

Determinism: `seed_everything(seed, workers=True)`, `torch.use_deterministic_algorithms(True)`,
a fixed thread count (`threads` in config; 1 vs 2 threads diverge), a seeded shuffle.

Batch-invariant inference (`infer`): torch's Conv1d kernels pick their algorithm, and with it the
order of the sums, from the whole input's shape. Measured with torch 2.13 on this CPU: with oneDNN
a batch of 1 differs from larger batches in the last bits; without oneDNN, the 1x1 and
dilation-1 convolutions differ for batches 1..10 and more; which batch sizes agree depends on the
layer's shape. `infer` computes each convolution as one matrix product per window (im2col by
slicing, then `torch.bmm` of the same [C_out, C_in*k] x [C_in*k, T] shape for every window) and
the head as a per-window product, so a window's logit is the same whatever else is in the batch:
a live bar scored alone equals the backtest's batch bit for bit, with no padding. It equals the
training graph's nn.Conv1d output to ~3e-7 (float32), and is faster at batch 1.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import numpy as np

from phat.models.baselines import WindowData

log = logging.getLogger(__name__)
# Windows per forward when scoring many (memory, not results: `infer` is batch-invariant).
INFER_BATCH = 256
VAL_BATCH = 64  # validation batches during training (unchanged, so training is as before)


def _torch():
    import torch

    return torch


def build_net(n_features: int, channels: int, levels: int, kernel_size: int, dropout: float):
    torch = _torch()
    nn = torch.nn

    class CausalConv(nn.Module):
        def __init__(self, c_in: int, c_out: int, dilation: int):
            super().__init__()
            self.pad = (kernel_size - 1) * dilation
            self.conv = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation)

        def forward(self, x):
            return self.conv(nn.functional.pad(x, (self.pad, 0)))

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, dilation: int):
            super().__init__()
            self.conv1 = CausalConv(c_in, c_out, dilation)
            self.conv2 = CausalConv(c_out, c_out, dilation)
            self.drop = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()
            self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

        def forward(self, x):
            h = self.drop(torch.relu(self.conv1(x)))
            h = self.drop(torch.relu(self.conv2(h)))
            return torch.relu(h + self.skip(x))

    class TCN(nn.Module):
        """x: [batch, n_features, window] -> logit [batch]."""

        def __init__(self):
            super().__init__()
            blocks = [
                Block(n_features if i == 0 else channels, channels, 2**i) for i in range(levels)
            ]
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(channels, 1)

        def forward(self, x):
            return self.head(self.blocks(x)[:, :, -1]).squeeze(-1)

    return TCN()


def _conv_bmm(conv: Any, x: Any, pad: int) -> Any:
    """Causal Conv1d as one [C_out, C_in*k] x [C_in*k, T] product per window (torch.bmm)."""
    torch = _torch()
    w = conv.weight
    c_out, c_in, k = w.shape
    d = int(conv.dilation[0])
    if pad:
        x = torch.nn.functional.pad(x, (pad, 0))
    t = x.shape[2] - d * (k - 1)
    cols = torch.cat([x[:, :, j * d : j * d + t] for j in range(k)], dim=1) if k > 1 else x
    wm = w.permute(0, 2, 1).reshape(c_out, k * c_in)
    return torch.bmm(wm.expand(x.shape[0], -1, -1), cols) + conv.bias[None, :, None]


def infer(net: Any, x: Any) -> Any:
    """The network's logits [batch] for windows x [batch, F, window], batch-invariant (see the
    module docstring); eval mode (no dropout)."""
    torch = _torch()
    for blk in net.blocks:
        h = torch.relu(_conv_bmm(blk.conv1.conv, x, blk.conv1.pad))
        h = torch.relu(_conv_bmm(blk.conv2.conv, h, blk.conv2.pad))
        skip = x if isinstance(blk.skip, torch.nn.Identity) else _conv_bmm(blk.skip, x, 0)
        x = torch.relu(h + skip)
    last = x[:, :, -1:].transpose(1, 2)  # [batch, 1, C]
    w = net.head.weight.t().expand(last.shape[0], -1, -1)  # [batch, C, 1]
    return torch.bmm(last, w)[:, 0, 0] + net.head.bias[0]


def receptive_field(levels: int, kernel_size: int) -> int:
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


class WindowBatches:
    """Map-style dataset indexed by a list of sample positions: returns a whole batch.

    Used with a BatchSampler, so each step does one gather on the strided view.
    """

    def __init__(self, features, ends: np.ndarray, y: np.ndarray, window: int):
        torch = _torch()
        self.view = torch.from_numpy(np.ascontiguousarray(features)).unfold(0, window, 1)
        self.starts = torch.from_numpy(np.asarray(ends, dtype=np.int64) - window + 1)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx):
        torch = _torch()
        idx = torch.as_tensor(idx)
        return self.view[self.starts[idx]], self.y[idx]


def make_loader(ds: WindowBatches, batch_size: int, shuffle: bool, seed: int):
    torch = _torch()
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        base = RandomSampler(range(len(ds)), generator=gen)
    else:
        base = SequentialSampler(range(len(ds)))
    return DataLoader(ds, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None)


def lightning_module(net, lr: float, weight_decay: float):
    import lightning as L

    torch = _torch()

    class TCNModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.best_loss = float("inf")
            self.best_epoch = -1
            self.best_state: dict[str, Any] | None = None

        def forward(self, x):
            return self.net(x)

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

        def training_step(self, batch, _):
            loss = self._loss(batch)
            self.log("tcn_train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
            return loss

        def validation_step(self, batch, _):
            self.log("tcn_val_loss", self._loss(batch), on_epoch=True, batch_size=len(batch[1]))

        def on_validation_epoch_end(self):
            # Keep the best weights in memory: the calibrated and logged model is the best
            # epoch's, with no checkpoint file (and no pickle) in between.
            if self.trainer.sanity_checking:
                return
            loss = float(self.trainer.callback_metrics["tcn_val_loss"])
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, self.current_epoch
                self.best_state = {
                    k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()
                }
            self.log("tcn_best_val_loss", self.best_loss)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    return TCNModule()


def _progress_bar(setting: Any) -> bool:
    if isinstance(setting, bool):
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


def quiet_lightning() -> None:
    """Lightning's INFO banners (GPU/TPU availability, tips) repeat through Hydra's handler."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def set_determinism(seed: int, threads: int) -> None:
    torch = _torch()
    import lightning as L

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    L.seed_everything(seed, workers=True, verbose=False)


class TCNModel:
    kind = "tcn"

    def __init__(
        self,
        channels: int,
        levels: int,
        kernel_size: int,
        dropout: float,
        seed: int = 0,
        threads: int = 1,
        trainer: dict[str, Any] | None = None,
        tracking: dict[str, Any] | None = None,
        window: int | None = None,
        n_features: int | None = None,
    ):
        from phat.errors import ConfigError

        if channels < 1 or levels < 1 or kernel_size < 2 or not 0 <= dropout < 1:
            raise ConfigError(
                f"model=tcn: channels={channels}, levels={levels}, kernel_size={kernel_size}, "
                f"dropout={dropout}; expected channels>=1, levels>=1, kernel_size>=2, 0<=dropout<1"
            )
        self.arch = {
            "channels": int(channels),
            "levels": int(levels),
            "kernel_size": int(kernel_size),
            "dropout": float(dropout),
        }
        self.seed = int(seed)
        self.threads = int(threads)
        self.trainer_cfg = dict(trainer or {})
        self.tracking = tracking
        self.window = window
        self.n_features = n_features
        self.net = None
        self.history: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    def fit(self, data: WindowData, train_ends, y_train, val_ends=None, y_val=None) -> None:  # type: ignore[no-untyped-def]
        import lightning as L

        from phat.errors import ConfigError

        if val_ends is None or len(val_ends) == 0:
            raise ConfigError("model=tcn needs a validation tail (trainer.val_fraction)")
        tc = self.trainer_cfg
        self.window, self.n_features = data.window, data.features.shape[1]
        if receptive_field(self.arch["levels"], self.arch["kernel_size"]) < self.window:
            log.warning(
                "TCN receptive field %d < window %d: the oldest bars of each window are unused",
                receptive_field(self.arch["levels"], self.arch["kernel_size"]),
                self.window,
            )
        quiet_lightning()
        set_determinism(self.seed, self.threads)
        self.net = build_net(self.n_features, **self.arch)
        module = lightning_module(self.net, float(tc["lr"]), float(tc["weight_decay"]))
        bs = int(tc["batch_size"])
        train_dl = make_loader(
            WindowBatches(data.features, train_ends, y_train, self.window), bs, True, self.seed
        )
        val_dl = make_loader(
            WindowBatches(data.features, val_ends, y_val, self.window),
            VAL_BATCH,
            False,
            self.seed,
        )
        logger: Any = False
        if self.tracking and self.tracking.get("run_id"):
            from lightning.pytorch.loggers import MLFlowLogger

            logger = MLFlowLogger(tracking_uri=self.tracking["uri"], run_id=self.tracking["run_id"])
            logger.finalize = lambda status="success": None  # the caller owns the run's lifecycle
        from lightning.pytorch.callbacks import EarlyStopping

        trainer = L.Trainer(
            max_epochs=int(tc["max_epochs"]),
            accelerator=str(tc["accelerator"]),
            devices=1,
            deterministic=bool(tc["deterministic"]),
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=_progress_bar(tc["progress_bar"]),
            enable_model_summary=False,
            callbacks=[EarlyStopping("tcn_val_loss", patience=int(tc["patience"]), mode="min")],
            num_sanity_val_steps=0,
            log_every_n_steps=50,
        )
        trainer.fit(module, train_dl, val_dl)
        if module.best_state is None:
            raise RuntimeError("TCN training produced no validation epoch")
        self.net = self.net.cpu()
        if bool(tc["restore_best"]):
            self.net.load_state_dict(module.best_state)
        self.net.eval()
        self.history = {
            "best_epoch": module.best_epoch,
            "best_val_loss": module.best_loss,
            "epochs": trainer.current_epoch,
        }

    def logits(self, data: WindowData, ends: np.ndarray) -> np.ndarray:
        torch = _torch()
        if self.net is None:
            raise RuntimeError("model is not fitted")
        ends = np.asarray(ends, dtype=np.int64)
        ds = WindowBatches(
            data.features, ends, np.zeros(len(ends), np.float32), self.window or data.window
        )
        out = np.empty(len(ends), dtype=np.float64)
        self.net.eval()
        with torch.inference_mode():
            for i in range(0, len(ends), INFER_BATCH):
                idx = np.arange(i, min(i + INFER_BATCH, len(ends)))
                x, _ = ds[idx]
                out[idx] = infer(self.net, x).double().numpy()
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        assert self.net is not None
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        cfg = {
            **self.arch,
            "seed": self.seed,
            "threads": self.threads,
            "window": self.window,
            "n_features": self.n_features,
        }
        return arrays, cfg

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> TCNModel:
        torch = _torch()
        m = cls(**config)
        m.net = build_net(int(config["n_features"]), **m.arch)
        m.net.load_state_dict(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        )
        m.net.eval()
        return m

    @property
    def n_parameters(self) -> int:
        if self.net is None:
            return 0
        return int(sum(p.numel() for p in self.net.parameters()))
