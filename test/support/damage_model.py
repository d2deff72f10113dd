"""Writes a deliberately damaged copy of a train.py checkpoint, for the tests of the learning loop's gate:
every floating-point weight tensor gets Gaussian noise of `alpha` times its own standard deviation.

usage: damage_model.py IN.pt OUT_PREFIX ALPHA VERSION [--card IN.json] [--seed S]
Writes OUT_PREFIX.pt, OUT_PREFIX.onnx and OUT_PREFIX.json (a copy of the card with VERSION).
"""
import argparse
import json
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "models", "train"))
import evaluate  # noqa: E402
import export  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("ckpt")
p.add_argument("out")
p.add_argument("alpha", type=float)
p.add_argument("version")
p.add_argument("--card", default=os.path.join(ROOT, "models", "nose-embedder.json"))
p.add_argument("--seed", type=int, default=11)
a = p.parse_args()
ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
g = torch.Generator().manual_seed(a.seed)
state = {}
for k, v in ck["model"].items():
    v = v.float()
    if v.is_floating_point() and v.numel() > 1 and "running" not in k:
        v = v + a.alpha * v.std() * torch.randn(v.shape, generator=g)
    state[k] = v
ck["model"] = state
torch.save(ck, a.out + ".pt")
model = evaluate.load_checkpoint(a.out + ".pt")
export.export_onnx(model.eval(), a.out + ".onnx")
card = json.load(open(a.card))
card["version"] = a.version
card["note"] = f"damaged on purpose for a test: weights + {a.alpha} x their std of Gaussian noise"
json.dump(card, open(a.out + ".json", "w"), indent=2)
