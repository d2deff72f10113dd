"""Shared pieces of the pipeline: dataset listing, reference preprocessing,
embedding (PyTorch or the ONNX file through onnxruntime-node), verification
metrics and the cosine -> similarity calibration."""
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------- datasets

def list_dataset(path, image_root=None):
    """(a) folder with one sub-folder per dog, (b) CSV `dog ID,nose print image` (+ image_root), or
    (c) a flat folder of `<dog>_<n>.jpg` files (no per-dog sub-folders: the dog is the name before the
    last underscore). Other files at the top level (e.g. manifest.json) are ignored.
    Returns a list of (dog id string, image path)."""
    items = []
    if os.path.isdir(path):
        for dog in sorted(os.listdir(path)):
            d = os.path.join(path, dog)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.lower().endswith(IMAGE_EXT):
                    items.append((dog, os.path.join(d, f)))
        if not items:
            for f in sorted(os.listdir(path)):
                if f.lower().endswith(IMAGE_EXT) and os.path.isfile(os.path.join(path, f)):
                    stem = os.path.splitext(f)[0]
                    items.append((stem.rsplit("_", 1)[0] if "_" in stem else stem, os.path.join(path, f)))
    elif path.lower().endswith(".csv"):
        root = image_root or os.path.dirname(os.path.abspath(path))
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        head = [h.strip().lower() for h in rows[0]]
        di = next(i for i, h in enumerate(head) if h.replace("_", " ") in ("dog id", "dogid", "dog"))
        ii = next(i for i, h in enumerate(head) if "image" in h)
        for r in rows[1:]:
            if len(r) > max(di, ii) and r[ii].strip():
                p = r[ii].strip()
                cands = [os.path.join(root, p), os.path.join(root, "images", p)]
                items.append((r[di].strip(), next((c for c in cands if os.path.exists(c)), cands[0])))
    else:
        raise SystemExit(f"dataset must be a folder of per-dog folders or a .csv: {path}")
    if not items:
        raise SystemExit(f"no images found in {path}")
    return items


def dedupe(items):
    """Drops exact duplicate files within one dog (same bytes)."""
    seen, out, dropped = set(), [], 0
    for dog, p in items:
        with open(p, "rb") as f:
            h = hashlib.sha1(f.read()).hexdigest()
        if (dog, h) in seen:
            dropped += 1
            continue
        seen.add((dog, h))
        out.append((dog, p))
    return out, dropped


def preprocess(path):
    """The reference: PIL open, exif_transpose, RGB, resize 224x224 LANCZOS -> uint8 HWC."""
    im = Image.open(path)
    im = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(im.resize((224, 224), Image.LANCZOS))


def to_chw(u8):
    """uint8 (N,224,224,3) -> float32 (N,3,224,224) in [0,1]."""
    return np.ascontiguousarray(u8.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


# ---------------------------------------------------------------- embedding

def embed_torch(model, u8, batch=32):
    import torch
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(u8), batch):
            x = torch.from_numpy(to_chw(np.asarray(u8[i:i + batch])))
            out.append(model(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def embed_onnx(onnx_path, u8, batch=16):
    """Runs the ONNX file with onnxruntime-node (models/train/onnx-embed.mjs)."""
    with tempfile.TemporaryDirectory() as td:
        inp, outp = os.path.join(td, "in.npy"), os.path.join(td, "out.npy")
        np.save(inp, to_chw(np.asarray(u8)))
        subprocess.run(["node", os.path.join(HERE, "onnx-embed.mjs"), onnx_path, inp, outp, str(batch)],
                       check=True, cwd=ROOT)
        return np.load(outp)


def degrade(u8, rng):
    """The hardest capture condition real photos show often: out of focus and small (Laplacian variance
    near the real 5th percentile), re-encoded at a low JPEG quality."""
    import cv2
    import io
    x = cv2.GaussianBlur(u8.astype(np.float32), (0, 0), rng.uniform(1.2, 2.2))
    side = int(rng.integers(96, 140))
    x = cv2.resize(cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA), (224, 224), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(rng.integers(50, 80)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def recapture(u8, rng):
    """A later photo of the same nose, made from an earlier one by augmentation only (the proxy for
    re-capture): small roll, scale and shift, focus or sharpening (Laplacian variance changing by up to
    about 10x), exposure, contrast, saturation and white-balance changes in the ranges measured between
    two real photos of one dog, then JPEG again. uint8 (224,224,3) -> uint8 (224,224,3)."""
    import cv2
    import io
    x = u8.astype(np.float32) / 255
    ang = rng.normal(0, 4.0) + (rng.choice([90, -90]) if rng.random() < 0.04 else 0)
    M = cv2.getRotationMatrix2D((112 + rng.normal(0, 4), 112 + rng.normal(0, 4)), ang, float(np.exp(rng.normal(0, 0.05))))
    x = cv2.warpAffine(x, M, (224, 224), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.8))
    else:
        x = x + rng.uniform(0.0, 1.0) * (x - cv2.GaussianBlur(x, (0, 0), 1.0))
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * np.exp(rng.normal(0, 0.15))
    m = float(grey.mean())
    x = (m + (x - m) * np.exp(rng.normal(0, 0.15))) * np.exp(rng.normal(0, 0.2))
    x = x * np.exp(rng.normal(0, 0.05, 3)).astype(np.float32)
    q = int(rng.integers(70, 96))
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def recapture_pairs(ims, labels, rng):
    """The re-capture proxy's pairs: for each dog with two or more images, the index of its first image and a
    later photo made from its second by `recapture`. Returns (first indices, uint8 (D,224,224,3) later photos)."""
    firsts, later = [], []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) >= 2:
            firsts.append(int(idx[0]))
            later.append(recapture(ims[idx[1]], rng))
    return np.array(firsts, np.int64), np.stack(later)


def recapture_scores(emb_first, emb_later):
    """Genuine scores: dog i's first photo vs its later photo; impostor: dog i's first vs dog j's later."""
    a = emb_first / np.linalg.norm(emb_first, axis=1, keepdims=True)
    b = emb_later / np.linalg.norm(emb_later, axis=1, keepdims=True)
    S = a @ b.T
    gen = np.diag(S).astype(np.float64)
    imp = S[~np.eye(len(S), dtype=bool)].astype(np.float64)
    return gen, imp


# ---------------------------------------------------------------- synthetic cache with look-alike families

def load_synth_split(cache, split):
    """(uint8 images, int labels, family ids or None) of a synthetic cache split. Family ids: int per image,
    -1 for identities without look-alikes, read from `<shard>.families.npy` beside each shard's `.labels.npy`;
    None when the cache has no families. The shards are listed once and images, labels and families read from
    that one list: while a renderer is still adding shards (training with --grow), two listings can differ by
    a shard, and families read apart from their images would no longer line up with them."""
    d = os.path.join(cache, split)
    if not os.path.isdir(d):
        return np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int64), None
    names = sorted(f for f in os.listdir(d) if f.endswith(".npy") and ".tmp" not in f
                   and not f.endswith((".labels.npy", ".families.npy")))
    ims, labs, fams, any_fam = [], [], [], False
    for f in names:
        base = os.path.join(d, f[:-4])
        lab = np.load(base + ".labels.npy")
        ims.append(np.load(base + ".npy", mmap_mode="r"))
        labs.append(lab)
        if os.path.exists(base + ".families.npy"):
            fams.append(np.load(base + ".families.npy").astype(np.int64))
            any_fam = True
        else:
            fams.append(np.full(len(lab), -1, np.int64))
    if not ims:
        return np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int64), None
    ims, labels = np.concatenate(ims), np.concatenate(labs).astype(np.int64)
    fam = np.concatenate(fams) if any_fam else None
    if fam is not None:
        fam = np.asarray(fam).astype(np.int64).ravel()
        if len(fam) != len(labels):
            log(f"[data] {split}: {len(fam)} family ids for {len(labels)} images: families ignored")
            fam = None
        elif not (fam >= 0).any():
            fam = None
    return ims, labels, fam


# ---------------------------------------------------------------- held-out capture conditions

def zoom_image(u8, z):
    """Re-frames a uint8 (224,224,3) photo by zoom z about its centre: z > 1 crops the central 1/z and
    enlarges it; z < 1 shrinks the photo to z of the frame and fills the border by tiling its outer ring (pad_fold,
    as training's zoom-out does: a flattering fill, real zoomed-out photos show more face)."""
    import cv2
    n = u8.shape[0]
    if z >= 1:
        c = int(round(n / z))
        o = (n - c) // 2
        return cv2.resize(np.ascontiguousarray(u8[o:o + c, o:o + c]), (n, n), interpolation=cv2.INTER_CUBIC)
    s = int(round(n * z))
    small = cv2.resize(np.ascontiguousarray(u8), (s, s), interpolation=cv2.INTER_AREA)
    a = (n - s) // 2
    return pad_fold(small, a, n - s - a)


def pad_fold(u8, a, b, band=0.075):
    """Pads a square uint8 photo by `a` px before and `b` after on both axes, tiling its outer ring (`band` of
    the width, fur) back and forth rather than mirroring the whole photo, which would put copies of the
    nostrils round the nose. As train.fold_border."""
    n = u8.shape[0]
    k = max(1, int(round(band * n)))
    pos = np.arange(-a, n + b)
    ex = np.where(pos < 0, -pos - 1, np.where(pos >= n, pos - n, -1))
    m = np.where(ex >= 0, ex % (2 * k), 0)
    fold = np.where(m < k, m, 2 * k - 1 - m)
    src = np.where(pos < 0, fold, np.where(pos >= n, n - 1 - fold, pos))
    return np.ascontiguousarray(u8[src][:, src])


def rotate_image(u8, deg):
    """In-plane roll by `deg` degrees about the centre, corners filled by reflection."""
    import cv2
    n = u8.shape[0]
    M = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(deg), 1.0)
    return cv2.warpAffine(np.ascontiguousarray(u8), M, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def blur_image(u8, sigma):
    import cv2
    return cv2.GaussianBlur(np.ascontiguousarray(u8), (0, 0), float(sigma))


def jpeg_image(u8, q):
    """A JPEG round trip at quality q (cv2, RGB kept)."""
    import cv2
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


# name -> (description, transform of one probe photo (u8, rng) -> u8)
PROBE_CONDITIONS = {
    "zoom_0.6": ("probe zoomed out to 0.6 of the framing (nose smaller, border tiled from the outer fur ring)",
                 lambda u8, rng: zoom_image(u8, 0.6)),
    "zoom_1.6": ("probe zoomed in 1.6x (central 62.5% of the framing, enlarged)",
                 lambda u8, rng: zoom_image(u8, 1.6)),
    "rotation_360": ("probe rolled by a uniform 0-360 degrees", lambda u8, rng: rotate_image(u8, rng.uniform(0, 360))),
    "rotation_87": ("probe rolled by 87 degrees either way (the real pairs' 95th percentile roll)",
                    lambda u8, rng: rotate_image(u8, 87.0 * rng.choice([-1, 1]))),
    "blur": ("probe blurred, Gaussian sigma 2 px at 224", lambda u8, rng: blur_image(u8, 2.0)),
    "jpeg_q40": ("probe re-encoded as JPEG at quality 40", lambda u8, rng: jpeg_image(u8, 40)),
}

CONDITIONS_EVAL = ("held-out synthetic identities; p1: all pairs as rendered; p2: each dog's first capture vs a "
                   "re-capture proxy (common.recapture) of its second; zoom/rotation/blur/JPEG: each dog's first "
                   "capture as rendered (the enrolment) vs its other captures with that one change (genuine: same "
                   "dog, impostor: every other dog's probes); families: all pairs as rendered among look-alike "
                   "family members, impostor pairs only between members of one family (render.make_identity with a "
                   "shared rng and its own bead_rng)")


def build_conditions(ims, labels, families=None, seed=5, probes_per_dog=None):
    """The held-out conditions' inputs, built once so that several models see the same photos: dict with
    `ref` (index of each dog's first capture), `probe_idx` (its other captures, at most probes_per_dog each),
    `probes` {condition: uint8 (M,224,224,3)}, the p2 re-capture pairs and the family ids."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    firsts, later = recapture_pairs(ims, labels, rng)   # rng goes on to evaluate.py's blurry pairs, as before
    ref, probe_idx = [], []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) >= 2:
            ref.append(int(idx[0]))
            probe_idx.extend(int(i) for i in idx[1:1 + (probes_per_dog or len(idx))])
    probe_idx = np.array(probe_idx, np.int64)
    probes = {}
    for k, (name, (_, f)) in enumerate(PROBE_CONDITIONS.items()):
        r = np.random.default_rng([seed, 100 + k])
        probes[name] = np.stack([f(np.asarray(ims[i]), r) for i in probe_idx]) if len(probe_idx) else None
    return {"ref": np.array(ref, np.int64), "probe_idx": probe_idx, "probes": probes, "rng": rng,
            "recapture_first": firsts, "recapture_later": later,
            "families": None if families is None else np.asarray(families), "seed": seed}


def cross_scores(emb_ref, ref_labels, emb_probe, probe_labels):
    """Genuine / impostor cosines of every reference against every probe (same dog / other dog)."""
    a = emb_ref / np.linalg.norm(emb_ref, axis=1, keepdims=True)
    b = emb_probe / np.linalg.norm(emb_probe, axis=1, keepdims=True)
    S = a @ b.T
    same = np.asarray(ref_labels)[:, None] == np.asarray(probe_labels)[None, :]
    return S[same].astype(np.float64), S[~same].astype(np.float64)


def family_scores(emb, labels, families):
    """Genuine pairs of the family members' photos and impostor pairs only between different members of one
    family (the look-alikes). None when there are no families of two or more identities."""
    if families is None:
        return None
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    labels, families = np.asarray(labels), np.asarray(families)
    gen, imp = [], []
    for f in np.unique(families[families >= 0]):
        idx = np.flatnonzero(families == f)
        if len(np.unique(labels[idx])) < 2:
            continue
        S = e[idx] @ e[idx].T
        iu = np.triu_indices(len(idx), 1)
        same = labels[idx][iu[0]] == labels[idx][iu[1]]
        gen.append(S[iu][same])
        imp.append(S[iu][~same])
    if not imp:
        return None
    return np.concatenate(gen).astype(np.float64), np.concatenate(imp).astype(np.float64)


def condition_row(gen, imp, extra=None):
    """AUC, EER, TAR at FAR 1e-2 / 1e-3 / 1e-4 and the pair counts; `resolvable_far`: the lowest FAR these
    impostor pairs can show (1 / pairs); TAR at a FAR below it is the TAR above every impostor."""
    m = verification_metrics(gen, imp)
    row = {k: round(float(v), 5) for k, v in m.items()}
    row["pairs"] = {"genuine": int(len(gen)), "impostor": int(len(imp))}
    row["resolvable_far"] = float(f"{1 / max(1, len(imp)):.2e}")
    if extra:
        row.update(extra)
    return row


def score_conditions(embed_fn, ims, labels, built):
    """Every held-out condition for one model (`embed_fn`: uint8 (N,224,224,3) -> (N,D) embeddings).
    Returns ({condition: condition_row}, {condition: (genuine, impostor)}, embeddings of `ims`)."""
    labels = np.asarray(labels)
    emb = embed_fn(ims)
    rows, scores = {}, {}
    gen, imp, rank1 = pair_scores(emb, labels)
    scores["p1_as_rendered"] = (gen, imp)
    rows["p1_as_rendered"] = condition_row(gen, imp, {"rank1": round(rank1, 5)})
    g2, i2 = recapture_scores(emb[built["recapture_first"]], embed_fn(built["recapture_later"]))
    scores["p2_recapture_proxy"] = (g2, i2)
    rows["p2_recapture_proxy"] = condition_row(g2, i2)
    ref = built["ref"]
    for name, probes in built["probes"].items():
        if probes is None:
            continue
        g, i = cross_scores(emb[ref], labels[ref], embed_fn(probes), labels[built["probe_idx"]])
        scores[name] = (g, i)
        rows[name] = condition_row(g, i)
    fs = family_scores(emb, labels, built["families"])
    if fs is not None:
        scores["families"] = fs
        fam = built["families"]
        rows["families"] = condition_row(*fs, {"families": int(len(np.unique(fam[fam >= 0])))})
    return rows, scores, emb


def conditions_lines(named_rows):
    """A text table of score_conditions rows for one or more models ({model name: rows})."""
    names = list(named_rows)
    conds = list(dict.fromkeys(c for r in named_rows.values() for c in r))
    out = [f"{'condition':<20}{'pairs gen/imp':>16}" + "".join(f"{n[-30:]:>32}" for n in names),
           f"{'':<36}" + "".join(f"{'AUC    EER    TAR1e-3 TAR1e-4':>32}" for _ in names)]
    for c in conds:
        first = next(r[c] for r in named_rows.values() if c in r)
        line = f"{c:<20}{str(first['pairs']['genuine']) + '/' + str(first['pairs']['impostor']):>16}"
        for n in names:
            r = named_rows[n].get(c)
            line += (f"{r['auc']:>10.4f}{r['eer']:>7.4f}{r['tar_at_far_1e-3']:>8.4f}{r['tar_at_far_1e-4']:>7.4f}"
                     if r else f"{'-':>32}")
        out.append(line)
    return out


# ---------------------------------------------------------------- metrics

def pair_scores(emb, labels, max_impostor=3_000_000, seed=0):
    """Genuine scores (all same-dog pairs) and impostor scores (all, or a seeded sample)."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.asarray(labels)
    n = len(labels)
    S = emb @ emb.T
    iu = np.triu_indices(n, 1)
    same = labels[iu[0]] == labels[iu[1]]
    gen = S[iu][same]
    imp_idx = np.flatnonzero(~same)
    if len(imp_idx) > max_impostor:
        imp_idx = np.random.default_rng(seed).choice(imp_idx, max_impostor, replace=False)
    imp = S[iu][imp_idx] if len(imp_idx) else np.zeros(0)
    # rank-1: nearest other image belongs to the same dog (only images whose dog has >= 2 images)
    np.fill_diagonal(S, -np.inf)
    nn = S.argmax(1)
    counts = {l: c for l, c in zip(*np.unique(labels, return_counts=True))}
    probe = np.array([counts[l] >= 2 for l in labels])
    rank1 = float((labels[nn] == labels)[probe].mean()) if probe.any() else float("nan")
    return gen.astype(np.float64), imp.astype(np.float64), rank1


def verification_metrics(gen, imp):
    from scipy.stats import rankdata
    sc = np.concatenate([gen, imp])
    r = rankdata(sc)
    auc = (r[:len(gen)].sum() - len(gen) * (len(gen) + 1) / 2) / (len(gen) * len(imp))
    thr = np.unique(np.concatenate([gen, imp]))
    imp_s, gen_s = np.sort(imp), np.sort(gen)
    far = 1 - np.searchsorted(imp_s, thr, side="left") / len(imp_s)
    frr = np.searchsorted(gen_s, thr, side="left") / len(gen_s)
    i = int(np.argmin(np.abs(far - frr)))
    eer = float((far[i] + frr[i]) / 2)
    out = {"auc": float(auc), "eer": eer}
    for f in (1e-2, 1e-3, 1e-4):
        t = impostor_threshold(imp, f)
        out[f"tar_at_far_{f:.0e}".replace("-0", "-")] = float((gen > t).mean()) if np.isfinite(t) else float("nan")
    return out


def impostor_threshold(imp, far):
    """Smallest cosine t with share(imp > t) <= far."""
    imp = np.sort(imp)
    k = int(np.floor(far * len(imp)))
    if len(imp) == 0 or (k == 0 and far * len(imp) < 1 and len(imp) < 1 / far):
        return float(imp[-1]) if len(imp) else float("nan")
    return float(imp[len(imp) - 1 - k]) if k > 0 else float(imp[-1])


# ---------------------------------------------------------------- calibration

def calibrate(gen, imp, margin=0.1):
    """Monotone piecewise-linear cosine -> similarity map.

    0.85 sits at the cosine where the evaluation impostor FAR is 5e-4 (half the 1e-3 target),
    0.70 where it is 5e-3 (half of 1e-2), or, if higher, at the FAR-target cosine t moved
    `margin` of the way from t to 1: a safety margin for data unlike the evaluation set."""
    top = 0.9999

    def knot(far, target):
        t = impostor_threshold(imp, far)
        c = min(max(impostor_threshold(imp, far / 2), t + margin * (1 - t)), top)
        if (imp >= c).mean() > target:      # ties or a collapsed model: go past the largest offending score
            c = min(float(np.sort(imp)[-max(1, int(target * len(imp)))]) + 1e-6, top)
        return c

    c85 = knot(1e-3, 1e-3)
    c70 = min(knot(1e-2, 1e-2), c85 - 1e-4)
    c50 = min(float(np.quantile(imp, 0.5)), c70 - 0.02)
    gmed = float(np.median(gen)) if len(gen) else c85 + 0.05
    c95 = min(max(c85 + 0.03, gmed), 0.999)
    if c95 <= c85:
        c95 = c85 + (1 - c85) / 2
    c95 = min(c95, 1 - 1e-5)
    xs = [-1.0, c50, c70, c85, c95, 1.0]
    ys = [0.0, 0.35, 0.70, 0.85, 0.95, 1.0]
    # keep knots strictly increasing
    for i in range(1, len(xs)):
        if xs[i] <= xs[i - 1]:
            xs[i] = xs[i - 1] + 1e-4
    if xs[-1] > 1.0:
        raise ValueError("calibration knots ran past cosine 1")
    xs = [float(x) for x in xs]
    return {"cosine": xs, "similarity": ys}


DUPLICATE_FAR = 1e-5


def calibrate_conditions(conds, margin=0.1):
    """One cosine -> similarity map for several capture conditions ({name: (genuine, impostor)}), fitted on
    the hardest: each impostor knot (0.35, 0.70, 0.85) sits at the highest cosine any condition needs, the
    0.95 knot at the hardest condition's median genuine score. Adds `duplicate_similarity`, the similarity
    at which every condition's per-comparison impostor FAR is at most DUPLICATE_FAR (a condition with too
    few pairs to show that rate puts it above all of its impostors); where no condition has the pairs to
    certify the rate, it is widened halfway to 1 and to at least 0.95. Returns (calibration, report)."""
    own = {k: calibrate(g, i, margin) for k, (g, i) in conds.items()}
    xs = [max(c["cosine"][j] for c in own.values()) for j in range(5)] + [1.0]
    hardest = min(conds, key=lambda k: float(np.median(conds[k][0])) if len(conds[k][0]) else 1.0)
    xs[4] = min(max(xs[3] + 0.03, float(np.median(conds[hardest][0]))), 0.999)
    for i in range(1, 4):
        xs[i] = max(xs[i], xs[i - 1] + 1e-4)
    if xs[4] <= xs[3]:
        xs[4] = xs[3] + (1 - xs[3]) / 2
    if xs[4] >= 1.0:
        raise ValueError("calibration knots ran past cosine 1")
    cal = {"cosine": [float(x) for x in xs], "similarity": [0.0, 0.35, 0.70, 0.85, 0.95, 1.0]}
    # the duplicate knot: in every condition, per-comparison FAR <= DUPLICATE_FAR; a condition with fewer
    # than 1/DUPLICATE_FAR pairs cannot certify that rate and asks for a knot above all of its impostors
    c_dup, basis = -1.0, []
    for name, (_, imp) in conds.items():
        imp = np.sort(imp)
        k = int(np.floor(DUPLICATE_FAR * len(imp)))
        c = float(imp[len(imp) - 1 - k]) + 1e-6
        basis.append(f"{name}: {len(imp)} impostor pairs, {k} above cosine {c:.4f}"
                     + ("" if k >= 10 else " (rests on few pairs)" if k else
                        " (too few pairs to measure the rate: knot above every impostor)"))
        c_dup = max(c_dup, c)
    basis = "; ".join(basis)
    certified = any(int(np.floor(DUPLICATE_FAR * len(i))) >= 10 for _, i in conds.values())
    if not certified:   # no condition can show the rate: halfway from the largest impostor to 1, at least 0.95
        c_dup = c_dup + 0.5 * (1 - c_dup)
        basis += f"; no condition has the {round(10 / DUPLICATE_FAR):,} pairs that certify it: knot widened"
    dup = float(np.interp(c_dup, cal["cosine"], cal["similarity"]))
    cal["duplicate_similarity"] = round(max(dup, 0.86 if certified else 0.95), 4)
    report = {}
    for name, (g, i) in conds.items():
        r = calibration_report(g, i, cal)
        r["far_at_duplicate"] = float((apply_calibration(i, cal) >= cal["duplicate_similarity"]).mean())
        r["own_knots_cosine"] = own[name]["cosine"]
        r["pairs"] = {"genuine": int(len(g)), "impostor": int(len(i))}
        report[name] = r
    report["duplicate_basis"] = basis
    report["hardest"] = hardest
    return cal, report


def apply_calibration(cos, cal):
    return np.interp(cos, cal["cosine"], cal["similarity"])


# ---------------------------------------------------------------- confidence of the knots

CONFIDENCE = 0.95
# per knot: the impostor FAR it must hold, and, where the data cannot certify that rate, how far from the
# highest impostor score towards cosine 1 the knot goes (the conservative rule)
KNOT_TARGETS = {"0.70": 1e-2, "0.85": 1e-3, "duplicate": DUPLICATE_FAR}
UNCERTIFIED_MARGIN = {"0.70": 0.10, "0.85": 0.25, "duplicate": 0.50}
RULE_METHOD = ("similarity 0.85 at the cosine where impostor FAR is 5e-4 (or, if higher, the FAR 1e-3 cosine t moved "
               "10% of the way to 1), 0.70 likewise at FAR 5e-3 / 1e-2, 0.35 at the median impostor score, 0.95 at the "
               "median genuine score (at least 0.03 above the 0.85 knot), duplicate_similarity at per-comparison FAR "
               "1e-5 (common.calibrate_conditions)")
CERTIFY_METHOD = ("each knot (0.70, 0.85, duplicate) checked with a one-sided {conf:.0%} Clopper-Pearson upper bound "
                  "on the impostor false-accept rate at or above it (targets 1e-2, 1e-3, 1e-5); a knot whose bound "
                  "exceeds its target moves up to the lowest cosine where the bound meets it, or, where the impostor "
                  "pairs are too few for that, above the highest impostor score by 10% (0.70), 25% (0.85) or 50% "
                  "(duplicate, and at least similarity 0.95) of the way to cosine 1; never below the knot the "
                  "uncertified rule gives for the same data, and, for a knot the data cannot certify, never below "
                  "the base card's knot (the card replaced; for a fine-tune, the card of the model it is compared "
                  "with)").format(conf=CONFIDENCE)


def far_upper_bound(k, n, conf=CONFIDENCE):
    """One-sided Clopper-Pearson upper bound on a rate after k events in n trials."""
    from scipy.stats import beta
    if n <= 0 or k >= n:
        return 1.0
    return float(beta.ppf(conf, k + 1, n - k))


def pairs_to_certify(far, conf=CONFIDENCE):
    """Fewest trials that certify `far` at `conf` when none of them is an event."""
    import math
    return int(math.ceil(math.log(1 - conf) / math.log(1 - far)))


def max_events_within(n, far, conf=CONFIDENCE):
    """Largest k with far_upper_bound(k, n) <= far, or None when even k = 0 is too many."""
    if n <= 0 or far_upper_bound(0, n, conf) > far:
        return None
    lo, hi = 0, n - 1          # the bound grows with k: binary search for the last k that meets `far`
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if far_upper_bound(mid, n, conf) <= far:
            lo = mid
        else:
            hi = mid - 1
    return lo


def knot_confidence(imp_sorted, cos, far, conf=CONFIDENCE):
    """Impostor pairs at or above cosine `cos` and the upper bound on their rate."""
    n = len(imp_sorted)
    k = int(n - np.searchsorted(imp_sorted, cos, side="left"))
    ub = far_upper_bound(k, n, conf)
    return {"cosine": float(cos), "impostor_pairs": int(n), "impostors_at_or_above": k,
            "far_measured": k / n if n else float("nan"), "far_upper_bound": ub, "target_far": far,
            "confidence": conf, "certified": bool(ub <= far),
            "pairs_needed_with_none_above": pairs_to_certify(far, conf)}


def certify_calibration(gen, imp, base, conf=CONFIDENCE, floor=None):
    """Widens a calibration (from calibrate_conditions, with duplicate_similarity) until each knot's impostor
    FAR upper bound meets its target, or, where the pairs are too few, to the conservative rule (see
    CERTIFY_METHOD). Knots only move up. `floor`: the base card's calibration (the one this replaces, or that
    of the model a fine-tune started from); a knot these pairs cannot certify never goes below its knot there. Returns (calibration, report)."""
    imp_s = np.sort(np.asarray(imp, np.float64))
    n = len(imp_s)
    top = float(imp_s[-1]) if n else 1.0
    xs = [float(x) for x in base["cosine"]]
    ys = [float(y) for y in base["similarity"]]
    dup_base = float(np.interp(base.get("duplicate_similarity", 0.95), ys, xs))
    base_knot = {"0.70": xs[2], "0.85": xs[3], "duplicate": dup_base}
    floor_knot = {}
    if floor:
        fx, fy = [float(x) for x in floor["cosine"]], [float(y) for y in floor["similarity"]]
        for name, sim in (("0.70", 0.70), ("0.85", 0.85), ("duplicate", floor.get("duplicate_similarity", 0.95))):
            floor_knot[name] = float(np.interp(sim, fy, fx))
    how, want = {}, {}

    def widened(name):
        far = KNOT_TARGETS[name]
        c0 = base_knot[name]
        if knot_confidence(imp_s, c0, far, conf)["certified"]:
            how[name] = "meets the target at the uncertified rule's knot"
            want[name] = c0
            return c0
        kmax = max_events_within(n, far, conf)
        if kmax is not None:
            c = float(imp_s[n - 1 - kmax]) + 1e-6 if kmax < n else -1.0
            how[name] = (f"moved up to the lowest cosine with at most {kmax} impostor pairs at or above it, "
                         f"where the bound meets {far:.0e}")
        else:
            m = UNCERTIFIED_MARGIN[name]
            c = top + m * (1 - top)
            how[name] = (f"{n:,} impostor pairs cannot certify FAR {far:.0e} at {conf:.0%} confidence "
                         f"({pairs_to_certify(far, conf):,} needed even with none above): knot above every impostor, "
                         f"{m:.0%} of the way from the highest impostor cosine {top:.4f} to 1")
        if c < c0:
            how[name] += "; kept at the uncertified rule's knot, which is higher"
        c = max(c, c0)
        f = floor_knot.get(name)
        if f is not None and f > c and not knot_confidence(imp_s, c, far, conf)["certified"]:
            how[name] += (f"; kept at the base card's knot {f:.4f}, which is higher: pairs that cannot certify "
                          "the rate do not justify lowering it")
            c = f
        want[name] = c
        return c

    c70 = min(widened("0.70"), 1 - 2e-4)
    c85 = min(max(widened("0.85"), c70 + 1e-4), 1 - 1e-4)
    gmed = float(np.median(gen)) if len(gen) else c85 + 0.03
    c95 = min(max(c85 + 0.03, gmed, xs[4]), 0.999)
    if c95 <= c85:
        c95 = c85 + (1 - c85) / 2
    c50 = min(xs[1], c70 - 0.02)
    cal = {"cosine": [-1.0, float(c50), float(c70), float(c85), float(c95), 1.0], "similarity": ys}
    c_dup = max(widened("duplicate"), c85)
    dup_certified = knot_confidence(imp_s, c_dup, DUPLICATE_FAR, conf)["certified"]
    dup = float(np.interp(c_dup, cal["cosine"], cal["similarity"]))
    dup = min(1.0, round(max(dup, 0.86 if dup_certified else 0.95, base.get("duplicate_similarity", 0.0)), 4))
    cal["duplicate_similarity"] = dup
    c_dup = float(np.interp(dup, cal["similarity"], cal["cosine"]))
    report = {}
    for name, c in (("0.70", c70), ("0.85", c85), ("duplicate", c_dup)):
        r = knot_confidence(imp_s, c, KNOT_TARGETS[name], conf)
        r["similarity"] = dup if name == "duplicate" else float(name)
        r["uncertified_rule_cosine"] = base_knot[name]
        r["basis"] = how[name]
        if c < want[name] - 1e-9 and name != "duplicate":
            r["basis"] += (f"; capped at cosine {c:.4f} (the knots must stay below cosine 1): this model does not "
                           "separate these dogs")
        if not r["certified"]:
            r["warning"] = (f"{n:,} impostor pairs cannot certify FAR {KNOT_TARGETS[name]:.0e} at {conf:.0%} confidence "
                            f"(upper bound {r['far_upper_bound']:.2e} with {r['impostors_at_or_above']} above); "
                            "the knot is a conservative rule, not a measurement")
        report[name] = r
    report["note"] = ("impostor pairs share dogs and photos, so they are not independent trials: the bounds are "
                      "optimistic; collect more dogs rather than more photos per dog to tighten them")
    return cal, report


def confidence_lines(conf):
    """The knot table of a certify_calibration report, as text lines."""
    out = [f"{'knot':<22}{'cosine':>8}{'rule':>8}{'impostors >=':>14}{'of pairs':>10}{'FAR':>10}"
           f"{'95% upper':>11}{'target':>8}  verdict"]
    for name in ("0.70", "0.85", "duplicate"):
        r = conf[name]
        label = f"duplicate ({r['similarity']:.4f})" if name == "duplicate" else name
        out.append(f"{label:<22}{r['cosine']:>8.4f}{r['uncertified_rule_cosine']:>8.4f}{r['impostors_at_or_above']:>14,}"
                   f"{r['impostor_pairs']:>10,}{r['far_measured']:>10.2e}{r['far_upper_bound']:>11.2e}"
                   f"{r['target_far']:>8.0e}  {'certified' if r['certified'] else 'NOT certified'}")
    for name in ("0.70", "0.85", "duplicate"):
        out.append(f"  {name}: {conf[name]['basis']}")
        if "warning" in conf[name] and "cannot certify" not in conf[name]["basis"]:
            out.append(f"  {name}: {conf[name]['warning']}")
    out.append(f"  note: {conf['note']}")
    return out


def registration_consistency(emb, labels, cal=None, threshold=0.70):
    """How many dogs registration would accept on the consistency check (every pair of the photos at
    similarity >= threshold): with each dog's first two photos, and with all of its photos. `cal` None
    is the service without a card (the cosine clamped to [0, 1])."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.asarray(labels)
    sim = (lambda c: np.clip(c, 0, 1)) if cal is None else (lambda c: apply_calibration(c, cal))
    dogs = first_two = all_photos = 0
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) < 2:
            continue
        dogs += 1
        S = sim(e[idx] @ e[idx].T)
        first_two += int(S[0, 1] >= threshold)
        all_photos += int(S[np.triu_indices(len(idx), 1)].min() >= threshold)
    return {"threshold": threshold, "dogs": dogs,
            "first_two_pass": first_two, "share_first_two": first_two / dogs if dogs else float("nan"),
            "all_photos_pass": all_photos, "share_all_photos": all_photos / dogs if dogs else float("nan")}


def calibration_report(gen, imp, cal):
    s_imp, s_gen = apply_calibration(imp, cal), apply_calibration(gen, cal)
    return {"far_at_0.85": float((s_imp >= 0.85).mean()), "far_at_0.70": float((s_imp >= 0.70).mean()),
            "tar_at_0.85": float((s_gen >= 0.85).mean()), "tar_at_0.70": float((s_gen >= 0.70).mean())}


def histogram_png(gen, imp, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    bins = np.linspace(-1, 1, 161)
    ax.hist(imp, bins=bins, density=True, alpha=0.6, label=f"impostor ({len(imp)})", color="tab:red")
    ax.hist(gen, bins=bins, density=True, alpha=0.6, label=f"genuine ({len(gen)})", color="tab:green")
    ax.set_xlabel("cosine")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rel(path):
    """A path as shown in logs and cards: relative to the repository when inside it, else absolute."""
    p = os.path.abspath(path)
    return os.path.relpath(p, ROOT) if p.startswith(ROOT + os.sep) else p


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def log(*a):
    print(*a, flush=True, file=sys.stdout)
