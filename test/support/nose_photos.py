"""Writes synthetic nose photos for end-to-end tests, rendered with the
training pipeline's generator (models/train/render.py).

usage: nose_photos.py OUT_DIR DOGS [--seed S]
For each dog d it writes dog{d}_{k}.jpg, k = 0..3: one rendered capture and
three re-takes of it from the same shoot (re-encoded, slightly cropped,
brighter, smaller), so same-dog pairs are unambiguous for any sound model.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "train"))
import render  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("dogs", type=int)
p.add_argument("--seed", type=int, default=424242)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
for d in range(a.dogs):
    rng = np.random.default_rng([a.seed, 9, d])
    ident = render.make_identity(rng)
    raw = render.render_capture(ident, rng, size=300, quality=95, return_raw=True)
    if not isinstance(raw, Image.Image):
        raw = Image.fromarray(np.asarray(raw, dtype=np.uint8))
    raw = raw.convert("RGB")
    w, h = raw.size
    c = max(2, w // 40)
    variants = [
        (raw, 92),
        (raw.crop((c, c, w - c, h - c)), 85),
        (ImageEnhance.Brightness(raw).enhance(1.03), 80),
        (raw.resize((w * 9 // 10, h * 9 // 10), Image.LANCZOS), 88),
    ]
    for k, (im, q) in enumerate(variants):
        im.save(os.path.join(a.out, f"dog{d}_{k}.jpg"), quality=q)
