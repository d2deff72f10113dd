"""Smaller and faster variants of an embedding model, checked against it.

usage: quantize.py [--model models/nose-embedder.onnx] [--out-dir models]
                   [--calib 48] [--eval 96] [--threads 2] [--no-fp16]
                   [--exclude NODE_NAME ...]

Reads any model with the service's contract ((N,3,S,S) float32 in, (N,512)
float32 out) and writes next to it:

- <name>.int8.onnx: static int8 QDQ. Weights of every Conv are int8, one
  symmetric scale per output channel; the activations entering every Conv
  and Add are uint8 with a scale and zero point from calibration; Conv biases
  are int32 at the product of the two scales. ONNX Runtime's CPU provider
  fuses these QuantizeLinear/DequantizeLinear pairs into QLinearConv and
  QLinearAdd at load (graph optimisation "all", as the server sets it). The
  embedding head (global pool, projection, normalisation) stays float. If
  the least agreeing evaluation render falls below cosine 0.999, the first
  Conv (which sees the image itself) is left float and the model made again.
- <name>.fp16.onnx: float16 weights widened back to float32 when the model
  loads (a Cast per weight, folded by ONNX Runtime): half the file to
  download, float32 arithmetic, so embeddings within float16 rounding of
  the original's and no faster.

Calibration (--calib-dir DIR: the platform's own photos instead of renders,
advisable before switching a deployment to int8): the activation ranges come
from running the float model itself
in onnxruntime-node (models/train/onnx-probe.mjs; Debian has no Python
onnxruntime) on rendered noses (models/train/render.py, the training
generator), every tensor to quantize exposed as an extra output; the range
is the per-batch minimum and maximum averaged over batches (robust to a
single outlier), widened to include 0. Evaluation uses other dogs than
calibration. Nothing here depends on the current weights: run it again after
training a new model.

Also writes <name>.variants.json: the SHA-256 of the model the variants were
made from and of each variant, with the figures below. The server refuses
to run a variant (MODEL_PRECISION) whose source is not MODEL_PATH's file.

Prints, per variant: cosine of its embedding with the float model's on the
evaluation renders (mean, p1, min), the file size, and batch-1 latency in
onnxruntime-node (p50 of --threads intra-op threads) next to the float
model's, measured in turns.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import render  # noqa: E402

QUANTIZED_INPUTS_OF = ("Conv", "Add")
# Least cosine with the float model's embedding a variant must keep on every evaluation render.
BAR = 0.999


def renders(count, seed, size):
    """`count` captures, two per dog, as (count, 3, size, size) float32 in [0, 1] (render_capture's own LANCZOS)."""
    out = np.zeros((count, 3, size, size), np.float32)
    for i in range(count):
        rng = np.random.default_rng([seed, i // 2, i % 2])
        ident = render.make_identity(np.random.default_rng([seed, i // 2]))
        img = np.asarray(render.render_capture(ident, rng), np.float32) / 255.0
        if img.shape[:2] != (size, size):
            from PIL import Image

            img = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS), np.float32) / 255.0
        out[i] = img.transpose(2, 0, 1)
    return out


def photos(directory, count, size):
    """Up to `count` JPEG/PNG photos from `directory`, preprocessed as the service does (Pillow LANCZOS, /255, CHW)."""
    from PIL import Image, ImageOps

    files = sorted(f for f in os.listdir(directory) if f.lower().endswith((".jpg", ".jpeg", ".png")))[:count]
    if not files:
        raise SystemExit(f"no JPEG or PNG photos in {directory}")
    out = np.zeros((len(files), 3, size, size), np.float32)
    for i, f in enumerate(files):
        with Image.open(os.path.join(directory, f)) as im:
            img = ImageOps.exif_transpose(im).convert("RGB").resize((size, size), Image.LANCZOS)
        out[i] = (np.asarray(img, np.float32) / 255.0).transpose(2, 0, 1)
    return out


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr, np.float32))


def node(*args):
    return subprocess.run(["node", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def embed(model_path, data_npy, out_npy):
    node(os.path.join(HERE, "onnx-embed.mjs"), model_path, data_npy, out_npy, "16")
    return np.load(out_npy)


def latency(model_path, threads, runs=30):
    return json.loads(node(os.path.join(HERE, "onnx-probe.mjs"), "latency", model_path, str(threads), str(runs)).strip().splitlines()[-1])


def topo_sort(graph):
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i == "" or i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise SystemExit("graph has a cycle or a missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def tensors_to_quantize(model, exclude):
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for n in model.graph.node:
        if n.op_type not in QUANTIZED_INPUTS_OF or n.name in exclude:
            continue
        acts = n.input[:1] if n.op_type == "Conv" else n.input
        for t in acts:
            if t and t not in inits and t not in consts and t not in names:
                names.append(t)
    return names


def calibrate(model, names, calib_npy, tmp):
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    have = {o.name for o in aug.graph.output}
    for t in names:
        if t not in have:
            aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    path = os.path.join(tmp, "calibration.onnx")
    onnx.save(aug, path)
    out = os.path.join(tmp, "ranges.json")
    node(os.path.join(HERE, "onnx-probe.mjs"), "ranges", path, calib_npy, out, "8")
    with open(out) as f:
        return json.load(f)


def uint8_params(lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def quantize_int8(model, ranges, names, exclude):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_inits, new_nodes = [], []
    act_scale = {}
    # Activations: one Q/DQ pair right after the tensor, used by its Conv/Add consumers.
    for t in names:
        r = ranges[t]
        scale, zp = uint8_params(r["avgMin"], r["avgMax"])
        act_scale[t] = scale
        s_name, z_name, q_name, dq_name = f"{t}_scale", f"{t}_zp", f"{t}_q", f"{t}_dq"
        new_inits += [numpy_helper.from_array(np.array(scale, np.float32), s_name), numpy_helper.from_array(np.array(zp, np.uint8), z_name)]
        new_nodes += [
            helper.make_node("QuantizeLinear", [t, s_name, z_name], [q_name], name=f"{t}_Q"),
            helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name], name=f"{t}_DQ"),
        ]
        for n in g.node:
            if n.op_type in QUANTIZED_INPUTS_OF and n.name not in exclude:
                for i, x in enumerate(n.input):
                    if x == t and (n.op_type != "Conv" or i == 0):
                        n.input[i] = dq_name
    # Weights (per output channel, symmetric int8) and biases (int32) of every Conv.
    for n in g.node:
        if n.op_type != "Conv" or n.name in exclude or n.input[1] not in inits:
            continue
        x = n.input[0][: -len("_dq")] if n.input[0].endswith("_dq") else None
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        w_scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
        wq = np.clip(np.round(w / w_scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        base = n.input[1]
        new_inits += [
            numpy_helper.from_array(wq, f"{base}_q"),
            numpy_helper.from_array(w_scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{base}_zp"),
        ]
        new_nodes.append(
            helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zp"], [f"{base}_dq"], name=f"{base}_DQ", axis=0)
        )
        n.input[1] = f"{base}_dq"
        if len(n.input) > 2 and n.input[2] in inits and x in act_scale:
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
            b_scale = (act_scale[x] * w_scale).astype(np.float32)
            bq = np.round(b / b_scale).astype(np.int32)
            bb = n.input[2]
            new_inits += [
                numpy_helper.from_array(bq, f"{bb}_q"),
                numpy_helper.from_array(b_scale, f"{bb}_scale"),
                numpy_helper.from_array(np.zeros(w.shape[0], np.int32), f"{bb}_zp"),
            ]
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{bb}_q", f"{bb}_scale", f"{bb}_zp"], [f"{bb}_dq"], name=f"{bb}_DQ", axis=0))
            n.input[2] = f"{bb}_dq"
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    topo_sort(g)
    return model


def widen_fp16(model):
    g = model.graph
    casts, kept = [], []
    for init in g.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32 or a.size < 16:
            kept.append(init)
            continue
        half = numpy_helper.from_array(a.astype(np.float16), f"{init.name}_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}_widen", to=TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(kept)
    g.node.extend(casts)
    topo_sort(g)
    return model


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cosine_rows(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=os.path.join(ROOT, "models", "nose-embedder.onnx"))
    p.add_argument("--out-dir", default=None)
    p.add_argument("--calib", type=int, default=48, help="calibration renders (two per dog), or photos with --calib-dir")
    p.add_argument("--calib-dir", default=None, help="calibrate on these photos (e.g. the platform's own) instead of renders")
    p.add_argument("--eval", type=int, default=96, help="evaluation renders, other dogs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-fp16", action="store_true")
    p.add_argument("--exclude", nargs="*", default=[], help="node names left in float32")
    p.add_argument("--seed", type=int, default=20261206)
    a = p.parse_args()
    model = onnx.load(a.model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = dims[2].dim_value or 224
    stem = os.path.splitext(os.path.basename(a.model))[0]
    out_dir = a.out_dir or os.path.dirname(os.path.abspath(a.model))
    os.makedirs(out_dir, exist_ok=True)
    exclude = set(a.exclude)
    with tempfile.TemporaryDirectory() as tmp:
        source = f"photos from {a.calib_dir}" if a.calib_dir else "renders"
        print(f"{a.calib} calibration {source} and {a.eval} evaluation renders ({size} px)", flush=True)
        calib = photos(a.calib_dir, a.calib, size) if a.calib_dir else renders(a.calib, a.seed, size)
        ev = renders(a.eval, a.seed + 1, size)
        calib_npy, eval_npy = os.path.join(tmp, "calib.npy"), os.path.join(tmp, "eval.npy")
        save_npy(calib_npy, calib)
        save_npy(eval_npy, ev)
        ref = embed(a.model, eval_npy, os.path.join(tmp, "ref.npy"))
        variants = {}
        int8_path = os.path.join(out_dir, f"{stem}.int8.onnx")
        # Every Conv first; if the least agreeing render falls below the bar, the first Conv
        # (the stem, which sees the image itself and is most sensitive) stays float.
        first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
        for attempt in (exclude, exclude | {first_conv}):
            names = tensors_to_quantize(model, attempt)
            ranges = calibrate(model, names, calib_npy, tmp)
            q = quantize_int8(onnx.load(a.model), ranges, names, attempt)
            onnx.checker.check_model(q)
            onnx.save(q, int8_path)
            cos = cosine_rows(ref, embed(int8_path, eval_npy, os.path.join(tmp, "int8.npy")))
            print(f"int8 with {len(attempt)} node(s) left float: cosine min {cos.min():.5f}", flush=True)
            if cos.min() >= BAR:
                break
        variants["int8"] = int8_path
        float_nodes = sorted(attempt)
        if not a.no_fp16:
            h = widen_fp16(onnx.load(a.model))
            onnx.checker.check_model(h)
            variants["fp16"] = os.path.join(out_dir, f"{stem}.fp16.onnx")
            onnx.save(h, variants["fp16"])
        # The server checks these before it runs a variant (MODEL_PRECISION): a variant
        # left from an earlier model is refused instead of served under the new card.
        report = {"model": os.path.basename(a.model), "source_sha256": sha256_of(a.model), "calibration": f"{len(calib)} {source}", "evaluation": a.eval, "quantized_tensors": len(names), "int8_float_nodes": float_nodes, "bar": BAR, "variants": {}}
        # Latency in turns (float, variant, float, ...) so both see the same moments of a shared machine.
        lat = {k: [] for k in ["fp32", *variants]}
        for _ in range(3):
            for k in lat:
                lat[k].append(latency(a.model if k == "fp32" else variants[k], a.threads)["p50"])
        fp32_ms = float(np.median(lat["fp32"]))
        failed = []
        print(f"fp32: {os.path.getsize(a.model) / 1e6:.1f} MB, batch-1 p50 {fp32_ms:.2f} ms ({a.threads} threads)")
        for k, path in variants.items():
            emb = embed(path, eval_npy, os.path.join(tmp, f"{k}.npy"))
            cos = cosine_rows(ref, emb)
            ms = float(np.median(lat[k]))
            r = {
                "file": os.path.basename(path),
                "sha256": sha256_of(path),
                "mb": os.path.getsize(path) / 1e6,
                "cosine_mean": float(cos.mean()),
                "cosine_p1": float(np.percentile(cos, 1)),
                "cosine_min": float(cos.min()),
                "p50_ms": ms,
                "fp32_p50_ms": fp32_ms,
                "speedup": fp32_ms / ms,
            }
            if r["cosine_min"] >= BAR:
                report["variants"][k] = r
            else:
                failed.append(k)
            verdict = "meets" if r["cosine_min"] >= BAR else ("mean meets" if r["cosine_mean"] >= BAR else "BELOW")
            print(
                f"{k}: {r['mb']:.1f} MB, cosine with fp32 mean {r['cosine_mean']:.5f} p1 {r['cosine_p1']:.5f} min {r['cosine_min']:.5f}"
                f" ({verdict} the 0.999 bar), batch-1 p50 {ms:.2f} ms = {r['speedup']:.2f}x fp32"
            )
        with open(os.path.join(out_dir, f"{stem}.variants.json"), "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        if failed:
            # Left out of the record, so the server refuses to run them (MODEL_PRECISION).
            sys.exit(f"{', '.join(failed)} below the {BAR} bar on the least agreeing render: not recorded in {stem}.variants.json")


if __name__ == "__main__":
    main()
