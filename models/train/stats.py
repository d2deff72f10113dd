"""Image statistics matching /work/shared/real-nose-stats.json (computed at 224x224,
grey = 0.299R + 0.587G + 0.114B in [0,1]) and the real-vs-synthetic comparison.

Definitions used here (the real file gives names, not code):
- saturation: HSV saturation (max-min)/max per pixel, averaged.
- laplacian_variance_224: variance of the 4-neighbour Laplacian of grey in [0,1].
- specular_fraction_centre: share of pixels of the central half (112x112) with grey > 0.9.
- radial_log10_power_224: log10 of the ring-averaged |FFT|^2 of mean-removed grey, rings of width 1 at r = 0, 4, ... 108.
"""
import json
import os

import cv2
import numpy as np

REAL = os.environ.get("NOSE_REAL_STATS", "/work/shared/real-nose-stats.json")
RADII = np.arange(0, 112, 4)
_yy, _xx = np.mgrid[-112:112, -112:112]
_R = np.round(np.sqrt(_xx ** 2 + _yy ** 2)).astype(int)


def image_stats(im):
    x = im.astype(np.float32) / 255
    g = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    c = g[56:168, 56:168]
    F = np.fft.fftshift(np.abs(np.fft.fft2(g - g.mean())) ** 2)
    ring = np.array([F[_R == r].mean() for r in RADII])
    return {
        "grey_mean": float(g.mean()),
        "grey_std": float(g.std()),
        "saturation_mean": float(sat.mean()),
        "laplacian_variance_224": float(lap.var()),
        "specular_fraction_centre": float((c > 0.9).mean()),
        "power": np.log10(ring + 1e-12),
    }


def compare(ims, plot_path=None, sizes=None):
    """Compares a stack of uint8 224x224 renders with the real statistics; writes a plot."""
    real = json.load(open(REAL))
    st = [image_stats(im) for im in ims]
    rows = []
    for k in ["grey_mean", "grey_std", "saturation_mean", "laplacian_variance_224", "specular_fraction_centre"]:
        v = np.array([s[k] for s in st])
        rows.append({"stat": k, "real_p5": real[k]["p5"], "real_p50": real[k]["p50"], "real_p95": real[k]["p95"],
                     "synthetic_p5": float(np.percentile(v, 5)), "synthetic_p50": float(np.percentile(v, 50)),
                     "synthetic_p95": float(np.percentile(v, 95))})
    if sizes is None:
        import render
        rng = np.random.default_rng(0)
        sizes = np.array([render.sample_size(rng) for _ in range(4000)])
    rows.append({"stat": "short_side_px", "real_p5": real["short_side_px"]["p5"], "real_p50": real["short_side_px"]["p50"],
                 "real_p95": real["short_side_px"]["p95"], "synthetic_p5": float(np.percentile(sizes, 5)),
                 "synthetic_p50": float(np.percentile(sizes, 50)), "synthetic_p95": float(np.percentile(sizes, 95))})
    pw = np.stack([s["power"] for s in st])
    rp = real["radial_log10_power_224"]
    spec = {"radius": rp["radius_cycles_per_image"], "real_p50": rp["p50"],
            "synthetic_p50": [round(float(v), 3) for v in np.percentile(pw, 50, axis=0)],
            "real_p10": rp["p10"], "real_p90": rp["p90"],
            "synthetic_p10": [round(float(v), 3) for v in np.percentile(pw, 10, axis=0)],
            "synthetic_p90": [round(float(v), 3) for v in np.percentile(pw, 90, axis=0)]}
    for r in rows:
        for k in list(r):
            if k != "stat":
                r[k] = round(float(r[k]), 5)
    out = {"images": int(len(ims)), "rows": rows, "radial_log10_power_224": spec,
           "definitions": __doc__.split("Definitions used here")[1].strip()}
    if plot_path:
        _plot(st, real, pw, plot_path)
    return out


def _plot(st, real, pw, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = ["grey_mean", "grey_std", "saturation_mean", "laplacian_variance_224", "specular_fraction_centre"]
    fig, axs = plt.subplots(2, 3, figsize=(10, 6), dpi=70)
    for ax, k in zip(axs.ravel(), keys):
        v = np.array([s[k] for s in st])
        log = k in ("laplacian_variance_224",)
        ax.hist(np.log10(v + 1e-6) if log else v, bins=30, color="tab:orange", alpha=0.7, density=True, label="synthetic")
        for q, ls in (("p5", ":"), ("p25", "--"), ("p50", "-"), ("p75", "--"), ("p95", ":")):
            rv = real[k][q]
            ax.axvline(np.log10(rv + 1e-6) if log else rv, color="k", ls=ls, lw=1)
        ax.set_title(("log10 " if log else "") + k, fontsize=9)
    axs[0, 0].legend(fontsize=7, title="lines: real p5..p95", title_fontsize=7)
    ax = axs[1, 2]
    rp = real["radial_log10_power_224"]
    r = rp["radius_cycles_per_image"]
    ax.fill_between(r[1:], rp["p10"][1:], rp["p90"][1:], color="k", alpha=0.15)
    ax.plot(r[1:], rp["p50"][1:], "k-", label="real p50 (p10-p90)")
    ax.fill_between(r[1:], np.percentile(pw, 10, 0)[1:], np.percentile(pw, 90, 0)[1:], color="tab:orange", alpha=0.2)
    ax.plot(r[1:], np.percentile(pw, 50, 0)[1:], color="tab:orange", label="synthetic p50")
    ax.set_title("radial log10 power at 224", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
