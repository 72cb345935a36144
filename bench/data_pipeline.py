"""torchvision's side of bench/data_pipeline: ImageFolder + DataLoader(num_workers=2,
pin_memory=True, persistent_workers=True), RandomResizedCrop(224) + flip + ToTensor + Normalize,
batch 256, shuffled, 3 epochs. Prints one JSON line like bench_data_pipeline's."""
import argparse
import json
import os
import resource
import time

import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--batch", type=int, default=256)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--consumer", action="store_true")
p.add_argument("--first-batch-only", action="store_true")
args = p.parse_args()
torch.set_num_threads(1)

t0 = time.perf_counter()
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = ImageFolder(args.data, transform=tf)
loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                     pin_memory=True, persistent_workers=True)
first = None
steady_images = 0
checksum = 0.0
rss = []


def rss_mib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024.0


for e in range(args.epochs):
    if e == 1:
        steady_start = time.perf_counter()
    for x, y in loader:
        if first is None:
            first = time.perf_counter() - t0
            if args.first_batch_only:
                print(json.dumps({"loader": "torchvision", "images": len(ds),
                                  "first_batch_s": round(first, 3)}), flush=True)
                os._exit(0)  # not waiting for the workers' shutdown
        if args.consumer:
            checksum += float(x.sum())
        if e >= 1:
            steady_images += x.shape[0]
    # Main process + workers, sampled at the end of each epoch (the workers persist).
    rss.append(round(rss_mib(["self"] + [w.pid for w in loader._iterator._workers]), 1))
steady = time.perf_counter() - steady_start
del loader  # ends the workers, so their peak RSS counts in RUSAGE_CHILDREN
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss +
        args.workers * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
print(json.dumps({"loader": "torchvision", "consumer": args.consumer, "threads": args.workers,
                  "images": len(ds), "images_per_s": round(steady_images / steady, 1),
                  "first_batch_s": round(first, 3), "peak_rss_mib": round(peak, 1),
                  "rss_mib_per_epoch": rss,
                  "note": "peak RSS: main peak + workers x the largest worker peak (an upper bound)"}))
