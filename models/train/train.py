"""Trains the nose-print embedder (sub-center ArcFace, P dogs x K images), exports
ONNX, evaluates held-out synthetic identities, calibrates and writes the model card.

  /usr/bin/python3 models/train/train.py                        # synthetic cache, full run
  /usr/bin/python3 models/train/train.py --minutes 8            # short run
  /usr/bin/python3 models/train/train.py --tiny --work /tmp/x   # end-to-end smoke run (render+train+export+eval)
  /usr/bin/python3 models/train/train.py --data dogs/ [--mix-synthetic] [--init models/train/runs/last/model.pt]
  /usr/bin/python3 models/train/train.py --data train.csv --image-root images/
  /usr/bin/python3 models/train/train.py --data dogs/ --init models/nose-embedder.pt --version 2026.12.01-own-1 \
      --onnx runs/ft/m.onnx --card runs/ft/m.json    # fine-tune the shipped model; compared with it on held-out dogs

Training crops are `--res` pixels cut at native scale from the 224 input, so the fully
convolutional net sees beads at the size it meets at 224; the last part of the run
trains on whole 224 images. The learning-rate schedule follows max(step, time) progress,
so `--minutes` is a hard budget.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # shared cores: do not spin while waiting
import torch  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import data as synth  # noqa: E402
import export  # noqa: E402
from net import BACKBONES, Net  # noqa: E402

HERE = common.HERE
ROOT = common.ROOT


class SubCenterArcFace(nn.Module):
    def __init__(self, dim, classes, k=3, s=30.0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(classes * k, dim) * 0.01)
        self.classes, self.k, self.s = classes, k, s

    def forward(self, emb, labels, margin):
        cos = F.linear(emb, F.normalize(self.w)).view(-1, self.classes, self.k).max(-1).values
        cos = cos.clamp(-1 + 1e-6, 1 - 1e-6)
        onehot = F.one_hot(labels, self.classes).bool()
        theta = torch.acos(cos)
        target = torch.cos(torch.clamp(theta + margin, max=math.pi))
        logits = torch.where(onehot, target, cos) * self.s
        loss = F.cross_entropy(logits, labels)
        acc = (cos.argmax(1) == labels).float().mean()
        return loss, acc


def supcon_loss(emb, labels, tau):
    """Supervised contrastive loss (Khosla et al. 2020) over one P x K batch of L2-normalised embeddings."""
    sim = emb @ emb.t() / tau
    n = emb.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    sim = sim.masked_fill(eye, -1e9)
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    loss = -(logp * pos).sum(1) / pos.sum(1).clamp(min=1)
    with torch.no_grad():
        nn_same = pos[torch.arange(n, device=emb.device), sim.argmax(1)].float().mean()
    return loss.mean(), nn_same


# Capture-variation ranges for new runs. Measured on real held-out photos, the shipped model loses AUC 0.868 ->
# 0.808 when the photos are cropped to their central 75% (a 1.33x zoom) and real TAR@FAR 1e-3 0.311 -> 0.118
# under a mild re-capture (<= 20 deg roll, 0.8-1.0 crop, slight blur, +-30% exposure, JPEG q40-90), and two real
# photos of one dog roll by up to 87 degrees at the 95th percentile (real/real-nose-pair-stats.json): the old
# ranges (12 deg, +-12% scale, 3x3 blur, no JPEG) covered none of that. The defaults below span it with room.
AUG_DEFAULTS = {
    "zoom": (0.6, 1.6),      # framing: < 1 zooms out (nose smaller, fur ring tiled round it), > 1 zooms in (crops)
    "rotation": 180.0,       # in-plane roll drawn uniformly in +-this (180: the full circle; phones roll freely)
    "blur": 2.0,             # Gaussian sigma drawn uniformly in 0..this px (at the 224 framing), on `blur_p` of images
    "blur_p": 0.5,
    "exposure": 0.3,         # brightness x (1 +- this)
    "jpeg": 40,              # JPEG quality drawn uniformly in this..95, on `jpeg_p` of images (CPU, cv2, in the loader)
    "jpeg_p": 0.5,
}
# where: on a CPU run blur and JPEG happen per image with cv2 in the batch loader (blur_batch_cv2, jpeg_batch), on
# CUDA the blur is a batched convolution on the GPU (gaussian_blur_batch) and JPEG stays in the loader


def aug_config(args=None):
    """The augmentation ranges of a run: AUG_DEFAULTS overridden by the --aug-* options."""
    c = dict(AUG_DEFAULTS)
    if args is not None:
        c.update({"zoom": (args.aug_zoom_min, args.aug_zoom_max), "rotation": args.aug_rotation,
                  "blur": args.aug_blur, "blur_p": args.aug_blur_p, "exposure": args.aug_exposure,
                  "jpeg": args.aug_jpeg, "jpeg_p": args.aug_jpeg_p})
    return c


def jpeg_batch(u8, rng, q_min=40, p=0.5, q_max=95):
    """Real JPEG round trips on the CPU (cv2.imencode/imdecode, one image at a time) for a share `p` of a uint8
    (B,224,224,3) RGB batch, quality uniform in q_min..q_max. Done in the batch loader on the 224 source image,
    before the geometric augmentation: the service resizes a JPEG photo to 224, so compression blocks reach the
    net resampled too. About 0.3 ms an image. Returns a new array (the cache is never written)."""
    import cv2
    u8 = np.array(u8, copy=True)
    if p <= 0 or q_min >= 100:
        return u8
    for i in np.flatnonzero(rng.random(len(u8)) < p):
        q = int(rng.integers(q_min, max(q_min, q_max) + 1))
        ok, buf = cv2.imencode(".jpg", u8[i][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            u8[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return u8


def blur_batch_cv2(u8, rng, sigma_max=2.0, p=0.5):
    """Gaussian blur (sigma uniform in 0..sigma_max px at the 224 framing) on a share `p` of a uint8 batch, on
    the CPU with cv2 in the batch loader (before JPEG, as optics come before compression): on a CPU run ~20x
    cheaper than the batched convolution in augment (0.2 ms an image). Blurs in place."""
    import cv2
    if sigma_max <= 0 or p <= 0:
        return u8
    for i in np.flatnonzero(rng.random(len(u8)) < p):
        s = float(rng.uniform(0, sigma_max))
        if s > 0.05:
            u8[i] = cv2.GaussianBlur(u8[i], (0, 0), s)
    return u8


def gaussian_blur_batch(x, sigma):
    """Per-image Gaussian blur of float (B,C,H,W) with per-image sigma (B,) in px (0: unchanged); separable,
    one grouped convolution per axis."""
    B, C, H, W = x.shape
    smax = float(sigma.max())
    if smax <= 0.05:
        return x
    r = max(1, int(math.ceil(3 * smax)))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).to(x.dtype)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where((sigma > 0.05)[:, None], k, (t[None] == 0).to(x.dtype))   # sigma ~ 0: identity kernel
    k = k.repeat_interleave(C, 0)                                              # (B*C, 2r+1)
    y = x.reshape(1, B * C, H, W)
    pad = min(r, H - 1, W - 1)
    if pad < r:                                                                # tiny crops: clip the kernel
        k = k[:, r - pad:r + pad + 1]
        k = k / k.sum(1, keepdim=True)
        r = pad
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(B * C, 1, 1, 2 * r + 1), groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(B * C, 1, 2 * r + 1, 1), groups=B * C)
    return y.view(B, C, H, W)


def fold_border(grid, band=0.15):
    """Sampling coordinates (normalised, -1..1) that fall outside the frame fold back and forth within the
    outer `band` of it, so a zoomed-out frame is padded by tiling the border ring (fur) instead of
    mirroring the whole photo (which puts copies of the nostrils around the nose). As common.pad_fold."""
    a = grid.abs()
    excess = (a - 1).clamp(min=0)
    m = torch.remainder(excess, 2 * band)
    folded = torch.where(m < band, m, 2 * band - m)
    return torch.where(a > 1, torch.sign(grid) * (1 - folded), grid)


def augment(x, res, g, cfg=None, blurred=False):
    """x uint8 (B,224,224,3) -> float (B,3,res,res). Batch augmentation on top of the rendered capture
    variation (JPEG, when on, is applied before this, in the loader: jpeg_batch):
    geometry: one affine warp per image: zoom drawn log-uniformly in cfg["zoom"] (zoom-out pads the frame
    by tiling its outer ring: fold_border), in-plane rotation uniform in +-cfg["rotation"] degrees, and a shift
    within the frame; a crop of `res` px keeps the native bead scale (res/224 of the framing);
    photometric: saturation, contrast, exposure (1 +- cfg["exposure"]), colour cast, gamma;
    Gaussian blur (sigma up to cfg["blur"] px) on cfg["blur_p"] of the images, unless `blurred` (the CPU
    loader did it: blur_batch_cv2); sensor noise."""
    cfg = cfg or AUG_DEFAULTS
    B = x.shape[0]
    dev = g.device
    x = x.to(dev).permute(0, 3, 1, 2).float() / 255
    rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)  # noqa: E731
    ang = (rand(B) * 2 - 1) * math.radians(cfg["rotation"])
    zlo, zhi = cfg["zoom"]
    zoom = torch.exp(math.log(zlo) + rand(B) * (math.log(zhi) - math.log(zlo)))
    sc = (res / 224) / zoom                       # share of the source frame the output spans
    room = (1 - sc).clamp(min=0) + 0.1 * (1 - zoom).clamp(min=0)   # zoomed out: the nose may sit off centre too
    tx = (rand(B) * 2 - 1) * room
    ty = (rand(B) * 2 - 1) * room
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = fold_border(F.affine_grid(theta, (B, 3, res, res), align_corners=False))
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # photometric
    r = lambda lo, hi: (lo + (hi - lo) * rand(B, 1, 1, 1))  # noqa: E731
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = grey + (x - grey) * r(0.6, 1.4)
    m = grey.mean((2, 3), keepdim=True)
    x = m + (x - m) * r(0.75, 1.3)
    e = cfg["exposure"]
    x = x * r(1 - e, 1 + e) * (1 + 0.06 * (rand(B, 3, 1, 1) * 2 - 1))
    x = x.clamp(0, 1) ** r(0.8, 1.25)
    if cfg["blur"] > 0 and cfg["blur_p"] > 0 and not blurred:
        sigma = rand(B) * cfg["blur"] * (rand(B) < cfg["blur_p"]).float()
        sel = sigma > 0.05                      # only the blurred images go through the convolutions
        if sel.any():
            x[sel] = gaussian_blur_batch(x[sel], sigma[sel])
    x = x + torch.randn(x.shape, generator=g, device=dev) * r(0.0, 0.02)
    return x.clamp(0, 1)


def checkpoint(model, widths, backbone, step):
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "widths": widths, "backbone": backbone, "step": step}


def pk_batches(labels, P, K, rng, families=None, family_share=0.5):
    """Endless P-identities x K-images batches (identities with < K images are sampled with replacement).

    `families` (int per image, -1 for none; data.load_families), when it holds look-alike families of two or
    more identities: about `family_share` of each batch's P identities are whole families (a family larger
    than what is left of that share contributes a random subset of at least two members), the rest drawn from
    all identities, so each batch holds look-alikes as hard negatives. Without families: as before, a
    permutation of the identities cut into chunks of P."""
    by = {}
    for i, l in enumerate(labels):
        by.setdefault(int(l), []).append(i)
    ids = np.array(sorted(by))
    fam_members = {}
    if families is not None and len(families) == len(labels) and family_share > 0:
        fam_of = {}
        for l, f in zip(labels, families):
            if int(f) >= 0:
                fam_of.setdefault(int(l), int(f))
        for l, f in fam_of.items():
            fam_members.setdefault(f, []).append(l)
        fam_members = {f: sorted(m) for f, m in fam_members.items() if len(m) >= 2}

    def take(chunk):
        idx = []
        for c in chunk[:P]:
            pool = by[int(c)]
            idx.extend(rng.choice(pool, K, replace=len(pool) < K))
        return np.array(idx)

    if not fam_members:
        while True:
            for chunk in np.array_split(rng.permutation(ids), max(1, len(ids) // P)):
                if len(chunk) < 2:
                    continue
                yield take(chunk)
    fams = np.array(sorted(fam_members))
    n_fam = max(2, min(P, int(round(P * family_share))))
    fam_queue, id_queue = [], []
    while True:
        chosen, used = [], set()
        while len(chosen) < n_fam and len(used) < len(fams):
            if not fam_queue:
                fam_queue = list(rng.permutation(fams))
            f = int(fam_queue.pop())
            if f in used:
                continue
            used.add(f)
            m = fam_members[f]
            left = n_fam - len(chosen)
            if len(m) > left:
                if left < 2:
                    break
                m = list(rng.choice(m, left, replace=False))
            chosen.extend(int(c) for c in m if int(c) not in chosen)
        seen = set(chosen)
        guard = 0
        while len(chosen) < P and guard < 4 * P + len(ids):
            guard += 1
            if not id_queue:
                id_queue = list(rng.permutation(ids))
            c = int(id_queue.pop())
            if c not in seen:
                seen.add(c)
                chosen.append(c)
        yield take(np.array(chosen))


def load_operator(path, image_root):
    items, dropped = common.dedupe(common.list_dataset(path, image_root))
    dogs = sorted({d for d, _ in items})
    idx = {d: i for i, d in enumerate(dogs)}
    ims = np.stack([common.preprocess(p) for _, p in items])
    labels = np.array([idx[d] for d, _ in items])
    common.log(f"[train] operator data {path}: {len(dogs)} dogs, {len(items)} images ({dropped} duplicates dropped)")
    return ims, labels, {"path": os.path.abspath(path), "dogs": len(dogs), "images": len(items),
                         "duplicates_dropped": dropped}


def training_meta(args, sources, labels, ims, step, seen, train_s, widths, model, amp):
    return {
        "data": "synthetic only" if list(sources) == ["synthetic"] else
                ("own data only" if list(sources) == ["own"] else "own data mixed with synthetic"),
        "sources": sources,
        "identities": int(len(np.unique(labels))), "images": int(len(ims)),
        "steps": step, "images_seen": int(seen), "batch": f"P{args.P} x K{args.K}",
        "train_resolution": f"{args.res} px crops at native scale, last {args.full_res_frac:.0%} on whole 224 images",
        "time_minutes": round(train_s / 60, 1),
        "hardware": (f"{torch.cuda.get_device_name(0)}, bf16 autocast" if amp else
                     f"{platform.machine()} CPU, {args.threads} threads, shared"),
        "seed": args.seed, "loss": {"supcon": f"SupCon (temperature {args.tau}) on P x K batches",
                 "arcface": f"sub-center ArcFace (k=3, s=30, margin {args.margin} ramped over first 20%)",
                 "both": f"SupCon (temperature {args.tau}) + 0.5 x sub-center ArcFace (k=3, s=30, margin {args.margin})"}[args.loss],
        "optimizer": f"AdamW lr {args.lr} (head x5), warmup 3%, cosine", "init": args.init or "random",
        "backbone": (f"ResNet-18 layout, widths {list(widths)}, two strided 3x3 stem convs, GeM, linear 512, BN-neck"
                     if args.backbone == "default" else
                     f"{args.backbone} (pretrained, see models/train/pretrained.py), linear 512, BN-neck"),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "augmentation": {**aug_config(args), "where": "blur (CPU runs) and JPEG: cv2 per image in the batch "
                         "loader, on the 224 source before the rest; zoom (log-uniform), roll, shift: one affine "
                         "warp, the border tiled from the frame's outer ring; blur (CUDA runs): per-image Gaussian on the GPU; exposure, "
                         "contrast, saturation, colour, gamma, noise (train.augment)"},
        "look_alike_families": (f"{args.family_share:.0%} of each batch's identities drawn as whole families"
                                if "look_alike_families" in sources.get("synthetic", {}) else "none in the cache"),
    }


def prepare_compare(args):
    """The model to compare a --data run with, read before this run can overwrite it (--onnx / --card may be
    the shipped files): {"path", "model" (a copy in --work where needed), "card"} or None."""
    path = args.compare_with or (os.path.join(ROOT, "models", "nose-embedder.onnx") if args.init else None)
    if path is None:
        return None
    if not args.data:
        if args.compare_with:
            common.log("[compare] --compare-with needs --data (held-out own dogs): ignored")
        return None
    if not os.path.exists(path):
        raise SystemExit(f"--compare-with {path}: no such model")
    card_path = os.path.splitext(path)[0] + ".json"
    card = json.load(open(card_path)) if os.path.exists(card_path) else None
    model = path
    if os.path.abspath(path) == os.path.abspath(args.onnx) or os.path.abspath(card_path) == os.path.abspath(args.card):
        import shutil
        model = os.path.join(args.work, "compare-with" + os.path.splitext(path)[1])
        shutil.copyfile(path, model)
    return {"path": path, "model": model, "card": card, "card_path": card_path if card else None}


def compare_row(met, emb, labels, gen, imp, cal, version, model):
    c = common.registration_consistency(emb, labels, cal)
    row = {"model": model, "version": version, "auc": met["auc"], "eer": met["eer"],
           "tar_at_far": {"1e-2": met["tar_at_far_1e-2"], "1e-3": met["tar_at_far_1e-3"]},
           "rank1": met["rank1"], "pairs": {"genuine": int(len(gen)), "impostor": int(len(imp))},
           "calibration": "its card" if cal is not None else "none (no card: the cosine clamped to [0, 1])",
           "registration_consistency": c}
    if cal is not None:
        row["with_its_card"] = common.calibration_report(gen, imp, cal)
    return row


def compare_models(res, own_val, compare, new_card, work):
    """The held-out own dogs under the new model (with its new card) and under the compared model (with its
    own card): verification metrics and what registration's consistency check would accept. Printed as a
    table; returned for the card's evaluation.compared_with."""
    import evaluate
    ims, labels = own_val
    emb_old = evaluate.embed(compare["model"], ims)
    met_old, gen_old, imp_old = evaluate.score(emb_old, labels, work, "heldout-own-compared")
    old_card = compare["card"] or {}
    c = old_card.get("calibration")
    cal_old = ({"cosine": c["cosine"], "similarity": c["similarity"]} if c and "cosine" in c else None)
    new = compare_row(res["metrics"], res["emb"], res["labels"], res["gen"], res["imp"], res["calibration"],
                      new_card["version"], "this run")
    old = compare_row(met_old, emb_old, labels, gen_old, imp_old, cal_old, old_card.get("version"),
                      common.rel(compare["path"]))
    dogs = len(np.unique(labels))
    common.log(f"[compare] the same {dogs} held-out own dogs ({len(labels)} images) under both models, each with "
               "its own card's calibration (the new card is fitted on these dogs)")
    w = 26
    common.log(f"{'':<34}{'new ' + str(new['version']):>{w}}{'old ' + str(old['version']):>{w}}")

    def line(name, f):
        common.log(f"{name:<34}{f(new):>{w}}{f(old):>{w}}")
    line("AUC", lambda r: f"{r['auc']:.4f}")
    line("EER", lambda r: f"{r['eer']:.4f}")
    line("TAR@FAR 1e-2", lambda r: f"{r['tar_at_far']['1e-2']:.4f}")
    line("TAR@FAR 1e-3", lambda r: f"{r['tar_at_far']['1e-3']:.4f}")
    line("rank-1", lambda r: f"{r['rank1']:.4f}")
    line("genuine / impostor pairs", lambda r: f"{r['pairs']['genuine']:,} / {r['pairs']['impostor']:,}")
    line("TAR / FAR at similarity 0.85", lambda r: (f"{r['with_its_card']['tar_at_0.85']:.3f} / "
                                                    f"{r['with_its_card']['far_at_0.85']:.2e}")
         if "with_its_card" in r else "no card")
    line("first two photos pass 0.70", lambda r: (f"{r['registration_consistency']['first_two_pass']}/"
                                                  f"{r['registration_consistency']['dogs']} "
                                                  f"({r['registration_consistency']['share_first_two']:.1%})"))
    line("all photos pass 0.70", lambda r: (f"{r['registration_consistency']['all_photos_pass']}/"
                                            f"{r['registration_consistency']['dogs']} "
                                            f"({r['registration_consistency']['share_all_photos']:.1%})"))
    return {"data": f"the same {dogs} held-out own dogs, each model with its own card's calibration (the new card "
                    "is fitted on these dogs); registration_consistency: dogs whose photos all reach similarity 0.70 "
                    "pairwise, with the first two photos and with all of them",
            "card": compare["card_path"] and common.rel(compare["card_path"]),
            "new": new, "old": old}


def load_batch(ims, idx, aug, rng, dev, amp, gpu_ims):
    """The uint8 batch and whether it is blurred already: on the CPU, blurred (blur_batch_cv2) and then
    JPEG-compressed (jpeg_batch) where drawn; on CUDA only JPEG happens here (the blur runs on the GPU in
    augment), and without JPEG the batch comes from the cache on the GPU."""
    jp = aug["jpeg_p"] > 0 and aug["jpeg"] < 100
    if amp and gpu_ims is not None:
        xb = gpu_ims[torch.from_numpy(idx).to(dev)]
        sel = rng.random(len(idx)) < aug["jpeg_p"] if jp else np.zeros(len(idx), bool)
        if sel.any():      # only the images drawn for JPEG make the round trip through the CPU
            sub = jpeg_batch(np.stack([ims[i] for i in idx[sel]]), rng, aug["jpeg"], 1.0)
            xb[torch.from_numpy(np.flatnonzero(sel)).to(dev)] = torch.from_numpy(sub).to(dev)
        return xb, False
    xb = np.stack([ims[i] for i in idx])
    blurred = not amp
    if blurred:
        xb = blur_batch_cv2(xb, rng, aug["blur"], aug["blur_p"])
    if jp:
        xb = jpeg_batch(xb, rng, aug["jpeg"], aug["jpeg_p"])
    return torch.from_numpy(xb), blurred


def train_step(args, model, head, opt, ims, labels, idx, res, aug, margin, rng, g, dev, amp, gpu_ims):
    xb, blurred = load_batch(ims, idx, aug, rng, dev, amp, gpu_ims)
    x = augment(xb, res, g, aug, blurred)
    y = torch.from_numpy(labels[idx]).long().to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        feats = model.features(x)
    emb = F.normalize(feats.float(), dim=1)
    if args.loss == "supcon":
        loss, acc = supcon_loss(emb, y, args.tau)
    elif args.loss == "arcface":
        loss, acc = head(emb, y, margin)
    else:
        l1, acc = supcon_loss(emb, y, args.tau)
        l2, _ = head(emb, y, margin)
        loss = l1 + 0.5 * l2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, acc


def bench(args, model, head, opt, batches, ims, labels, aug, rng, g, dev, amp, gpu_ims):
    """--bench N: training throughput (images/s, loader + augmentation + forward + backward + step) at --res
    and at 224, and the loader + augmentation alone; nothing is saved."""
    out = {"threads": args.threads, "batch": f"P{args.P} x K{args.K}", "init": args.init, "backbone": args.backbone,
           "device": str(dev), "augmentation": aug}
    model.train()
    for res in sorted({args.res, 224}):
        for i in range(3 + args.bench):
            if i == 3:
                t0 = time.time()
            train_step(args, model, head, opt, ims, labels, next(batches), res, aug, 0.0, rng, g, dev, amp, gpu_ims)
        dt = time.time() - t0
        n = args.bench * args.P * args.K
        t1 = time.time()
        for _ in range(args.bench):
            xb, blurred = load_batch(ims, next(batches), aug, rng, dev, amp, gpu_ims)
            augment(xb, res, g, aug, blurred)
        da = time.time() - t1
        out[f"res_{res}"] = {"images_per_s": round(n / dt, 2), "s_per_step": round(dt / args.bench, 3),
                             "loader_and_augment_images_per_s": round(n / da, 1)}
        common.log(f"[bench] res {res}: {n / dt:.2f} img/s ({dt / args.bench:.2f} s/step), loader+augment alone "
                   f"{n / da:.0f} img/s")
    common.write_json(os.path.join(args.work, "bench.json"), out)
    common.log(json.dumps(out))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", default=synth.DEFAULT_CACHE, help="synthetic cache folder (models/train/data.py --out)")
    ap.add_argument("--data", help="operator dataset: folder of per-dog folders, or CSV `dog ID,nose print image`")
    ap.add_argument("--image-root")
    ap.add_argument("--mix-synthetic", action="store_true", help="with --data: also train on the synthetic cache")
    ap.add_argument("--init", help="checkpoint to start from (fine-tuning)")
    ap.add_argument("--val-frac", type=float, default=0.2,
                    help="with --data: share of own dogs held out for evaluation and calibration (0: none)")
    ap.add_argument("--work", default=os.path.join(HERE, "runs", "last"), help="checkpoints, logs, eval outputs")
    ap.add_argument("--onnx", default=os.path.join(ROOT, "models", "nose-embedder.onnx"))
    ap.add_argument("--card", default=os.path.join(ROOT, "models", "nose-embedder.json"))
    ap.add_argument("--minutes", type=float, default=70)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--res", type=int, default=144)
    ap.add_argument("--full-res-frac", type=float, default=0.15, help="last share of the run on whole 224 images")
    ap.add_argument("--P", type=int, default=24)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-3 from scratch, 3e-4 with --init (fine-tuning)")
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--loss", choices=["supcon", "arcface", "both"], default="supcon")
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--backbone", choices=BACKBONES, default="default",
                    help="default: the nose ResNet from random init; facerec / mobilenetv2: trained vision "
                         "weights converted from npm packages (models/train/fetch-weights.sh)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grow", action="store_true", help="pick up synthetic shards that appear while training")
    ap.add_argument("--max-classes", type=int, default=0, help="classifier size when --grow (>= final identities)")
    ap.add_argument("--version", default=None)
    ap.add_argument("--tiny", action="store_true", help="render a few identities, train a few steps, export, eval")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--no-export", action="store_true", help="save the checkpoint only (no ONNX, parity, card)")
    ap.add_argument("--max-parity-diff", type=float, default=1e-4,
                    help="largest max |PyTorch - onnxruntime-node| over the parity inputs (L2-normalised embeddings) "
                         "the export may show; above it the run writes train-meta.json, leaves --onnx untouched "
                         "and exits 1")
    ap.add_argument("--compare-with", help="with --data: also evaluate this model (ONNX or checkpoint, with the card "
                    "beside it) on the same held-out dogs and print and store the comparison (default with --init: "
                    "the shipped models/nose-embedder.onnx)")
    ap.add_argument("--meta-from", help="with --init CKPT --steps 0: the train-meta.json of the run that made CKPT "
                    "(its training block goes into the card)")
    ap.add_argument("--grow-every", type=float, default=120, help="seconds between scans for new shards (--grow)")
    # capture-variation ranges (defaults: AUG_DEFAULTS, which says why)
    ap.add_argument("--aug-zoom-min", type=float, default=AUG_DEFAULTS["zoom"][0], help="zoom-out limit (0.6: nose at 60%% of the framing)")
    ap.add_argument("--aug-zoom-max", type=float, default=AUG_DEFAULTS["zoom"][1], help="zoom-in limit (1.6: central 1/1.6 of the framing)")
    ap.add_argument("--aug-rotation", type=float, default=AUG_DEFAULTS["rotation"], help="in-plane roll, +- degrees (180: full circle)")
    ap.add_argument("--aug-blur", type=float, default=AUG_DEFAULTS["blur"], help="largest Gaussian blur sigma, px at 224")
    ap.add_argument("--aug-blur-p", type=float, default=AUG_DEFAULTS["blur_p"], help="share of images blurred")
    ap.add_argument("--aug-exposure", type=float, default=AUG_DEFAULTS["exposure"], help="exposure x (1 +- this)")
    ap.add_argument("--aug-jpeg", type=int, default=AUG_DEFAULTS["jpeg"], help="lowest JPEG quality (100: no JPEG)")
    ap.add_argument("--aug-jpeg-p", type=float, default=AUG_DEFAULTS["jpeg_p"], help="share of images JPEG-compressed")
    ap.add_argument("--family-share", type=float, default=0.5,
                    help="share of each batch's P identities drawn as whole look-alike families, where the cache "
                         "has families (<shard>.families.npy); 0: identities drawn at random as before")
    ap.add_argument("--eval-probes-per-dog", type=int, default=None,
                    help="held-out synthetic evaluation: transformed probes per dog and condition (default: all "
                         "captures after the first; 1 makes the evaluation about 3x faster on the CPU)")
    ap.add_argument("--bench", type=int, default=0,
                    help="time this many training steps after 3 warm-up steps at --res and at 224, print images/s "
                         "and exit (no checkpoint written)")
    args = ap.parse_args()

    if args.lr is None:
        args.lr = 3e-4 if args.init else 2e-3
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    rng = np.random.default_rng(args.seed)
    g = torch.Generator(device=dev).manual_seed(args.seed)
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    compare = prepare_compare(args)

    if args.tiny:
        args.synth = os.path.join(args.work, "synth")
        synth.render_split(args.synth, "train", 12, 4, 20261125, 1, shard=12)
        synth.render_split(args.synth, "heldout", 8, 3, 20261125, 1, shard=8)
        args.steps, args.res, args.P, args.K, args.widths = 6, 96, 6, 2, "8,16,32,64"
        args.full_res_frac = 0.2

    # ---- data
    sources = {}
    ims_list, lab_list, fam_list = [], [], []
    offset = 0
    own_val = None
    if args.data:
        ims, labels, info = load_operator(args.data, args.image_root)
        dogs = np.unique(labels)
        n_val = int(round(len(dogs) * args.val_frac))
        if n_val >= 2:    # hold out whole dogs for evaluation and calibration
            val_dogs = np.random.default_rng(args.seed).choice(dogs, n_val, replace=False)
            is_val = np.isin(labels, val_dogs)
            own_val = (ims[is_val], labels[is_val])
            ims, labels = ims[~is_val], labels[~is_val]
            info["held_out_dogs"] = int(n_val)
        ims_list.append(ims)
        lab_list.append(labels)
        fam_list.append(np.full(len(labels), -1, np.int64))
        offset = int(labels.max()) + 1
        sources["own"] = info
    export_only = args.init and args.steps <= 0     # --init CKPT --steps 0 needs no training data
    if export_only and not args.data:
        ims_list.append(np.zeros((0, 224, 224, 3), np.uint8))
        lab_list.append(np.zeros(0, np.int64))
    elif not args.data or args.mix_synthetic:
        ims, labels, fam = common.load_synth_split(args.synth, "train")
        if len(ims) == 0:
            raise SystemExit(f"no synthetic cache in {args.synth}: run `npm run model:data` first")
        ims_list.append(ims)
        lab_list.append(labels + offset)
        fam_list.append(fam if fam is not None else np.full(len(labels), -1, np.int64))
        sources["synthetic"] = {"cache": os.path.relpath(args.synth, ROOT)}
        if fam is not None:
            fam_ids = np.unique(labels[fam >= 0])
            sources["synthetic"]["look_alike_families"] = {
                "families": int(len(np.unique(fam[fam >= 0]))), "identities_in_families": int(len(fam_ids))}
    ims = np.concatenate(ims_list) if len(ims_list) > 1 else ims_list[0]
    labels = np.concatenate(lab_list)
    families = np.concatenate(fam_list) if fam_list else None
    if families is not None and not (families >= 0).any():
        families = None
    aug = aug_config(args)
    if families is not None:
        common.log(f"[train] look-alike families: {len(np.unique(families[families >= 0]))} "
                   f"({len(np.unique(labels[families >= 0]))} identities); {args.family_share:.0%} of each batch's "
                   "identities drawn as whole families")
    common.log(f"[train] augmentation: {json.dumps(aug)}")
    n_classes = max(int(labels.max()) + 1 if len(labels) else 1, args.max_classes)
    common.log(f"[train] {len(np.unique(labels))} identities, {len(ims)} images, classes {n_classes}")

    widths = tuple(int(w) for w in args.widths.split(","))
    ck = torch.load(args.init, map_location="cpu", weights_only=False) if args.init else None
    if ck is not None:
        widths = tuple(ck.get("widths", widths))
        args.backbone = ck.get("backbone", "default")
    # with a checkpoint the converted backbones need no fetched weights: its state dict replaces them
    model = (Net(args.backbone, widths=widths) if args.backbone == "default" else
             Net(args.backbone, pretrained=ck is None))
    head = SubCenterArcFace(512, n_classes)
    if ck is not None:
        model.load_state_dict({k: v.float() for k, v in ck["model"].items()})
        common.log(f"[train] initialised from {args.init} (backbone {args.backbone}, widths {list(widths)})")
    elif args.backbone != "default":
        # converted inference-time scales become batch norms: start them at the training data's statistics
        from pretrained import calibrate_bn
        first = np.random.default_rng(args.seed).choice(len(ims), min(64, len(ims)), replace=False)
        calibrate_bn(model.backbone if hasattr(model, "backbone") else model,
                     torch.from_numpy(np.stack([ims[i] for i in sorted(first)])).permute(0, 3, 1, 2).float() / 255)
    model.to(dev)
    head.to(dev)
    amp = dev.type == "cuda"
    gpu_ims = torch.from_numpy(np.ascontiguousarray(ims)).to(dev) if amp else None   # whole cache on the GPU
    params = [{"params": model.parameters(), "lr": args.lr}, {"params": head.parameters(), "lr": args.lr * 5}]
    opt = torch.optim.AdamW(params, weight_decay=5e-4)
    base_lrs = [p["lr"] for p in opt.param_groups]
    batches = pk_batches(labels, args.P, args.K, rng, families, args.family_share)
    if args.bench:
        return bench(args, model, head, opt, batches, ims, labels, aug, rng, g, dev, amp, gpu_ims)
    budget = args.minutes * 60
    step, seen, t0 = 0, 0, time.time()
    last_scan = time.time()
    loss_ema = acc_ema = None
    model.train()
    while True:
        if args.steps <= 0:      # --init CKPT --steps 0: export, evaluate and write the card only
            break
        prog = max(step / args.steps, (time.time() - t0) / budget)
        if prog >= 1:
            break
        if args.grow and time.time() - last_scan > args.grow_every:
            last_scan = time.time()
            new_ims, new_lab, new_fam = common.load_synth_split(args.synth, "train")
            if len(new_ims) > len(ims) and int(new_lab.max()) < n_classes:
                ims, labels = new_ims, new_lab
                if amp:
                    gpu_ims = torch.from_numpy(np.ascontiguousarray(ims)).to(dev)
                batches = pk_batches(labels, args.P, args.K, rng, new_fam, args.family_share)
                common.log(f"[train] grew to {len(np.unique(labels))} identities, {len(ims)} images")
        warm = min(1.0, prog / 0.03)
        lr_f = warm * 0.5 * (1 + math.cos(math.pi * prog))
        for pg, b in zip(opt.param_groups, base_lrs):
            pg["lr"] = b * max(lr_f, 0.01)
        margin = args.margin * min(1.0, prog / 0.2)
        res = 224 if prog > 1 - args.full_res_frac else args.res
        idx = next(batches)
        loss, acc = train_step(args, model, head, opt, ims, labels, idx, res, aug, margin, rng, g, dev, amp, gpu_ims)
        step += 1
        seen += len(idx)
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        acc_ema = acc.item() if acc_ema is None else 0.98 * acc_ema + 0.02 * acc.item()
        if step % 25 == 0 or step == 1:
            el = time.time() - t0
            common.log(f"[train] step {step} prog {prog:.3f} res {res} loss {loss_ema:.3f} acc {acc_ema:.3f} "
                       f"lr {opt.param_groups[0]['lr']:.2e} m {margin:.2f} {seen / el:.1f} img/s {el / 60:.1f} min")
        if step % 500 == 0:
            torch.save(checkpoint(model, widths, args.backbone, step), os.path.join(args.work, "model.pt"))
    train_s = time.time() - t0
    ck_path = os.path.join(args.work, "model.pt")
    torch.save(checkpoint(model, widths, args.backbone, step), ck_path)
    common.log(f"[train] done: {step} steps, {seen} images, {train_s / 60:.1f} min")
    if args.no_export:
        common.write_json(os.path.join(args.work, "train-meta.json"), {"training": training_meta(
            args, sources, labels, ims, step, seen, train_s, widths, model, amp)})
        return

    # ---- export + parity
    # exported beside --onnx and moved over it only once parity holds: a bad export never replaces a good model
    model.cpu().eval()
    unchecked = args.onnx + ".unchecked"
    size = export.export_onnx(model, unchecked)
    diff = export.parity(model, unchecked)
    parity_ok = diff <= args.max_parity_diff     # NaN fails too
    common.log(f"[export] {args.onnx} {size / 1e6:.2f} MB, max |torch - onnxruntime-node| = {diff:.2e} "
               f"(bound {args.max_parity_diff:.0e})")

    training = training_meta(args, sources, labels, ims, step, seen, train_s, widths, model, amp)
    if args.meta_from:
        training = json.load(open(args.meta_from))["training"]
    meta = {"training": training, "onnx_bytes": size, "onnx_vs_pytorch_max_abs_diff": diff,
            "max_parity_diff": args.max_parity_diff, "parity_ok": parity_ok}
    common.write_json(os.path.join(args.work, "train-meta.json"), meta)
    if not parity_ok:
        raise SystemExit(f"[export] ONNX vs PyTorch max abs difference {diff:.2e} exceeds --max-parity-diff "
                         f"{args.max_parity_diff:.0e}: {args.onnx} not written, the export is kept as {unchecked}")
    os.replace(unchecked, args.onnx)
    if args.no_eval:
        return
    # ---- held-out synthetic identities -> metrics, calibration, card
    import evaluate
    if own_val is not None:
        base_cal = ((compare or {}).get("card") or {}).get("calibration")
        res = evaluate.evaluate_arrays(own_val[0], own_val[1], args.onnx, args.work, "heldout-own",
                                       f"{sources['own']['held_out_dogs']} own dogs held out from training, "
                                       "exact duplicates dropped",
                                       floor=base_cal if base_cal and "cosine" in base_cal else None)
        common.log("[calibration] knots on the held-out own dogs, with the confidence they rest on "
                   "(rule: the uncertified rule's cosine)")
        for line in common.confidence_lines(res["confidence"]):
            common.log(line)
    elif os.path.isdir(os.path.join(args.synth, "heldout")):
        res = evaluate.evaluate_synthetic(args.synth, args.onnx, args.work, probes_per_dog=args.eval_probes_per_dog)
    else:
        common.log("[eval] no held-out data (own dogs or synthetic): card not written")
        return
    version = args.version or (f"{time.strftime('%Y.%m.%d')}-own-1" if own_val is not None else None)
    card = evaluate.build_card(res, meta, version, tiny=args.tiny)
    if own_val is not None and compare is not None:
        card["evaluation"]["compared_with"] = compare_models(res, own_val, compare, card, args.work)
    common.write_json(args.card, card)
    common.log(f"[card] {args.card}")
    common.log(json.dumps(card["evaluation"], indent=1))
    common.log(f"[total] {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
