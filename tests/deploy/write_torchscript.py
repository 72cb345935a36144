"""Writes a scripted model for tests/deploy/test_predictor.cpp (Python's PyTorch, any version).

usage: write_torchscript.py OUT_DIR
OUT_DIR/model.pt: torch.jit.script of Conv-BN-ReLU-Pool-Flatten-Linear (seeded, BN statistics
set, eval mode); OUT_DIR/input.bin (4x1x8x8 float32) and OUT_DIR/output.bin (4x5 logits from
Python). Exit 77 when torch is not importable.
"""
import sys

try:
    import torch
except ImportError:
    print("missing Python package: torch (python3-torch)")
    sys.exit(77)

out = sys.argv[1]
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
with torch.no_grad():
    model[1].running_mean.normal_(0, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
model.eval()
scripted = torch.jit.script(model)
scripted.save(f"{out}/model.pt")
x = torch.randn(4, 1, 8, 8)
with torch.no_grad():
    y = model(x)
x.numpy().tofile(f"{out}/input.bin")
y.numpy().tofile(f"{out}/output.bin")
