"""How two captures of the same synthetic nose differ, measured like real/real-nose-pair-stats.json.

Per pair (photo 1, photo 2), both 224x224 RGB; ratios and differences are photo2 vs photo1:
- geometry: SIFT keypoints on grey (OpenCV defaults), brute-force L2 matching with Lowe's ratio test (0.75),
  cv2.estimateAffinePartial2D (RANSAC, reprojection threshold 3 px) from photo-1 to photo-2 points; geometry
  counts as found with >= 12 inliers, and only those pairs give
  - rotation_deg: rotation angle of the similarity transform, atan2(b, a) for [[a, -b, tx], [b, a, ty]];
  - scale_ratio: its scale sqrt(a^2 + b^2);
  - shift_frac: how far the transform moves the image centre, |T(112, 112) - (112, 112)| / 224. The centre is
    used rather than (tx, ty), the image of the corner (0, 0), so that a rotation or scale about the nose does
    not count as a shift; dividing by the side makes it a fraction of the image;
  - inlier_count: RANSAC inliers.
- brightness_ratio: grey mean ratio; contrast_ratio: grey std ratio (grey = 0.299R + 0.587G + 0.114B).
- sharpness_log10_ratio: log10 of the ratio of the 4-neighbour Laplacian variances of grey.
- saturation_diff: difference of the mean HSV saturation (max-min)/max.
- white_balance_rg_diff / _bg_diff: difference of mean(R)/mean(G) resp. mean(B)/mean(G), ratios of the channel
  means over the whole image (per-pixel ratios are unstable in dark pixels).
- side_ratio: capture short side of photo 2 / photo 1 before the resize to 224.

Synthetic distributions are summarised by the quantiles the real file gives (5, 10, 25, 50, 75, 90, 95%) and
compared by the KS distance between the two quantile-defined distributions (CDF piecewise linear through the
quantiles, unknown below 5% / above 95%; see stats.py); ks_empirical uses the synthetic empirical CDF instead.
"""
import json
import os

import cv2
import numpy as np

from stats import EmpiricalDist, QuantileDist, ks_distance

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_PAIRS = os.environ.get("NOSE_REAL_PAIR_STATS", os.path.join(HERE, "real", "real-nose-pair-stats.json"))
GEOMETRY = ["rotation_deg", "scale_ratio", "shift_frac", "inlier_count"]
PHOTOMETRY = ["brightness_ratio", "contrast_ratio", "sharpness_log10_ratio", "saturation_diff",
              "white_balance_rg_diff", "white_balance_bg_diff", "side_ratio"]
MIN_INLIERS = 12
_SIFT = None


def _sift():
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create()
    return _SIFT


def _as_u8(im):
    if not isinstance(im, np.ndarray):         # PIL image
        from PIL import Image
        im = im.convert("RGB")
        if im.size != (224, 224):
            im = im.resize((224, 224), Image.LANCZOS)
        im = np.asarray(im)
    return np.ascontiguousarray(im, dtype=np.uint8)


def _photo(im):
    x = im.astype(np.float32) / 255
    g = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    m = x.reshape(-1, 3).mean(0)
    return {"mean": float(g.mean()), "std": float(g.std()),
            "lap": float(cv2.Laplacian(g, cv2.CV_32F, ksize=1).var()), "sat": float(sat.mean()),
            "rg": float(m[0] / max(m[1], 1e-6)), "bg": float(m[2] / max(m[1], 1e-6))}


def geometry(a, b):
    """Similarity transform photo a -> photo b from SIFT + RANSAC: dict, or None when < 12 inliers."""
    s = _sift()
    ka, da = s.detectAndCompute(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), None)
    kb, db = s.detectAndCompute(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return None
    good = [m[0] for m in cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    pa = np.float32([ka[m.queryIdx].pt for m in good])
    pb = np.float32([kb[m.trainIdx].pt for m in good])
    M, inl = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                         maxIters=2000, confidence=0.99)
    if M is None or inl is None or int(inl.sum()) < MIN_INLIERS:
        return None
    a_, b_ = M[0, 0], M[1, 0]
    c = M @ np.array([112.0, 112.0, 1.0])
    return {"rotation_deg": float(np.degrees(np.arctan2(b_, a_))), "scale_ratio": float(np.hypot(a_, b_)),
            "shift_frac": float(np.hypot(c[0] - 112, c[1] - 112) / 224), "inlier_count": int(inl.sum())}


def measure_pair(a, b, side_a=None, side_b=None):
    """All pair quantities for two captures (uint8 224x224x3 or PIL) and their capture short sides."""
    a, b = _as_u8(a), _as_u8(b)
    pa, pb = _photo(a), _photo(b)
    out = {"brightness_ratio": pb["mean"] / max(pa["mean"], 1e-6),
           "contrast_ratio": pb["std"] / max(pa["std"], 1e-6),
           "sharpness_log10_ratio": float(np.log10((pb["lap"] + 1e-12) / (pa["lap"] + 1e-12))),
           "saturation_diff": pb["sat"] - pa["sat"],
           "white_balance_rg_diff": pb["rg"] - pa["rg"], "white_balance_bg_diff": pb["bg"] - pa["bg"],
           "side_ratio": (float(side_b) / float(side_a)) if side_a and side_b else None}
    g = geometry(a, b)
    out["geometry_found"] = g is not None
    out.update(g or {k: None for k in GEOMETRY})
    return out


def _measure_job(job):
    return measure_pair(*job)


def summarise(measures, plot_path=None, real_path=None):
    """Synthetic quantiles beside the real ones and KS distances, from a list of measure_pair() dicts."""
    with open(real_path or REAL_PAIRS) as f:
        real = json.load(f)
    qs = np.array(real["quantiles"], np.float64)
    rows, syn = [], {}
    for k in GEOMETRY + PHOTOMETRY:
        if k not in real["stats"]:
            continue
        v = np.array([m[k] for m in measures if m.get(k) is not None], np.float64)
        syn[k] = v
        rq = np.array(real["stats"][k], np.float64)
        row = {"stat": k, "n": int(len(v)), "real": [round(float(x), 4) for x in rq]}
        if len(v):
            sq = np.quantile(v, qs)
            rd = QuantileDist(qs, rq)
            row["synthetic"] = [round(float(x), 4) for x in sq]
            row["ks"] = round(ks_distance(QuantileDist(qs, sq), rd), 4)
            row["ks_empirical"] = round(ks_distance(EmpiricalDist(v), rd), 4)
        else:
            row["synthetic"], row["ks"], row["ks_empirical"] = None, None, None
        rows.append(row)
    found = sum(1 for m in measures if m.get("geometry_found"))
    rot = syn.get("rotation_deg", np.zeros(0))
    out = {"pairs": len(measures), "quantiles": [float(q) for q in qs], "rows": rows,
           "geometry_found": found, "geometry_found_share": round(found / max(len(measures), 1), 4),
           "real_geometry_found": real.get("geometry_found_for"), "real_geometry_tried": real.get("geometry_tried"),
           "real_geometry_found_share": round(real["geometry_found_for"] / real["geometry_tried"], 4)
           if real.get("geometry_tried") else None,
           "definitions": __doc__.split("\n\n", 1)[1].strip()}
    if "abs_rotation_deg_quantiles" in real:
        out["abs_rotation_deg"] = {"real": real["abs_rotation_deg_quantiles"],
                                   "synthetic": [round(float(x), 3) for x in np.quantile(np.abs(rot), qs)]
                                   if len(rot) else None}
    if plot_path:
        _plot(rows, syn, qs, out, plot_path)
    return out


def compare_pairs(pairs, sizes=None, plot_path=None, workers=1):
    """pairs: [(a, b)] of uint8 224x224x3 arrays or PIL images (PIL images at capture size are resized to 224
    with LANCZOS); sizes: [(side_a, side_b)] capture short sides, or None (side_ratio then comes from PIL sizes
    where given). Returns summarise()'s dict and writes the plot."""
    jobs = []
    for i, (a, b) in enumerate(pairs):
        if sizes is not None:
            sa, sb = sizes[i]
        else:
            sa = min(a.size) if not isinstance(a, np.ndarray) else None
            sb = min(b.size) if not isinstance(b, np.ndarray) else None
        jobs.append((_as_u8(a), _as_u8(b), sa, sb))
    if workers > 1 and len(jobs) > 50:
        from multiprocessing import Pool
        with Pool(workers) as pool:
            measures = pool.map(_measure_job, jobs, chunksize=16)
    else:
        measures = [_measure_job(j) for j in jobs]
    return summarise(measures, plot_path)


def _plot(rows, syn, qs, out, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(3, 4, figsize=(14, 9), dpi=70)
    for ax, row in zip(axs.ravel(), rows):
        k = row["stat"]
        rd = QuantileDist(qs, row["real"])
        edges, dens, atoms = rd.step_density()
        v = syn[k]
        lo, hi = rd.v[0], rd.v[-1]
        if len(v):
            lo, hi = min(lo, np.percentile(v, 5)), max(hi, np.percentile(v, 95))
        pad = 0.25 * (hi - lo if hi > lo else 1)
        lo, hi = lo - pad, hi + pad
        if len(v):
            ax.hist(np.clip(v, lo, hi), bins=40, range=(lo, hi), density=True, color="tab:orange", alpha=0.6,
                    label="synthetic (clipped to the axes)")
        xs, ys = [], []
        for (a, b), d in zip(edges, dens):
            xs += [a, a, b, b]
            ys += [0, d, d, 0]
        ax.plot(xs, ys, "k-", lw=1.3, label="real (5..95%)")
        for a, m in atoms:
            ax.axvline(a, color="k", lw=2.5)
        if len(v) and len(v) >= 2:
            sd = QuantileDist(qs, np.quantile(v, qs))
            e2, d2, _ = sd.step_density()
            xs, ys = [], []
            for (a, b), d in zip(e2, d2):
                xs += [a, a, b, b]
                ys += [0, d, d, 0]
            ax.plot(xs, ys, color="tab:red", lw=1, ls="--", label="synthetic (5..95%)")
        top = max([max(dens or [0])] + ([np.histogram(np.clip(v, lo, hi), 40, (lo, hi), density=True)[0].max()]
                                        if len(v) else [0]))
        ax.set_ylim(0, top * 1.1 if top > 0 else 1)
        ax.set_xlim(lo, hi)
        ks = f"KS {row['ks']:.3f}" if row["ks"] is not None else "no pairs"
        ax.set_title(f"{k} (n={row['n']})\n{ks}", fontsize=9)
        ax.tick_params(labelsize=7)
    axs.ravel()[0].legend(fontsize=7)
    for ax in axs.ravel()[len(rows):]:
        ax.axis("off")
    axs.ravel()[-1].text(0.0, 0.5, f"geometry found (>= {MIN_INLIERS} inliers):\n"
                         f"synthetic {out['geometry_found']}/{out['pairs']} ({out['geometry_found_share']:.0%})\n"
                         f"real {out['real_geometry_found']}/{out['real_geometry_tried']} "
                         f"({out['real_geometry_found_share']:.0%})", fontsize=10, va="center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
