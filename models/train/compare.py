"""Compares trained checkpoints on held-out synthetic identities: p1 (the captures as rendered, all
pairs) and p2 (an augmentation-only proxy of re-capture: each dog's first capture against a later
photo made from its second capture by common.recapture), with the calibration each would get.

  python3 models/train/compare.py --synth models/train/cache/synth runs/*/model.pt [--out compare.json]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import data as synth  # noqa: E402
import evaluate  # noqa: E402


def embed(model, u8, batch=128):
    import torch
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(dev).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(u8), batch):
            x = torch.from_numpy(common.to_chw(np.asarray(u8[i:i + batch]))).to(dev)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


def heldout_sets(cache, seed=5):
    ims, labels = synth.load_split(cache, "heldout")
    ims = np.asarray(ims)
    firsts, later = common.recapture_pairs(ims, labels, np.random.default_rng(seed))
    return ims, labels, ims[firsts], later


def metrics_for(model, sets):
    ims, labels, first, later = sets
    gen, imp, rank1 = common.pair_scores(embed(model, ims), labels)
    p1 = common.verification_metrics(gen, imp)
    p1["rank1"] = rank1
    g2, i2 = common.recapture_scores(embed(model, first), embed(model, later))
    p2 = common.verification_metrics(g2, i2)
    return {"p1": p1, "p2": p2, "pairs": {"p1": [len(gen), len(imp)], "p2": [len(g2), len(i2)]}}, (gen, imp, g2, i2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--synth", default=synth.DEFAULT_CACHE)
    ap.add_argument("--out")
    ap.add_argument("--half-to", help="also write each checkpoint with half-precision weights here (for transfer)")
    args = ap.parse_args()
    sets = heldout_sets(args.synth)
    res = {}
    for ck in args.checkpoints:
        name = os.path.basename(os.path.dirname(os.path.abspath(ck)))
        try:
            m, _ = metrics_for(evaluate.load_checkpoint(ck), sets)
        except Exception as e:  # one broken variant must not hide the others
            m = {"error": repr(e)}
        res[name] = m
        if args.half_to:
            import torch
            ckd = torch.load(ck, map_location="cpu", weights_only=False)
            ckd["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckd["model"].items()}
            torch.save(ckd, os.path.join(args.half_to, f"{name}.pt"))
        common.log(f"[compare] {name}: {json.dumps(m)}")
    if args.out:
        common.write_json(args.out, res)


if __name__ == "__main__":
    main()
