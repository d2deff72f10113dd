"""Fits the renderer's camera (render.CAMERA: focus, exposure and tone-curve distributions) so that
rendered captures sit as close as possible to real nose photos under the realism probe.

The scenes (identities, lighting, viewpoint) are rendered once; each candidate camera is then applied
to the same scenes with the same random draws (common random numbers), so two candidates differ only
by their parameters. The search is a seeded coordinate-wise descent in log space. It prints the fitted
parameters; copy them into render.CAMERA and re-render.

  /usr/bin/python3 models/train/fit-camera.py [--ids 300] [--caps 4] [--rounds 3] [--workers 2]
"""
import argparse
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "realism"))
import render  # noqa: E402

SCENES = []      # (view float16, leather mask, brightness of the dog's room), filled before the pool forks
# parameters searched and their bounds
BOUNDS = {
    "blur_px": (0.4, 2.0), "blur_spread": (0.2, 0.8), "fur_focus": (0.1, 0.8),
    "exposure": (0.15, 0.35), "exposure_dog": (0.1, 0.45), "exposure_shot": (0.1, 0.4),
    "contrast": (1.0, 2.0), "contrast_range": (0.0, 0.4), "flat_ref": (0.4, 1.2), "flat_power": (0.0, 1.0),
    "contrast_max": (1.3, 2.6), "noise": (0.002, 0.03), "sharpen": (0.0, 1.0),
}


def _scene(job):
    seed, i, caps = job
    rng = np.random.default_rng([seed, 4, i])
    ident = render.make_identity(rng)
    out = []
    for _ in range(caps):
        v, m = render._view(ident, rng, None)
        out.append((v.astype(np.float16), m.astype(np.float16), ident["bright"]))
    return out


def _develop(args):
    k, cam = args
    v, m, bright = SCENES[k]
    rng = np.random.default_rng([77, k])
    out = render._optics(v.astype(np.float32), m.astype(np.float32), rng, cam)
    im = render._phone(out, rng, bright, cam)
    return np.asarray(im.resize((render.OUT, render.OUT), Image.LANCZOS))


def score(pool, cam, ref):
    import realism_probe as rp
    ims = np.stack(pool.map(_develop, [(k, cam) for k in range(len(SCENES))], chunksize=16))
    total, per = rp.distances(rp.describe_arrays(ims), ref["mean"], ref["cov"])
    return total, per


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=300)
    ap.add_argument("--caps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261126)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.workers)
    ref = np.load(os.path.join(HERE, "realism", "real_descriptor_stats.npz"))
    t = time.time()
    with Pool(args.workers) as p:
        for sc in p.imap(_scene, [(args.seed, i, args.caps) for i in range(args.ids)], chunksize=4):
            SCENES.extend(sc)
    print(f"[camera] {len(SCENES)} scenes in {time.time() - t:.0f}s", flush=True)
    cam = dict(render.CAMERA)
    with Pool(args.workers) as pool:
        best, per = score(pool, cam, ref)
        print(f"[camera] start {best:.3f} {np.round(per, 3).tolist()}", flush=True)
        step = 0.25
        for rnd in range(args.rounds):
            for key, (lo, hi) in BOUNDS.items():
                for direction in (1, -1):
                    trial = dict(cam)
                    trial[key] = float(np.clip(cam[key] * np.exp(direction * step) if cam[key] > 0 else
                                               lo + (hi - lo) * 0.1, lo, hi))
                    if trial[key] == cam[key]:
                        continue
                    d, p2 = score(pool, trial, ref)
                    if d < best:
                        best, per, cam = d, p2, trial
                        print(f"[camera] round {rnd} {key}={trial[key]:.4g} -> {best:.3f} "
                              f"{np.round(per, 3).tolist()}", flush=True)
                        break
            step /= 2
    print(f"[camera] fitted on {len(SCENES)} captures: realism distance {best:.3f} "
          f"(per layer {np.round(per, 3).tolist()})")
    print(json.dumps({k: round(v, 4) for k, v in cam.items()}, indent=1))


if __name__ == "__main__":
    main()
