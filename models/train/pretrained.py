"""Pretrained vision backbones for the nose embedder, converted from tfjs weights shipped in npm packages.

Fetch the weights first (npm registry only, into the gitignored cache/weights/):

    models/train/fetch-weights.sh

Use:

    from pretrained import build_backbone, PretrainedEmbedder
    bb = build_backbone("facerec")             # (N,3,224,224) in [0,1] -> (N, bb.out_dim) pooled features
    net = PretrainedEmbedder("facerec")        # same head as net.NoseEmbedder: linear 512 + BN-neck + L2 norm
    # or net.Net(backbone="facerec") / net.Net(backbone="mobilenetv2")
    python3 models/train/pretrained.py --check # both embedders: params, ONNX export (opset 17, dynamic
                                               # batch, via export.py) and onnxruntime-node parity
    python3 models/train/pretrained.py --parity /tmp/fa   # vs the original tfjs networks in Node (see parity())

Normalisation happens inside each backbone (each in its source's own convention), so, like
net.NoseEmbedder, the modules take RGB in [0,1].

"facerec"
    source    npm `@vladmandic/face-api@1.7.15`, files model/face_recognition_model.bin +
              model/face_recognition_model-weights_manifest.json (FaceRecognitionNet: 150x150 input,
              128-d descriptor; 8-bit quantized tfjs weights, a few float32 tensors).
    licence   the package is MIT (package.json "license": "MIT"; LICENSE "Copyright (c) Vladimir
              Mandic"). Its README says only "Pretrained models and their weights are included in
              `./model`" and credits the original weights to justadudewhohacks/face-api.js-models;
              the package states no separate licence for the weights, so they come under its MIT
              licence. Upstream, face-api.js's FaceRecognitionNet is the port of dlib's
              dlib_face_recognition_resnet_model_v1 (ResNet-34-like, metric-learned on ~3 M faces from
              FaceScrub, VGG-Face and scraped images), which davisking/dlib-models' README releases
              "into the public domain". Not verified here beyond the package contents.
    network   conv7x7/2 valid (32) + affine + ReLU, maxpool 3/2 valid; residual blocks 32x3,
              [down]64 x4, [down]128 x3, [down]256 x3, [down]256 (the "down" blocks: 3x3/2 valid
              conv, shortcut avgpool 2/2 + zero channels, main branch zero-padded bottom/right to
              the shortcut size); each conv has a bias followed by a per-channel affine ("scale",
              dlib's inference-time batch norm); global mean pool -> 256, fc 256x128 (no bias).
              Input: RGB*255 minus (122.782, 117.001, 104.298), /255.
    port      FaceRecNet below, op for op. By default the bias + affine pair of each conv is turned
              into Conv2d(bias=False) + BatchNorm2d whose eval-mode output is exactly the original
              (running_mean 0, running_var 1-eps); `calibrate_bn(model, images)` re-expresses the
              same function with the real activation statistics of `images` so that train-mode BN
              starts close to the pretrained function (call it once on a training batch before
              fine-tuning). `bn=False` keeps plain Conv2d(bias) + fixed per-channel affine.
    features  pooled 256-d (global mean of the last 256-channel map); `with_fc=True` appends the
              original 128-d descriptor layer. Works at any input size >= 131 px (so not with
              train.py --tiny's 96 px crops); trained at 150, run here at 224 unless resized by the caller.
    params    5,578,272 (backbone, bn=True: 5,571,168 conv weights + 7,104 BN affine), +32,768 with_fc;
              PretrainedEmbedder("facerec") 5,710,368. ONNX 22.9 MB.
    parity    128-d descriptor of one 150x150 image (random pixels; also a nose contact-sheet crop)
              vs the original FaceRecognitionNet.computeFaceDescriptor run in Node 20 by
              @vladmandic/face-api@1.7.15 dist/face-api.node-wasm.js on @tensorflow/tfjs 4.22.0, cpu
              backend: max abs diff 2.5e-7 (bn=True), 2.0e-7 (bn=False), descriptor values up to 0.40.
              The embedder's ONNX export vs PyTorch (onnxruntime-node, batch 3): 1.5e-7.

"mobilenetv2"
    source    npm `nsfwjs@4.4.0`, dist/models/mobilenet_v2/model.min.js + group1-shard1of1.min.js
              (UMD modules holding a tfjs *layers* model JSON (Keras 2.2.4 functional model,
              MobileNetV2 alpha 1.0 at 224, then Dense 256-128-5 softmax NSFW head) and the base64
              weight shard); fetch-weights.sh turns them into model.json + .bin.
    licence   MIT (package.json "license": "MIT", LICENSE "Copyright (c) 2019 Infinite Red, Inc.");
              no separate weights licence in the package.
    port      KerasGraph below interprets the Keras layer list (ZeroPadding2D, Conv2D,
              DepthwiseConv2D, BatchNormalization eps 1e-3, ReLU6, Add, pooling, Dense) into torch
              modules; the backbone stops at `out_relu` and global-mean-pools -> 1280-d. Input is
              [0,1] as nsfwjs feeds it (pixels/255, no mean/std). `classifier=True` keeps the
              NSFW head (5-way softmax: Drawing, Hentai, Neutral, Porn, Sexy).
    params    2,223,872 (backbone to out_relu; plus 34,112 BN running-stat buffers), +361,477 NSFW
              head; PretrainedEmbedder("mobilenetv2") 2,880,256. ONNX 11.5 MB.
    parity    one random 224x224 image vs the original layers model loaded with tf.loadLayersModel in
              Node (@tensorflow/tfjs 4.22.0, cpu): NSFW softmax max abs diff 3.6e-7, pooled out_relu
              1280-d features 7.5e-6 (values up to 1.8). ONNX vs PyTorch (onnxruntime-node): 2.9e-7.
              (nsfwjs's own head scores the nose-print contact sheet ~0.95 "Neutral".)

Weights are stored in tfjs manifests (weightsManifest[].paths, weights[] {name, shape, dtype,
quantization}); `read_tfjs_weights` reads the .bin files with numpy and dequantizes uint8/uint16
(q*scale+min) and float16.
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.environ.get("NOSEPAW_WEIGHTS", os.path.join(HERE, "cache", "weights"))
FACEREC_MANIFEST = os.path.join(WEIGHTS, "face-api-1.7.15", "face_recognition_model-weights_manifest.json")
MOBILENET_JSON = os.path.join(WEIGHTS, "nsfwjs-4.4.0", "mobilenet_v2", "model.json")
FACEREC_MEAN = (122.782, 117.001, 104.298)


# --------------------------------------------------------------------------- tfjs weights
def read_tfjs_weights(path):
    """tfjs weights manifest (a list of groups, or a model.json with `weightsManifest`) -> {name: float32 array}.

    Within a group, weights are concatenated across the group's shard files in manifest order."""
    with open(path) as f:
        m = json.load(f)
    groups = m["weightsManifest"] if isinstance(m, dict) else m
    base = os.path.dirname(path)
    out = {}
    sizes = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "float16": 2, "bool": 1}
    for g in groups:
        buf = b"".join(open(os.path.join(base, p), "rb").read() for p in g["paths"])
        off = 0
        for w in g["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            dt = q["dtype"] if q else w["dtype"]
            nbytes = n * sizes[dt]
            raw = np.frombuffer(buf, dtype={"float32": "<f4", "int32": "<i4", "uint8": "u1", "uint16": "<u2",
                                            "float16": "<f2", "bool": "u1"}[dt], count=n, offset=off)
            off += nbytes
            if q and dt in ("uint8", "uint16"):
                a = raw.astype(np.float64) * q["scale"] + q["min"]
            else:
                a = raw
            out[w["name"]] = np.asarray(a, dtype=np.float32).reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"{path}: group uses {off} bytes, shards hold {len(buf)}")
    return out


def _conv_w(a):   # tfjs/Keras conv kernel (kh,kw,cin,cout) -> torch (cout,cin,kh,kw)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))


def _need(path, what):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: run models/train/fetch-weights.sh {what}")


# --------------------------------------------------------------------------- face-api FaceRecognitionNet
class ConvAffine(nn.Module):
    """conv (+bias) then per-channel affine, as face-api's `convLayer`; stored as Conv2d + BatchNorm2d
    (bn=True, eval output identical) or Conv2d(bias) + fixed affine buffers (bn=False)."""

    def __init__(self, cin, cout, k, stride, pad, relu, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        if not bn:
            self.register_buffer("a", torch.ones(1, cout, 1, 1))
            self.register_buffer("b", torch.zeros(1, cout, 1, 1))
        self.relu = relu

    def load(self, w, b, s, beta):
        """w (kh,kw,cin,cout), conv bias b, affine s, beta: y = s*(conv(x)+b)+beta."""
        with torch.no_grad():
            self.conv.weight.copy_(_conv_w(w))
            b, s, beta = (torch.from_numpy(v) for v in (b, s, beta))
            if self.bn is None:
                self.conv.bias.copy_(b)
                self.a.copy_(s.view(1, -1, 1, 1))
                self.b.copy_(beta.view(1, -1, 1, 1))
            else:
                # eval BN: (x-m)/sqrt(v+eps)*g + bt with m=0, v=1-eps, g=s, bt=s*b+beta
                self.bn.running_mean.zero_()
                self.bn.running_var.fill_(1.0 - self.bn.eps)
                self.bn.weight.copy_(s)
                self.bn.bias.copy_(s * b + beta)

    def forward(self, x):
        x = self.conv(x)
        x = self.bn(x) if self.bn is not None else x * self.a + self.b
        return F.relu(x) if self.relu else x


class FaceResBlock(nn.Module):
    def __init__(self, cin, cout, down, bn=True):
        super().__init__()
        self.down = down
        self.extra = cout - cin
        self.c1 = ConvAffine(cin, cout, 3, 2 if down else 1, 0 if down else 1, True, bn)
        self.c2 = ConvAffine(cout, cout, 3, 1, 1, False, bn)

    def forward(self, x):
        y = self.c2(self.c1(x))
        if not self.down:
            return F.relu(y + x)
        r = F.avg_pool2d(x, 2, 2)
        if self.extra:
            r = torch.cat([r, torch.zeros_like(r)], 1)
        dh, dw = int(r.shape[2]) - int(y.shape[2]), int(r.shape[3]) - int(y.shape[3])
        if dh or dw:   # face-api pads the strided branch with zeros at the bottom/right
            y = F.pad(y, (0, dw, 0, dh))
        return F.relu(y + r)


FACE_BLOCKS = [("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
               ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
               ("conv64_3", 64, 64, False),
               ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
               ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
               ("conv256_down_out", 256, 256, True)]


class FaceRecNet(nn.Module):
    """face-api FaceRecognitionNet. forward: (N,3,H,W) RGB in [0,1] -> (N,256) pooled, or (N,128) with_fc."""

    out_dim = 256

    def __init__(self, bn=True, with_fc=False):
        super().__init__()
        self.register_buffer("mean", torch.tensor(FACEREC_MEAN).view(1, 3, 1, 1) / 255.0)
        self.stem = ConvAffine(3, 32, 7, 2, 0, True, bn)
        self.blocks = nn.Sequential(*[FaceResBlock(ci, co, d, bn) for _, ci, co, d in FACE_BLOCKS])
        self.fc = nn.Linear(256, 128, bias=False) if with_fc else None
        if with_fc:
            self.out_dim = 128

    def load_tfjs(self, path=FACEREC_MANIFEST):
        _need(path, "facerec")
        W = read_tfjs_weights(path)

        def cv(mod, p):
            mod.load(W.pop(p + "/conv/filters"), W.pop(p + "/conv/bias"),
                     W.pop(p + "/scale/weights"), W.pop(p + "/scale/biases"))
        cv(self.stem, "conv32_down")
        for blk, (name, *_) in zip(self.blocks, FACE_BLOCKS):
            cv(blk.c1, name + "/conv1")
            cv(blk.c2, name + "/conv2")
        fc = W.pop("fc")
        if self.fc is not None:
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))
        if W:
            raise ValueError(f"unused weights: {sorted(W)}")
        return self

    MIN_SIZE = 131   # the valid-padded strided convs leave nothing below this

    def feature_map(self, x):
        if min(int(x.shape[2]), int(x.shape[3])) < self.MIN_SIZE:
            raise ValueError(f"facerec needs inputs of at least {self.MIN_SIZE}px, got {tuple(x.shape[2:])}")
        x = x - self.mean     # (255x - mean)/255
        x = F.max_pool2d(self.stem(x), 3, 2)
        return self.blocks(x)

    def forward(self, x):
        x = self.feature_map(x).mean(dim=(2, 3))
        return self.fc(x) if self.fc is not None else x


# --------------------------------------------------------------------------- Keras layers model (nsfwjs)
def _same_pad(x, k, s):
    """TF 'same' padding for kernel k, stride s on the static spatial size of x."""
    pads = []
    for n, kk, ss in ((int(x.shape[3]), k[1], s[1]), (int(x.shape[2]), k[0], s[0])):
        total = max((-(-n // ss) - 1) * ss + kk - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class KLayer(nn.Module):
    """One Keras layer (the subset MobileNetV2 + a Dense head use)."""

    def __init__(self, cls, cfg, W, cin):
        super().__init__()
        self.cls, self.cfg = cls, cfg
        name = cfg["name"]
        self.act = cfg.get("activation", "linear")
        self.cout = cin
        if cls in ("Conv2D", "DepthwiseConv2D"):
            k = W[name + ("/depthwise_kernel" if cls == "DepthwiseConv2D" else "/kernel")]
            if cls == "DepthwiseConv2D":
                assert cfg.get("depth_multiplier", 1) == 1
                # (kh,kw,cin,1) -> (cin,1,kh,kw)
                w = torch.from_numpy(np.ascontiguousarray(k.transpose(2, 3, 0, 1)))
                self.op = nn.Conv2d(cin, cin, tuple(cfg["kernel_size"]), tuple(cfg["strides"]), groups=cin,
                                    bias=cfg["use_bias"])
            else:
                w = _conv_w(k)
                self.cout = k.shape[3]
                self.op = nn.Conv2d(cin, self.cout, tuple(cfg["kernel_size"]), tuple(cfg["strides"]),
                                    bias=cfg["use_bias"])
            assert tuple(cfg.get("dilation_rate", (1, 1))) == (1, 1)
            with torch.no_grad():
                self.op.weight.copy_(w)
                if cfg["use_bias"]:
                    self.op.bias.copy_(torch.from_numpy(W[name + "/bias"]))
        elif cls == "BatchNormalization":
            self.op = nn.BatchNorm2d(cin, eps=cfg["epsilon"], momentum=0.01)
            with torch.no_grad():
                self.op.weight.copy_(torch.from_numpy(W[name + "/gamma"]) if cfg.get("scale", True) else 1)
                self.op.bias.copy_(torch.from_numpy(W[name + "/beta"]) if cfg.get("center", True) else 0)
                self.op.running_mean.copy_(torch.from_numpy(W[name + "/moving_mean"]))
                self.op.running_var.copy_(torch.from_numpy(W[name + "/moving_variance"]))
        elif cls == "Dense":
            k = W[name + "/kernel"]
            self.cout = k.shape[1]
            self.op = nn.Linear(k.shape[0], k.shape[1], bias=cfg["use_bias"])
            with torch.no_grad():
                self.op.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
                if cfg["use_bias"]:
                    self.op.bias.copy_(torch.from_numpy(W[name + "/bias"]))
        elif cls == "Dropout":
            self.op = nn.Dropout(cfg["rate"])
        elif cls not in ("ZeroPadding2D", "ReLU", "Activation", "Add", "AveragePooling2D",
                         "GlobalAveragePooling2D", "Flatten", "InputLayer"):
            raise NotImplementedError(cls)

    def forward(self, *xs):
        cls, cfg = self.cls, self.cfg
        x = xs[0]
        if cls in ("Conv2D", "DepthwiseConv2D"):
            if cfg["padding"] == "same":
                x = _same_pad(x, cfg["kernel_size"], cfg["strides"])
            x = self.op(x)
        elif cls in ("BatchNormalization", "Dense", "Dropout"):
            x = self.op(x)
        elif cls == "ZeroPadding2D":
            (t, b), (l, r) = cfg["padding"]
            x = F.pad(x, (l, r, t, b))
        elif cls == "ReLU":
            assert not cfg.get("negative_slope") and not cfg.get("threshold")
            x = F.relu(x) if cfg.get("max_value") is None else torch.clamp(x, 0.0, float(cfg["max_value"]))
        elif cls == "Add":
            x = xs[0]
            for y in xs[1:]:
                x = x + y
        elif cls == "AveragePooling2D":
            assert cfg["padding"] == "valid"
            x = F.avg_pool2d(x, tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"]))
        elif cls == "GlobalAveragePooling2D":
            x = x.mean(dim=(2, 3))
        elif cls == "Flatten":
            x = x.permute(0, 2, 3, 1).flatten(1)   # channels_last flatten order
        act = self.act if cls in ("Conv2D", "DepthwiseConv2D", "Dense", "Activation") else "linear"
        if cls == "Activation":
            act = cfg["activation"]
        if act == "relu":
            x = F.relu(x)
        elif act == "softmax":
            x = F.softmax(x, dim=-1)
        elif act == "relu6":
            x = torch.clamp(x, 0.0, 6.0)
        elif act != "linear":
            raise NotImplementedError(act)
        return x


class KerasGraph(nn.Module):
    """A Keras functional model (tfjs layers model.json) as a torch module, run in layer order up to `stop`.

    forward: (N,3,H,W) in [0,1] -> the output of `stop` (pooled to a vector by `pool`)."""

    def __init__(self, model_json, stop=None, pool=True):
        super().__init__()
        with open(model_json) as f:
            m = json.load(f)
        W = read_tfjs_weights(model_json)
        cfg = m["modelTopology"]["model_config"]["config"]
        self.plan = []            # (name, [input names])
        self.layers = nn.ModuleDict()
        chans = {}
        for L in cfg["layers"]:
            name, cls = L["config"]["name"], L["class_name"]
            ins = [n[0] for n in L["inbound_nodes"][0]] if L["inbound_nodes"] else []
            if cls == "InputLayer":
                chans[name] = L["config"]["batch_input_shape"][-1]
                self.input_name = name
                continue
            lay = KLayer(cls, L["config"], W, chans[ins[0]])
            chans[name] = lay.cout
            self.layers[name.replace(".", "_")] = lay
            self.plan.append((name, ins))
            if name == stop:
                break
        self.out_name = self.plan[-1][0]
        self.out_dim = chans[self.out_name]
        self.pool = pool
        used = {k for k in W if k.split("/")[0] in {n for n, _ in self.plan}}
        if stop is None and used != set(W):
            raise ValueError(f"unused weights: {sorted(set(W) - used)[:5]}")

    def forward(self, x):
        env = {self.input_name: x}
        for name, ins in self.plan:
            env[name] = self.layers[name.replace(".", "_")](*[env[i] for i in ins])
        y = env[self.out_name]
        if y.dim() == 4 and self.pool:
            y = y.mean(dim=(2, 3))
        return y


# --------------------------------------------------------------------------- public API
def build_backbone(name, out_dim=None, **kw):
    """Pretrained backbone: (N,3,224,224) RGB in [0,1] -> (N, module.out_dim) pooled features.

    name: "facerec" (256-d; kw bn=True, with_fc=False, pretrained=True: False builds the
    architecture without weights, e.g. to load a checkpoint) or "mobilenetv2" (1280-d; kw
    classifier=False; needs the fetched model.json even to rebuild a checkpoint, it holds the topology).
    `out_dim` is accepted for call-site symmetry and ignored here (the projection lives in
    PretrainedEmbedder)."""
    if name == "facerec":
        pretrained = kw.pop("pretrained", True)
        net = FaceRecNet(**kw)
        return net.load_tfjs() if pretrained else net
    if name in ("mobilenetv2", "mobilenet_v2", "nsfw-mobilenetv2"):
        _need(MOBILENET_JSON, "mobilenetv2")
        if kw.get("classifier"):
            return KerasGraph(MOBILENET_JSON, stop=None)
        return KerasGraph(MOBILENET_JSON, stop="out_relu")
    raise ValueError(f"unknown backbone {name!r} (facerec, mobilenetv2)")


class PretrainedEmbedder(nn.Module):
    """Pretrained backbone + the head of net.NoseEmbedder: linear `dim` (no bias) + BN-neck
    (frozen bias) + L2 norm. forward: (N,3,224,224) in [0,1] -> (N,dim) L2-normalised."""

    def __init__(self, backbone="facerec", dim=512, **kw):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = build_backbone(backbone, **kw)
        self.fc = nn.Linear(self.backbone.out_dim, dim, bias=False)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)

    def features(self, x):
        return self.neck(self.fc(self.backbone(x)))

    def forward(self, x):
        return F.normalize(self.features(x), dim=1)


@torch.no_grad()
def calibrate_bn(model, x):
    """Re-express every FaceRecNet ConvAffine BatchNorm2d in `model` with the activation statistics of
    batch `x` (N,3,H,W in [0,1]) without changing the eval-mode function, so that train-mode batch
    statistics start near the pretrained behaviour. Leaves `model` in eval mode."""
    mods = [m for m in model.modules() if isinstance(m, ConvAffine) and m.bn is not None]
    stats, hooks = {}, []
    for m in mods:
        def hook(mod, inp, out, key=m):
            y = out.transpose(0, 1).flatten(1).double()
            stats[key] = (y.mean(1), y.var(1, unbiased=False))
        hooks.append(m.conv.register_forward_hook(hook))
    was = model.training
    model.eval()
    model(x)
    for h in hooks:
        h.remove()
    for m in mods:
        mu, var = stats[m]
        bn = m.bn
        s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        c = bn.bias.double() - s * bn.running_mean.double()   # y = s*x + c
        bn.running_mean.copy_(mu)
        bn.running_var.copy_(var)
        bn.weight.copy_(s * torch.sqrt(var + bn.eps))
        bn.bias.copy_(s * mu + c)
    model.train(was)
    return model


NODE_REF = r"""
// Reference outputs of the original tfjs networks (run by `pretrained.py --parity NODE_PREFIX`).
import fs from 'fs';
import { createRequire } from 'module';
const [,, prefix, faDir, mnDir, img150, img224, outDir] = process.argv;
const require = createRequire(prefix.replace(/\/?$/, '/'));
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
await tf.setBackend('cpu'); await tf.ready();
await faceapi.tf.setBackend('cpu'); await faceapi.tf.ready();
const readBins = (dir, groups) => {
  const b = Buffer.concat(groups.flatMap((g) => g.paths.map((p) => fs.readFileSync(`${dir}/${p}`))));
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
};
const out = {};
if (faDir !== '-') {
  const man = JSON.parse(fs.readFileSync(`${faDir}/face_recognition_model-weights_manifest.json`, 'utf8'));
  const net = new faceapi.FaceRecognitionNet();
  net.loadFromWeightMap(faceapi.tf.io.decodeWeights(readBins(faDir, man), man.flatMap((g) => g.weights)));
  const t = faceapi.tf.tensor3d(new Uint8Array(fs.readFileSync(img150)), [150, 150, 3], 'int32');
  out.facerec = Array.from(await net.computeFaceDescriptor(t));
  out.tfjs_faceapi = faceapi.tf.version_core;
}
if (mnDir !== '-') {
  const m = JSON.parse(fs.readFileSync(`${mnDir}/model.json`, 'utf8'));
  const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: m.modelTopology,
    weightSpecs: m.weightsManifest.flatMap((g) => g.weights), weightData: readBins(mnDir, m.weightsManifest) }));
  const feat = tf.model({ inputs: model.inputs, outputs: model.getLayer('out_relu').output });
  const x = tf.tensor4d(new Uint8Array(fs.readFileSync(img224)), [1, 224, 224, 3], 'int32').toFloat().div(255);
  out.nsfw_probs = Array.from(await model.predict(x).data());
  out.mobilenetv2 = Array.from(await feat.predict(x).mean([1, 2]).data());
  out.tfjs = tf.version_core;
}
fs.writeFileSync(`${outDir}/ref.json`, JSON.stringify(out));
"""


def parity(node_prefix, names=("facerec", "mobilenetv2"), seed=0):
    """Max |torch - original tfjs| on one random image per network. node_prefix: a folder where
    `npm i --prefix DIR @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0`
    was run (not the project's node_modules). Returns {name: max abs diff}."""
    import subprocess
    import tempfile
    rng = np.random.default_rng(seed)
    res = {}
    with tempfile.TemporaryDirectory() as td:
        i150 = (rng.random((150, 150, 3)) * 255).astype(np.uint8)
        i224 = (rng.random((224, 224, 3)) * 255).astype(np.uint8)
        i150.tofile(os.path.join(td, "i150.u8"))
        i224.tofile(os.path.join(td, "i224.u8"))
        with open(os.path.join(td, "ref.mjs"), "w") as f:
            f.write(NODE_REF)
        fa = os.path.dirname(FACEREC_MANIFEST) if "facerec" in names else "-"
        mn = os.path.dirname(MOBILENET_JSON) if "mobilenetv2" in names else "-"
        subprocess.run(["node", os.path.join(td, "ref.mjs"), os.path.abspath(node_prefix), fa, mn,
                        os.path.join(td, "i150.u8"), os.path.join(td, "i224.u8"), td],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(td, "ref.json")) as f:
            ref = json.load(f)

    def run(net, img):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            return net.eval()(x)[0].numpy()
    if "facerec" in names:
        for bn in (True, False):
            d = run(FaceRecNet(bn=bn, with_fc=True).load_tfjs(), i150)
            res[f"facerec descriptor (bn={bn})"] = float(np.abs(d - np.array(ref["facerec"])).max())
        res["facerec |descriptor| max"] = float(np.abs(ref["facerec"]).max())
    if "mobilenetv2" in names:
        p = run(build_backbone("mobilenetv2", classifier=True), i224)
        f = run(build_backbone("mobilenetv2"), i224)
        res["mobilenetv2 nsfw probs"] = float(np.abs(p - np.array(ref["nsfw_probs"])).max())
        res["mobilenetv2 pooled 1280-d"] = float(np.abs(f - np.array(ref["mobilenetv2"])).max())
        res["mobilenetv2 |pooled| max"] = float(np.abs(ref["mobilenetv2"]).max())
    return res


def n_params(m):
    return sum(p.numel() for p in m.parameters())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="build both embedders, count params, ONNX-export")
    ap.add_argument("--dump-facerec", nargs=2, metavar=("RGB150_U8", "OUT_F32"),
                    help="run the 128-d descriptor on a raw 150x150x3 uint8 file, write float32")
    ap.add_argument("--parity", metavar="NODE_PREFIX",
                    help="compare with the original tfjs networks run in Node (see parity())")
    ap.add_argument("--out", default="/tmp/pretrained-check")
    ap.add_argument("--names", default="facerec,mobilenetv2")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if a.dump_facerec:
        img = np.fromfile(a.dump_facerec[0], dtype=np.uint8).reshape(1, 150, 150, 3)
        x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255
        for bn in (True, False):
            net = FaceRecNet(bn=bn, with_fc=True).load_tfjs().eval()
            with torch.no_grad():
                d = net(x)[0].numpy().astype(np.float32)
            d.tofile(a.dump_facerec[1] + ("" if bn else ".nobn"))
        print("wrote", a.dump_facerec[1])
    if a.parity:
        for k, v in parity(a.parity, tuple(a.names.split(","))).items():
            print(f"{k}: {v:.3g}")
    if a.check:
        import export   # the project's exporter (opset 17, dynamic batch) and onnxruntime-node parity
        os.makedirs(a.out, exist_ok=True)
        for name in a.names.split(","):
            e = PretrainedEmbedder(name).eval()
            path = os.path.join(a.out, f"{name}.onnx")
            size = export.export_onnx(e, path)
            with torch.no_grad():
                y = e(torch.rand(3, 3, 224, 224))
            print(f"{name}: backbone {n_params(e.backbone):,} params, feature dim {e.backbone.out_dim}, "
                  f"embedder {n_params(e):,} params, out {tuple(y.shape)}, onnx {size / 1e6:.1f} MB, "
                  f"onnxruntime-node vs torch max abs diff {export.parity(e, path):.2g}")
