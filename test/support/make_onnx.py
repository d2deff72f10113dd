"""Writes small ONNX models with chosen tensor contracts, for tests of how the
server treats user models (no training, no torch: onnx.helper only).

usage: make_onnx.py OUT [--size 224] [--dim 512] [--batch dynamic|1] [--seed 0]
                        [--nan] [--kind projection|pattern] [--card] [--rotate SEED]

projection: average-pools the image to 8x8, flattens and projects to `dim`
  with fixed random weights: deterministic, cheap, any contract.
pattern: the mean-centred 8x8 grey thumbnail, zero-padded to 512. Crude but
  predictable: re-takes of one photo score cosine > 0.95 while different
  synthetic noses stay below 0.75, so registry flows can be tested with known
  verdicts. --card writes OUT.json with a calibration for it (duplicate
  refusal from similarity 0.97).
constant: one fixed unit vector nudged by 1e-3 of the pattern thumbnail:
  distinct photos get distinct embeddings, yet every pair scores cosine
  > 0.9999, so only keypoint geometry can tell two noses apart.
--rotate SEED: the output multiplied by a fixed random rotation (orthogonal
  matrix from SEED): cosines between its own embeddings are unchanged, so it
  scores photos exactly as the model without it, but its embeddings are
  unrelated to that model's (cosine near 0): a new model version whose
  vectors really differ, for rollout tests.
"""
import argparse
import json

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
p.add_argument("--kind", choices=["projection", "pattern", "constant"], default="projection")
p.add_argument("--card", action="store_true")
p.add_argument("--rotate", type=int, default=None, help="rotate the output by a fixed orthogonal matrix from this seed")
a = p.parse_args()

k = a.size // 8
batch = "N" if a.batch == "dynamic" else int(a.batch)
inits = []
if a.kind == "projection":
    rng = np.random.default_rng(a.seed)
    inits.append(numpy_helper.from_array(rng.standard_normal((3 * 8 * 8, a.dim)).astype(np.float32), "w"))
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["projected" if a.nan else "embedding"]),
    ]
else:
    out = "projected" if a.nan else "embedding"
    inits.append(numpy_helper.from_array(np.array([0, 0, 0, a.dim - 64], dtype=np.int64), "pads"))
    # The mean-centred 8x8 grey thumbnail, zero-padded to `dim`.
    pattern = "pattern" if a.kind == "constant" else out
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("Pad", ["centred", "pads"], [pattern]),
    ]
    if a.kind == "constant":
        # The thumbnail scaled down to a nudge on one fixed vector: distinct photos get distinct
        # embeddings (and pets distinct DIDs), yet every pair scores cosine > 0.9999.
        unit = np.zeros((1, a.dim), np.float32)
        unit[0, a.dim - 1] = 1.0
        inits += [numpy_helper.from_array(unit, "unit"), numpy_helper.from_array(np.array(1e-3, np.float32), "eps")]
        nodes += [helper.make_node("Mul", [pattern, "eps"], ["nudge"]), helper.make_node("Add", ["nudge", "unit"], [out])]
if a.nan:
    nodes += [helper.make_node("Neg", ["projected"], ["neg"]), helper.make_node("Sqrt", ["neg"], ["embedding"])]
if a.rotate is not None:
    q, r = np.linalg.qr(np.random.default_rng(a.rotate).standard_normal((a.dim, a.dim)))
    q = q * np.sign(np.diag(r))  # a unique orthogonal matrix for the seed
    inits.append(numpy_helper.from_array(q.astype(np.float32), "rotation"))
    nodes[-1].output[0] = "unrotated"
    nodes.append(helper.make_node("MatMul", ["unrotated", "rotation"], ["embedding"]))
graph = helper.make_graph(
    nodes,
    "test-embedder",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, a.size, a.size])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, a.dim])],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 7
onnx.checker.check_model(model)
onnx.save(model, a.out)
if a.card:
    card = {
        "name": f"test-{a.kind}",
        "version": f"test-{a.kind}-1",
        # duplicate_similarity differs from the server's default (0.95) so tests see the card's value used.
        "calibration": {
            "cosine": [-1, 0.75, 0.85, 0.9, 1],
            "similarity": [0, 0.6, 0.7, 0.85, 1],
            "duplicate_similarity": 0.97,
        },
    }
    with open(a.out[: -len(".onnx")] + ".json" if a.out.endswith(".onnx") else a.out + ".json", "w") as f:
        json.dump(card, f)
