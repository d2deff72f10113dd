"""Image statistics matching real/real-nose-stats.json (computed at 224x224,
grey = 0.299R + 0.587G + 0.114B in [0,1]) and the real-vs-synthetic comparison.

Definitions used here (the real file gives names, not code):
- saturation: HSV saturation (max-min)/max per pixel, averaged.
- laplacian_variance_224: variance of the 4-neighbour Laplacian of grey in [0,1]; compared in log10.
- specular_fraction_centre: share of pixels of the central half (112x112) with grey > 0.9.
- radial_log10_power_224: log10 of the ring-averaged |FFT|^2 of mean-removed grey, rings of width 1 at r = 0, 4, ... 108;
  compared by the mean absolute difference of the p50 curves over r >= 4 (r = 0 is the removed mean).
- real distribution of a statistic: only its quantiles (p5, p25, p50, p75, p95) are known. Its CDF is taken as
  piecewise linear through those points (equal quantiles = an atom); outside p5..p95 it is only known to lie in
  [0, 0.05] resp. [0.95, 1]. Its quantile function is the same line, clamped to p5 / p95 in the tails.
- ks: Kolmogorov-Smirnov statistic sup_x |F_synthetic(x) - F_real(x)| between the empirical CDF of the renders and
  the real CDF above; in the tails the real CDF is taken at the point of its allowed band nearest the synthetic one,
  so the tails count only for what exceeds the 5% the real photos have there.
- w1_norm: Wasserstein-1 distance, integral over u of |Q_synthetic(u) - Q_real(u)| with the clamped real quantile
  function, divided by the real p95 - p5 range (0.1 = on average a tenth of the real range off).
"""
import json
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REAL = os.environ.get("NOSE_REAL_STATS", os.path.join(HERE, "real", "real-nose-stats.json"))
RADII = np.arange(0, 112, 4)
_yy, _xx = np.mgrid[-112:112, -112:112]
_R = np.round(np.sqrt(_xx ** 2 + _yy ** 2)).astype(int)
_RING = [_R == r for r in RADII]

KEYS = ["grey_mean", "grey_std", "saturation_mean", "laplacian_variance_224", "specular_fraction_centre", "short_side_px"]
LOG_KEYS = {"laplacian_variance_224"}
LOG_EPS = 1e-8


def load_real(path=None):
    with open(path or REAL) as f:
        return json.load(f)


def image_stats(im):
    x = im.astype(np.float32) / 255
    g = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    c = g[56:168, 56:168]
    F = np.fft.fftshift(np.abs(np.fft.fft2(g - g.mean())) ** 2)
    ring = np.array([F[m].mean() for m in _RING])
    return {
        "grey_mean": float(g.mean()),
        "grey_std": float(g.std()),
        "saturation_mean": float(sat.mean()),
        "laplacian_variance_224": float(lap.var()),
        "specular_fraction_centre": float((c > 0.9).mean()),
        "power": np.log10(ring + 1e-12),
    }


# ---------------------------------------------------------------- distributions known by quantiles

class QuantileDist:
    """A distribution known by quantiles: probs (increasing, e.g. 0.05..0.95) and values (non-decreasing)."""

    def __init__(self, probs, values):
        self.p = np.asarray(probs, np.float64)
        self.v = np.maximum.accumulate(np.asarray(values, np.float64))

    @classmethod
    def from_dict(cls, q, transform=None):
        """{"p5": .., "p25": .., ...} -> QuantileDist (optionally of transform(value))."""
        items = sorted((float(k[1:]) / 100, float(v)) for k, v in q.items() if k.startswith("p"))
        p, v = np.array(items).T
        return cls(p, transform(v) if transform else v)

    def cdf_band(self, x):
        """Right-continuous CDF at x as a band [lo, hi] (a point inside p_min..p_max, a band in the tails)."""
        x = np.asarray(x, np.float64)
        i = np.searchsorted(self.v, x, side="right")          # knots <= x
        lo = np.empty_like(x)
        hi = np.empty_like(x)
        left, right = i == 0, i == len(self.v)
        lo[left], hi[left] = 0.0, self.p[0]
        lo[right], hi[right] = self.p[-1], 1.0
        mid = ~(left | right)
        j = i[mid]
        v0, v1, p0, p1 = self.v[j - 1], self.v[j], self.p[j - 1], self.p[j]
        f = p0 + (p1 - p0) * (x[mid] - v0) / (v1 - v0)
        lo[mid] = hi[mid] = f
        return lo, hi

    def quantile(self, u):
        return np.interp(u, self.p, self.v)                 # clamped to p_min / p_max values in the tails

    def knots(self):
        return self.v

    def step_density(self):
        """(edges, density) between distinct quantile values, and atoms [(value, mass)] where quantiles coincide."""
        edges, dens, atoms = [], [], []
        for k in range(len(self.v) - 1):
            dv, dp = self.v[k + 1] - self.v[k], self.p[k + 1] - self.p[k]
            if dv > 0:
                edges.append((self.v[k], self.v[k + 1]))
                dens.append(dp / dv)
            else:
                atoms.append((self.v[k], dp))
        return edges, dens, atoms


class EmpiricalDist:
    def __init__(self, samples):
        self.s = np.sort(np.asarray(samples, np.float64))

    def cdf_band(self, x):
        f = np.searchsorted(self.s, np.asarray(x, np.float64), side="right") / max(len(self.s), 1)
        return f, f

    def quantile(self, u):
        return np.quantile(self.s, u)

    def knots(self):
        return self.s


def ks_distance(a, b):
    """sup_x of the gap between two CDFs (bands in unknown tails count only where they cannot overlap)."""
    pts = np.unique(np.concatenate([a.knots(), b.knots()]))
    pts = np.concatenate([pts, np.nextafter(pts, -np.inf)])    # left limits of jumps
    alo, ahi = a.cdf_band(pts)
    blo, bhi = b.cdf_band(pts)
    return float(np.max(np.maximum(0, np.maximum(alo - bhi, blo - ahi))))


def w1_distance(a, b, n=4000):
    u = (np.arange(n) + 0.5) / n
    return float(np.mean(np.abs(a.quantile(u) - b.quantile(u))))


def _tf(k):
    return (lambda v: np.log10(np.asarray(v, np.float64) + LOG_EPS)) if k in LOG_KEYS else None


def compare_stat(k, values, real_q):
    """Two-sample distances for one statistic: synthetic samples vs the real quantiles."""
    tf = _tf(k)
    syn = EmpiricalDist(tf(values) if tf else values)
    rd = QuantileDist.from_dict(real_q, tf)
    rng_ = rd.v[-1] - rd.v[0]
    return {"ks": ks_distance(syn, rd), "w1_norm": w1_distance(syn, rd) / rng_ if rng_ > 0 else float("nan")}


def compare(ims, plot_path=None, sizes=None):
    """Compares a stack of uint8 224x224 renders (and their capture sizes) with the real statistics; writes a plot."""
    real = load_real()
    st = [image_stats(im) for im in ims]
    if sizes is None:
        import render
        rng = np.random.default_rng(0)
        sizes = np.array([render.sample_size(rng) for _ in range(4000)])
    values = {k: np.array([s[k] for s in st]) for k in KEYS[:-1]}
    values["short_side_px"] = np.asarray(sizes, np.float64)
    rows = []
    for k in KEYS:
        v, rq = values[k], real[k]
        row = {"stat": k, "scale": "log10" if k in LOG_KEYS else "linear"}
        tf = _tf(k) or (lambda a: np.asarray(a, np.float64))
        for q in ("p5", "p25", "p50", "p75", "p95"):
            row["real_" + q] = float(tf(rq[q]))
        for q in ("p5", "p25", "p50", "p75", "p95"):
            row["synthetic_" + q] = float(np.percentile(tf(v), int(q[1:])))
        row.update(compare_stat(k, v, rq))
        rows.append(row)
    pw = np.stack([s["power"] for s in st])
    rp = real["radial_log10_power_224"]
    syn50 = np.percentile(pw, 50, axis=0)
    spec = {"radius": rp["radius_cycles_per_image"], "real_p50": rp["p50"],
            "synthetic_p50": [round(float(v), 3) for v in syn50],
            "real_p10": rp["p10"], "real_p90": rp["p90"],
            "synthetic_p10": [round(float(v), 3) for v in np.percentile(pw, 10, axis=0)],
            "synthetic_p90": [round(float(v), 3) for v in np.percentile(pw, 90, axis=0)],
            "p50_mean_abs_diff": round(float(np.mean(np.abs(syn50[1:] - np.array(rp["p50"])[1:]))), 4)}
    for r in rows:
        for k in list(r):
            if k not in ("stat", "scale"):
                r[k] = round(float(r[k]), 5)
    out = {"images": int(len(ims)), "rows": rows, "radial_log10_power_224": spec,
           "definitions": __doc__.split("Definitions used here")[1].strip()}
    if plot_path:
        _plot(values, real, rows, pw, plot_path)
    return out


def _plot(values, real, rows, pw, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(2, 4, figsize=(14, 6.4), dpi=70)
    for ax, k, row in zip(axs.ravel(), KEYS, rows):
        tf = _tf(k) or (lambda a: np.asarray(a, np.float64))
        v = tf(values[k])
        rd = QuantileDist.from_dict(real[k], _tf(k))
        edges, dens, atoms = rd.step_density()
        span = rd.v[-1] - rd.v[0]
        lo = min(rd.v[0] - 0.15 * span, np.percentile(v, 1))
        hi = max(rd.v[-1] + 0.15 * span, np.percentile(v, 99))
        ax.hist(np.clip(v, lo, hi), bins=40, range=(lo, hi), color="tab:orange", alpha=0.6, density=True,
                label=f"synthetic (n={len(v)})")
        xs, ys = [], []
        for (a, b), d in zip(edges, dens):
            xs += [a, a, b, b]
            ys += [0, d, d, 0]
        ax.plot(xs, ys, "k-", lw=1.3, label="real (from p5..p95)")
        top = max(ys) if ys else 1
        for a, m in atoms:
            ax.annotate(f"real atom {m:.0%}", (a, top * 0.9), fontsize=7, ha="left")
            ax.axvline(a, color="k", lw=2.5)
        ax.set_xlim(lo, hi)
        if atoms:
            ax.set_yscale("log")
        ax.set_title(("log10 " if k in LOG_KEYS else "") + f"{k}\nKS {row['ks']:.3f}  W1/range {row['w1_norm']:.3f}", fontsize=9)
        ax.tick_params(labelsize=7)
    axs[0, 0].legend(fontsize=7, title="real tails (5% each) not drawn;\nsynthetic clipped to the axes", title_fontsize=6)
    ax = axs[1, 2]
    rp = real["radial_log10_power_224"]
    r = rp["radius_cycles_per_image"]
    ax.fill_between(r[1:], rp["p10"][1:], rp["p90"][1:], color="k", alpha=0.15)
    ax.plot(r[1:], rp["p50"][1:], "k-", label="real p50 (p10-p90)")
    ax.fill_between(r[1:], np.percentile(pw, 10, 0)[1:], np.percentile(pw, 90, 0)[1:], color="tab:orange", alpha=0.2)
    ax.plot(r[1:], np.percentile(pw, 50, 0)[1:], color="tab:orange", label="synthetic p50")
    mad = np.mean(np.abs(np.percentile(pw, 50, 0)[1:] - np.array(rp["p50"])[1:]))
    ax.set_title(f"radial log10 power at 224\np50 mean |diff| {mad:.3f}", fontsize=9)
    ax.legend(fontsize=7)
    axs[1, 3].axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
