"""Synthetic dog nose-print renderer (numpy + OpenCV).

An identity is a fixed nose: leather pigment, a mosaic of raised polygonal beads
(finer near the nostrils and the philtrum, larger on the planum), grooves, two
comma-shaped nostrils with alar folds, the philtrum groove, and fur around.
A capture is one phone photo of it: tight square crop with jitter, rotation,
scale, perspective, lighting, wet specular dots, focus and motion blur, noise,
exposure and white balance, low resolution, JPEG, then LANCZOS to 224.

Everything is driven by numpy Generators, so a (seed, identity, capture) triple
always renders the same pixels.
"""
import io

import cv2
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

CANVAS = 448          # canvas pixels; covers nose coordinates [-0.1, 1.1]
LO, HI = -0.1, 1.1
OUT = 224

# Real centre-of-nose colour clusters (real-nose-stats.json) and their shares.
CLUSTERS = np.array([
    [0.186, 0.163, 0.164],
    [0.105, 0.094, 0.097],
    [0.287, 0.251, 0.249],
    [0.429, 0.382, 0.366],
    [0.689, 0.611, 0.566],
])
SHARES = np.array([0.333, 0.323, 0.206, 0.105, 0.033])

# Real crop sizes: short side percentiles (p5..p95), used as a piecewise-linear inverse CDF.
SIZE_Q = np.array([0.0, 0.001, 0.007, 0.05, 0.097, 0.25, 0.504, 0.75, 0.867, 0.95, 1.0])
SIZE_V = np.array([65, 96, 128, 150, 160, 186, 224, 275, 320, 386, 520])


def _grid():
    t = np.linspace(LO, HI, CANVAS, dtype=np.float32)
    return np.meshgrid(t, t)


GX, GY = _grid()


def smooth_noise(rng, n, scale_px, octaves=1):
    """Low-frequency noise in [-1,1]-ish at canvas size n."""
    out = np.zeros((n, n), np.float32)
    amp = 1.0
    for o in range(octaves):
        s = max(2, int(n / max(scale_px / (2 ** o), 1)))
        small = rng.standard_normal((s + 2, s + 2)).astype(np.float32)
        big = cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)
        out += amp * big
        amp *= 0.5
    return out / (np.abs(out).max() + 1e-6)


def _ellipse_metric(cx, cy, rx, ry, ang):
    c, s = np.cos(ang), np.sin(ang)
    dx, dy = GX - cx, GY - cy
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return np.sqrt(u * u + v * v)


def make_identity(rng):
    """Draws one nose. Returns a dict of canvas maps (height, albedo, masks) for rendering."""
    n = CANVAS
    # ---- layout
    cx = 0.5 + rng.normal(0, 0.015)
    top = rng.uniform(0.02, 0.16)              # planum upper edge
    bottom = rng.uniform(0.92, 1.03)           # nose lower edge (upper lip below)
    rx = rng.uniform(0.52, 0.68)
    pw = rng.uniform(2.2, 3.5)
    cy = (top + bottom) / 2
    ry = (bottom - top) / 2
    edge_noise = smooth_noise(rng, n, n / 3) * 0.04
    sup = (np.abs((GX - cx) / rx) ** pw + np.abs((GY - cy) / ry) ** pw) ** (1 / pw)
    nose_d = sup - 1 + edge_noise                    # <0 inside nose
    nose = np.clip(0.5 - nose_d / 0.02, 0, 1)

    # nostrils: commas at the bottom
    ndx = rng.uniform(0.22, 0.32)
    ny = rng.uniform(0.70, 0.80)
    nrx, nry = rng.uniform(0.10, 0.14), rng.uniform(0.05, 0.08)
    tilt = rng.uniform(0.25, 0.6)
    nostril = np.zeros((n, n), np.float32)
    alar = np.zeros((n, n), np.float32)
    nostril_dist = np.full((n, n), 9.0, np.float32)
    for side in (-1, 1):
        x0 = cx + side * ndx + rng.normal(0, 0.01)
        y0 = ny + rng.normal(0, 0.01)
        ang = side * tilt
        m1 = _ellipse_metric(x0, y0, nrx, nry, ang)
        # the slit (tail of the comma): thinner ellipse down and outwards
        m2 = _ellipse_metric(x0 + side * nrx * 0.8, y0 + nry * 1.0, nrx * 0.85, nry * 0.45, side * (tilt + 0.35))
        m = np.minimum(m1, m2)
        nostril = np.maximum(nostril, np.clip((1.0 - m) / 0.15, 0, 1))
        nostril_dist = np.minimum(nostril_dist, m1)
        # alar fold: crescent ring above/outside the nostril
        ring = np.exp(-((m1 - rng.uniform(1.35, 1.6)) / 0.10) ** 2)
        upper = np.clip((y0 - 0.01 - GY) / 0.04 + 0.5, 0, 1)
        outer = np.clip(side * (GX - x0) / 0.03 + 0.3, 0, 1)
        alar = np.maximum(alar, ring * upper * outer * rng.uniform(0.5, 1.0))

    # philtrum groove: vertical from ~mid nose down to the bottom, with slight wobble
    ph_top = rng.uniform(0.35, 0.55)
    ph_w = rng.uniform(0.008, 0.016)
    wob = cx + 0.01 * np.sin(GY * rng.uniform(4, 9) + rng.uniform(0, 6))
    ph_dist = np.abs(GX - wob)
    philtrum = np.exp(-(ph_dist / ph_w) ** 2) * np.clip((GY - ph_top) / 0.08, 0, 1)

    # ---- bead mosaic: density finer near nostrils & philtrum
    c0 = rng.uniform(0.020, 0.034)            # bead diameter on the planum (nose units)
    fine = rng.uniform(0.45, 0.65)
    near_n = np.exp(-np.clip(nostril_dist - 1, 0, None) / 0.6)
    near_p = np.exp(-ph_dist / 0.06) * np.clip((GY - ph_top + 0.1) / 0.1, 0, 1)
    near_e = np.clip(-nose_d / 0.12, 0, 1)     # beads shrink towards nose edge too
    size = c0 * (1 - (1 - fine) * np.maximum(near_n, near_p))
    size *= 0.75 + 0.25 * near_e
    size *= 1 + 0.15 * smooth_noise(rng, n, n / 4)
    dens = 1.0 / size ** 2
    pix = (HI - LO) / n
    expected = float(dens.sum() * pix * pix * 1.05)
    npts = int(expected)
    cand = rng.uniform(LO, HI, (npts * 4, 2)).astype(np.float32)
    ci = np.clip(((cand - LO) / pix).astype(int), 0, n - 1)
    p = dens[ci[:, 1], ci[:, 0]] / dens.max()
    pts = cand[rng.random(len(cand)) < p][:npts]
    grid = np.stack([GX.ravel(), GY.ravel()], 1)
    # Lloyd relaxation (2 rounds, on a half-resolution grid) for polygonal, evenly packed beads
    coarse = np.stack([GX[::2, ::2].ravel(), GY[::2, ::2].ravel()], 1)
    for _ in range(2):
        _, lab = cKDTree(pts).query(coarse, k=1, workers=1)
        w = dens[::2, ::2].ravel()
        cnt = np.bincount(lab, weights=w, minlength=len(pts)) + 1e-9
        sx = np.bincount(lab, weights=coarse[:, 0] * w, minlength=len(pts))
        sy = np.bincount(lab, weights=coarse[:, 1] * w, minlength=len(pts))
        keep = cnt > 1e-6
        pts = np.where(keep[:, None], np.stack([sx / cnt, sy / cnt], 1), pts).astype(np.float32)
    d, lab = cKDTree(pts).query(grid, k=2)
    d = d.reshape(n, n, 2).astype(np.float32)
    lab0 = lab[:, 0].reshape(n, n)
    edge = (d[..., 1] - d[..., 0]) / 2                      # distance to the cell boundary
    rel = np.clip(edge / (0.5 * size), 0, 1)
    groove_w = rng.uniform(0.10, 0.22)
    bead_h = np.clip((rel - groove_w * 0.5) / (1 - groove_w * 0.5), 0, 1) ** rng.uniform(0.45, 0.7)
    per_bead = rng.uniform(0.7, 1.2, len(pts)).astype(np.float32)
    bead_tone = rng.normal(0, 1, len(pts)).astype(np.float32)
    height = bead_h * per_bead[lab0]
    groove = np.clip(1 - rel / groove_w, 0, 1)

    # fine sub-bead texture
    height += 0.08 * smooth_noise(rng, n, 3)
    inside = nose * (1 - nostril)
    height = height * inside
    height -= 1.2 * philtrum
    height -= 0.9 * alar * inside
    height -= 1.5 * nostril
    height = cv2.GaussianBlur(height, (0, 0), 0.6)

    # ---- pigment
    k = rng.choice(5, p=SHARES)
    base = CLUSTERS[k] * rng.uniform(0.85, 1.15) + rng.normal(0, 0.012, 3)
    # leather albedo slightly brighter than the observed mean (grooves/shading darken it)
    base = np.clip(base * rng.uniform(1.05, 1.25), 0.03, 0.9)
    kind = rng.random()
    if k <= 2 and kind < 0.25:           # liver / brown tint
        base = base * np.array([1.18, 0.95, 0.85])
    alb = np.ones((n, n, 3), np.float32) * base.astype(np.float32)
    mott = np.zeros((n, n), np.float32)
    if kind > 0.85:                      # mottled (butterfly) nose: pink patches
        f = smooth_noise(rng, n, rng.uniform(n / 10, n / 4), octaves=2)
        thr = rng.uniform(0.0, 0.45)
        mott = np.clip((f - thr) / 0.1, 0, 1).astype(np.float32)
        pink = np.array([0.70, 0.52, 0.50]) * rng.uniform(0.8, 1.1)
        alb = alb * (1 - mott[..., None]) + pink.astype(np.float32) * mott[..., None]
    tone = 1 + 0.10 * bead_tone[lab0] + 0.06 * smooth_noise(rng, n, n / 6)
    alb = alb * tone[..., None]
    alb = alb * (1 - rng.uniform(0.5, 0.85) * groove)[..., None]

    # fur and skin around
    fk = rng.random()
    if fk < 0.25:
        fur_col = np.array([0.06, 0.05, 0.045]) * rng.uniform(0.7, 1.5)
    elif fk < 0.5:
        fur_col = np.array([0.45, 0.30, 0.18]) * rng.uniform(0.6, 1.3)
    elif fk < 0.88:
        fur_col = np.array([0.80, 0.75, 0.67]) * rng.uniform(0.75, 1.2)
    else:
        fur_col = np.array([0.30, 0.28, 0.27]) * rng.uniform(0.6, 1.4)
    ang = np.arctan2(GY - cy, GX - cx)
    hair = rng.standard_normal((n, n)).astype(np.float32)
    a0 = rng.uniform(0, np.pi)
    L = int(rng.integers(7, 15))
    kern = np.zeros((L, L), np.float32)
    cv2.line(kern, (0, L // 2), (L - 1, L // 2), 1.0, 1)
    M = cv2.getRotationMatrix2D((L / 2 - 0.5, L / 2 - 0.5), np.degrees(a0), 1)
    kern = cv2.warpAffine(kern, M, (L, L))
    kern /= kern.sum() + 1e-6
    hair = cv2.filter2D(hair, -1, kern)
    hair = hair / (hair.std() + 1e-6)
    fur = fur_col[None, None, :] * (1 + 0.35 * hair[..., None]) * (1 + 0.25 * smooth_noise(rng, n, n / 3))[..., None]
    fur = np.clip(fur, 0, 1).astype(np.float32)
    fur_h = 0.3 * hair
    _ = ang

    # nostril interior: very dark, slight gradient
    nos_col = base * rng.uniform(0.15, 0.35)
    alb = alb * (1 - nostril[..., None]) + nos_col.astype(np.float32) * nostril[..., None]
    alb = alb * (1 - 0.5 * alar[..., None] * inside[..., None]) * (1 - 0.4 * philtrum[..., None])

    # below the nose: dark upper-lip skin, not fur
    lip = np.clip((GY - (bottom - 0.06)) / 0.04, 0, 1) * np.clip(1 - np.abs(GX - cx) / 0.45, 0, 1)
    fur = fur * (1 - lip[..., None]) + (base * 0.45).astype(np.float32) * lip[..., None]
    albedo = alb * nose[..., None] + fur * (1 - nose[..., None])
    height = height * nose + fur_h * (1 - nose)
    wet = rng.uniform(0, 1) ** 0.8       # how wet this dog's nose tends to be
    return {
        "albedo": np.clip(albedo, 0, 1).astype(np.float32),
        "height": height.astype(np.float32),
        "nose": nose.astype(np.float32),
        "nostril": nostril.astype(np.float32),
        "bead_top": (bead_h * inside).astype(np.float32),
        "relief": float(rng.uniform(3.0, 6.0)),
        "wet": float(wet),
        "bead_px": float(c0 / pix),
    }


def sample_size(rng):
    return int(np.interp(rng.random(), SIZE_Q, SIZE_V))


def _motion_kernel(rng, length):
    L = max(3, int(length) | 1)
    k = np.zeros((L, L), np.float32)
    k[L // 2, :] = 1
    M = cv2.getRotationMatrix2D((L / 2 - 0.5, L / 2 - 0.5), rng.uniform(0, 180), 1)
    k = cv2.warpAffine(k, M, (L, L))
    return k / (k.sum() + 1e-6)


def render_capture(ident, rng, size=None, quality=None, return_raw=False):
    """One phone capture of an identity -> uint8 (224,224,3) RGB (after JPEG + LANCZOS)."""
    n = CANVAS
    h = ident["height"]
    # ---- lighting on the canvas
    relief = ident["relief"] * rng.uniform(0.8, 1.2)
    gy, gx = np.gradient(h)
    nx, ny = -gx * relief, -gy * relief
    nz = np.ones_like(nx)
    inv = 1 / np.sqrt(nx * nx + ny * ny + 1)
    nx, ny, nz = nx * inv, ny * inv, nz * inv
    la = rng.uniform(0, 2 * np.pi)
    el = rng.uniform(0.0, 0.6)
    lx, ly, lz = np.sin(el) * np.cos(la), np.sin(el) * np.sin(la), np.cos(el)
    ndl = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
    amb = rng.uniform(0.12, 0.4)
    # broad lighting falloff across the frame
    fall = 1 + rng.uniform(0, 0.6) * (GX * np.cos(la) + GY * np.sin(la) - 0.5)
    fall = fall * (1 - rng.uniform(0, 0.6) * ((GX - 0.5) ** 2 + (GY - 0.5) ** 2) / 0.5)   # flash / vignette
    shade = (amb + (1 - amb) * ndl) * fall
    img = ident["albedo"] * shade[..., None]
    # wet specular dots on bead tops facing the camera/light
    wet = np.clip(ident["wet"] + rng.normal(0, 0.15), 0, 1)
    if wet > 0.15:
        hx, hy, hz = lx, ly, lz + 1
        hn = np.sqrt(hx * hx + hy * hy + hz * hz)
        ndh = np.clip((nx * hx + ny * hy + nz * hz) / hn, 0, 1)
        shin = rng.uniform(60, 250)
        spec = ndh ** shin * ident["bead_top"] ** 2
        spec *= (smooth_noise(rng, n, n / 8) > rng.uniform(-0.6, 0.4)).astype(np.float32)
        spec = spec * wet * rng.uniform(1.5, 5.0)
        img = img + spec[..., None]

    # ---- geometry: square crop around the nose with jitter, rotation, scale, perspective
    s = sample_size(rng) if size is None else size
    ang = rng.uniform(-25, 25) if rng.random() < 0.85 else rng.uniform(-8, 8)
    span = rng.uniform(0.70, 1.0) if rng.random() < 0.7 else rng.uniform(0.95, 1.2)                      # crop side in nose units
    ccx = 0.5 + rng.normal(0, 0.04)
    ccy = 0.55 + rng.normal(0, 0.04)
    c, sn = np.cos(np.radians(ang)), np.sin(np.radians(ang))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * span / 2
    corners = corners @ np.array([[c, sn], [-sn, c]], np.float32)
    corners += rng.normal(0, 0.03 * span, corners.shape).astype(np.float32)   # perspective / tilt
    corners += np.array([ccx, ccy], np.float32)
    src = (corners - LO) / (HI - LO) * n
    dst = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float32)
    H = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    scale = s / (span / (HI - LO) * n)                  # output px per canvas px
    if scale < 1:
        img = cv2.GaussianBlur(img, (0, 0), 0.45 / scale)
    out = cv2.warpPerspective(img, H, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # ---- optics: focus + motion blur (in capture pixels, relative to size)
    r = rng.random()
    if r < 0.45:
        sig = rng.uniform(0.3, 1.0) * s / 224 * rng.uniform(0.8, 2.0)
        out = cv2.GaussianBlur(out, (0, 0), sig)
    elif r < 0.8:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.8) * s / 224)
    if rng.random() < 0.3:
        out = cv2.filter2D(out, -1, _motion_kernel(rng, rng.uniform(2, 8) * s / 224))

    # ---- sensor: exposure, white balance, gamma, noise
    # phone auto-exposure: pull the frame mean towards a target brightness (real median grey 0.27)
    m = float(out.mean()) + 1e-4
    target = rng.lognormal(np.log(0.25), 0.28)
    out = out * float(np.clip((target / m) ** rng.uniform(0.6, 0.95), 0.6, 6.0))
    if rng.random() < 0.5:   # local contrast / tone curve of the phone pipeline
        mu = cv2.GaussianBlur(out, (0, 0), s / 12)
        out = mu + (out - mu) * rng.uniform(1.1, 1.7)
    wb = np.array([rng.normal(1, 0.06), 1, rng.normal(1, 0.06)], np.float32)
    out = out * wb
    out = np.clip(out, 0, 1) ** rng.uniform(0.85, 1.15)
    sigma = rng.uniform(0.004, 0.03)
    noise = rng.standard_normal(out.shape[:2] + (1,)).astype(np.float32) * sigma
    noise = noise + rng.standard_normal(out.shape).astype(np.float32) * sigma * 0.5
    out = out + noise * np.sqrt(np.clip(out, 0.02, 1))
    if rng.random() < 0.3:       # phone sharpening
        bl = cv2.GaussianBlur(out, (0, 0), 1.0)
        out = out + rng.uniform(0.2, 0.8) * (out - bl)
    u8 = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    # JPEG at capture size, then the reference resize
    q = int(quality if quality is not None else (rng.integers(80, 96) if rng.random() < 0.7 else rng.integers(30, 96)))
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    im = Image.open(buf).convert("RGB")
    if return_raw:
        return im
    return np.asarray(im.resize((OUT, OUT), Image.LANCZOS))
