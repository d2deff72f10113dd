"""Evaluates a nose-print embedder on a labelled dataset.

  /usr/bin/python3 models/train/evaluate.py <dataset> [--model models/nose-embedder.onnx] [--image-root DIR]
  /usr/bin/python3 models/train/evaluate.py synth:models/train/cache/synth      # held-out synthetic identities
  /usr/bin/python3 models/train/evaluate.py synth:models/train/cache/synth --model A.onnx --against B.onnx \
      --json ab.json                                   # two models, the same photos and probes, every condition

<dataset> is a folder with one sub-folder per dog, or a CSV with columns `dog ID,nose print image`
(+ --image-root, Pet Biometric Challenge layout). Images are preprocessed like the service
(PIL open, exif_transpose, RGB, resize 224x224 LANCZOS, /255, CHW); exact duplicate files within
one dog are dropped before pairing. The ONNX file runs in onnxruntime-node (CPU); a `.pt`
checkpoint runs in PyTorch. Prints ROC AUC, EER, TAR at FAR 1e-2/1e-3/1e-4 and rank-1 accuracy,
and writes genuine/impostor histograms (PNG) and the metrics (JSON) to --out.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ROOT = common.ROOT


def embed(model_path, u8):
    if model_path.endswith(".onnx"):
        return common.embed_onnx(model_path, u8)
    return common.embed_torch(load_checkpoint(model_path), u8)


def load_checkpoint(path):
    """A train.py checkpoint (any backbone; weights may be stored in half precision) as a float32 model."""
    import torch
    from net import Net
    ck = torch.load(path, map_location="cpu", weights_only=False)
    backbone = ck.get("backbone", "default")
    kw = {"widths": tuple(ck.get("widths", (32, 64, 128, 256)))} if backbone == "default" else {"pretrained": False}
    m = Net(backbone, **kw)
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    return m.eval()


def score(emb, labels, out_dir, name):
    gen, imp, rank1 = common.pair_scores(emb, labels)
    met = common.verification_metrics(gen, imp)
    met["rank1"] = rank1
    met["genuine_pairs"] = int(len(gen))
    met["impostor_pairs"] = int(len(imp))
    met["images"] = int(len(labels))
    met["identities"] = int(len(np.unique(labels)))
    os.makedirs(out_dir, exist_ok=True)
    common.histogram_png(gen, imp, os.path.join(out_dir, f"{name}-scores.png"),
                         f"{name}: AUC {met['auc']:.4f}  EER {met['eer']:.4f}  rank-1 {rank1:.3f}")
    return met, gen, imp


SYNTH_EVAL = ("held-out synthetic identities (rendered from a separate seed split, never seen in training), "
              "exact duplicates dropped")


def evaluate_arrays(ims, labels, model_path, out_dir, name, description, floor=None):
    """Metrics + calibration for uint8 (N,224,224,3) images of labelled identities: the knots of
    common.calibrate_conditions (with duplicate_similarity), widened by common.certify_calibration where
    these pairs cannot certify their false-accept rates (as `model:calibrate` does); `floor`: a base card's
    calibration that uncertified knots do not go below."""
    emb = embed(model_path, ims)
    met, gen, imp = score(emb, labels, out_dir, name)
    base, conds = common.calibrate_conditions({name: (gen, imp)})
    cal, conf = common.certify_calibration(gen, imp, base, floor=floor)
    rep = common.calibration_report(gen, imp, cal)
    rep["far_at_duplicate"] = float((common.apply_calibration(imp, cal) >= cal["duplicate_similarity"]).mean())
    conds[name].update(rep)
    np.save(os.path.join(out_dir, f"{name}-genuine.npy"), gen)
    np.save(os.path.join(out_dir, f"{name}-impostor.npy"), imp)
    common.log(json.dumps({"metrics": met, "calibration": cal, "check": rep}, indent=1))
    return {"metrics": met, "calibration": cal, "check": rep, "conditions": conds, "confidence": conf,
            "uncertified_rule": {"cosine": base["cosine"], "duplicate_similarity": base["duplicate_similarity"]},
            "calibration_method": "monotone piecewise-linear map fitted on all pairs of the held-out dogs: "
                                  + common.RULE_METHOD + "; then " + common.CERTIFY_METHOD,
            "emb": emb, "labels": np.asarray(labels), "gen": gen, "imp": imp,
            "out_dir": out_dir, "description": description}


RECAPTURE_EVAL = ("held-out synthetic identities, each dog's first capture against a later photo made from its "
                  "second capture by augmentation only (common.recapture: roll, scale, shift, focus, exposure, "
                  "contrast, colour, JPEG in the ranges measured between two real photos of one dog)")


BLURRY_EVAL = ("the re-capture proxy with both photos degraded by common.degrade (Gaussian blur 1.2-2.2 px, "
               "96-140 px resolution, JPEG 50-80): the hardest condition, on which the calibration is fitted")


def look_alike_impostors(ims, labels, emb, k=10):
    """Impostor scores between each dog and the k dogs that look most like it at a glance (mean colour of
    the leather in the centre and of the fur at the border, and contrast): the dogs a real population
    has many of (one breed, one coat), whose impostor scores run higher than those of random pairs."""
    x = np.asarray(ims, np.float32) / 255
    centre = x[:, 72:152, 72:152].mean((1, 2))
    ring = np.concatenate([x[:, :24].reshape(len(x), -1, 3), x[:, -24:].reshape(len(x), -1, 3)], 1).mean(1)
    desc = np.concatenate([centre, ring, x.mean(-1).std((1, 2))[:, None]], 1)
    dogs = np.unique(labels)
    d = np.stack([desc[labels == g].mean(0) for g in dogs])
    d = (d - d.mean(0)) / (d.std(0) + 1e-9)
    dist = ((d[:, None] - d[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, :k]
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = []
    for a, ga in enumerate(dogs):
        ia = np.flatnonzero(labels == ga)
        for b in near[a]:
            if b > a or a not in near[b]:   # each unordered pair of dogs once
                out.append((e[ia] @ e[labels == dogs[b]].T).ravel())
    return np.concatenate(out).astype(np.float64)


def load_heldout(cache):
    ims, labels, families = common.load_synth_split(cache, "heldout")
    if len(ims) == 0:
        raise SystemExit(f"no held-out synthetic split in {cache}")
    return np.asarray(ims), labels, families


def evaluate_synthetic(cache, model_path, out_dir, seed=5, probes_per_dog=None):
    """Held-out synthetic identities (a split never used for training): p1, every pair of captures as
    rendered; p2, the re-capture proxy; and the capture conditions of common.build_conditions (zoom,
    rotation, blur, JPEG, look-alike families), reported under `conditions_eval`. The calibration is fitted
    on as rendered, p2, p2 blurred and the look-alike impostors."""
    ims, labels, families = load_heldout(cache)
    built = common.build_conditions(ims, labels, families, seed, probes_per_dog)
    rows, scores, emb = common.score_conditions(lambda u8: embed(model_path, u8), ims, labels, built)
    for line in common.conditions_lines({common.rel(model_path): rows}):
        common.log(line)
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(os.path.join(out_dir, "conditions-scores.npz"),
                        **{f"{k}_{s}": v for k, (g, i) in scores.items() for s, v in (("genuine", g), ("impostor", i))})
    met, gen, imp = score(emb, labels, out_dir, "heldout")
    rng = built["rng"]
    firsts, later = built["recapture_first"], built["recapture_later"]
    g2, i2 = scores["p2_recapture_proxy"]
    met2 = common.verification_metrics(g2, i2)
    # the hardest condition: both photos blurred and small, as many real ones are
    blurry_first = embed(model_path, np.stack([common.degrade(ims[i], rng) for i in firsts]))
    blurry_later = embed(model_path, np.stack([common.degrade(x, rng) for x in later]))
    g3, i3 = common.recapture_scores(blurry_first, blurry_later)
    met3 = common.verification_metrics(g3, i3)
    met3.update({"identities": len(firsts), "genuine_pairs": int(len(g3)), "impostor_pairs": int(len(i3))})
    met2.update({"identities": len(firsts), "genuine_pairs": int(len(g2)), "impostor_pairs": int(len(i2))})
    common.histogram_png(g2, i2, os.path.join(out_dir, "recapture-scores.png"),
                         f"re-capture proxy: AUC {met2['auc']:.4f}  TAR@FAR1e-3 {met2['tar_at_far_1e-3']:.3f}")
    i4 = look_alike_impostors(ims, labels, emb)
    cal, rep = common.calibrate_conditions({"as_rendered": (gen, imp), "recapture": (g2, i2),
                                            "recapture_blurry": (g3, i3), "look_alike": (gen, i4)})
    met4 = common.verification_metrics(gen, i4)
    met4.update({"impostor_pairs": int(len(i4))})
    common.log(json.dumps({"metrics": met, "recapture": met2, "recapture_blurry": met3, "look_alike": met4, "calibration": cal,
                           "check": rep}, indent=1))
    return {"metrics": met, "recapture": met2, "recapture_blurry": met3, "look_alike": met4, "calibration": cal, "check": rep["as_rendered"],
            "conditions": rep, "conditions_eval": rows, "out_dir": out_dir, "description": SYNTH_EVAL}


def compare_synthetic(cache, models, out_path, out_dir, seed=5, probes_per_dog=None):
    """Several models on the same held-out synthetic photos and the same transformed probes: every
    condition of common.score_conditions for each; written to `out_path` as JSON and printed as a table."""
    ims, labels, families = load_heldout(cache)
    built = common.build_conditions(ims, labels, families, seed, probes_per_dog)
    res = {}
    for m in models:
        rows, _, _ = common.score_conditions(lambda u8: embed(m, u8), ims, labels, built)
        res[common.rel(m)] = rows
        common.log(f"[eval] {common.rel(m)} done")
    for line in common.conditions_lines(res):
        common.log(line)
    out = {"data": common.CONDITIONS_EVAL, "cache": common.rel(cache),
           "identities": int(len(np.unique(labels))), "images": int(len(labels)),
           "look_alike_families": int(len(np.unique(families[families >= 0]))) if families is not None else 0,
           "seed": seed, "probes_per_dog": probes_per_dog, "models": res}
    names = list(res)
    if len(names) == 2:
        a, b = names
        out["difference"] = {"what": f"{b} minus {a}",
                             **{c: {k: round(res[b][c][k] - res[a][c][k], 5)
                                    for k in ("auc", "eer", "tar_at_far_1e-3", "tar_at_far_1e-4")}
                                for c in res[a] if c in res[b]}}
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        common.write_json(out_path, out)
        common.log(f"[eval] {out_path}")
    return out


def build_card(res, meta, version=None, tiny=False):
    here = common.HERE
    vs = None
    p = os.path.join(here, "synthetic-vs-real.json")
    if os.path.exists(p):
        vs = json.load(open(p))
    today = datetime.date.today().strftime("%Y.%m.%d")
    m = res["metrics"]
    return {
        "name": "nosepaw-nose-embedder" + ("-tiny" if tiny else ""),
        "version": version or f"{today}-synth-1",
        "input": {"name": "input", "shape": [None, 3, 224, 224], "dtype": "float32", "range": [0, 1],
                  "layout": "NCHW RGB"},
        "output": {"name": "embedding", "shape": [None, 512], "dtype": "float32", "l2_normalized": True},
        "preprocessing": "PIL decode (exif_transpose), convert('RGB'), resize to 224x224 with LANCZOS, "
                         "divide by 255, HWC -> CHW, float32; mean/std normalisation happens inside the graph",
        "training": meta["training"],
        "export": {"opset": 17, "onnx_bytes": meta["onnx_bytes"],
                   "onnx_vs_pytorch_max_abs_diff": meta["onnx_vs_pytorch_max_abs_diff"],
                   "checked_with": "onnx.checker + onnxruntime-node 1.30 (CPU)"},
        "evaluation": {
            "data": res.get("description", SYNTH_EVAL),
            "identities": m["identities"], "images": m["images"],
            "auc": round(m["auc"], 5), "eer": round(m["eer"], 5),
            "tar_at_far": {"1e-2": round(m["tar_at_far_1e-2"], 5), "1e-3": round(m["tar_at_far_1e-3"], 5),
                           "1e-4": round(m["tar_at_far_1e-4"], 5)},
            "rank1": round(m["rank1"], 5),
            "pairs": {"genuine": m["genuine_pairs"], "impostor": m["impostor_pairs"]},
            "recapture": ({"data": RECAPTURE_EVAL, "identities": res["recapture"]["identities"],
                           "auc": round(res["recapture"]["auc"], 5), "eer": round(res["recapture"]["eer"], 5),
                           "tar_at_far": {"1e-2": round(res["recapture"]["tar_at_far_1e-2"], 5),
                                          "1e-3": round(res["recapture"]["tar_at_far_1e-3"], 5)},
                           "pairs": {"genuine": res["recapture"]["genuine_pairs"],
                                     "impostor": res["recapture"]["impostor_pairs"]}}
                          if "recapture" in res else None),
            "recapture_blurry": ({"data": BLURRY_EVAL, "auc": round(res["recapture_blurry"]["auc"], 5),
                                  "eer": round(res["recapture_blurry"]["eer"], 5),
                                  "tar_at_far": {"1e-2": round(res["recapture_blurry"]["tar_at_far_1e-2"], 5),
                                                 "1e-3": round(res["recapture_blurry"]["tar_at_far_1e-3"], 5)},
                                  "pairs": {"genuine": res["recapture_blurry"]["genuine_pairs"],
                                            "impostor": res["recapture_blurry"]["impostor_pairs"]}}
                                 if "recapture_blurry" in res else None),
            "look_alike": ({"data": "all captures as rendered; impostor pairs only between each dog and the 10 dogs "
                                    "most like it in leather colour, fur colour and contrast",
                            "auc": round(res["look_alike"]["auc"], 5),
                            "tar_at_far": {"1e-2": round(res["look_alike"]["tar_at_far_1e-2"], 5),
                                           "1e-3": round(res["look_alike"]["tar_at_far_1e-3"], 5)},
                            "pairs": {"impostor": res["look_alike"]["impostor_pairs"]}}
                           if "look_alike" in res else None),
            **({"conditions": {"data": common.CONDITIONS_EVAL, **res["conditions_eval"]}}
               if res.get("conditions_eval") else {}),
            "real_photos": "not evaluated here: no real labelled photos ship with the project; "
                           "run `npm run model:eval -- <dataset>` on your own" if tiny or res.get("description", SYNTH_EVAL) == SYNTH_EVAL
                           else "see data",
        },
        "synthetic_vs_real": vs,
        "calibration": {
            "cosine": res["calibration"]["cosine"],
            "similarity": res["calibration"]["similarity"],
            "method": res.get("calibration_method") or
                      "monotone piecewise-linear map fitted on the evaluation impostor scores: similarity 0.85 at "
                      "the cosine where impostor FAR is 5e-4 (or, if higher, the FAR 1e-3 cosine t moved 10% of the "
                      "way to 1), 0.70 likewise at FAR 5e-3 / 1e-2, 0.35 at the median impostor score, 0.95 at the "
                      "median genuine score (at least 0.03 above the 0.85 knot), 0 at cosine -1 and 1 at cosine 1"
                      + ("; with several capture conditions each knot at the highest cosine any condition needs and "
                         "0.95 at the hardest condition's median genuine score; duplicate_similarity at per-comparison "
                         "FAR 1e-5 (see conditions.duplicate_basis); conditions: as rendered, re-capture proxy, re-capture with both photos "
                         "blurred and small, look-alike impostors" if "conditions" in res else ""),
            **({"duplicate_similarity": res["calibration"]["duplicate_similarity"],
                "conditions": res["conditions"]} if "conditions" in res else {}),
            **({"uncertified_rule": res["uncertified_rule"], "confidence": res["confidence"]}
               if "confidence" in res else {}),
            "far_at_0.85": res["check"]["far_at_0.85"],
            "far_at_0.70": res["check"]["far_at_0.70"],
            "tar_at_0.85": res["check"]["tar_at_0.85"],
            "tar_at_0.70": res["check"]["tar_at_0.70"],
            "note": ("fitted on synthetic data; recalibrate on real photos (`npm run model:calibrate -- <dataset>`) "
                     "before relying on the thresholds") if res.get("description", SYNTH_EVAL) == SYNTH_EVAL
                    else "fitted on the held-out own dogs",
        },
        "license": "MIT",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "nose-embedder.onnx"))
    ap.add_argument("--image-root")
    ap.add_argument("--out", default=os.path.join(common.HERE, "runs", "eval"))
    ap.add_argument("--calibrate", action="store_true", help="also fit and print calibration knots for this data")
    ap.add_argument("--card", help="with synth:<cache>: write a model card here (needs --train-meta)")
    ap.add_argument("--train-meta", help="train-meta.json written by train.py")
    ap.add_argument("--version")
    ap.add_argument("--against", action="append", default=[],
                    help="with synth:<cache>: also evaluate this model (repeatable) on the same held-out photos and "
                         "transformed probes; all models' conditions go to --json")
    ap.add_argument("--json", help="with --against: where to write the models' conditions (default OUT/compare.json)")
    ap.add_argument("--probes-per-dog", type=int, default=None,
                    help="transformed probes per held-out dog and condition (default: all captures after the first)")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    if args.dataset.startswith("synth:") and args.against:
        compare_synthetic(args.dataset[6:], [args.model] + args.against,
                          args.json or os.path.join(args.out, "compare.json"), args.out, args.seed, args.probes_per_dog)
        return
    if args.dataset.startswith("synth:"):
        res = evaluate_synthetic(args.dataset[6:], args.model, args.out, args.seed, args.probes_per_dog)
        met = res["metrics"]
        if args.card:
            meta = json.load(open(args.train_meta))
            common.write_json(args.card, build_card(res, meta, args.version))
            common.log(f"[card] {args.card}")
    else:
        items, dropped = common.dedupe(common.list_dataset(args.dataset, args.image_root))
        dogs = sorted({d for d, _ in items})
        idx = {d: i for i, d in enumerate(dogs)}
        common.log(f"[eval] {len(dogs)} dogs, {len(items)} images ({dropped} exact duplicates dropped)")
        u8 = np.stack([common.preprocess(p) for _, p in items])
        labels = np.array([idx[d] for d, _ in items])
        emb = embed(args.model, u8)
        met, gen, imp = score(emb, labels, args.out, "dataset")
        if args.calibrate:
            cal, rep = common.calibrate_conditions({"dataset": (gen, imp)})
            common.log(json.dumps({"calibration": cal, "check": rep}))
    common.write_json(os.path.join(args.out, "metrics.json"), met)
    print(f"images {met['images']}  identities {met['identities']}  genuine pairs {met['genuine_pairs']}  "
          f"impostor pairs {met['impostor_pairs']}")
    print(f"AUC {met['auc']:.4f}  EER {met['eer']:.4f}  TAR@FAR=1e-2 {met['tar_at_far_1e-2']:.4f}  "
          f"TAR@FAR=1e-3 {met['tar_at_far_1e-3']:.4f}  TAR@FAR=1e-4 {met['tar_at_far_1e-4']:.4f}  "
          f"rank-1 {met['rank1']:.4f}")
    print(f"histograms: {args.out}")


if __name__ == "__main__":
    main()
