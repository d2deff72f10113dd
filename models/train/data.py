"""Renders and caches synthetic nose-print captures; writes the contact sheet and
the real-vs-synthetic statistics comparison.

  /usr/bin/python3 models/train/data.py                      # full training + held-out sets
  /usr/bin/python3 models/train/data.py --tiny --out /tmp/x  # a few identities, seconds
  /usr/bin/python3 models/train/data.py --sheet-only         # contact sheet + stats only

Identity i of split S always renders from the seed sequence (seed, split id, i), so
shards are identical whichever worker renders them and in whatever order.
Training identities and held-out identities come from different split ids and never overlap.
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


def render_identity(seed, split, ident, caps):
    rng = np.random.default_rng([seed, SPLITS[split], ident])
    idt = render.make_identity(rng)
    return np.stack([render.render_capture(idt, rng) for _ in range(caps)])


def _render_shard(job):
    seed, split, first, count, caps, path = job
    if os.path.exists(path + ".npy"):
        return path, 0.0
    try:  # several renderers may share one cache: each shard is claimed by one of them
        os.close(os.open(path + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return path, -1.0
    t = time.time()
    ims = np.stack([render_identity(seed, split, first + i, caps) for i in range(count)])
    labels = np.repeat(np.arange(first, first + count), caps)
    tmp = path + ".tmp.npy"
    np.save(path + ".labels.npy", labels.astype(np.int32))
    np.save(tmp, ims.reshape(-1, *ims.shape[2:]))
    os.replace(tmp, path + ".npy")    # the image file appears last: readers see whole shards only
    os.remove(path + ".lock")
    return path, time.time() - t


def render_split(out, split, ids, caps, seed, workers, shard=SHARD, reverse=False):
    d = os.path.join(out, split)
    os.makedirs(d, exist_ok=True)
    jobs = []
    for first in range(0, ids, shard):
        count = min(shard, ids - first)
        jobs.append((seed, split, first, count, caps, os.path.join(d, f"shard_{first:06d}_{count:03d}x{caps}")))
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


def load_split(out, split, max_ids=None):
    """Loads the complete shards of a split: (uint8 N,224,224,3 images, int labels)."""
    d = os.path.join(out, split)
    if not os.path.isdir(d):
        return np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int64)
    names = sorted(f for f in os.listdir(d) if f.endswith(".npy") and not f.endswith(".labels.npy") and ".tmp" not in f)
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


def contact_sheet(path, seed, rows=4, cols=8):
    from PIL import Image
    tiles = []
    for r in range(rows):
        caps = render_identity(seed, "sheet", r, cols)
        tiles.append(np.concatenate(list(caps), 1))
    im = Image.fromarray(np.concatenate(tiles, 0))
    im = im.resize((im.width // 2, im.height // 2), Image.LANCZOS)
    im = im.quantize(colors=160, method=Image.MEDIANCUT, dither=Image.NONE)
    im.save(path, optimize=True)
    print(f"[data] contact sheet -> {path} ({os.path.getsize(path) // 1024} KB)")


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
    args = ap.parse_args()
    if args.tiny:
        args.train_ids, args.caps, args.heldout_ids, args.heldout_caps, args.workers = 12, 4, 8, 3, 1
        args.no_sheet = True
    card = os.path.join(ROOT, "models", "card")
    if not args.sheet_only:
        if args.split in ("heldout", "both"):
            render_split(args.out, "heldout", args.heldout_ids, args.heldout_caps, args.seed, args.workers,
                         shard=min(SHARD, max(1, args.heldout_ids)))
        if args.split in ("train", "both"):
            render_split(args.out, "train", args.train_ids, args.caps, args.seed, args.workers,
                         shard=min(SHARD, max(1, args.train_ids)), reverse=args.reverse)
    if not args.no_sheet:
        os.makedirs(card, exist_ok=True)
        contact_sheet(os.path.join(card, "contact-sheet.png"), args.seed)
        import stats
        ims = np.stack([render_identity(args.seed, "sheet", 100 + i, 4) for i in range(60)]).reshape(-1, 224, 224, 3)
        table = stats.compare(ims, os.path.join(card, "synthetic-vs-real.png"))
        with open(os.path.join(HERE, "synthetic-vs-real.json"), "w") as f:
            json.dump(table, f, indent=1)
        for row in table["rows"]:
            print(f"[stats] {row['stat']:28s} real p50 {row['real_p50']:.4g}  synth p50 {row['synthetic_p50']:.4g}"
                  f"   real p5-p95 {row['real_p5']:.4g}..{row['real_p95']:.4g}  synth {row['synthetic_p5']:.4g}..{row['synthetic_p95']:.4g}")


if __name__ == "__main__":
    main()
