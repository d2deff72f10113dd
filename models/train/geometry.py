"""Measures a geometric re-check for 1:1 decisions: SIFT keypoints + ratio-test matching + RANSAC
(similarity transform) between two photos, fused with the embedding cosine as a z-scored sum.

On the held-out synthetic re-capture proxy (evaluate.RECAPTURE_EVAL: each dog's first capture against
a later photo made from its second), it prints TAR at FAR 1e-2 / 1e-3 for the cosine alone, the inlier
count alone and the fusion, and the cost per pair, so that shipping it is a measured decision.

  /usr/bin/python3 models/train/geometry.py [--model models/nose-embedder.onnx] [--synth models/train/cache/synth]
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import data as synth  # noqa: E402
import evaluate  # noqa: E402

SIFT = cv2.SIFT_create(nfeatures=500)
MATCHER = cv2.BFMatcher(cv2.NORM_L2)


def keypoints(u8):
    grey = cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY)
    kp, des = SIFT.detectAndCompute(grey, None)
    pts = np.float32([k.pt for k in kp]) if kp else np.zeros((0, 2), np.float32)
    return pts, des


def inliers(a, b):
    (pa, da), (pb, db) = a, b
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return 0
    good = [m for m, n in (p for p in MATCHER.knnMatch(da, db, k=2) if len(p) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < 3:
        return 0
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    return int(mask.sum()) if mask is not None else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(common.ROOT, "models", "nose-embedder.onnx"))
    ap.add_argument("--synth", default=synth.DEFAULT_CACHE)
    ap.add_argument("--impostors", type=int, default=20000, help="impostor pairs matched (a seeded sample)")
    ap.add_argument("--weight", type=float, default=0.5, help="weight of the geometry term in the fusion")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    ims, labels = synth.load_split(args.synth, "heldout")
    ims = np.asarray(ims)
    firsts, later = common.recapture_pairs(ims, labels, np.random.default_rng(5))
    first = ims[firsts]
    n = len(first)
    ef, el = evaluate.embed(args.model, first), evaluate.embed(args.model, later)
    S = (ef / np.linalg.norm(ef, axis=1, keepdims=True)) @ (el / np.linalg.norm(el, axis=1, keepdims=True)).T
    t = time.time()
    kf = [keypoints(x) for x in first]
    kl = [keypoints(x) for x in later]
    t_kp = (time.time() - t) / (2 * n)
    pr = np.random.default_rng(1)
    ii, jj = pr.integers(0, n, args.impostors), pr.integers(0, n, args.impostors)
    keep = ii != jj
    ii, jj = ii[keep], jj[keep]
    t = time.time()
    g_in = np.array([inliers(kf[i], kl[i]) for i in range(n)], np.float64)
    i_in = np.array([inliers(kf[i], kl[j]) for i, j in zip(ii, jj)], np.float64)
    t_match = (time.time() - t) / (n + len(ii))
    g_cos, i_cos = np.diag(S).astype(np.float64), S[ii, jj].astype(np.float64)
    lg, li = np.log1p(g_in), np.log1p(i_in)
    z = lambda v, ref: (v - ref.mean()) / (ref.std() + 1e-9)  # noqa: E731
    fused_g = z(g_cos, i_cos) + args.weight * z(lg, li)
    fused_i = z(i_cos, i_cos) + args.weight * z(li, li)
    res = {
        "pairs": {"genuine": int(n), "impostor": int(len(ii))},
        "cosine": common.verification_metrics(g_cos, i_cos),
        "inliers": common.verification_metrics(lg, li),
        "fused": common.verification_metrics(fused_g, fused_i),
        "weight": args.weight,
        "median_inliers": {"genuine": float(np.median(g_in)), "impostor": float(np.median(i_in))},
        "ms_per_image_keypoints": round(t_kp * 1000, 2),
        "ms_per_pair_matching": round(t_match * 1000, 2),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
