"""Calibrates a nose-print embedder on the platform's own labelled photos and writes a model card.

  npm run model:calibrate -- <dataset> [--model models/nose-embedder.onnx] [--card out.json]
                             [--base-card models/nose-embedder.json] [--image-root DIR]

<dataset>: a folder with one sub-folder per dog, a flat folder of `<dog>_<n>.jpg` files, or a CSV
`dog ID,nose print image` (+ --image-root); a top-level manifest.json and other non-image files are
ignored, exact duplicate files within one dog are dropped. Every photo is embedded with the model
(the service's preprocessing; an ONNX file runs in onnxruntime-node), every same-dog pair is a
genuine pair and every cross-dog pair an impostor pair.

The knots are fitted by common.calibrate_conditions and then checked: for the 0.70, 0.85 and duplicate
knots the report gives the impostor pairs at or above the knot, the pairs it rests on and a one-sided
95% Clopper-Pearson upper bound on the false-accept rate. A knot whose bound exceeds its target
(1e-2, 1e-3, 1e-5) is moved up (common.certify_calibration); knots never move down, and a knot the
data cannot certify stays at least at the base card's knot. The report also
gives genuine acceptance at 0.85 and 0.70 and how many dogs registration's consistency check (every
pair of photos at similarity >= 0.70) would accept with the new card and with the base card.

The card is a copy of --base-card (default: the card beside --model) with `calibration` replaced and the
same `version`: calibration does not change the vectors, so enrolled embeddings stay valid. The service
reads it from MODEL_CARD_PATH or the card beside the model on restart. Without --card the card is
printed to stdout; the report always goes to stderr. Exits 1 on fewer than 2 dogs or no genuine pairs.
"""
import argparse
import copy
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import evaluate  # noqa: E402

ROOT = common.ROOT


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def fail(msg):
    say(f"model:calibrate: {msg}")
    sys.exit(1)


def fit(gen, imp, replaced=None):
    """The uncertified rule (calibrate_conditions on one condition) widened until each knot is certified
    or at the conservative rule (and, where uncertified, not below the replaced card's knot).
    Returns (calibration, confidence report, uncertified calibration)."""
    base, _ = common.calibrate_conditions({"photos": (gen, imp)})
    cal, conf = common.certify_calibration(gen, imp, base, floor=replaced)
    return cal, conf, base


def accepted(gen, cal):
    s = common.apply_calibration(gen, cal)
    return {t: {"pairs": int((s >= float(t)).sum()), "of": int(len(gen)),
                "rate": float((s >= float(t)).mean()) if len(gen) else float("nan")} for t in ("0.85", "0.70")}


def card_calibration(card):
    c = (card or {}).get("calibration")
    if not c or "cosine" not in c:
        return None
    return {"cosine": c["cosine"], "similarity": c["similarity"],
            "duplicate_similarity": c.get("duplicate_similarity", 0.95)}


def print_report(conf, acc, reg, reg_base, base_version):
    for line in common.confidence_lines(conf):
        say(line)
    say("genuine acceptance: " + "; ".join(
        f"similarity >= {t}: {a['pairs']:,} of {a['of']:,} pairs ({a['rate']:.1%})" for t, a in acc.items()))
    say(f"registration consistency (every pair of photos >= {reg['threshold']:.2f}), {reg['dogs']} dogs with 2+ photos: "
        f"first two photos {reg['first_two_pass']}/{reg['dogs']} ({reg['share_first_two']:.1%}), all photos "
        f"{reg['all_photos_pass']}/{reg['dogs']} ({reg['share_all_photos']:.1%}) with this card")
    if reg_base is not None:
        say(f"  with the base card ({base_version}): first two photos {reg_base['first_two_pass']}/{reg_base['dogs']} "
            f"({reg_base['share_first_two']:.1%}), all photos {reg_base['all_photos_pass']}/{reg_base['dogs']} "
            f"({reg_base['share_all_photos']:.1%})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "nose-embedder.onnx"))
    ap.add_argument("--card", help="write the card here (default: print it to stdout)")
    ap.add_argument("--base-card", help="card to copy (default: the .json beside --model)")
    ap.add_argument("--image-root", help="with a CSV dataset: where its images are")
    args = ap.parse_args()

    base_path = args.base_card or os.path.splitext(args.model)[0] + ".json"
    if not os.path.exists(args.model):
        fail(f"no model at {args.model}")
    if not os.path.exists(base_path):
        fail(f"no base card at {base_path}: pass --base-card")
    base_card = json.load(open(base_path))
    size = (base_card.get("export") or {}).get("onnx_bytes")
    if size and args.model.endswith(".onnx") and os.path.getsize(args.model) != size:
        say(f"warning: {base_path} describes an ONNX file of {size:,} bytes, {args.model} has "
            f"{os.path.getsize(args.model):,}: is it the card of this model?")

    items, dropped = common.dedupe(common.list_dataset(args.dataset, args.image_root))
    dogs = sorted({d for d, _ in items})
    if len(dogs) < 2:
        fail(f"{args.dataset}: {len(dogs)} dog(s); calibration needs photos of at least 2 dogs")
    idx = {d: i for i, d in enumerate(dogs)}
    labels = np.array([idx[d] for d, _ in items])
    say(f"[calibrate] {args.dataset}: {len(dogs)} dogs, {len(items)} images ({dropped} exact duplicates dropped); "
        f"model {common.rel(args.model)}, base card {common.rel(base_path)} "
        f"(version {base_card.get('version')})")
    u8 = np.stack([common.preprocess(p) for _, p in items])
    emb = evaluate.embed(args.model, u8)
    gen, imp, rank1 = common.pair_scores(emb, labels)
    if len(gen) == 0:
        fail(f"{args.dataset}: no genuine pairs (every dog has a single photo); calibration needs at least "
             "2 photos of some dogs")
    met = common.verification_metrics(gen, imp)
    say(f"[calibrate] pairs: {len(gen):,} genuine, {len(imp):,} impostor; AUC {met['auc']:.4f}  EER {met['eer']:.4f}  "
        f"rank-1 {rank1:.3f}")

    old = card_calibration(base_card)
    cal, conf, base = fit(gen, imp, old)
    acc = accepted(gen, cal)
    reg = common.registration_consistency(emb, labels, cal)
    reg_base = common.registration_consistency(emb, labels, old) if old else None
    print_report(conf, acc, reg, reg_base, base_card.get("version"))

    check = common.calibration_report(gen, imp, cal)
    s_imp = common.apply_calibration(imp, cal)
    today = datetime.date.today().isoformat()
    name = os.path.basename(os.path.normpath(args.dataset))
    card = copy.deepcopy(base_card)
    card["calibration"] = {
        "cosine": cal["cosine"],
        "similarity": cal["similarity"],
        "duplicate_similarity": cal["duplicate_similarity"],
        "method": "monotone piecewise-linear map fitted on own labelled photos by `npm run model:calibrate`: "
                  + common.RULE_METHOD + "; then " + common.CERTIFY_METHOD,
        "far_at_0.85": check["far_at_0.85"],
        "far_at_0.70": check["far_at_0.70"],
        "far_at_duplicate": float((s_imp >= cal["duplicate_similarity"]).mean()),
        "tar_at_0.85": check["tar_at_0.85"],
        "tar_at_0.70": check["tar_at_0.70"],
        "genuine_accepted": acc,
        "registration_consistency": reg,
        "uncertified_rule": {"cosine": base["cosine"], "duplicate_similarity": base["duplicate_similarity"]},
        "replaced": ({"cosine": old["cosine"], "duplicate_similarity": old["duplicate_similarity"],
                      "registration_consistency_on_this_data": reg_base} if old else None),
        "fitted_on": {
            "dataset": name, "dogs": len(dogs), "images": len(items), "duplicates_dropped": dropped,
            "pairs": {"genuine": int(len(gen)), "impostor": int(len(imp))},
            "auc": met["auc"], "eer": met["eer"], "rank1": rank1,
            "model": os.path.basename(args.model), "date": today,
            "confidence": conf,
        },
        "note": f"fitted on {len(dogs)} own dogs ({name}, {today}); the vectors are unchanged, so the version is the "
                "base card's and enrolled embeddings stay valid",
    }
    text = json.dumps(card, indent=2) + "\n"
    if args.card:
        os.makedirs(os.path.dirname(os.path.abspath(args.card)), exist_ok=True)
        with open(args.card, "w") as f:
            f.write(text)
        say(f"[card] {args.card} (version {card.get('version')}): cosine knots "
            + ", ".join(f"{x:.4f}" for x in cal["cosine"]) + f"; duplicate_similarity {cal['duplicate_similarity']}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
