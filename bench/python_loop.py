#!/usr/bin/python3
"""The plain PyTorch loop that bench_trainer_overhead compares frugal's Trainer with.

Same model as frugal::models::SmallCnn (src/models/small.cpp), same data (the first --samples
Fashion-MNIST training images, read from the same IDX .gz files and normalised as
src/data/datasets/mnist.cpp does), AdamW(lr=1e-3, weight_decay=1e-2, as frugal::AdamW), the same
thread count, one seeded randperm per epoch and one index_select per batch, forward,
cross_entropy, zero_grad, backward, step.

Stand-alone (one warm-up run, then --repeats timed runs per batch size; medians printed):

    /usr/bin/python3 bench/python_loop.py --batch-sizes 64,8 --repeats 5 --json python.json

Served (what bench_trainer_overhead does, to interleave runs with its own): with --serve it loads
torch and the data, prints "ready torch <version>, <n> threads", then answers each stdin line
"run <batch>" with one run and a line "result <seconds> <samples> <cpu seconds>"; "quit" or EOF ends it.

Needs Debian's /usr/bin/python3 with python3-torch (1.13) and numpy.
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Fashion-MNIST's training-set statistics, as in src/data/datasets/mnist.cpp.
MEAN = 0.2860
STD = 0.3530


def read_idx(path):
    """An IDX file of unsigned bytes (gzip'd or plain) as a uint8 numpy array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic not in (0x801, 0x803):
        raise ValueError(f"wrong magic number in IDX file {path}: {magic:#010x}")
    dims = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * d:8 + 4 * d], "big") for d in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find_file(data_dir, name):
    for candidate in (os.path.join(data_dir, name + ".gz"), os.path.join(data_dir, name)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file not found: {name}[.gz] in {data_dir}")


def load(data_dir, samples):
    images = read_idx(find_file(data_dir, "train-images-idx3-ubyte"))[:samples]
    labels = read_idx(find_file(data_dir, "train-labels-idx1-ubyte"))[:samples]
    # Same float32 ops, in the same order, as load_split() in src/data/datasets/mnist.cpp.
    x = torch.from_numpy(images.copy()).unsqueeze(1).to(torch.float32)
    x = x.div_(255.0).sub_(MEAN).div_(STD).contiguous()
    y = torch.from_numpy(labels.copy()).to(torch.int64)
    return x, y


def small_cnn(classes=10, in_channels=1, image_size=28, dropout=0.25):
    """frugal::models::SmallCnn (src/models/small.cpp)."""
    s = image_size // 2 // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * s * s, 128), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(128, classes))


def run(x, y, batch_size, epochs, seed):
    """One timed training run from a freshly seeded model; returns (seconds, samples, CPU s)."""
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    model.train()
    n = x.size(0)
    gen = torch.Generator()
    torch.manual_seed(seed)

    start = time.perf_counter()
    cpu_start = time.process_time()
    for epoch in range(epochs):
        gen.manual_seed(seed * 1000003 + epoch)
        order = torch.randperm(n, generator=gen)
        for begin in range(0, n, batch_size):
            index = order[begin:begin + batch_size]
            xb = x.index_select(0, index)
            yb = y.index_select(0, index)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    return seconds, epochs * n, time.process_time() - cpu_start


def serve(x, y, args):
    print(f"ready torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        if words[0] == "run" and len(words) == 2:
            try:
                seconds, samples, cpu = run(x, y, int(words[1]), args.epochs, args.seed)
                print(f"result {seconds:.6f} {samples} {cpu:.6f}", flush=True)
            except Exception as e:  # reported to the parent, which drops the Python loop
                print(f"error {type(e).__name__}: {e}", flush=True)
        else:
            print(f"error unknown request: {line.strip()}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--samples", type=int, default=6400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="64,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default="")
    p.add_argument("--serve", action="store_true", help="answer 'run <batch>' lines on stdin")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    x, y = load(args.data_dir, args.samples)
    if args.serve:
        serve(x, y, args)
        return

    print(f"python loop: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"SmallCnn, {x.size(0)} samples, {args.epochs} epoch(s) per run, "
          f"{args.repeats} repeats after 1 warm-up")
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        run(x, y, batch, args.epochs, args.seed)  # warm-up
        sps = []
        for _ in range(args.repeats):
            seconds, samples, _ = run(x, y, batch, args.epochs, args.seed)
            sps.append(samples / seconds)
        med = statistics.median(sps)
        print(f"batch {batch:>3}: {med:.0f} samples/s (median; runs: "
              f"{' '.join(f'{v:.0f}' for v in sps)})")
        results.append({"batch_size": batch, "python_samples_per_s": sps, "python_median": med})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "python_loop", "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "samples": x.size(0),
                       "epochs": args.epochs, "repeats": args.repeats, "results": results},
                      f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
