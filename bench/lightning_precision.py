#!/usr/bin/env python3
"""The same precision benchmark as bench/gpu_precision.cpp, under PyTorch Lightning (for
scripts/gpu-check on a GPU machine, where the PyTorch wheel and Lightning are installed).

Same models (frugal::models::SmallCnn and ResNet18), same data (Fashion-MNIST IDX files, same
normalisation), AdamW(1e-3), same batch and step counts; Trainer without progress bar, logger or
checkpointing (Lightning's own overhead benchmark settings). Prints samples/s and peak CUDA
memory and writes JSON.
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError:  # older installs
    import pytorch_lightning as pl


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


def resnet18():
    layers = [nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout in (64, 128, 256, 512):
        layers += [BasicBlock(cin, cout, 1 if cout == 64 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


class Module(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def run(model, precision, x, y, batch, steps):
    torch.manual_seed(0)
    n = min(len(x), batch * (steps + 10))
    ds = torch.utils.data.TensorDataset(x[:n], y[:n])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
    module = Module(small_cnn() if model == "cnn" else resnet18())
    common = dict(accelerator="gpu", devices=1, precision=precision, enable_progress_bar=False,
                  logger=False, enable_checkpointing=False, enable_model_summary=False,
                  num_sanity_val_steps=0)
    pl.Trainer(max_steps=10, **common).fit(module, loader)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    pl.Trainer(max_steps=steps, **common).fit(module, loader)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"model": model, "precision": precision,
            "samples_per_second": steps * batch / seconds,
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["cnn", "resnet18"])
    p.add_argument("--json")
    a = p.parse_args()
    images = read_idx(f"{a.data_dir}/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(f"{a.data_dir}/train-labels-idx1-ubyte.gz").astype(np.int64)
    x = (torch.from_numpy(images).unsqueeze(1) - 0.2860) / 0.3530
    y = torch.from_numpy(labels)
    results = []
    for model in a.models:
        for precision in ("32", "bf16-mixed", "16-mixed"):
            r = run(model, precision, x, y, a.batch, a.steps)
            print(f"{r['model']:9s} {r['precision']:11s} {r['samples_per_second']:12.1f} "
                  f"{r['peak_mb']:12.1f}", flush=True)
            results.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
