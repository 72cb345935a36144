"""The Python side of tests/deploy/test_torchscript.cpp (Python's PyTorch, the same release as the
LibTorch under test where one is installed).

usage: torchscript_oracle.py write OUT_DIR
  OUT_DIR/model.pt   torch.jit.script of Conv-BN-ReLU-Pool-Flatten-Linear, seeded, train mode;
                     its first convolution's bias saved frozen (requires_grad False)
  OUT_DIR/x.bin      32x1x8x8 float32 inputs, OUT_DIR/y.bin 32 int64 labels
  OUT_DIR/trained/NAME.bin  every parameter and buffer after Python trained the same module for
                     one epoch: SGD(lr 0.1), batches of 8 in order, cross-entropy, train mode
  OUT_DIR/names.txt  the state_dict names, one per line ("NAME dtype")
usage: torchscript_oracle.py run MODEL.pt X.bin OUT.bin
  torch.jit.load(MODEL), eval mode, no grad; its output on X (32x1x8x8) as float32 to OUT.
Exit 77 when torch is not importable.
"""
import os
import sys

try:
    import torch
except ImportError:
    print("missing Python package: torch (python3-torch)")
    sys.exit(77)


def write(out):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
    model[0].bias.requires_grad_(False)
    scripted = torch.jit.script(model)
    scripted.save(f"{out}/model.pt")
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 5, (32,))
    x.numpy().tofile(f"{out}/x.bin")
    y.numpy().tofile(f"{out}/y.bin")
    trained = torch.jit.load(f"{out}/model.pt")
    trained.train()
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    for i in range(0, 32, 8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(trained(x[i:i + 8]), y[i:i + 8])
        loss.backward()
        opt.step()
    os.makedirs(f"{out}/trained", exist_ok=True)
    with open(f"{out}/names.txt", "w") as names:
        for name, t in list(trained.named_parameters()) + list(trained.named_buffers()):
            t.detach().numpy().tofile(f"{out}/trained/{name}.bin")
            names.write(f"{name} {str(t.dtype).replace('torch.', '')}\n")


def run(model_path, x_path, out_path):
    model = torch.jit.load(model_path)
    model.eval()
    x = torch.from_numpy(__import__("numpy").fromfile(x_path, dtype="float32")).reshape(32, 1, 8, 8)
    with torch.no_grad():
        model(x).numpy().astype("float32").tofile(out_path)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4])
