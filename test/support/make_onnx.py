"""Writes small ONNX models with chosen tensor contracts, for tests of how the
server treats user models (no training, no torch: onnx.helper only).

usage: make_onnx.py OUT [--size 224] [--dim 512] [--batch dynamic|1] [--seed 0] [--nan]
The model average-pools the image to 8x8, flattens and projects to `dim`:
deterministic, cheap, and different images give different vectors.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--size", type=int, default=224)
p.add_argument("--dim", type=int, default=512)
p.add_argument("--batch", default="dynamic")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--nan", action="store_true", help="emit NaN embeddings (sqrt of a negative)")
a = p.parse_args()

k = a.size // 8
batch = "N" if a.batch == "dynamic" else int(a.batch)
rng = np.random.default_rng(a.seed)
w = numpy_helper.from_array(rng.standard_normal((3 * 8 * 8, a.dim)).astype(np.float32), "w")
nodes = [
    helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
    helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
    helper.make_node("MatMul", ["flat", "w"], ["projected" if a.nan else "embedding"]),
]
if a.nan:
    nodes += [helper.make_node("Neg", ["projected"], ["neg"]), helper.make_node("Sqrt", ["neg"], ["embedding"])]
graph = helper.make_graph(
    nodes,
    "test-embedder",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, a.size, a.size])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, a.dim])],
    [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 7
onnx.checker.check_model(model)
onnx.save(model, a.out)
