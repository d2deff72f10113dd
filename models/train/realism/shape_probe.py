#!/usr/bin/python3
"""Shape probe: how far a set of nose images is from real dog-nose phone crops in global shape, framing and shading.

Every image is reduced to a 64x64 grey thumbnail and projected on the 24 principal components of 3,000 real crops
(real_shape_stats.npz: their mean image, per-pixel std, components and the mean/covariance of the projections;
aggregates only, no photo can be recovered). The figure is the Frechet distance between the set's projections and
the real ones. Real photos of other dogs score 1.1-1.3 (the floor).

    /usr/bin/python3 shape_probe.py path/to/images/ [sheet.png]    # images, or a cache of (N,224,224,3) .npy arrays
The optional sheet shows the set's mean image, per-pixel std and first 8 components, laid out like real-shape.png."""
import json, os, sys
import numpy as np
from PIL import Image
from scipy import linalg

S = 64
HERE = os.path.dirname(os.path.abspath(__file__))


def thumbs(root):
    out = []
    for dp, _, fs in os.walk(root):
        for f in sorted(fs):
            p = os.path.join(dp, f)
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                out.append(Image.open(p).convert("L"))
            elif f.endswith(".npy") and not f.endswith(".labels.npy"):
                a = np.load(p)
                if a.ndim == 4 and a.shape[-1] == 3:
                    out.extend(Image.fromarray(x).convert("L") for x in a)
    return np.stack([np.asarray(im.resize((S, S), Image.BILINEAR), np.float32).ravel() / 255.0 for im in out])


def thumbs_arrays(arrays):
    """(N,H,W,3) uint8 RGB arrays (e.g. rendered captures) -> the same thumbnails as thumbs()."""
    return np.stack([np.asarray(Image.fromarray(np.asarray(x)).convert("L").resize((S, S), Image.BILINEAR), np.float32).ravel()
                     / 255.0 for x in arrays])


def distance(X, stats=None):
    """Frechet distance of thumbnails X (N,4096) to the real crops, and the mean-image absolute difference."""
    d = np.load(os.path.join(HERE, "real_shape_stats.npz")) if stats is None else stats
    Z = (X - d["mean"]) @ d["comps"].T
    m1, c1, m2, c2 = d["z_mu"], d["z_cov"], Z.mean(0), np.cov(Z, rowvar=False)
    fd = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))
    return fd, float(np.abs(X.mean(0) - d["mean"]).mean())


def sheet(X, path):
    norm = lambda a: (a - a.min()) / (a.max() - a.min() + 1e-9)
    mu = X.mean(0)
    comps = np.linalg.svd(X - mu, full_matrices=False)[2][:8]
    tiles = [mu, norm(X.std(0))] + [norm(c) for c in comps]
    rows = [np.concatenate([t.reshape(S, S) for t in tiles[r:r + 5]], 1) for r in (0, 5)]
    img = (np.concatenate(rows, 0) * 255).astype(np.uint8)
    Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(path)


def main():
    X = thumbs(sys.argv[1])
    fd, mad = distance(X)
    if len(sys.argv) > 2:
        sheet(X, sys.argv[2])
    print(json.dumps({"images": len(X), "shape_frechet": round(fd, 3), "mean_image_abs_diff": round(mad, 4)}))


if __name__ == "__main__":
    main()
