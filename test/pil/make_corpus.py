"""Write a seeded corpus of JPEG and PNG images covering the layouts Pillow
converts differently (grey, alpha, palette, 16-bit, CMYK), JPEG encodings and
EXIF orientations, at the sizes nose photos come in.

usage: make_corpus.py OUT_DIR SEED [--no-big]
Writes the images and OUT_DIR/manifest.json: [{"file": ..., "kind": ...}].
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

out_dir, seed = sys.argv[1], int(sys.argv[2])
big = "--no-big" not in sys.argv
rng = np.random.default_rng(seed)
manifest = []


def texture(w, h, channels=3):
    """Smooth blobs plus fine grain and a few hard edges, like a nose close-up."""
    lw, lh = max(2, w // 24), max(2, h // 24)
    low = rng.integers(0, 256, (lh, lw, channels), dtype=np.uint8)
    base = np.asarray(
        Image.fromarray(low.squeeze(-1) if channels == 1 else low).resize((w, h), Image.BICUBIC),
        dtype=np.int16,
    ).reshape(h, w, channels)
    grain = rng.integers(-40, 41, (h, w, channels), dtype=np.int16)
    img = base + grain
    # a bright and a black stripe: clipping and ringing at edges
    img[:, w // 3 : w // 3 + max(1, w // 20)] = 255
    img[h // 2 : h // 2 + max(1, h // 25), :] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def save(name, kind, im=None, data=None, **params):
    path = os.path.join(out_dir, name)
    if data is not None:
        with open(path, "wb") as f:
            f.write(data)
    else:
        im.save(path, **params)
    manifest.append({"file": name, "kind": kind})


def png_bytes(w, h, bit_depth, color_type, samples, extra=()):
    """A PNG written by hand, for 16-bit layouts Pillow cannot save."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + samples[y].astype(dtype).tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    before_idat = b"".join(chunk(t, d) for t, d in extra)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + before_idat
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def exif_with_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


sizes = [(65, 65), (150, 150), (223, 223), (224, 224), (300, 200), (224, 300), (390, 390), (1000, 750), (37, 500)]

for w, h in sizes:
    rgb = Image.fromarray(texture(w, h))
    save(f"rgb-{w}x{h}.png", "png-rgb", rgb)
    save(f"rgb-{w}x{h}.jpg", "jpeg-q90-420", rgb, quality=90)

w, h = 300, 200
rgb = texture(w, h)
alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
grey = texture(w, h, 1)[..., 0]
save("grey.png", "png-L", Image.fromarray(grey, "L"))
save("grey-trns.png", "png-L", Image.fromarray(grey, "L"), transparency=int(grey[0, 0]))
save("grey-alpha.png", "png-LA", Image.fromarray(np.dstack([grey, alpha]), "LA"))
save("rgb-trns.png", "png-RGB", Image.fromarray(rgb), transparency=tuple(int(v) for v in rgb[0, 0]))
save("rgba.png", "png-RGBA", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
save("bilevel.png", "png-1bit", Image.fromarray(grey).convert("1"))
pal = Image.fromarray(rgb).quantize(200)
save("palette.png", "png-P", pal)
save("palette-trns.png", "png-P-tRNS", pal, transparency=bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
pal16 = Image.fromarray(rgb).quantize(16)
save("palette-4bit.png", "png-P", pal16, bits=4)

# 16-bit layouts: colour keeps the high byte; plain grey clips at 255
rgb16 = rgb.astype(np.uint16) * 257 + rng.integers(0, 257, rgb.shape, dtype=np.uint16)
save("rgb16.png", "png-RGB16", data=png_bytes(w, h, 16, 2, rgb16.reshape(h, w * 3)))
rgba16 = np.dstack([rgb16, alpha.astype(np.uint16) * 257])
save("rgba16.png", "png-RGBA16", data=png_bytes(w, h, 16, 6, rgba16.reshape(h, w * 4)))
grey16_dim = (grey.astype(np.uint16) * 3).astype(np.uint16)  # 0..765: part below, part above 255
save("grey16-dim.png", "png-I16", data=png_bytes(w, h, 16, 0, grey16_dim))
trns16 = struct.pack(">H", int(grey16_dim[0, 0]))
save("grey16-trns.png", "png-I16", data=png_bytes(w, h, 16, 0, grey16_dim, extra=[(b"tRNS", trns16)]))
rgb_trns = struct.pack(">HHH", *(int(v) for v in rgb16[0, 0]))
save("rgb16-trns.png", "png-RGB16", data=png_bytes(w, h, 16, 2, rgb16.reshape(h, w * 3), extra=[(b"tRNS", rgb_trns)]))
grey16_full = grey.astype(np.uint16) * 257
save("grey16-full.png", "png-I16", data=png_bytes(w, h, 16, 0, grey16_full))
la16 = np.dstack([grey16_full, alpha.astype(np.uint16) * 257])
save("grey-alpha16.png", "png-LA16", data=png_bytes(w, h, 16, 4, la16.reshape(h, w * 2)))

# JPEG encodings
im = Image.fromarray(rgb)
for q in (50, 75, 95):
    for sub, tag in ((0, "444"), (1, "422"), (2, "420")):
        save(f"q{q}-{tag}.jpg", f"jpeg-{tag}", im, quality=q, subsampling=sub)
save("progressive.jpg", "jpeg-progressive", im, quality=85, progressive=True)
save("progressive-390.jpg", "jpeg-progressive", Image.fromarray(texture(390, 390)), quality=80, progressive=True)
save("grey.jpg", "jpeg-L", Image.fromarray(grey, "L"), quality=90)
cmyk = Image.fromarray(np.dstack([rgb, 255 - grey]), "CMYK")
save("cmyk.jpg", "jpeg-CMYK", cmyk, quality=90)
for o in range(1, 9):
    save(f"orientation-{o}.jpg", "jpeg-exif-orientation", im, quality=90, exif=exif_with_orientation(o))
save("orientation-6.png", "png-exif-orientation", im, exif=exif_with_orientation(6))

if big:
    save("phone-4032x3024.jpg", "jpeg-4032x3024", Image.fromarray(texture(4032, 3024)), quality=92)

with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
