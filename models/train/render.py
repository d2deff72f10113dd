"""Synthetic dog nose-print renderer (numpy + OpenCV).

An identity is one dog's nose and muzzle, fixed for life, made as a surface: a height field (in leather
widths) with albedo on it. The leather is a dome with the planum's curvature (flat-topped, widest above
the middle, narrowing towards the lip; it rolls over at its edge and the muzzle falls away behind it).
The nostrils are comma-shaped slits, a round head opening sideways and a tail curving down and outwards,
each under an alar fold; the philtrum is a groove splitting the lower half; the beads are a cobblestone
relief on the dome (finer near the nostrils and the philtrum). Pigment (black, slate, brown, liver, pink,
or mottled) with its patches and spots, and the fur and whiskers around the nose, are the albedo.

A capture is one phone photo of it, made the way real ones differ from each other: the phone at a
distance, yaw, pitch and roll (a perspective ray-cast of the height field, so the beads' apparent size,
foreshortening and shading change over the dome, and nostrils and folds are seen from the side when the
phone is); a detector-like crop, the box around the leather's projected outline resized to a square (the
leather fills nearly all of it, as in real crops); shading from the surface normals by indoor lights,
mostly from above, some from the side, sometimes the flash, with ambient light occluded in the nostrils
and grooves; a wet film that throws broad sheen and glints on bead tops; focus that may sit on the fur
rather than the leather, motion, a colour cast, auto-exposure and the phone's tone curve, sensor noise,
sharpening, the capture's pixel size, JPEG at the phone's quality, then LANCZOS to 224 as the service does.

Why a surface: a flat drawing rendered through a 2D warp gave the wrong global shape (measured by the
shape probe, realism/shape_probe.py: a small rounded rectangle on fur with sharp nostril dots, far from
real crops, where the leather is a dark dome filling the square, brighter on its upper half, with faint
nostrils in its lower third). Those differences come from the geometry and the light, so they are made
by geometry and light here.

Every statistic the captures share with real photos comes from a mechanism (geometry, optics,
exposure), not from copied numbers; the only measured figures used as inputs are the real crop sizes and
the real leather colour clusters. Everything is driven by numpy Generators, so a (seed, identity,
capture) triple always renders the same pixels.
"""
import io

import cv2
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

CANVAS = 512          # canvas pixels; covers nose coordinates [LO, HI]
LO, HI = -0.3, 1.3    # the leather spans about x in [0, 1]
OUT = 224
PIX = (HI - LO) / CANVAS

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

# Fur colours (albedo): white/cream, tan, brown, black, grey.
FUR = np.array([
    [0.86, 0.82, 0.74],
    [0.72, 0.58, 0.44],
    [0.42, 0.31, 0.23],
    [0.07, 0.06, 0.055],
    [0.45, 0.44, 0.43],
])
FUR_SHARES = np.array([0.32, 0.22, 0.16, 0.18, 0.12])


def _grid():
    t = np.linspace(LO, HI, CANVAS, dtype=np.float32)
    return np.meshgrid(t, t)


GX, GY = _grid()


def smooth_noise(rng, n, scale_px, octaves=1):
    """Low-frequency noise in [-1,1]-ish at canvas size n (smoothed on the coarse grid, then upsampled)."""
    out = np.zeros((n, n), np.float32)
    amp = 1.0
    for o in range(octaves):
        s = max(2, int(n / max(scale_px / (2 ** o), 1)))
        small = cv2.GaussianBlur(rng.standard_normal((s + 2, s + 2)).astype(np.float32), (0, 0), 0.3)
        out += amp * cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)
        amp *= 0.5
    return out / (np.abs(out).max() + 1e-6)


def _ellipse_metric(cx, cy, rx, ry, ang):
    c, s = np.cos(ang), np.sin(ang)
    dx, dy = GX - cx, GY - cy
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return np.sqrt(u * u + v * v)


def _line_kernel(length, angle_deg):
    L = max(3, int(length) | 1)
    k = np.zeros((L, L), np.float32)
    k[L // 2, :] = 1
    M = cv2.getRotationMatrix2D((L / 2 - 0.5, L / 2 - 0.5), angle_deg, 1)
    k = cv2.warpAffine(k, M, (L, L))
    return k / (k.sum() + 1e-6)


def _fur(rng, cx, cy, n, light_leather):
    """Fur albedo and height: strands growing outwards from the nose, in one or two colours, with whiskers.
    Pink and light leather comes with a light coat (white, cream, tan) far more often than with a dark one."""
    shares = FUR_SHARES * (np.array([3.0, 2.0, 1.0, 0.0, 0.3]) if light_leather else 1)
    shares = shares / shares.sum()
    k1 = rng.choice(len(FUR), p=shares)
    col1 = FUR[k1] * rng.uniform(0.8, 1.15) * np.exp(rng.normal(0, 0.05, 3))
    col2 = FUR[rng.choice(len(FUR), p=shares)] * rng.uniform(0.8, 1.15)
    # strands: noise smeared along the local hair direction (radial from the nose, with a downward sweep)
    ang = np.degrees(np.arctan2(GY - cy + 0.25, GX - cx))
    noise = rng.standard_normal((n, n)).astype(np.float32)
    L = rng.uniform(5, 12)
    bins = 8
    strands = np.zeros((n, n), np.float32)
    wsum = np.zeros((n, n), np.float32)
    for b in range(bins):
        a = b * 180.0 / bins
        resp = cv2.filter2D(noise, -1, _line_kernel(L, -a))
        d = np.abs(((ang - a) + 90) % 180 - 90)
        w = np.clip(1 - d / (180.0 / bins), 0, 1)
        strands += w * resp
        wsum += w
    strands /= wsum + 1e-6
    strands /= strands.std() + 1e-6
    patch = np.zeros((n, n), np.float32)
    if rng.random() < 0.45:  # a second coat colour in patches
        f = smooth_noise(rng, n, n / 3, octaves=2)
        patch = np.clip((f - rng.uniform(-0.2, 0.5)) / 0.15, 0, 1)
    col = col1[None, None, :] * (1 - patch[..., None]) + col2[None, None, :] * patch[..., None]
    sheen = 1 + 0.22 * smooth_noise(rng, n, n / 4)
    fur = col * (1 + rng.uniform(0.1, 0.3) * strands[..., None]) * sheen[..., None]
    # whisker follicles on the muzzle below and beside the nose, and a few whiskers
    wh = np.zeros((n, n), np.float32)
    for side in (-1, 1):
        for _ in range(int(rng.integers(6, 16))):
            x = cx + side * rng.uniform(0.35, 0.75)
            y = rng.uniform(0.75, 1.3)
            p = (int((x - LO) / PIX), int((y - LO) / PIX))
            cv2.circle(wh, p, int(rng.integers(1, 3)), 1.0, -1, lineType=cv2.LINE_AA)
            if rng.random() < 0.35:
                a = np.radians(rng.uniform(-30, 30) + (0 if side > 0 else 180))
                ln = rng.uniform(60, 200)
                q = (int(p[0] + ln * np.cos(a)), int(p[1] + ln * np.sin(a) - ln * 0.2))
                cv2.line(wh, p, q, -1.0, 1, lineType=cv2.LINE_AA)
    dark = np.clip(wh, 0, 1)
    light = np.clip(-wh, 0, 1)
    wcol = 0.9 if rng.random() < 0.5 else 0.08
    fur = fur * (1 - 0.7 * dark[..., None])
    fur = fur * (1 - 0.8 * light[..., None]) + wcol * 0.8 * light[..., None]
    return np.clip(fur, 0, 1).astype(np.float32), (0.35 * strands).astype(np.float32)


def _stroke(pts, widths, pad):
    """Normalised distance to a stroke of discs (pts (K,2), widths (K,)): min_k |p - pts_k| / widths_k.
    Computed in the stroke's bounding box only; 9 elsewhere."""
    n = CANVAS
    i0 = max(0, int((pts[:, 0].min() - pad - LO) / PIX)); i1 = min(n, int((pts[:, 0].max() + pad - LO) / PIX) + 2)
    j0 = max(0, int((pts[:, 1].min() - pad - LO) / PIX)); j1 = min(n, int((pts[:, 1].max() + pad - LO) / PIX) + 2)
    gx, gy = GX[j0:j1, i0:i1], GY[j0:j1, i0:i1]
    d = np.full(gx.shape, 9.0, np.float32)
    for (px, py), w in zip(pts, widths):
        d = np.minimum(d, np.sqrt((gx - px) ** 2 + (gy - py) ** 2) / w)
    out = np.full((n, n), 9.0, np.float32)
    out[j0:j1, i0:i1] = d
    return out


def make_identity(rng, bead_rng=None):
    """Draws one nose as a surface: a height field in leather widths (the dome, nostrils, alar folds, philtrum,
    bead relief, the muzzle falling away around it) with its normals and ambient occlusion, and the albedo on it.

    `bead_rng`, when given, draws the bead mosaic, the fine relief and the fur strands: noses made from
    one `rng` and different `bead_rng`s share outline, dome, nostrils, philtrum, leather pigment and lighting
    and differ in the print itself and in the hair around it (look-alike families, the hardest
    impostors). Without it, `rng` draws everything."""
    n = CANVAS
    brng = rng if bead_rng is None else bead_rng
    # ---- outline of the leather: wide and flat-topped, widest above the middle, narrowing towards the lip,
    # with its own bumps and a dip on top
    cx = 0.5 + rng.normal(0, 0.01)
    top = rng.uniform(0.0, 0.06)
    bottom = rng.uniform(0.8, 0.92)
    rx = rng.uniform(0.49, 0.53)
    pw_top, pw_bot = rng.uniform(2.2, 3.0), rng.uniform(2.0, 2.6)
    taper = rng.uniform(0.0, 0.15)
    cy = (top + bottom) / 2 - 0.05
    ry_top, ry_bot = cy - top, bottom - cy
    edge_noise = smooth_noise(rng, n, n / 5, octaves=2) * rng.uniform(0.015, 0.04)
    dip = rng.uniform(0.0, 0.03) * np.exp(-((GX - cx) / rng.uniform(0.12, 0.25)) ** 2) * (GY < cy)
    v = np.where(GY < cy, (GY - cy - dip) / ry_top, (GY - cy) / ry_bot)
    u = (GX - cx) / (rx * (1 - taper * np.clip(v, 0, 1) ** 1.5))
    pw = np.where(GY < cy, pw_top, pw_bot)
    sup = (np.abs(u) ** pw + np.abs(v) ** pw) ** (1 / pw) + edge_noise
    nose = np.clip(0.5 - (sup - 1) / 0.012, 0, 1)
    ry = ry_bot
    # ---- the dome: the planum is strongly curved; it rolls over at its edge and the muzzle falls away behind it
    D = rng.uniform(0.2, 0.34)                       # dome height, leather widths
    dome_p = rng.uniform(0.45, 0.7)
    r = np.clip(sup, 0, 1)
    height = D * (1 - r ** 2) ** dome_p - 0.1 * np.clip(sup - 1, 0, None)
    # the lower part under the nostrils slopes back towards the lip
    t_low = np.clip((GY - cy) / ry, 0, None) ** 2
    height -= rng.uniform(0.04, 0.14) * t_low / (1 + 0.5 * t_low)   # smooth on past the lip: no crease

    # ---- nostrils: comma-shaped slits, a round head opening sideways and a tail curving down and outwards,
    # each under an alar fold (a raised wing above and beside it)
    hx, hy = rng.uniform(0.12, 0.19), cy + ry * rng.uniform(0.05, 0.3)
    L, a0, bend = rng.uniform(0.14, 0.24), rng.uniform(0.05, 0.45), rng.uniform(0.02, 0.09)
    wh, wt = rng.uniform(0.03, 0.05), rng.uniform(0.005, 0.01)
    depth, fold_h, fold_w = rng.uniform(0.06, 0.12), rng.uniform(0.015, 0.04), rng.uniform(0.025, 0.045)
    t = np.linspace(0, 1, 40)
    nostril = np.zeros((n, n), np.float32)
    fold = np.zeros((n, n), np.float32)
    nostril_dist = np.full((n, n), 9.0, np.float32)
    for side in (-1, 1):
        x0 = cx + side * (hx + rng.normal(0, 0.006))
        y0 = hy + rng.normal(0, 0.006)
        a = a0 + rng.normal(0, 0.04)
        px = x0 + side * L * t * np.cos(a)
        py = y0 + L * t * np.sin(a) + bend * t ** 2
        w = wh * (1 - t) ** 0.9 + wt
        m = _stroke(np.stack([px, py], 1), w, wh * 2)
        nostril = np.maximum(nostril, np.clip((1.0 - m) / 0.35, 0, 1))
        nostril_dist = np.minimum(nostril_dist, m)
        # the alar fold: a wing along the slit, above it and on its outer side
        off = w * 1.3 + 0.012
        fx, fy = px + side * 0.3 * off, py - off
        fw = fold_w * (1.1 - 0.5 * t)
        fm = _stroke(np.stack([fx, fy], 1), fw, fold_w * 3)
        fold = np.maximum(fold, np.exp(-fm ** 2))
    nostril = nostril * nose

    # ---- philtrum: a groove splitting the lower half and running on through the lip
    ph_top = cy + ry * rng.uniform(-0.1, 0.25)
    ph_w = rng.uniform(0.012, 0.025)
    ph_d = rng.uniform(0.012, 0.03)
    wob = cx + 0.006 * np.sin(GY * rng.uniform(4, 9) + rng.uniform(0, 6))
    ph_dist = np.abs(GX - wob)
    philtrum = np.exp(-(ph_dist / ph_w) ** 2) * np.clip((GY - ph_top) / 0.12, 0, 1)

    # ---- bead mosaic: polygonal beads, finer near the nostrils, the philtrum and the edge
    c0 = brng.uniform(0.016, 0.03)             # bead diameter on the planum (leather widths)
    fine = brng.uniform(0.4, 0.6)
    near_n = np.exp(-np.clip(nostril_dist - 1, 0, None) / 0.8)
    near_p = np.exp(-ph_dist / 0.05) * np.clip((GY - ph_top + 0.1) / 0.1, 0, 1)
    near_e = np.clip((1 - sup) / 0.1, 0, 1)
    size = c0 * (1 - (1 - fine) * np.maximum(near_n, near_p))
    size *= 0.7 + 0.3 * near_e
    size *= 1 + 0.15 * smooth_noise(brng, n, n / 4)
    dens = (1.0 / size ** 2) * (nose > 0.01)
    expected = float(dens.sum() * PIX * PIX * 1.05)
    npts = max(16, int(expected))
    cand = brng.uniform(LO, HI, (npts * 6, 2)).astype(np.float32)
    ci = np.clip(((cand - LO) / PIX).astype(int), 0, n - 1)
    p = dens[ci[:, 1], ci[:, 0]] / dens.max()
    pts = cand[brng.random(len(cand)) < p][:npts]
    on = (nose > 0.01).ravel()                      # beads only where there is leather
    grid = np.stack([GX.ravel()[on], GY.ravel()[on]], 1)
    con = dens[::2, ::2].ravel() > 0
    coarse = np.stack([GX[::2, ::2].ravel()[con], GY[::2, ::2].ravel()[con]], 1)
    for _ in range(2):  # Lloyd relaxation: evenly packed polygonal beads
        _, lab = cKDTree(pts).query(coarse, k=1, workers=1)
        w = dens[::2, ::2].ravel()[con]
        cnt = np.bincount(lab, weights=w, minlength=len(pts)) + 1e-9
        sx = np.bincount(lab, weights=coarse[:, 0] * w, minlength=len(pts))
        sy = np.bincount(lab, weights=coarse[:, 1] * w, minlength=len(pts))
        keep = cnt > 1e-6
        pts = np.where(keep[:, None], np.stack([sx / cnt, sy / cnt], 1), pts).astype(np.float32)
    dq, lq = cKDTree(pts).query(grid, k=2, workers=1)
    d = np.full((n * n, 2), [0.0, 1.0], np.float32)
    d[on] = dq
    d = d.reshape(n, n, 2)
    lab0 = np.zeros(n * n, np.int64)
    lab0[on] = lq[:, 0]
    lab0 = lab0.reshape(n, n)
    edge = (d[..., 1] - d[..., 0]) / 2
    rel = np.clip(edge / (0.5 * size), 0, 1)
    groove_w = brng.uniform(0.15, 0.3)
    bead_h = np.clip((rel - groove_w * 0.5) / (1 - groove_w * 0.5), 0, 1) ** brng.uniform(0.4, 0.6)
    per_bead = brng.uniform(0.75, 1.2, len(pts)).astype(np.float32)
    bead_tone = brng.normal(0, 1, len(pts)).astype(np.float32)
    groove = np.clip(1 - rel / groove_w, 0, 1)
    inside = nose * (1 - nostril)
    # beads are cobblestones on the dome, their height a share of their own diameter
    bead_amp = brng.uniform(0.08, 0.16) * size
    height += bead_amp * bead_h * per_bead[lab0] * inside
    height += 0.0015 * smooth_noise(brng, n, 4)
    height += fold_h * fold * (1 - nostril) * nose
    height -= ph_d * philtrum
    height -= depth * nostril ** 0.7

    # ---- pigment: cluster colour, brown/liver tints, mottled pink with dark patches, pink spots
    k = rng.choice(5, p=SHARES)
    base = CLUSTERS[k] * rng.uniform(0.85, 1.2) * np.exp(rng.normal(0, 0.04, 3))
    base = np.clip(base * rng.uniform(1.2, 1.5), 0.03, 0.75)   # albedo above the shaded colour
    kind = rng.random()
    if k <= 3 and kind < 0.2:            # liver / brown
        base = base * np.array([1.3, 0.95, 0.8]) * rng.uniform(0.9, 1.2)
    elif k <= 2 and kind < 0.35:         # slate grey
        base = base * np.array([0.95, 1.0, 1.08]) * rng.uniform(1.0, 1.3)
    alb = np.ones((n, n, 3), np.float32) * np.clip(base, 0, 1).astype(np.float32)
    pink = (np.array([0.78, 0.55, 0.52]) * rng.uniform(0.8, 1.1)).astype(np.float32)
    if kind > 0.85 or k == 4:            # mottled (butterfly) nose: pink with dark patches, or dark with pink
        f = smooth_noise(rng, n, rng.uniform(n / 12, n / 5), octaves=3)
        mott = np.clip((f - rng.uniform(-0.1, 0.45)) / 0.08, 0, 1).astype(np.float32)
        alb = alb * (1 - mott[..., None]) + pink * mott[..., None]
    if rng.random() < 0.25:              # a few pink spots
        spots = np.zeros((n, n), np.float32)
        for _ in range(int(rng.integers(1, 6))):
            p = (int((rng.uniform(0.15, 0.85) - LO) / PIX), int((rng.uniform(0.1, 0.75) - LO) / PIX))
            ax = (int(rng.uniform(4, 23)), int(rng.uniform(4, 18)))
            cv2.ellipse(spots, p, ax, rng.uniform(0, 180), 0, 360, 1.0, -1, lineType=cv2.LINE_AA)
        spots = cv2.GaussianBlur(spots, (0, 0), 1.5)
        alb = alb * (1 - spots[..., None]) + pink * spots[..., None]
    tone = 1 + 0.08 * bead_tone[lab0] + 0.08 * smooth_noise(rng, n, n / 6)
    alb = alb * tone[..., None]
    alb = alb * (1 - rng.uniform(0.1, 0.3) * groove * inside)[..., None]
    nos_col = base * rng.uniform(0.3, 0.6)
    alb = alb * (1 - nostril[..., None]) + nos_col.astype(np.float32) * nostril[..., None]

    # Fur strands are drawn with the print: two dogs never share them hair for hair.
    fur, fur_h = _fur(brng, cx, cy, n, light_leather=bool(k >= 3 or kind > 0.85))
    lip = np.exp(-(ph_dist / (ph_w * 2)) ** 2) * np.clip(1 - (GY - bottom) / 0.3, 0, 1) * (GY > bottom)
    fur = fur * (1 - 0.5 * lip[..., None])
    fur = 0.75 * fur + 0.25 * 0.4    # corners: fur and whatever is behind it, less extreme than the coat alone
    albedo = alb * nose[..., None] + fur * (1 - nose[..., None])
    height = height + 0.004 * fur_h * (1 - nose)
    height = cv2.GaussianBlur(height.astype(np.float32), (0, 0), 0.7)
    # normals (x right, y down the face, z towards the viewer) and ambient occlusion from the cavities
    gy, gx = np.gradient(height, PIX)
    inv = 1 / np.sqrt(gx * gx + gy * gy + 1)
    normal = np.stack([-gx * inv, -gy * inv, inv], -1)
    cav = cv2.GaussianBlur(height, (0, 0), 6) - height
    ao = np.clip(1 - 5 * np.clip(cav, 0, None), 0.35, 1)
    maps = np.concatenate([np.clip(albedo, 0, 1), normal, nose[..., None], (bead_h * inside)[..., None],
                           ao[..., None], (0.5 + 0.5 * smooth_noise(rng, n, n / 6))[..., None]], -1)
    # crop box around the leather: the edge ring at the foot of the dome and a little above it
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    low = np.sin(th) > 0
    pwt = np.where(low, pw_bot, pw_top)
    ey = cy + np.where(low, ry_bot, ry_top) * np.sign(np.sin(th)) * np.abs(np.sin(th)) ** (2 / pwt)
    vt = np.clip((ey - cy) / ry_bot, 0, 1)
    ex = cx + rx * (1 - taper * vt ** 1.5) * np.sign(np.cos(th)) * np.abs(np.cos(th)) ** (2 / pwt)
    ring = np.concatenate([np.stack([ex, ey, np.zeros_like(ex)], 1), np.stack([ex, ey, np.full_like(ex, 0.3 * D)], 1)])
    return {
        "maps": maps.astype(np.float32),               # albedo rgb, normal xyz, nose, bead tops, ao, wet film
        "height": height.astype(np.float32),
        "nose": nose.astype(np.float32),
        "dome": float(D),
        "centre": (float(cx), float(cy), float(0.6 * D)),
        "ring": ring.astype(np.float32),
        "wet": float(rng.uniform(0, 1) ** 1.5),
        "fill": (float(rng.uniform(0.9, 1.05)), float(rng.uniform(0.82, 0.96))),  # share of the crop the leather fills
        "dist": float(np.exp(rng.uniform(np.log(2.5), np.log(7.0)))),   # phone distance, leather widths
        "size_z": float(rng.normal()),               # this dog's photos tend to be large or small
        "bright": float(rng.normal()),               # owner's room: lighting level
        "light": (float(rng.normal(0, 1.0)), float(rng.uniform(0.4, 1.1))),   # main light: azimuth from above, angle off the axis
    }


def sample_size(rng, z=None):
    """Capture short side in pixels, from the real distribution; z correlates one dog's photos."""
    from scipy.special import ndtr
    e = rng.normal()
    q = float(ndtr(e if z is None else 0.45 * z + np.sqrt(1 - 0.45 ** 2) * e))
    return int(np.interp(q, SIZE_Q, SIZE_V))


# The camera: distributions of focus, exposure and tone-curve parameters across phones, rooms and
# owners. Fitted by fit-camera.py (the realism probe over 1,000 rendered scenes; `--ids 250 --caps 4 --rounds 2`),
# not set by eye; the comments give what each one controls.
CAMERA = {
    "blur_px": 0.8825,            # median focus blur, pixels at 224
    "blur_spread": 0.3971,        # log-normal spread of the focus blur
    "fur_focus": 0.4533,          # share of photos focused on the fur rather than the leather
    "exposure": 0.285,           # median exposure target (frame mean)
    "exposure_dog": 0.38,       # log spread between dogs (coat, room)
    "exposure_shot": 0.22,      # log spread between shots of one dog
    "contrast": 0.9,           # tone-curve power at a typical scene
    "contrast_range": 0.1031,     # +- around it
    "flat_ref": 0.75,             # log-luminance spread the tone mapping treats as typical
    "flat_power": 0.7275,         # how strongly flat scenes are stretched
    "contrast_max": 1.6,        
    "noise": 0.0079,              # sensor noise at mid grey
    "sharpen": 0.2406,            # mean strength of the phone's sharpening (applied to half the photos)
}


def _camera(ident, rng):
    """A phone viewpoint: distance, yaw, pitch, roll around the nose -> (position, right, down, forward)."""
    dist = ident["dist"] * np.exp(rng.normal(0, 0.12))
    yaw, pitch, roll = rng.normal(0, 0.2), rng.normal(0.04, 0.15), rng.normal(0, 0.05)
    cy_, sy_, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    R = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    T = np.array(ident["centre"]) + rng.normal(0, 0.02, 3) * np.array([1, 1, 0])
    C = T + dist * R[:, 2]
    right, down, fwd = R[:, 0], R[:, 1], -R[:, 2]
    cr, sr = np.cos(roll), np.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return C, right, down, fwd


def _raycast(height, C, dirs, zmax, zmin, steps=18, refine=5):
    """First hit of the rays C + t*dirs with the height field (march down in z, then bisect) -> canvas pixel maps."""
    dz = dirs[..., 2]
    ax = ((C[0] - C[2] * dirs[..., 0] / dz) - LO) / PIX
    bx = dirs[..., 0] / dz / PIX
    ay = ((C[1] - C[2] * dirs[..., 1] / dz) - LO) / PIX
    by = dirs[..., 1] / dz / PIX
    ax, bx, ay, by = (v.astype(np.float32) for v in (ax, bx, ay, by))

    def h_at(z):
        return cv2.remap(height, ax + bx * z, ay + by * z, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    shape = dz.shape
    hit = np.zeros(shape, bool)
    z_hi = np.full(shape, zmax, np.float32)
    z_lo = np.full(shape, zmin, np.float32)
    prev = zmax
    for z in np.linspace(zmax, zmin, steps)[1:]:
        below = (z <= h_at(np.float32(z))) & ~hit
        z_hi[below] = prev
        z_lo[below] = z
        hit |= below
        prev = z
        if hit.all():
            break
    z_hi[~hit] = zmin
    for _ in range(refine):
        zm = 0.5 * (z_lo + z_hi)
        below = zm <= h_at(zm)
        z_lo = np.where(below, zm, z_lo)
        z_hi = np.where(below, z_hi, zm)
    z = 0.5 * (z_lo + z_hi)
    return ax + bx * z, ay + by * z


def _light(ident, rng, right, down, fwd):
    """Indoor lights in the camera frame (mostly from above, some from the side, sometimes the flash) -> world."""
    if rng.random() < 0.3:      # another room or time of day
        az, off = rng.normal(0, 0.9), rng.uniform(0.25, 1.1)
    else:                       # the session's light, moved a little by the dog or the phone
        az, off = ident["light"][0] + rng.normal(0, 0.35), np.clip(ident["light"][1] + rng.normal(0, 0.12), 0.1, 1.2)
    if rng.random() < 0.12:     # the phone's flash: light from the lens
        az, off = 0.0, rng.uniform(0.0, 0.15)

    def world(az, off):
        # azimuth 0 = from the top of the frame, positive towards its right
        v = np.sin(off) * np.sin(az) * right - np.sin(off) * np.cos(az) * down - np.cos(off) * fwd
        return v / np.linalg.norm(v)

    side = rng.choice([-1, 1]) * rng.uniform(0.9, 1.8)
    return world(az, off), world(side, rng.uniform(0.5, 1.2)), rng.uniform(0.0, 0.45)


def _view(ident, rng, size):
    """Viewpoint and lighting: the surface seen from the phone (perspective ray-cast of the height field),
    shaded from its normals, at the capture's pixel size, linear; and the leather mask."""
    s = sample_size(rng, ident["size_z"]) if size is None else size
    rs = max(s, 256)                                 # render at least this large, then area-average down
    C, right, down, fwd = _camera(ident, rng)
    # the crop: a detector's box around the leather's projected outline, resized to a square
    q = ident["ring"] - C
    depth = q @ fwd
    a, b = (q @ right) / depth, (q @ down) / depth
    fx, fy = ident["fill"]
    bw = (a.max() - a.min()) / (fx * np.exp(rng.normal(0, 0.07)))
    bh = (b.max() - b.min()) / (fy * np.exp(rng.normal(0, 0.07)))
    ac = 0.5 * (a.max() + a.min()) + rng.normal(0, 0.04) * bw
    bc = 0.5 * (b.max() + b.min()) + rng.normal(0, 0.04) * bh
    g = (np.arange(rs, dtype=np.float64) + 0.5) / rs - 0.5
    A, B = np.meshgrid(ac + g * bw, bc + g * bh)
    dirs = fwd[None, None, :] + A[..., None] * right[None, None, :] + B[..., None] * down[None, None, :]
    D = ident["dome"]
    mx, my = _raycast(ident["height"], C, dirs, D * 1.1 + 0.02, -0.45)
    m = cv2.remap(ident["maps"], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alb, nrm, nose, btop, ao, wmap = m[..., 0:3], m[..., 3:6], m[..., 6], m[..., 7], m[..., 8], m[..., 9]
    nrm = nrm / (np.linalg.norm(nrm, axis=-1, keepdims=True) + 1e-6)
    view = -(dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)).astype(np.float32)
    L1, L2, w2 = _light(ident, rng, right, down, fwd)
    ndl1 = np.clip(nrm @ L1.astype(np.float32), 0, 1)
    ndl2 = np.clip(nrm @ L2.astype(np.float32), 0, 1)
    amb = rng.uniform(0.3, 0.6)
    # uneven falloff over the frame (a lamp nearer one side)
    fa = rng.uniform(0, 2 * np.pi)
    fall = 1 + rng.uniform(0, 0.7) * (A / bw * np.cos(fa) + B / bh * np.sin(fa))
    shade = (amb * ao + (1 - amb) * (ndl1 + w2 * ndl2) / (1 + w2) * np.sqrt(ao)) * np.clip(fall, 0.3, 2)
    img = alb * shade[..., None].astype(np.float32)
    wet = float(np.clip(ident["wet"] + rng.normal(0, 0.2), 0, 1))
    if wet > 0.1:               # the wet film: broad sheen on the dome and glints on bead tops
        hv = L1[None, None, :].astype(np.float32) + view
        hv /= np.linalg.norm(hv, axis=-1, keepdims=True) + 1e-6
        ndh = np.clip((nrm * hv).sum(-1), 0, 1)
        film = np.clip((wmap - (1 - wet)) / 0.2, 0, 1) * nose
        glare = ndh ** rng.uniform(20, 80) * rng.uniform(0.15, 0.8)
        glint = ndh ** rng.uniform(120, 300) * btop * rng.uniform(0.2, 1.0)
        img = img + ((glare + glint) * film * wet)[..., None]
    img = img.astype(np.float32)
    if rs != s:
        img = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
        nose = cv2.resize(nose, (s, s), interpolation=cv2.INTER_AREA)
    return img, nose.astype(np.float32)


def _optics(out, m_nose, rng, cam):
    """Focus on the leather or on the fur (the leather stands closer to the lens), motion, frame orientation."""
    px = out.shape[0] / 224
    blur_base = np.exp(rng.normal(np.log(cam["blur_px"]), cam["blur_spread"])) * px
    if rng.random() < cam["fur_focus"]:
        b_nose, b_fur = blur_base * rng.uniform(1.3, 2.5), blur_base * rng.uniform(0.3, 0.8)
    else:
        b_nose, b_fur = blur_base, blur_base * rng.uniform(1.0, 2.0)
    sharp_n = cv2.GaussianBlur(out, (0, 0), max(b_nose, 0.3))
    sharp_f = cv2.GaussianBlur(out, (0, 0), max(b_fur, 0.3))
    mask = cv2.GaussianBlur(m_nose, (0, 0), 2 * px)[..., None]
    out = sharp_n * mask + sharp_f * (1 - mask)
    if rng.random() < 0.3:
        out = cv2.filter2D(out, -1, _line_kernel(rng.uniform(2, 7) * px, rng.uniform(0, 180)))
    if rng.random() < 0.04:      # a frame rotated in its photo (phone orientation)
        out = np.ascontiguousarray(np.rot90(out, int(rng.choice([1, 3]))))
    return out


def _phone(out, rng, bright, cam, quality=None):
    """Colour cast, auto-exposure, tone curve, highlight roll-off, noise, sharpening, JPEG -> PIL image."""
    px = out.shape[0] / 224
    warm, tint = rng.normal(0, 0.05), rng.normal(0, 0.015)    # indoor light: warm/cool and green/magenta
    cast = np.exp(np.array([warm - tint, tint, -warm - tint])).astype(np.float32)
    out = out * cast
    # matrix metering: the whole frame is exposed to a mid-grey target
    m = float(out.mean()) + 1e-4
    target = np.exp(np.log(cam["exposure"]) + cam["exposure_dog"] * bright + rng.normal(0, cam["exposure_shot"]))
    out = out * float(np.clip(target / m, 0.3, 8.0))
    # the tone curve raises luminance ratios around the exposed mean to a power (colours keep their
    # saturation); global tone mapping stretches flat scenes and compresses high-dynamic-range ones
    lum = (out @ np.array([0.299, 0.587, 0.114], np.float32))[..., None] + 1e-4
    spread = float(np.log(lum).std())
    gamma = (cam["contrast"] + rng.uniform(-1, 1) * cam["contrast_range"]) \
        * (cam["flat_ref"] / (spread + 1e-3)) ** cam["flat_power"]
    gamma = np.clip(gamma, 0.8, cam["contrast_max"])
    out = out * (target * (lum / target) ** gamma / lum)
    # highlight protection: no more than the brightest 1% of the frame is pushed past white
    out = out * min(1.0, 1.0 / (float(np.percentile(out.mean(-1), 99)) + 1e-4))
    knee = rng.uniform(0.7, 0.85)                    # highlight shoulder: the curve rolls off instead of clipping
    out = np.where(out > knee, knee + (1 - knee) * np.tanh((out - knee) / (1 - knee)), out)
    sigma = np.exp(rng.normal(np.log(cam["noise"]), 0.4))
    noise = rng.standard_normal(out.shape[:2] + (1,)).astype(np.float32) * sigma
    noise = noise + rng.standard_normal(out.shape).astype(np.float32) * sigma * 0.5
    out = out + noise * np.sqrt(np.clip(out, 0.02, 1))
    if rng.random() < 0.5:       # phone sharpening
        bl = cv2.GaussianBlur(out, (0, 0), 1.2 * px)
        out = out + cam["sharpen"] * rng.uniform(0.3, 1.7) * (out - bl)
    u8 = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    q = int(quality if quality is not None else (95 if rng.random() < 0.85 else rng.integers(70, 95)))
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render_capture(ident, rng, size=None, quality=None, return_raw=False, cam=None):
    """One phone capture of an identity -> uint8 (224,224,3) RGB (after JPEG + LANCZOS as the service does)."""
    cam = CAMERA if cam is None else cam
    out, m_nose = _view(ident, rng, size)
    out = _optics(out, m_nose, rng, cam)
    im = _phone(out, rng, ident["bright"], cam, quality)
    if return_raw:
        return im
    return np.asarray(im.resize((OUT, OUT), Image.LANCZOS))
