"""Compares trained checkpoints on held-out synthetic identities: p1 (the captures as rendered, all
pairs) and p2 (an augmentation-only proxy of re-capture: each dog's first capture against a later
photo made from its second capture by common.recapture), and the capture conditions of
common.build_conditions (zoom 0.6x / 1.6x, rotation 0-360 and 87 degrees, blur, JPEG q40, look-alike
families) under `conditions`. For ONNX files use `npm run model:eval -- synth:<cache> --model A --against B`.

  python3 models/train/compare.py --synth models/train/cache/synth runs/*/model.pt [--out compare.json]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import data as synth  # noqa: E402  (DEFAULT_CACHE)
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


def heldout_sets(cache, seed=5, probes_per_dog=None):
    """The held-out photos and every condition's inputs (common.build_conditions), built once for all models."""
    ims, labels, families = common.load_synth_split(cache, "heldout")
    ims = np.asarray(ims)
    return ims, labels, common.build_conditions(ims, labels, families, seed, probes_per_dog)


def metrics_for(model, sets):
    """p1 and p2 as before, plus every held-out condition (zoom, rotation, blur, JPEG, families) under
    `conditions`."""
    ims, labels, built = sets
    rows, scores, _ = common.score_conditions(lambda u8: embed(model, u8), ims, labels, built)
    gen, imp = scores["p1_as_rendered"]
    g2, i2 = scores["p2_recapture_proxy"]
    p1 = common.verification_metrics(gen, imp)
    p1["rank1"] = rows["p1_as_rendered"]["rank1"]
    p2 = common.verification_metrics(g2, i2)
    return ({"p1": p1, "p2": p2, "pairs": {"p1": [len(gen), len(imp)], "p2": [len(g2), len(i2)]},
             "conditions": rows}, (gen, imp, g2, i2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--synth", default=synth.DEFAULT_CACHE)
    ap.add_argument("--out")
    ap.add_argument("--probes-per-dog", type=int, default=None,
                    help="transformed probes per held-out dog and condition (default: all captures after the first)")
    ap.add_argument("--half-to", help="also write each checkpoint with half-precision weights here (for transfer)")
    args = ap.parse_args()
    sets = heldout_sets(args.synth, probes_per_dog=args.probes_per_dog)
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
    ok = {k: v["conditions"] for k, v in res.items() if "conditions" in v}
    for line in common.conditions_lines(ok) if ok else []:
        common.log(line)
    if args.out:
        common.write_json(args.out, res)


if __name__ == "__main__":
    main()
