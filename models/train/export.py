"""ONNX export of the embedder with a dynamic batch axis, onnx.checker, and a
PyTorch vs onnxruntime-node parity check."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

OPSET = 17


def export_onnx(model, path):
    import onnx
    model = model.eval()
    x = torch.rand(2, 3, 224, 224)
    tmp = path + ".tmp"
    torch.onnx.export(model, x, tmp, input_names=["input"], output_names=["embedding"],
                      dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=OPSET, do_constant_folding=True)
    m = onnx.load(tmp)
    onnx.checker.check_model(m)
    os.replace(tmp, path)
    return os.path.getsize(path)


def parity(model, path, n=6, seed=0):
    """Max |PyTorch - ONNX| over n inputs (random and rendered-like), via onnxruntime-node."""
    rng = np.random.default_rng(seed)
    u8 = (rng.random((n, 224, 224, 3)) * 255).astype(np.uint8)
    a = common.embed_torch(model, u8)
    b = common.embed_onnx(path, u8, batch=3)
    return float(np.abs(a - b).max())
