"""The Python side of bench_lightning: a plain PyTorch loop and PyTorch Lightning's Trainer (as
users run it, and stripped), on the same SmallCnn, data and optimizer as the C++ side.

Served by bench_lightning (one child process, kept alive so that imports and data loading are
paid once): it prints "ready torch <v> lightning <v>", then answers
  run <variant> <batch> <k> <precision>   -> "result <seconds> <samples>"
      variant: torch | lightning | stripped; k: accumulate_grad_batches; precision: 32 | bf16-mixed
  check <batch> <steps> <init.bin> <final.bin> -> "checked <max abs difference>"
      Lightning (stripped) from the parameters in init.bin (float32, SmallCnn's parameter order),
      dropout off, the first batch*steps samples in order: its final parameters against final.bin
      (what frugal's Trainer ended with from the same start).
Stand-alone: --startup-probe <variant> prints "first_step <unix time>" at the first optimizer step
and exits (bench_lightning measures process start to first step).

Needs the venv's Python (.deps/venv: torch 2.11, pytorch-lightning 2.6.6: scripts/python-requirements.txt).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_loop import load, small_cnn  # noqa: E402  (same data and model as bench/python_loop.py)

import pytorch_lightning as pl  # noqa: E402


class Module(pl.LightningModule):
    def __init__(self, model, probe=False):
        super().__init__()
        self.model = model
        self.probe = probe

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.probe:
            print(f"first_step {time.time():.6f}", flush=True)
            os._exit(0)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=1e-2)


def loader(x, y, batch, shuffle, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                       shuffle=shuffle, generator=g)


def trainer(variant, k, precision, root, limit=None):
    kw = dict(max_epochs=1, accelerator="cpu", devices=1, accumulate_grad_batches=k,
              precision="bf16-mixed" if precision == "bf16-mixed" else "32-true",
              default_root_dir=root)
    if limit is not None:
        kw["limit_train_batches"] = limit
    if variant == "stripped":
        kw.update(enable_progress_bar=False, logger=False, enable_checkpointing=False,
                  enable_model_summary=False)
    # "lightning": the defaults, as users run it: progress bar, CSVLogger (TensorBoard is not
    # installed), a ModelCheckpoint at the epoch end, the model summary.
    return pl.Trainer(**kw)


def run_torch(x, y, batch, k, precision, seed):
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    model.train()
    data = loader(x, y, batch, True, seed)
    start = time.perf_counter()
    for i, (xb, yb) in enumerate(data):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = nn.functional.cross_entropy(model(xb), yb)
        (loss / k).backward()
        if (i + 1) % k == 0 or i + 1 == len(data):
            opt.step()
            opt.zero_grad()
    return time.perf_counter() - start


def run_lightning(x, y, variant, batch, k, precision, seed):
    torch.manual_seed(seed)
    module = Module(small_cnn())
    with tempfile.TemporaryDirectory() as root:
        t = trainer(variant, k, precision, root)
        data = loader(x, y, batch, True, seed)
        start = time.perf_counter()
        t.fit(module, data)
        seconds = time.perf_counter() - start
    return seconds


def read_params(path, model):
    flat = np.fromfile(path, dtype=np.float32)
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[offset:offset + n].copy()).view_as(p))
            offset += n
    assert offset == flat.size, f"{path}: {flat.size} floats, the model has {offset}"
    return flat


def check(x, y, batch, steps, init_path, final_path):
    module = Module(small_cnn(dropout=0.0))
    read_params(init_path, module.model)
    with tempfile.TemporaryDirectory() as root:
        t = trainer("stripped", 1, "32", root, limit=steps)
        t.fit(module, loader(x[:batch * steps], y[:batch * steps], batch, False, 0))
    mine = torch.cat([p.detach().flatten() for p in module.model.parameters()]).numpy()
    frugal = np.fromfile(final_path, dtype=np.float32)
    moved = float(np.abs(mine - np.fromfile(init_path, dtype=np.float32)).max())
    return float(np.abs(mine - frugal).max()), moved


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--samples", type=int, default=3200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--startup-probe", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import warnings
    warnings.filterwarnings("ignore")
    x, y = load(args.data_dir, args.samples)
    if args.startup_probe:
        torch.manual_seed(args.seed)
        with tempfile.TemporaryDirectory() as root:
            trainer(args.startup_probe, 1, "32", root).fit(
                Module(small_cnn(), probe=True), loader(x, y, 64, True, args.seed))
        return
    print(f"ready torch {torch.__version__} lightning {pl.__version__}", flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        if w[0] == "quit":
            return
        try:
            if w[0] == "run" and len(w) == 5:
                variant, batch, k, precision = w[1], int(w[2]), int(w[3]), w[4]
                if variant == "torch":
                    s = run_torch(x, y, batch, k, precision, args.seed)
                else:
                    s = run_lightning(x, y, variant, batch, k, precision, args.seed)
                print(f"result {s:.6f} {x.size(0)}", flush=True)
            elif w[0] == "check" and len(w) == 5:
                diff, moved = check(x, y, int(w[1]), int(w[2]), w[3], w[4])
                print(f"checked {diff:.9g} {moved:.9g}", flush=True)
            else:
                print(f"error unknown request: {line.strip()}", flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the parent
            print(f"error {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
