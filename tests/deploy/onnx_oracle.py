"""The ONNX oracle for tests/deploy/test_onnx_export.cpp.

usage: onnx_oracle.py MODEL.onnx [INPUT.bin SHAPE OUTPUT.bin]...
Checks MODEL with onnx.checker (full check: shape inference too) and that it declares opset 17,
then runs each INPUT (raw float32, C order, SHAPE like 2x1x28x28) through onnxruntime's CPU
provider and writes the first output as raw float32 to OUTPUT. Prints 'shape OUT' per run.
Exit 77 when onnx, onnxruntime or numpy is not importable (the test skips), 1 on a failed check.
"""
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:  # the test skips with this message
    print(f"missing Python package: {e.name} (pip install onnx onnxruntime numpy)")
    sys.exit(77)


def main(argv):
    path = argv[1]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != 17:
        print(f"expected opset 17, got {opsets}")
        return 1
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runs = argv[2:]
    for i in range(0, len(runs), 3):
        shape = [int(d) for d in runs[i + 1].split("x")]
        x = np.fromfile(runs[i], dtype=np.float32).reshape(shape)
        y = session.run(None, {name: x})[0].astype(np.float32)
        np.ascontiguousarray(y).tofile(runs[i + 2])
        print("shape", "x".join(str(d) for d in y.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
