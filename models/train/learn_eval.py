"""The evaluation half of `npm run registry:learn`: the running model and the candidate on the same held-out own
dogs, the candidate's card calibrated and checked on them, and the registration rule chosen from the trade-off.

  /usr/bin/python3 models/train/learn_eval.py --heldout DIR --old-model OLD.onnx --old-card OLD.json
      --new-model NEW.onnx --version V --train-meta train-meta.json --out DIR [--boot 1000] [--seed 7]
      [--registration-bound 0.01]

<heldout>: one sub-folder per dog (the held-out part of the export). Every photo is embedded by both ONNX files
(onnxruntime-node, the service's preprocessing); every same-dog pair is a genuine pair, every cross-dog pair an
impostor pair. Writes:

  <out>/eval.json   both models' figures per condition (as photographed; the re-capture proxy), ROC points,
                    a paired bootstrap over dogs of the TAR difference at FAR 1e-3, the calibration with its
                    Clopper-Pearson bounds, the registration trade-off and the chosen rule
  <out>/card.json   the candidate's card: the running card's fields, the new version, training and export
                    from train-meta.json, the calibration fitted on the pooled held-out impostor pairs
                    (common.certify_calibration, floor: the running card), the evaluation and the registration rule

Nothing here decides promotion; the gate (server/learn/gate.ts) reads eval.json.
"""
import argparse
import copy
import datetime
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import evaluate  # noqa: E402

FAR_GRID = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5]
REG_GRID = [round(0.30 + 0.05 * i, 2) for i in range(14)]   # 0.30 .. 0.95
# The registration.pair_threshold the server loads (server/model/model-card.ts): a rule outside it is moved to the
# nearer end, so a promoted card always loads. The table still covers the whole grid.
PAIR_THRESHOLD_RANGE = (0.50, 0.85)


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def unit(e):
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def tar_at(gen, imp, far):
    t = common.impostor_threshold(imp, far)
    return float((gen > t).mean()) if len(gen) and np.isfinite(t) else float("nan")


def roc_points(gen, imp):
    """TAR at each FAR of FAR_GRID (the impostor threshold's own FAR, as the service measures it)."""
    return [{"far": f, "tar": tar_at(gen, imp, f)} for f in FAR_GRID]


def figures(gen, imp, rank1=None):
    m = common.verification_metrics(gen, imp)
    out = {"auc": m["auc"], "eer": m["eer"], "tar_at_far": {"1e-2": m["tar_at_far_1e-2"], "1e-3": m["tar_at_far_1e-3"],
                                                           "1e-4": m["tar_at_far_1e-4"]},
           "pairs": {"genuine": int(len(gen)), "impostor": int(len(imp))}, "roc": roc_points(gen, imp)}
    if rank1 is not None:
        out["rank1"] = rank1
    return out


def paired_bootstrap(S_old, S_new, labels, far, boots, seed):
    """Resamples dogs with replacement (a dog drawn twice counts as two dogs: its copies are not paired with each
    other) and recomputes both models' TAR at `far` on the resampled pairs. Returns the point difference and the
    one-sided 95% lower and upper bounds (5th and 95th percentiles) of new - old."""
    dogs = np.unique(labels)
    idx_of = {d: np.flatnonzero(labels == d) for d in dogs}
    rng = np.random.default_rng(seed)

    def tar_pair(sample):
        idx = np.concatenate([idx_of[d] for d in sample])
        owner = np.concatenate([np.full(len(idx_of[d]), k) for k, d in enumerate(sample)])
        iu = np.triu_indices(len(idx), 1)
        same = owner[iu[0]] == owner[iu[1]]
        dog_a, dog_b = sample[owner[iu[0]]], sample[owner[iu[1]]]
        impostor = ~same & (dog_a != dog_b)     # two copies of one dog are neither genuine nor impostor
        out = []
        for S in (S_old, S_new):
            s = S[np.ix_(idx, idx)][iu]
            out.append(tar_at(s[same], s[impostor], far))
        return out

    point = tar_pair(dogs)
    diffs = []
    for _ in range(boots):
        o, n = tar_pair(rng.choice(dogs, len(dogs), replace=True))
        if np.isfinite(o) and np.isfinite(n):
            diffs.append(n - o)
    diffs = np.array(diffs)
    return {"far": far, "old": point[0], "new": point[1], "difference": point[1] - point[0],
            "lower_95": float(np.quantile(diffs, 0.05)) if len(diffs) else float("nan"),
            "upper_95": float(np.quantile(diffs, 0.95)) if len(diffs) else float("nan"),
            "resamples": int(len(diffs)), "dogs": int(len(dogs)),
            "method": f"paired bootstrap over held-out dogs ({len(diffs)} resamples, seed {seed}): dogs drawn with "
                      "replacement, both models scored on the same draw; one-sided 95% bounds are the 5th and 95th "
                      "percentiles of the TAR difference"}


def calibration_curve(gen, imp, cal):
    """Measured impostor FAR and its 95% Clopper-Pearson upper bound, and TAR, at similarity thresholds."""
    s_imp, s_gen = common.apply_calibration(imp, cal), common.apply_calibration(gen, cal)
    out = []
    for t in [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]:
        k = int((s_imp >= t).sum())
        out.append({"similarity": t, "impostors_at_or_above": k, "far": k / len(imp) if len(imp) else float("nan"),
                    "far_upper_95": common.far_upper_bound(k, len(imp)),
                    "tar": float((s_gen >= t).mean()) if len(gen) else float("nan")})
    return out


def registration_tradeoff(emb, labels, cal, bound):
    """Per threshold on the calibrated similarity: the share of genuine photo pairs registration's consistency
    check would refuse, and the share of two-different-dog pairs it would accept, with its 95% upper bound.
    The rule: the lowest threshold whose different-dog acceptance upper bound is at most `bound`."""
    e = unit(emb)
    S = common.apply_calibration(e @ e.T, cal)
    iu = np.triu_indices(len(labels), 1)
    same = labels[iu[0]] == labels[iu[1]]
    g, i = S[iu][same], S[iu][~same]
    rows = []
    for t in REG_GRID:
        k = int((i >= t).sum())
        rows.append({"threshold": t, "genuine_refused": float((g < t).mean()) if len(g) else float("nan"),
                     "different_dogs_accepted": k / len(i) if len(i) else float("nan"),
                     "different_dogs_accepted_upper_95": common.far_upper_bound(k, len(i)),
                     "different_dog_pairs_at_or_above": k})
    ok = [r for r in rows if r["different_dogs_accepted_upper_95"] <= bound]
    chosen = ok[0] if ok else rows[-1]
    rule = (f"lowest similarity threshold (grid {REG_GRID[0]:.2f}..{REG_GRID[-1]:.2f}, step 0.05) whose 95% "
            f"upper bound on two-different-dog acceptance is at most {bound:g}"
            if ok else f"no threshold on the grid meets the {bound:g} bound on these pairs: the highest, "
            f"{REG_GRID[-1]:.2f}, is chosen")
    lo, hi = PAIR_THRESHOLD_RANGE
    applied = min(max(chosen["threshold"], lo), hi)
    if applied != chosen["threshold"]:
        rule += f"; {chosen['threshold']:.2f} moved into the server's range {lo:.2f}..{hi:.2f}"
        chosen = next(r for r in rows if abs(r["threshold"] - applied) < 1e-9)
    return {"pairs": {"genuine": int(len(g)), "different_dogs": int(len(i))}, "table": rows,
            "bound": bound, "certified": bool(chosen["different_dogs_accepted_upper_95"] <= bound),
            "pair_threshold": chosen["threshold"], "rule": rule, "at_threshold": chosen}


def cross_fit(S, labels, floor, folds, seed):
    """The fitting rule checked out of sample: the dogs are dealt into `folds` folds; for each fold the card is
    fitted (calibrate_conditions, then certify_calibration) on the other folds' pairs and the fold's own impostor
    pairs are counted at or above its 0.70 and 0.85 knots. The counts are pooled over the folds."""
    dogs = np.random.default_rng(seed).permutation(np.unique(labels))
    fold_of = {d: i % folds for i, d in enumerate(dogs)}
    fold = np.array([fold_of[l] for l in labels])
    counts = {"0.70": [0, 0], "0.85": [0, 0]}
    for f in range(folds):
        fit, chk = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        gen_f, imp_f = condition_scores(S[np.ix_(fit, fit)], labels[fit])
        _, imp_c = condition_scores(S[np.ix_(chk, chk)], labels[chk])
        if len(gen_f) == 0 or len(imp_f) == 0 or len(imp_c) == 0:
            return None
        base, _ = common.calibrate_conditions({"photos": (gen_f, imp_f)})
        cal_f, _ = common.certify_calibration(gen_f, imp_f, base, floor=floor)
        sim = common.apply_calibration(imp_c, cal_f)
        for t in counts:
            counts[t][0] += int((sim >= float(t)).sum())
            counts[t][1] += int(len(imp_c))
    return {"folds": folds, "knots": {t: {"impostors_at_or_above": k, "impostor_pairs": n, "far": k / n,
                                          "far_upper_95": common.far_upper_bound(k, n),
                                          "target_far": common.KNOT_TARGETS[t]} for t, (k, n) in counts.items()},
            "method": f"dogs dealt into {folds} folds (seed {seed}); each fold's impostor pairs checked against the "
                      "card fitted on the other folds by the same rule; counts pooled. Information only: each fold's "
                      "pairs are a fraction of the pooled pairs the card is fitted and gated on"}


def condition_scores(S, labels):
    iu = np.triu_indices(len(labels), 1)
    same = labels[iu[0]] == labels[iu[1]]
    return S[iu][same].astype(np.float64), S[iu][~same].astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--old-model", required=True)
    ap.add_argument("--old-card", required=True)
    ap.add_argument("--new-model", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--train-meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--registration-bound", type=float, default=1e-2)
    args = ap.parse_args()
    t0 = time.time()

    items, dropped = common.dedupe(common.list_dataset(args.heldout))
    dogs = sorted({d for d, _ in items})
    labels = np.array([dogs.index(d) for d, _ in items])
    say(f"[learn-eval] {len(dogs)} held-out dogs, {len(items)} photos ({dropped} exact duplicates dropped)")
    u8 = np.stack([common.preprocess(p) for _, p in items])
    rng = np.random.default_rng(args.seed)
    firsts, later = common.recapture_pairs(u8, labels, rng)
    old_card = json.load(open(args.old_card))
    emb, conds = {}, {}
    for name, path in (("old", args.old_model), ("new", args.new_model)):
        e = unit(evaluate.embed(path, u8))
        el = unit(evaluate.embed(path, later)) if len(later) else np.zeros((0, e.shape[1]), np.float32)
        emb[name] = e
        S = e @ e.T
        gen, imp = condition_scores(S, labels)
        _, _, rank1 = common.pair_scores(e, labels)
        rg, ri = common.recapture_scores(e[firsts], el) if len(later) >= 2 else (np.zeros(0), np.zeros(0))
        conds[name] = {"photographed": figures(gen, imp, rank1),
                       "recapture": figures(rg, ri) if len(rg) and len(ri) else None,
                       "_scores": (gen, imp), "_S": S}
        say(f"[learn-eval] {name} {common.rel(path)}: AUC {conds[name]['photographed']['auc']:.4f}, "
            f"TAR@FAR1e-3 {conds[name]['photographed']['tar_at_far']['1e-3']:.4f} "
            f"({len(gen):,} genuine, {len(imp):,} impostor pairs)")

    boot = paired_bootstrap(conds["old"]["_S"], conds["new"]["_S"], labels, 1e-3, args.boot, args.seed)
    say(f"[learn-eval] TAR@FAR1e-3 new - old {boot['difference']:+.4f}, one-sided 95% bounds "
        f"[{boot['lower_95']:+.4f}, {boot['upper_95']:+.4f}] over {boot['resamples']} resamples of {boot['dogs']} dogs")

    gen, imp = conds["new"]["_scores"]
    floor = old_card.get("calibration") if "cosine" in (old_card.get("calibration") or {}) else None
    base, _ = common.calibrate_conditions({"photos": (gen, imp)})
    cal, conf = common.certify_calibration(gen, imp, base, floor=floor)
    for line in common.confidence_lines(conf):
        say(line)
    xfit = cross_fit(conds["new"]["_S"], labels, floor, 2, args.seed) if len(dogs) >= 4 else None
    if xfit:
        say("[learn-eval] cross-fit check (2 folds of dogs): " + "; ".join(
            f"{t}: {v['impostors_at_or_above']} of {v['impostor_pairs']:,} out-of-fold impostor pairs at or above, "
            f"95% upper bound {v['far_upper_95']:.2e} (target {v['target_far']:.0e})" for t, v in xfit["knots"].items()))
    reg = registration_tradeoff(emb["new"], labels, cal, args.registration_bound)
    reg_old = (registration_tradeoff(emb["old"], labels, floor, args.registration_bound) if floor else None)
    say(f"[learn-eval] registration rule: pair threshold {reg['pair_threshold']:.2f} ({reg['rule']}); refuses "
        f"{reg['at_threshold']['genuine_refused']:.1%} of genuine pairs, accepts "
        f"{reg['at_threshold']['different_dogs_accepted']:.2e} of different-dog pairs")
    consistency_now = common.registration_consistency(emb["new"], labels, cal, 0.70)
    consistency_rule = common.registration_consistency(emb["new"], labels, cal, reg["pair_threshold"])

    meta = json.load(open(args.train_meta))
    today = datetime.date.today().isoformat()
    card = copy.deepcopy(old_card)
    card["version"] = args.version
    card["training"] = meta["training"]
    card["export"] = {"opset": 17, "onnx_bytes": meta["onnx_bytes"],
                      "onnx_vs_pytorch_max_abs_diff": meta["onnx_vs_pytorch_max_abs_diff"],
                      "checked_with": "onnx.checker + onnxruntime-node 1.30 (CPU)"}
    new_ph = conds["new"]["photographed"]
    card["evaluation"] = {
        "data": f"{len(dogs)} own dogs held out from training by `npm run registry:learn`, exact duplicates dropped",
        "identities": len(dogs), "images": len(items),
        "auc": new_ph["auc"], "eer": new_ph["eer"], "tar_at_far": new_ph["tar_at_far"], "rank1": new_ph["rank1"],
        "pairs": new_ph["pairs"],
        "recapture": conds["new"]["recapture"] and {k: v for k, v in conds["new"]["recapture"].items() if k != "roc"},
        "compared_with": {"version": old_card.get("version"),
                          "photographed": {k: v for k, v in conds["old"]["photographed"].items() if k != "roc"},
                          "tar_at_far_1e-3_difference": {k: boot[k] for k in ("difference", "lower_95", "upper_95",
                                                                              "resamples", "method")}},
    }
    s_imp = common.apply_calibration(imp, cal)
    card["calibration"] = {
        "cosine": cal["cosine"], "similarity": cal["similarity"], "duplicate_similarity": cal["duplicate_similarity"],
        "method": "monotone piecewise-linear map fitted on the pooled impostor pairs of the held-out own dogs by "
                  "`npm run registry:learn`: " + common.RULE_METHOD + "; then " + common.CERTIFY_METHOD,
        "far_at_0.85": float((s_imp >= 0.85).mean()), "far_at_0.70": float((s_imp >= 0.70).mean()),
        "far_at_duplicate": float((s_imp >= cal["duplicate_similarity"]).mean()),
        "tar_at_0.85": float((common.apply_calibration(gen, cal) >= 0.85).mean()),
        "tar_at_0.70": float((common.apply_calibration(gen, cal) >= 0.70).mean()),
        "fitted_on": {"dataset": "registry:learn held-out own dogs", "dogs": len(dogs), "images": len(items),
                      "pairs": {"genuine": int(len(gen)), "impostor": int(len(imp))}, "date": today,
                      "confidence": conf},
        "registration_consistency": consistency_rule,
    }
    card["registration"] = {
        "pair_threshold": reg["pair_threshold"], "rule": reg["rule"], "bound": reg["bound"],
        "certified": reg["certified"],
        "genuine_refused": reg["at_threshold"]["genuine_refused"],
        "different_dogs_accepted": reg["at_threshold"]["different_dogs_accepted"],
        "different_dogs_accepted_upper_95": reg["at_threshold"]["different_dogs_accepted_upper_95"],
        "pairs": reg["pairs"],
        "note": "the consistency check of registration (every pair of the registration photos at or above the "
                "threshold), measured on the held-out own dogs with this card",
    }
    card["note"] = (f"fine-tuned and calibrated by `npm run registry:learn` on {today}; compared with "
                    f"{old_card.get('version')} on the same {len(dogs)} held-out own dogs")
    os.makedirs(args.out, exist_ok=True)
    common.write_json(os.path.join(args.out, "card.json"), card)
    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    common.write_json(os.path.join(args.out, "eval.json"), {
        "heldout": {"dogs": len(dogs), "images": len(items), "duplicates_dropped": dropped,
                    "recapture_dogs": int(len(firsts))},
        "old": {"version": old_card.get("version"), **{k: v for k, v in strip(conds["old"]).items()}},
        "new": {"version": args.version, **{k: v for k, v in strip(conds["new"]).items()}},
        "bootstrap": boot,
        "calibration": {"cosine": cal["cosine"], "similarity": cal["similarity"],
                        "duplicate_similarity": cal["duplicate_similarity"], "confidence": conf,
                        "curve": calibration_curve(gen, imp, cal),
                        "old_curve": calibration_curve(*conds["old"]["_scores"], floor) if floor else None,
                        "cross_fit": xfit},
        "registration": reg, "registration_old": reg_old,
        "consistency": {"at_0.70": consistency_now, "at_rule": consistency_rule},
        "seconds": time.time() - t0,
    })
    say(f"[learn-eval] {common.rel(args.out)}: eval.json, card.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
