"""The old Python server's preprocessing, run on every image of a manifest.

usage: reference.py DIR SIZE
For each entry of DIR/manifest.json writes DIR/<file>.f32: the float32 CHW
tensor (little-endian, 3*SIZE*SIZE values) that Pillow produces, and
DIR/reference.json: {file: {"mode": mode as opened, "icc": has a profile,
"size": [w, h] after exif_transpose, "error": message or null}}.
"""
import io
import json
import os
import sys
import warnings

import numpy as np
import PIL
from PIL import Image, ImageOps

# The reference is the old server's Pillow, 9.4 (Debian 12). Another version
# may resize or convert differently, and the parity test would then measure
# the distance to that Pillow instead: refuse to produce a reference at all.
if not PIL.__version__.startswith("9.4."):
    sys.exit(f"reference.py needs Pillow 9.4.x (the old server's), found {PIL.__version__}")

directory, size = sys.argv[1], int(sys.argv[2])
# Pillow warns about palette tRNS on convert("RGB"); the result is what we match.
warnings.simplefilter("ignore")


def preprocess(data):
    img = Image.open(io.BytesIO(data))
    opened = {"mode": img.mode, "icc": bool(img.info.get("icc_profile"))}
    img = ImageOps.exif_transpose(img)
    opened["size"] = list(img.size)
    img = img.convert("RGB")
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return opened, arr.transpose(2, 0, 1)


with open(os.path.join(directory, "manifest.json")) as f:
    manifest = json.load(f)
result = {}
for entry in manifest:
    name = entry["file"]
    with open(os.path.join(directory, name), "rb") as f:
        data = f.read()
    try:
        opened, chw = preprocess(data)
    except Exception as e:  # the service must reject whatever Pillow rejects
        result[name] = {"mode": None, "size": None, "icc": False, "error": f"{type(e).__name__}: {e}"}
        continue
    np.ascontiguousarray(chw, dtype="<f4").tofile(os.path.join(directory, name + ".f32"))
    result[name] = {**opened, "error": None}
with open(os.path.join(directory, "reference.json"), "w") as f:
    json.dump(result, f, indent=1)
