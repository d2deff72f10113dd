"""Renders and caches synthetic nose-print captures; writes the contact sheet and
the real-vs-synthetic comparison (per-image statistics, pair statistics, realism probe).

  /usr/bin/python3 models/train/data.py                      # full training + held-out sets
  /usr/bin/python3 models/train/data.py --tiny --out /tmp/x  # a few identities, seconds
  /usr/bin/python3 models/train/data.py --sheet-only         # contact sheet + stats + realism probe only
  /usr/bin/python3 models/train/data.py --sheet-only --probe-n 200   # the same, smaller (smoke run)
  /usr/bin/python3 models/train/data.py --out DIR --family-share 0.25 --family-size 3   # the default families
  /usr/bin/python3 models/train/data.py --out DIR --family-share 0                      # no families

Identity i of split S always renders from the seed sequence (seed, split id, i), so
shards are identical whichever worker renders them and in whatever order.
Training identities and held-out identities come from different split ids and never overlap.

Look-alike families (--family-share, --family-size): identities come in consecutive blocks of
--family-size; a share of the blocks (spread over the split by a fixed golden-ratio rule) are families, whose
members share outline, dome, nostrils, philtrum, pigment and light (render.make_identity's rng, drawn from
(seed, split id, FAMILY, block)) and differ in the bead mosaic, fine relief and fur (bead_rng, drawn from
(seed, split id, i), which then also draws the captures). Each shard gets a .families.npy beside its
.labels.npy: the family (block) id per image, -1 for singletons; load_families() reads it.
The split folder's render.json records the family settings; a cache made with other settings is refused.
"""
import argparse
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_CACHE = os.path.join(HERE, "cache", "synth")
SPLITS = {"train": 1, "heldout": 2, "sheet": 3}
SHARD = 25  # identities per shard
FAMILY = 7  # seed-sequence tag of the family-shared draws
GOLDEN = 0.6180339887498949


def family_of(ident, share, size):
    """Family id (its block index) of identity `ident`, or -1 for a singleton."""
    if share <= 0 or size < 2:
        return -1
    b = ident // size
    return b if (b * GOLDEN) % 1.0 < share else -1


def identity_rng(seed, split, ident, fam_share=0.0, fam_size=3):
    """(identity, generator for its captures, family id) of identity `ident` of a split."""
    rng = np.random.default_rng([seed, SPLITS[split], ident])
    fam = family_of(ident, fam_share, fam_size)
    if fam < 0:
        return render.make_identity(rng), rng, -1
    shared = np.random.default_rng([seed, SPLITS[split], FAMILY, fam])
    return render.make_identity(shared, bead_rng=rng), rng, fam


def render_identity(seed, split, ident, caps, fam_share=0.0, fam_size=3):
    idt, rng, _ = identity_rng(seed, split, ident, fam_share, fam_size)
    return np.stack([render.render_capture(idt, rng) for _ in range(caps)])


def _render_shard(job):
    seed, split, first, count, caps, path, fam_share, fam_size = job
    if os.path.exists(path + ".npy"):
        return path, 0.0
    try:  # several renderers may share one cache: each shard is claimed by one of them
        os.close(os.open(path + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return path, -1.0
    t = time.time()
    ims = np.stack([render_identity(seed, split, first + i, caps, fam_share, fam_size) for i in range(count)])
    labels = np.repeat(np.arange(first, first + count), caps)
    fams = np.repeat([family_of(first + i, fam_share, fam_size) for i in range(count)], caps)
    tmp = path + ".tmp.npy"
    np.save(path + ".labels.npy", labels.astype(np.int32))
    np.save(path + ".families.npy", fams.astype(np.int32))
    np.save(tmp, ims.reshape(-1, *ims.shape[2:]))
    os.replace(tmp, path + ".npy")    # the image file appears last: readers see whole shards only
    os.remove(path + ".lock")
    return path, time.time() - t


def render_split(out, split, ids, caps, seed, workers, shard=SHARD, reverse=False, fam_share=0.0, fam_size=3):
    d = os.path.join(out, split)
    os.makedirs(d, exist_ok=True)
    meta = {"renderer": "surface-v1", "family_share": fam_share, "family_size": fam_size, "seed": seed}
    mpath = os.path.join(d, "render.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        if old != meta:
            sys.exit(f"[data] {d} was rendered with {old}, not {meta}: use another --out or remove it")
    elif any(f.endswith(".npy") for f in os.listdir(d)):
        sys.exit(f"[data] {d} holds shards of an older renderer (no render.json): use another --out or remove it")
    else:
        with open(mpath, "w") as f:
            json.dump(meta, f)
    jobs = []
    for first in range(0, ids, shard):
        count = min(shard, ids - first)
        jobs.append((seed, split, first, count, caps, os.path.join(d, f"shard_{first:06d}_{count:03d}x{caps}"),
                     fam_share, fam_size))
    if reverse:
        jobs = jobs[::-1]
    t0 = time.time()
    done = 0
    if workers > 1:
        with Pool(workers) as pool:
            for path, dt in pool.imap(_render_shard, jobs):
                done += 1
                print(f"[data] {split} {done}/{len(jobs)} {os.path.basename(path)} {dt:.1f}s", flush=True)
    else:
        for j in jobs:
            path, dt = _render_shard(j)
            done += 1
            print(f"[data] {split} {done}/{len(jobs)} {os.path.basename(path)} {dt:.1f}s", flush=True)
    print(f"[data] {split}: {ids} identities x {caps} captures in {time.time() - t0:.0f}s", flush=True)


def _shard_names(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".npy") and ".tmp" not in f
                  and not f.endswith((".labels.npy", ".families.npy")))


def load_families(out, split, max_ids=None):
    """Family id per image of the shards load_split() returns (same order), -1 for singletons and for shards
    rendered without families."""
    d = os.path.join(out, split)
    if not os.path.isdir(d):
        return np.zeros(0, np.int64)
    fams = []
    for f in _shard_names(d):
        base = os.path.join(d, f[:-4])
        lab = np.load(base + ".labels.npy")
        if max_ids is not None and lab.min() >= max_ids:
            continue
        fams.append(np.load(base + ".families.npy") if os.path.exists(base + ".families.npy")
                    else np.full(len(lab), -1, np.int32))
    return np.concatenate(fams).astype(np.int64) if fams else np.zeros(0, np.int64)


def load_split(out, split, max_ids=None):
    """Loads the complete shards of a split: (uint8 N,224,224,3 images, int labels)."""
    d = os.path.join(out, split)
    if not os.path.isdir(d):
        return np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int64)
    names = _shard_names(d)
    ims, labs = [], []
    for f in names:
        base = os.path.join(d, f[:-4])
        lab = np.load(base + ".labels.npy")
        if max_ids is not None and lab.min() >= max_ids:
            continue
        ims.append(np.load(base + ".npy", mmap_mode="r"))
        labs.append(lab)
    if not ims:
        return np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(ims), np.concatenate(labs).astype(np.int64)


def contact_sheet(path, seed, rows=4, cols=8, family_rows=2):
    """Identities (rows) x captures (columns); the last `family_rows` rows are members of one look-alike family."""
    from PIL import Image
    tiles = []
    for r in range(rows + family_rows):
        if r < rows:
            idt, rng, _ = identity_rng(seed, "sheet", r)
        else:
            rng = np.random.default_rng([seed, SPLITS["sheet"], r])
            idt = render.make_identity(np.random.default_rng([seed, SPLITS["sheet"], FAMILY, 0]), bead_rng=rng)
        tiles.append(np.concatenate([render.render_capture(idt, rng) for _ in range(cols)], 1))
    im = Image.fromarray(np.concatenate(tiles, 0))
    im = im.resize((im.width // 2, im.height // 2), Image.LANCZOS)
    im = im.quantize(colors=160, method=Image.MEDIANCUT, dither=Image.NONE)
    im.save(path, optimize=True)
    print(f"[data] contact sheet -> {path} ({os.path.getsize(path) // 1024} KB; last {family_rows} rows: one family)")


# ---------------------------------------------------------------- real-vs-synthetic statistics

PROBE_FIRST_ID = 100    # 'sheet' identities from here on (the contact sheet shows 0..3)
PROBE_CAPS = 4


def render_identity_sized(seed, split, ident, caps):
    """render_identity() with the capture sizes: renders at capture size and resizes to 224 with LANCZOS here
    (the same random stream and pixels as render_identity). -> (uint8 caps,224,224,3, int short sides)."""
    from PIL import Image
    rng = np.random.default_rng([seed, SPLITS[split], ident])
    idt = render.make_identity(rng)
    ims, sides = [], []
    for _ in range(caps):
        raw = render.render_capture(idt, rng, return_raw=True)
        if isinstance(raw, np.ndarray):
            raw = Image.fromarray(raw)
        raw = raw.convert("RGB")
        sides.append(min(raw.size))
        ims.append(np.asarray(raw.resize((render.OUT, render.OUT), Image.LANCZOS) if raw.size != (224, 224) else raw))
    return np.stack(ims), np.array(sides, np.int32)


def _render_sized_job(job):
    seed, ident, caps = job
    return render_identity_sized(seed, "sheet", ident, caps)


def _fmt(v):
    return "-" if v is None else f"{v:.4g}"


def compare_with_real(seed, n, workers, card_dir):
    """Per-image statistics, pair statistics and the realism probe on n captures of 'sheet' identities
    (PROBE_CAPS each); prints the tables, writes the two plots, returns {"images", "pairs", "realism"}."""
    import stats
    import pairstats
    ids = max(1, -(-n // PROBE_CAPS))
    jobs = [(seed, PROBE_FIRST_ID + i, PROBE_CAPS) for i in range(ids)]
    t0 = time.time()
    if workers > 1:
        with Pool(workers) as pool:
            res = pool.map(_render_sized_job, jobs, chunksize=4)
    else:
        res = [_render_sized_job(j) for j in jobs]
    ims = np.concatenate([r[0] for r in res])[:n]
    sides = np.concatenate([r[1] for r in res])[:n]
    print(f"[stats] rendered {len(ims)} captures of {ids} 'sheet' identities in {time.time() - t0:.0f}s", flush=True)

    t = time.time()
    table = stats.compare(ims, os.path.join(card_dir, "synthetic-vs-real.png"), sizes=sides)
    print(f"[stats] per-image statistics ({len(ims)} renders vs 4,000 real photos; KS and W1/(real p95-p5)), "
          f"{time.time() - t:.0f}s")
    for row in table["rows"]:
        name = ("log10 " if row.get("scale") == "log10" else "") + row["stat"]
        print(f"[stats] {name:31s} real p5/p50/p95 {row['real_p5']:8.4g} {row['real_p50']:8.4g} {row['real_p95']:8.4g}"
              f"   synth {row['synthetic_p5']:8.4g} {row['synthetic_p50']:8.4g} {row['synthetic_p95']:8.4g}"
              f"   KS {row['ks']:.3f}  W1n {row['w1_norm']:.3f}")
    print(f"[stats] radial log10 power: mean |p50 synth - p50 real| over r>=4: "
          f"{table['radial_log10_power_224']['p50_mean_abs_diff']:.3f}")

    # pairs: captures (0,1) and (2,3) of each identity, two independent pairs per identity
    t = time.time()
    pairs, psides = [], []
    for i in range(0, len(ims) - 1, 2):
        if i // PROBE_CAPS == (i + 1) // PROBE_CAPS:
            pairs.append((ims[i], ims[i + 1]))
            psides.append((sides[i], sides[i + 1]))
    pt = pairstats.compare_pairs(pairs, psides, os.path.join(card_dir, "pairs-vs-real.png"), workers=workers)
    print(f"[pairs] {pt['pairs']} pairs of captures of one identity, {time.time() - t:.0f}s; geometry found "
          f"(SIFT+RANSAC >= {pairstats.MIN_INLIERS} inliers) {pt['geometry_found']}/{pt['pairs']} "
          f"({pt['geometry_found_share']:.0%}), real {pt['real_geometry_found']}/{pt['real_geometry_tried']} "
          f"({pt['real_geometry_found_share']:.0%})")
    print("[pairs] quantiles " + "/".join(f"{q:g}" for q in pt["quantiles"]))
    for row in pt["rows"]:
        syn = " ".join(_fmt(v) for v in row["synthetic"]) if row["synthetic"] else "-"
        print(f"[pairs] {row['stat']:22s} n={row['n']:5d} KS {_fmt(row['ks']):6s}  real {' '.join(_fmt(v) for v in row['real'])}"
              f"\n[pairs] {'':22s}                 synth {syn}")

    realism = probe(ims, workers)
    shape = shape_probe(ims, os.path.join(card_dir, "synthetic-shape.png"))
    return {"images": table, "pairs": pt, "realism": realism, "shape": shape}


def shape_probe(ims, sheet_path=None):
    """Shape probe (realism/shape_probe.py): Frechet distance of 64x64 grey thumbnails, projected on the
    principal components of 3,000 real crops, to the real ones (global shape, framing, shading)."""
    pdir = os.path.join(HERE, "realism")
    if not os.path.exists(os.path.join(pdir, "shape_probe.py")):
        print("[shape] realism/shape_probe.py not found: skipped")
        return None
    sys.path.insert(0, pdir)
    import shape_probe as sp
    t = time.time()
    X = sp.thumbs_arrays(ims)
    fd, mad = sp.distance(X)
    if sheet_path:
        sp.sheet(X, sheet_path)
    out = {"images": int(len(ims)), "shape_frechet": round(fd, 3), "mean_image_abs_diff": round(mad, 4),
           "real_floor": "1.1-1.3",
           "note": "Frechet distance to 3,000 real crops in their 24-component PCA space (realism/README.md)"
                   + ("" if len(ims) >= 2000 else "; fewer than 2,000 images: biased upwards, not for reporting")}
    print(f"[shape] {len(ims)} renders: shape distance to real crops {fd:.3f} (mean-image |diff| {mad:.4f}; "
          f"real floor 1.1-1.3){'; sheet -> ' + sheet_path if sheet_path else ''}, {time.time() - t:.0f}s")
    return out


def probe(ims, workers):
    """Realism probe (realism/realism_probe.py): Frechet distance of descriptor Gaussians to the real photos."""
    pdir = os.path.join(HERE, "realism")
    if not os.path.exists(os.path.join(pdir, "realism_probe.py")):
        print("[realism] realism/realism_probe.py not found: skipped")
        return None
    sys.path.insert(0, pdir)
    import realism_probe
    import torch
    torch.set_num_threads(max(1, workers))
    t = time.time()
    feats = realism_probe.describe_arrays(ims)
    ref = np.load(os.path.join(pdir, "real_descriptor_stats.npz"))
    total, per = realism_probe.distances(feats, ref["mean"], ref["cov"])
    floor = None
    try:
        with open(os.path.join(pdir, "real_descriptor_stats.json")) as f:
            floor = json.load(f)["reference"]["real photos of other dogs, as they are (the floor)"]["frechet_total"]
    except (OSError, KeyError, ValueError):
        pass
    out = {"images": int(len(ims)), "frechet_total": round(total, 3), "frechet_per_layer": [round(x, 3) for x in per],
           "real_floor": floor,
           "note": "Frechet distance to 4,000 real nose photos (realism/README.md); per layer fine to coarse"
                   + ("" if len(ims) >= 2000 else "; fewer than 2,000 images: biased upwards, not for reporting")}
    print(f"[realism] {len(ims)} renders: Frechet distance to real photos {total:.3f} (per layer, fine to coarse: "
          + ", ".join(f"{x:.3f}" for x in per) + f"; real floor {floor}), {time.time() - t:.0f}s")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_CACHE)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--train-ids", type=int, default=2400)
    ap.add_argument("--caps", type=int, default=10, help="captures per training identity")
    ap.add_argument("--heldout-ids", type=int, default=500)
    ap.add_argument("--heldout-caps", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a few identities for an end-to-end smoke run")
    ap.add_argument("--split", choices=["train", "heldout", "both"], default="both")
    ap.add_argument("--sheet-only", action="store_true")
    ap.add_argument("--reverse", action="store_true", help="render shards last-first (a second renderer on one cache)")
    ap.add_argument("--no-sheet", action="store_true")
    ap.add_argument("--family-share", type=float, default=0.25,
                    help="share of identity blocks rendered as look-alike families (0: none)")
    ap.add_argument("--family-size", type=int, default=3, help="identities per look-alike family")
    ap.add_argument("--probe-n", type=int, default=2000,
                    help="captures (of 'sheet' identities, 4 each) for the real-vs-synthetic statistics and the realism "
                         "probe; use >= 2000 for reported figures (the probe is biased upwards on small samples)")
    args = ap.parse_args()
    if args.tiny:
        args.train_ids, args.caps, args.heldout_ids, args.heldout_caps, args.workers = 12, 4, 8, 3, 1
        args.no_sheet = True
    card = os.path.join(ROOT, "models", "card")
    if not args.sheet_only:
        if args.split in ("heldout", "both"):
            render_split(args.out, "heldout", args.heldout_ids, args.heldout_caps, args.seed, args.workers,
                         shard=min(SHARD, max(1, args.heldout_ids)), fam_share=args.family_share,
                         fam_size=args.family_size)
        if args.split in ("train", "both"):
            render_split(args.out, "train", args.train_ids, args.caps, args.seed, args.workers,
                         shard=min(SHARD, max(1, args.train_ids)), reverse=args.reverse,
                         fam_share=args.family_share, fam_size=args.family_size)
    if not args.no_sheet:
        os.makedirs(card, exist_ok=True)
        contact_sheet(os.path.join(card, "contact-sheet.png"), args.seed)
        report = compare_with_real(args.seed, args.probe_n, args.workers, card)
        with open(os.path.join(HERE, "synthetic-vs-real.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(f"[stats] -> {os.path.join(HERE, 'synthetic-vs-real.json')}")

if __name__ == "__main__":
    main()
