"""Smaller and faster variants of an embedding model, checked against it.

usage: quantize.py [--model models/nose-embedder.onnx] [--out-dir models]
                   [--calib 96] [--select 96] [--eval 192] [--max-float 4]
                   [--threads 2] [--no-fp16] [--exclude NODE_NAME ...]

Reads any model with the service's contract ((N,3,S,S) float32 in, (N,512)
float32 out) and writes next to it:

- <name>.int8.onnx: static int8 QDQ. Weights of every Conv are int8, one
  symmetric scale per output channel; the activations entering every Conv
  and Add are uint8 with a scale and zero point from calibration; Conv biases
  are int32 at the product of the two scales. ONNX Runtime's CPU provider
  fuses these QuantizeLinear/DequantizeLinear pairs into QLinearConv and
  QLinearAdd at load (graph optimisation "all", as the server sets it). The
  embedding head (global pool, projection, normalisation) stays float, and
  so does the first Conv, which sees the image itself (quantized, it alone
  took the least agreeing render from 0.9986 to 0.9907).
  - Each activation's range is the one that minimises the expected squared
    error of its uint8 copy (rounding inside the range, clipping outside),
    from a histogram of its values on the calibration renders; plain
    minimum/maximum spends most of the 256 steps on rare outliers.
  - Bias correction: rounding the weights shifts each output channel's mean
    by sum(w_int8 - w) * mean(input channel); that shift is taken off the
    Conv's bias (measured on the shipped model: the least agreeing render
    with weights alone quantized went from 0.99944 to 0.99988).
  - If agreement on the selection renders (other dogs than calibration and
    evaluation) is still short of the bar, the Conv or Add nodes whose
    staying float helps the mean agreement most are left float one at a
    time, at most --max-float of them: each costs its share of the speed.
- <name>.fp16.onnx: float16 weights widened back to float32 when the model
  loads (a Cast per weight, folded by ONNX Runtime): half the file to
  download, float32 arithmetic, so embeddings within float16 rounding of
  the original's and no faster.

Calibration (--calib-dir DIR: the platform's own photos instead of renders,
advisable before switching a deployment to int8): the activation statistics
come from running the float model itself in onnxruntime-node
(models/train/onnx-probe.mjs; Debian has no Python onnxruntime) on rendered
noses (models/train/render.py, the training generator), every tensor to
quantize exposed as an extra output: its extremes, then its histogram and
per-channel means. Calibration, selection and evaluation use different
dogs. Nothing here depends on the current weights: run it again after
training a new model.

The bar: on the evaluation renders, the cosine between a variant's embedding
and the float model's is at least 0.999 on average (BAR) and at least 0.998
for 99% of them (BAR_P1). The least agreeing render is reported beside them;
static int8 cannot promise it for every photo: a dark photo, or one with
glare, whose activations sit far from the calibration set's, is quantized
more coarsely. What decides whether int8 can replace fp32 is the card: run
`npm run model:eval -- synth:<cache> --model <name>.int8.onnx --against <name>.onnx`.

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
# Mean cosine with the float model's embedding a variant must keep on the evaluation renders, and the 1st
# percentile's floor: a tail of badly served photos must not hide behind a good mean.
BAR = 0.999
BAR_P1 = 0.998
CLIP_FRACTIONS = 81  # shrinks of the observed range tried, from 0.2 to 1.0 of it


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
    """{tensor: {lo, hi, means}}: the uint8 range picked from its histogram, and its per-channel means (or None)."""
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    have = {o.name for o in aug.graph.output}
    for t in names:
        if t not in have:
            aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    path = os.path.join(tmp, "calibration.onnx")
    onnx.save(aug, path)
    ranges, hists = os.path.join(tmp, "ranges.json"), os.path.join(tmp, "histograms.json")
    node(os.path.join(HERE, "onnx-probe.mjs"), "ranges", path, calib_npy, ranges, "8")
    node(os.path.join(HERE, "onnx-probe.mjs"), "histograms", path, calib_npy, ranges, hists, "8")
    with open(hists) as f:
        h = json.load(f)
    return {t: {**dict(zip(("lo", "hi"), least_error_range(h[t]))), "means": h[t]["channelMeans"]} for t in names}


def least_error_range(hist):
    """The [lo, hi] (a shrink of the observed one toward 0) whose uint8 copy has the least expected squared error."""
    lo, hi = hist["lo"], hist["hi"]
    counts = np.asarray(hist["counts"], np.float64)
    x = np.linspace(lo, hi, len(counts))
    p = counts / max(counts.sum(), 1)
    best = (np.inf, lo, hi)
    for f in np.linspace(0.2, 1.0, CLIP_FRACTIONS):
        a, b = lo * f, hi * f
        step = (b - a) / 255 if b > a else 1.0
        clipped = (p * (np.where(x < a, (x - a) ** 2, 0) + np.where(x > b, (x - b) ** 2, 0))).sum()
        rounding = p[(x >= a) & (x <= b)].sum() * step * step / 12
        if clipped + rounding < best[0]:
            best = (clipped + rounding, a, b)
    return float(best[1]), float(best[2])


def uint8_params(lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def quantize_int8(model, stats, names, exclude):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_inits, new_nodes = [], []
    act_scale = {}
    # Activations: one Q/DQ pair right after the tensor, used by its Conv/Add consumers.
    for t in names:
        scale, zp = uint8_params(stats[t]["lo"], stats[t]["hi"])
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
    quantize_padded_conv_outputs(g, names, exclude, new_nodes)
    # Weights (per output channel, symmetric int8) and biases (int32) of every Conv.
    for n in g.node:
        if n.op_type != "Conv" or n.name in exclude or n.input[1] not in inits:
            continue
        x = n.input[0][: -len("_dq")] if n.input[0].endswith("_dq") else None
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        w_scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
        wq = np.clip(np.round(w / w_scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        bias_shift = weight_rounding_shift(w, wq, w_scale, stats.get(x, {}).get("means"), n)
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
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) - bias_shift
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


def quantize_padded_conv_outputs(g, names, exclude, new_nodes):
    """A Conv whose output is only zero-padded before it is quantized gets a Q/DQ pair of its own, with the
    Pad output's scale and zero point: ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into one
    QLinearConv, and finds no such pattern with the Pad in between. Without it that Conv ran in float and
    dequantized its int8 weights at every run (two in the shipped model, 0.67 ms of a 5 ms run). Zero padding
    commutes with the quantization (zero becomes the zero point), so only the Conv's own arithmetic changes:
    integer accumulation instead of float (the shipped variant's embeddings: the same bits on 173 of 180 test
    photos, raw values within 0.002 on the rest)."""
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    consts = {i.name for i in g.initializer}
    for t in names:
        pad = producer.get(t)
        if pad is None or pad.op_type != "Pad" or (len(pad.input) > 2 and pad.input[2]):
            continue  # not a Pad, or one with a constant value of its own
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        conv = producer.get(pad.input[0])
        if mode != b"constant" or conv is None or conv.op_type != "Conv" or conv.name in exclude or conv.input[1] not in consts:
            continue
        if [r.name for r in readers.get(conv.output[0], [])] != [pad.name]:
            continue
        src = conv.output[0]
        new_nodes += [
            helper.make_node("QuantizeLinear", [src, f"{t}_scale", f"{t}_zp"], [f"{src}_q"], name=f"{src}_Q"),
            helper.make_node("DequantizeLinear", [f"{src}_q", f"{t}_scale", f"{t}_zp"], [f"{src}_dq"], name=f"{src}_DQ"),
        ]
        pad.input[0] = f"{src}_dq"


def weight_rounding_shift(w, wq, w_scale, input_means, conv):
    """Per output channel, the mean change of the Conv's output caused by rounding its weights.

    Zero without the input's channel means or for a grouped Conv. Padding makes the border's
    inputs zero rather than the mean, a small error at 224 px.
    """
    groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if input_means is None or groups != 1 or w.ndim != 4 or len(input_means) != w.shape[1]:
        return np.zeros(w.shape[0])
    err = wq.astype(np.float64) * w_scale.astype(np.float64).reshape(-1, 1, 1, 1) - w.astype(np.float64)
    return err.sum(axis=(2, 3)) @ np.asarray(input_means, np.float64)


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


def meets(cos):
    return float(cos.mean()) >= BAR and float(np.percentile(cos, 1)) >= BAR_P1


def cosine_rows(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=os.path.join(ROOT, "models", "nose-embedder.onnx"))
    p.add_argument("--out-dir", default=None)
    p.add_argument("--calib", type=int, default=96, help="calibration renders (two per dog), or photos with --calib-dir")
    p.add_argument("--calib-dir", default=None, help="calibrate on these photos (e.g. the platform's own) instead of renders")
    p.add_argument("--select", type=int, default=96, help="renders that choose the nodes left float, other dogs")
    p.add_argument("--eval", type=int, default=192, help="evaluation renders, other dogs again")
    p.add_argument("--max-float", type=int, default=4, help="Conv/Add nodes that may be left float to reach the bar")
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
        sel = renders(a.select, a.seed + 2, size)
        calib_npy, eval_npy, sel_npy = (os.path.join(tmp, f"{k}.npy") for k in ("calib", "eval", "select"))
        save_npy(calib_npy, calib)
        save_npy(eval_npy, ev)
        save_npy(sel_npy, sel)
        ref = embed(a.model, eval_npy, os.path.join(tmp, "ref.npy"))
        ref_sel = embed(a.model, sel_npy, os.path.join(tmp, "ref-select.npy"))
        variants = {}
        int8_path = os.path.join(out_dir, f"{stem}.int8.onnx")
        stats = calibrate(model, tensors_to_quantize(model, set()), calib_npy, tmp)

        def build(float_nodes):
            q = quantize_int8(onnx.load(a.model), stats, tensors_to_quantize(model, float_nodes), float_nodes)
            onnx.checker.check_model(q)
            onnx.save(q, int8_path)
            return int8_path

        def agreement(float_nodes):
            return cosine_rows(ref_sel, embed(build(float_nodes), sel_npy, os.path.join(tmp, "int8.npy")))

        first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
        attempt = exclude | {first_conv}
        cos = agreement(attempt)
        print(f"int8, {len(attempt)} node(s) float: selection renders cosine mean {cos.mean():.5f} p1 {np.percentile(cos, 1):.5f}", flush=True)
        if not meets(cos) and a.max_float > 0:
            # Which single node, left float, helps the mean agreement most: the errors are spread over
            # the network (no node stands out), so the mean ranks them more steadily than the worst render.
            gain = []
            for n in model.graph.node:
                if n.op_type in QUANTIZED_INPUTS_OF and n.name not in attempt:
                    gain.append((float(agreement(attempt | {n.name}).mean()), n.name))
            for _, name in sorted(gain, reverse=True)[: a.max_float]:
                attempt = attempt | {name}
                cos = agreement(attempt)
                print(f"int8, {name} float too: selection renders cosine mean {cos.mean():.5f} p1 {np.percentile(cos, 1):.5f}", flush=True)
                if meets(cos):
                    break
        build(attempt)
        names = tensors_to_quantize(model, attempt)
        variants["int8"] = int8_path
        float_nodes = sorted(attempt)
        if not a.no_fp16:
            h = widen_fp16(onnx.load(a.model))
            onnx.checker.check_model(h)
            variants["fp16"] = os.path.join(out_dir, f"{stem}.fp16.onnx")
            onnx.save(h, variants["fp16"])
        # The server checks these before it runs a variant (MODEL_PRECISION): a variant
        # left from an earlier model is refused instead of served under the new card.
        report = {"model": os.path.basename(a.model), "source_sha256": sha256_of(a.model), "calibration": f"{len(calib)} {source}", "selection": a.select, "evaluation": a.eval, "bar_rule": f"mean cosine with the float model on the evaluation renders >= {BAR}, 1st percentile >= {BAR_P1}", "quantized_tensors": len(names), "int8_float_nodes": float_nodes, "bar": BAR, "variants": {}}
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
            if meets(cos):
                report["variants"][k] = r
            else:
                failed.append(k)
            verdict = "meets" if meets(cos) else "BELOW"
            print(
                f"{k}: {r['mb']:.1f} MB, cosine with fp32 on the evaluation renders mean {r['cosine_mean']:.5f} p1 {r['cosine_p1']:.5f}"
                f" min {r['cosine_min']:.5f} ({verdict} the bar: mean >= {BAR}, p1 >= {BAR_P1}), batch-1 p50 {ms:.2f} ms = {r['speedup']:.2f}x fp32"
            )
        with open(os.path.join(out_dir, f"{stem}.variants.json"), "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        if failed:
            # Left out of the record, so the server refuses to run them (MODEL_PRECISION).
            sys.exit(f"{', '.join(failed)} below the bar (mean cosine >= {BAR}, p1 >= {BAR_P1}): not recorded in {stem}.variants.json")


if __name__ == "__main__":
    main()
