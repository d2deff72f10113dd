"""Renders the photo pairs the geometric check is fitted and measured on.

Two photos of each identity, made as two separate captures (their own viewpoint, light, focus, size
and JPEG), the second then re-captured as a user's later photo is: rotated by up to --max-rotation
degrees, cropped to 80-100%, slightly blurred, exposed +-30% and saved at JPEG quality 40-90.
Besides independent identities it renders look-alike families: noses that share outline, nostrils,
philtrum, leather pigment and lighting and differ only in the bead mosaic and the hair around it (render.make_identity's
bead_rng, which also draws the fur strands), the hardest impostors the geometry has to refuse.

  /usr/bin/python3 models/train/geometry_pairs.py OUT [--dogs 200] [--families 40] [--members 3]

Writes OUT/{id}/0.jpg and 1.jpg and OUT/manifest.json ({"photos": {id: family}}; family is null for
independent identities).
"""
import argparse
import io
import json
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402


def as_image(raw):
    return raw if isinstance(raw, Image.Image) else Image.fromarray(np.asarray(raw, dtype=np.uint8))


def recapture(im, rng, max_rotation):
    """A later photo of the same nose: the held-out p2 transform, with a wider rotation."""
    w, h = im.size
    im = im.rotate(float(rng.uniform(-max_rotation, max_rotation)), resample=Image.BICUBIC, expand=False)
    f = rng.uniform(0.8, 1.0)
    cw, ch = int(w * f), int(h * f)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0))))
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.7, 1.3)))
    return im, int(rng.integers(40, 91))


def save(im, path, quality):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def render_pair(ident, rng, out, max_rotation):
    os.makedirs(out, exist_ok=True)
    save(as_image(render.render_capture(ident, rng, return_raw=True)), os.path.join(out, "0.jpg"), 92)
    later, q = recapture(as_image(render.render_capture(ident, rng, return_raw=True)), rng, max_rotation)
    save(later, os.path.join(out, "1.jpg"), q)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--dogs", type=int, default=200)
    ap.add_argument("--families", type=int, default=40)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--max-rotation", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=160_001)
    a = ap.parse_args()
    manifest = {}
    for d in range(a.dogs):
        rng = np.random.default_rng([a.seed, 1, d])
        render_pair(render.make_identity(rng), rng, os.path.join(a.out, f"dog{d:04d}"), a.max_rotation)
        manifest[f"dog{d:04d}"] = None
    for f in range(a.families):
        for m in range(a.members):
            shared = np.random.default_rng([a.seed, 2, f])
            ident = render.make_identity(shared, bead_rng=np.random.default_rng([a.seed, 3, f, m]))
            rng = np.random.default_rng([a.seed, 4, f, m])
            name = f"fam{f:03d}m{m}"
            render_pair(ident, rng, os.path.join(a.out, name), a.max_rotation)
            manifest[name] = f"fam{f:03d}"
    with open(os.path.join(a.out, "manifest.json"), "w") as fh:
        json.dump({"photos": manifest, "max_rotation": a.max_rotation, "seed": a.seed}, fh, indent=1)


if __name__ == "__main__":
    main()
