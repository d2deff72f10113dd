"""Synthetic dog nose-print renderer (numpy + OpenCV).

An identity is one dog's nose and muzzle, fixed for life: the outline of the
leather, the shape, size and tilt of the nostrils with their rims, the
philtrum, the bead mosaic (finer near the nostrils and the philtrum), the
pigment (black, slate, brown, liver, pink, or mottled) with its patches and
spots, and the fur and whiskers framing the nose.

A capture is one phone photo of it, made the way real ones differ from each
other: a square crop in which the leather fills most of the width, a viewpoint
(yaw, pitch, a little roll, distance), focus that may sit on the fur rather
than the leather, motion, indoor uneven lighting with a colour cast, a wet
film that throws broad glare, auto-exposure and the phone's tone curve,
sensor noise, sharpening, the capture's pixel size, JPEG at the phone's
quality, then LANCZOS to 224 as the service does.

Every statistic the captures share with real photos comes from a mechanism
(geometry, optics, exposure), not from copied numbers; the only measured
figures used as inputs are the real crop sizes and the real leather colour
clusters, which are properties of the subject and the cropping, not of the
renderer's output. Everything is driven by numpy Generators, so a (seed,
identity, capture) triple always renders the same pixels.
"""
import io

import cv2
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

CANVAS = 512          # canvas pixels; covers nose coordinates [LO, HI]
LO, HI = -0.5, 1.5    # the leather spans about x in [0, 1]
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
    """Low-frequency noise in [-1,1]-ish at canvas size n."""
    out = np.zeros((n, n), np.float32)
    amp = 1.0
    for o in range(octaves):
        s = max(2, int(n / max(scale_px / (2 ** o), 1)))
        small = rng.standard_normal((s + 2, s + 2)).astype(np.float32)
        big = cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)
        out += amp * cv2.GaussianBlur(big, (0, 0), 0.3 * n / s)
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


def make_identity(rng, bead_rng=None):
    """Draws one nose. Returns a dict of canvas maps (height, albedo, masks) for rendering.

    `bead_rng`, when given, draws the bead mosaic, the fine relief and the fur strands: noses made from
    one `rng` and different `bead_rng`s share outline, nostrils, philtrum, leather pigment and lighting
    and differ in the print itself and in the hair around it (look-alike families, the hardest
    impostors). Without it, `rng` draws
    everything, exactly as before."""
    n = CANVAS
    brng = rng if bead_rng is None else bead_rng
    # ---- outline of the leather: a rounded, slightly flattened superellipse with its own bumps
    cx = 0.5 + rng.normal(0, 0.01)
    top = rng.uniform(0.0, 0.1)
    bottom = rng.uniform(0.78, 0.9)
    rx = rng.uniform(0.46, 0.54)
    pw = rng.uniform(2.0, 3.2)
    cy = (top + bottom) / 2
    ry = (bottom - top) / 2
    edge_noise = smooth_noise(rng, n, n / 5, octaves=2) * rng.uniform(0.02, 0.06)
    dip = rng.uniform(0.0, 0.08) * np.exp(-((GX - cx) / rng.uniform(0.12, 0.25)) ** 2) * (GY < cy)
    sup = (np.abs((GX - cx) / rx) ** pw + np.abs((GY - cy - dip) / ry) ** pw) ** (1 / pw)
    nose_d = sup - 1 + edge_noise                    # <0 inside the leather
    nose = np.clip(0.5 - nose_d / 0.012, 0, 1)

    # ---- nostrils: rounded dark openings in the lower half with a tail outwards, each with a rim
    ndx = rng.uniform(0.2, 0.27)
    ny = rng.uniform(0.55, 0.64)
    nrx, nry = rng.uniform(0.09, 0.13), rng.uniform(0.07, 0.1)
    tilt = rng.uniform(0.1, 0.6)
    tail = rng.uniform(0.5, 1.1)
    nostril = np.zeros((n, n), np.float32)
    rim = np.zeros((n, n), np.float32)
    nostril_dist = np.full((n, n), 9.0, np.float32)
    for side in (-1, 1):
        x0 = cx + side * (ndx + rng.normal(0, 0.008))
        y0 = ny + rng.normal(0, 0.008)
        ang = side * (tilt + rng.normal(0, 0.05))
        m1 = _ellipse_metric(x0, y0, nrx * rng.uniform(0.93, 1.07), nry, ang)
        m2 = _ellipse_metric(x0 + side * nrx * 0.9 * tail, y0 + nry * 0.9, nrx * 0.8 * tail, nry * 0.38,
                             side * (tilt + rng.uniform(0.2, 0.6)))
        m = np.minimum(m1, m2)
        nostril = np.maximum(nostril, np.clip((1.0 - m) / 0.12, 0, 1))
        nostril_dist = np.minimum(nostril_dist, m)
        # the rim: a raised, smooth wall around the opening, thickest above it (the alar fold)
        above = np.clip((y0 + 0.02 - GY) / 0.05, 0, 1)
        r_w = rng.uniform(0.25, 0.45)
        rim = np.maximum(rim, np.exp(-((m - 1 - r_w / 2) / (r_w / 2)) ** 2) * (0.5 + 0.5 * above))

    # ---- philtrum: a groove from the middle of the leather down through the lip
    ph_top = rng.uniform(0.3, 0.5)
    ph_w = rng.uniform(0.010, 0.02)
    wob = cx + 0.008 * np.sin(GY * rng.uniform(4, 9) + rng.uniform(0, 6))
    ph_dist = np.abs(GX - wob)
    philtrum = np.exp(-(ph_dist / ph_w) ** 2) * np.clip((GY - ph_top) / 0.1, 0, 1)

    # ---- bead mosaic: polygonal beads, finer near the nostrils, the philtrum and the edge
    c0 = brng.uniform(0.016, 0.03)             # bead diameter on the planum (leather widths)
    fine = brng.uniform(0.4, 0.6)
    near_n = np.exp(-np.clip(nostril_dist - 1, 0, None) / 0.5)
    near_p = np.exp(-ph_dist / 0.05) * np.clip((GY - ph_top + 0.1) / 0.1, 0, 1)
    near_e = np.clip(-nose_d / 0.1, 0, 1)
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
    grid = np.stack([GX.ravel(), GY.ravel()], 1)
    coarse = np.stack([GX[::2, ::2].ravel(), GY[::2, ::2].ravel()], 1)
    for _ in range(2):  # Lloyd relaxation: evenly packed polygonal beads
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
    edge = (d[..., 1] - d[..., 0]) / 2
    rel = np.clip(edge / (0.5 * size), 0, 1)
    groove_w = brng.uniform(0.15, 0.3)
    bead_h = np.clip((rel - groove_w * 0.5) / (1 - groove_w * 0.5), 0, 1) ** brng.uniform(0.4, 0.6)
    per_bead = brng.uniform(0.75, 1.2, len(pts)).astype(np.float32)
    bead_tone = brng.normal(0, 1, len(pts)).astype(np.float32)
    groove = np.clip(1 - rel / groove_w, 0, 1)
    inside = nose * (1 - nostril)
    # height in leather widths x 100: beads are low domes on a rounded nose
    dome = 1 - (1 - np.clip(1 - sup, 0, 1)) ** 2     # rounded top, finite slope at the edge
    height = 0.5 * bead_h * per_bead[lab0] * inside + 3.0 * dome * nose
    height += 0.05 * smooth_noise(brng, n, 4)
    height += 0.8 * rim * nose
    height -= 0.7 * philtrum * nose
    height -= 2.0 * nostril
    height = cv2.GaussianBlur(height, (0, 0), 0.7)

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
            p = (int(rng.uniform(0.15, 0.85) / PIX - LO / PIX), int(rng.uniform(0.1, 0.75) / PIX - LO / PIX))
            ax = (int(rng.uniform(3, 18)), int(rng.uniform(3, 14)))
            cv2.ellipse(spots, p, ax, rng.uniform(0, 180), 0, 360, 1.0, -1, lineType=cv2.LINE_AA)
        spots = cv2.GaussianBlur(spots, (0, 0), 1.5)
        alb = alb * (1 - spots[..., None]) + pink * spots[..., None]
    tone = 1 + 0.08 * bead_tone[lab0] + 0.08 * smooth_noise(rng, n, n / 6)
    alb = alb * tone[..., None]
    alb = alb * (1 - rng.uniform(0.1, 0.35) * groove * inside)[..., None]
    nos_col = base * rng.uniform(0.08, 0.2)
    alb = alb * (1 - nostril[..., None]) + nos_col.astype(np.float32) * nostril[..., None]
    alb = alb * (1 - 0.35 * philtrum[..., None])

    # Fur strands are drawn with the print: two dogs never share them hair for hair.
    fur, fur_h = _fur(brng, cx, cy, n, light_leather=bool(k >= 3 or kind > 0.85))
    # the lip below the philtrum: the groove continues through the fur
    lip = np.exp(-(ph_dist / (ph_w * 2)) ** 2) * np.clip(1 - (GY - bottom) / 0.3, 0, 1) * (GY > bottom)
    fur = fur * (1 - 0.5 * lip[..., None])
    albedo = alb * nose[..., None] + fur * (1 - nose[..., None])
    height = height * nose + fur_h * (1 - nose)
    return {
        "albedo": np.clip(albedo, 0, 1).astype(np.float32),
        "height": height.astype(np.float32),
        "nose": nose.astype(np.float32),
        "bead_top": (bead_h * inside).astype(np.float32),
        "wet_map": (0.5 + 0.5 * smooth_noise(rng, n, n / 6)).astype(np.float32),
        "wet": float(rng.uniform(0, 1) ** 1.5),
        "fill": float(rng.uniform(0.68, 0.9)),       # share of the crop width the leather fills
        "size_z": float(rng.normal()),               # this dog's photos tend to be large or small
        "bright": float(rng.normal()),               # owner's room: lighting level
        "light": (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.1, 0.8))),   # its main light: azimuth, elevation
    }


def sample_size(rng, z=None):
    """Capture short side in pixels, from the real distribution; z correlates one dog's photos."""
    from scipy.special import ndtr
    e = rng.normal()
    q = float(ndtr(e if z is None else 0.45 * z + np.sqrt(1 - 0.45 ** 2) * e))
    return int(np.interp(q, SIZE_Q, SIZE_V))


def _shade(ident, rng):
    """Indoor lighting on the canvas: one main light, ambient, uneven falloff, broad glare on wet leather."""
    h = ident["height"]
    gy, gx = np.gradient(h * 0.01 / PIX)
    inv = 1 / np.sqrt(gx * gx + gy * gy + 1)
    nx, ny, nz = -gx * inv, -gy * inv, inv
    if rng.random() < 0.3:      # another room or time of day
        la, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.8)
    else:                       # the session's light, moved a little by the dog or the phone
        la, el = ident["light"][0] + rng.normal(0, 0.5), np.clip(ident["light"][1] + rng.normal(0, 0.12), 0.05, 0.9)
    lx, ly, lz = np.sin(el) * np.cos(la), np.sin(el) * np.sin(la), np.cos(el)
    ndl = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
    amb = rng.uniform(0.15, 0.45)
    fall = 1 + rng.uniform(0, 0.5) * ((GX - 0.5) * np.cos(la) + (GY - 0.5) * np.sin(la))
    fall *= 1 - rng.uniform(0, 0.35) * ((GX - 0.5) ** 2 + (GY - 0.45) ** 2)
    shade = (amb + (1 - amb) * ndl) * np.clip(fall, 0.2, 2)
    img = ident["albedo"] * shade[..., None]
    wet = float(np.clip(ident["wet"] + rng.normal(0, 0.2), 0, 1))
    if wet > 0.1:
        hx, hy, hz = lx, ly, lz + 1
        hn = np.sqrt(hx * hx + hy * hy + hz * hz)
        ndh = np.clip((nx * hx + ny * hy + nz * hz) / hn, 0, 1)
        film = np.clip((ident["wet_map"] - (1 - wet)) / 0.2, 0, 1) * ident["nose"]
        glare = ndh ** rng.uniform(20, 80) * rng.uniform(0.15, 0.8)         # broad sheen on the dome
        glint = ndh ** rng.uniform(120, 300) * ident["bead_top"] * rng.uniform(0.2, 1.0)   # a few bead tops
        spec = (glare + glint) * film * wet
        img = img + spec[..., None] * np.array([1.0, 1.0, 1.0], np.float32)
    return img.astype(np.float32)


# The camera: distributions of focus, exposure and tone-curve parameters across phones, rooms and
# owners. Fitted by fit-camera.py (the realism probe over 1,000 rendered scenes; `--ids 250 --caps 4 --rounds 2`),
# not set by eye; the comments give what each one controls.
CAMERA = {
    "blur_px": 0.8825,            # median focus blur, pixels at 224
    "blur_spread": 0.3971,        # log-normal spread of the focus blur
    "fur_focus": 0.4533,          # share of photos focused on the fur rather than the leather
    "exposure": 0.3017,           # median exposure target (frame mean)
    "exposure_dog": 0.2833,       # log spread between dogs (coat, room)
    "exposure_shot": 0.1713,      # log spread between shots of one dog
    "contrast": 1.1293,           # tone-curve power at a typical scene
    "contrast_range": 0.1031,     # +- around it
    "flat_ref": 0.75,             # log-luminance spread the tone mapping treats as typical
    "flat_power": 0.7275,         # how strongly flat scenes are stretched
    "contrast_max": 2.6,        
    "noise": 0.0079,              # sensor noise at mid grey
    "sharpen": 0.2406,            # mean strength of the phone's sharpening (applied to half the photos)
}


def _view(ident, rng, size):
    """Lighting and viewpoint: the capture at its pixel size, linear, and the leather mask."""
    img = _shade(ident, rng)
    s = sample_size(rng, ident["size_z"]) if size is None else size
    # a square crop with the leather filling most of the width, small roll, yaw/pitch, distance
    fill = ident["fill"] * np.exp(rng.normal(0, 0.035))
    span = 1.0 / fill
    roll = rng.normal(0, 2.5)
    c, sn = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    ccx = 0.5 + rng.normal(0, 0.008) * span
    ccy = 0.47 + rng.normal(0, 0.008) * span
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * span / 2
    yaw, pitch = rng.normal(0, 0.06), rng.normal(0, 0.06)    # foreshortening of one side / the top
    corners[:, 1] *= 1 + yaw * np.sign(corners[:, 0])
    corners[:, 0] *= 1 + pitch * np.sign(corners[:, 1])
    corners = corners @ np.array([[c, sn], [-sn, c]], np.float32)
    corners += np.array([ccx, ccy], np.float32)
    src = (corners - LO) / PIX
    dst = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float32)
    H = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    scale = s / (span / PIX)
    if scale < 1:
        img = cv2.GaussianBlur(img, (0, 0), 0.45 / scale)
    out = cv2.warpPerspective(img, H, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m_nose = cv2.warpPerspective(ident["nose"], H, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out, m_nose


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
