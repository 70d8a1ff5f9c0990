"""Notebooks 01 and 01b (selective pruning, Pochinkov & Schoots, arXiv 2403.01267): its headline numbers, computed from
metrics/selective_pruning.json and selective_pruning_vision_toxicity.json only (`forgetlab.repro.headline` gathers
every paper's, decides the verdicts and writes the README table), and the sentences its README findings template asks
for by name (`TEXT`, placeholders `{{ text: <name> }}`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, difference, number

# the intervention checks: pruning removed the forget set (its top-1 fell by more than this) ...
MIN_FORGET_DROP = 0.05
# ... and the toxicity experiment's neuron statistics rest on at least this many toxic texts (notebook 01b warns)
MIN_TOXIC_STAT = 50


def selective_pruning(m: dict) -> dict:
    h = m["headline"]
    rnd = m["curves"][h["pair"].rsplit("/", 1)[0] + "/random"]
    costs = {k: (h[k], rnd[k]) for k in ("retain_perplexity", "retain_top1_drop", "retain_top1_skip_drop",
                                        "retain_topk_skip_drop")}
    unit = {"retain_perplexity": "perplexity"}
    return {
        "gap": number(h["gap_top1"], h["gap_top1_ci"], "share",
                      f"forget - retain top-1 drop, {h['pair']} at {h['pruned']:.0%} of FF neurons"),
        "random_gap": number(rnd["gap_top1"], rnd["gap_top1_ci"], "share",
                             f"the same for random pruning of {rnd['pruned']:.0%} of FF neurons"),
        "gap_minus_random": difference(h["gap_top1"], h["gap_top1_ci"], rnd["gap_top1"], rnd["gap_top1_ci"], "share",
                                       "selective minus random gap"),
        **{f"{k}_selective": number(v[0], None, unit.get(k, "share"), f"{k}, selective pruning")
           for k, v in costs.items()},
        **{f"{k}_random": number(v[1], None, unit.get(k, "share"), f"{k}, random pruning of as many neurons")
           for k, v in costs.items()},
        "checks": {"pruning_removed_the_forget_set": h["forget_top1_drop"] > MIN_FORGET_DROP},
    }


def selective_pruning_vision_toxicity(m: dict) -> dict:
    v, t = m["vision"], m["toxicity"]
    sp, orig = v["methods"]["prune"], v["methods"]["original"]
    tox = t["toxic_drop"]["toxic_prompted"]
    ppl = t["perplexity_change"]
    return {
        "vit_forget_drop": difference(orig["forget_acc"], orig["forget_ci"], sp["forget_acc"], sp["forget_ci"],
                                      "accuracy", f"{v['forget_class']} accuracy, original minus selectively pruned"),
        "vit_retain_drop": difference(orig["retain_acc"], orig["retain_ci"], sp["retain_acc"], sp["retain_ci"],
                                      "accuracy", "other classes, original minus pruned"),
        "vit_forget_acc": number(sp["forget_acc"], sp["forget_ci"], "accuracy", "forget class after pruning"),
        "vit_best_baseline_forget_acc": number(min(r["forget_acc"] for k, r in v["methods"].items()
                                                   if k not in ("original", "prune", "retrain")), None, "accuracy",
                                               "lowest forget-class accuracy among the unlearning baselines"),
        "toxic_drop": number(tox["drop"], tox["ci"], "share", "drop in toxic continuations of toxic prompts"),
        "toxic_ppl_ratio": number(ppl["forget_eval"]["ratio"], ppl["forget_eval"]["ci"], "ratio",
                                  "perplexity of held-out toxic text after / before pruning"),
        "other_ppl_ratio": number(ppl["retain_eval"]["ratio"], ppl["retain_eval"]["ci"], "ratio",
                                  "perplexity of the other text after / before"),
        "n_toxic_texts": number(t["counts"]["forget"], None, "count", "toxic sentences found offline"),
        "checks": {"enough_toxic_texts_for_the_statistics": t["counts"]["forget_stat"] >= MIN_TOXIC_STAT},
    }


def sp_scoring(root: Sources) -> str:
    """The one-shot scoring-function comparison of FF neurons, weakest to strongest forget drop, with intervals."""
    rows = [r for r in root.metrics("selective_pruning")["scoring_comparison"]
            if r["kind"] == "ff" and r["scoring"] != "random"]
    rows.sort(key=lambda r: r["forget_drop"])
    return ", ".join(f"{r['scoring']} {100 * r['forget_drop']:.1f} pp [{100 * r['forget_drop_ci'][0]:.1f}, "
                     f"{100 * r['forget_drop_ci'][1]:.1f}]" for r in rows)


SP_COSTS = {"perplexity": "perplexity", "top1": "top-1", "top1_skip": "top-1 without the commonest tokens",
            "topk_skip": "top-10 without the commonest tokens"}


def sp_retain_costs(root: Sources) -> str:
    """Selective pruning's retain-side costs against random pruning of the same share, each with its paired
    interval: larger (interval above 0), smaller (below 0) or not told apart."""
    costs = root.metrics("selective_pruning")["costs_vs_random"]["retain"]
    groups = {"more": [], "less": [], "unresolved": []}
    for stat, name in SP_COSTS.items():
        c = costs[stat]
        scale, unit = (1, "") if stat == "perplexity" else (100, " pp")
        lo, hi = c["extra_cost_ci"]
        text = f"{name} {scale * c['extra_cost']:+.1f}{unit} [{scale * lo:+.1f}, {scale * hi:+.1f}]"
        groups["more" if lo > 0 else "less" if hi < 0 else "unresolved"].append(text)
    parts = [f"pays more than under random pruning of the same share on {', '.join(groups['more'])}"
             if groups["more"] else "pays no more than under random pruning of the same share on any measure",
             f"less on {', '.join(groups['less'])}" if groups["less"] else "",
             f"not told apart on {', '.join(groups['unresolved'])}" if groups["unresolved"] else ""]
    return "the retain set " + "; ".join(p for p in parts if p) + \
        " (selective minus random, 95% intervals paired over the same sequences)"


def _vision(root: Sources) -> dict:
    return root.metrics("selective_pruning_vision_toxicity")["vision"]


def vit_random(root: Sources) -> str:
    """Random pruning of the same FF share: its range of forget-class accuracy in the sweep."""
    v = _vision(root)
    ff = v["methods"]["prune"]["details"]["ff"]
    rows = [r["forget_acc"] for r in v["sweep"] if r["scoring"] == "random" and r["ff_frac"] > 0]
    same = [r["forget_acc"] for r in v["sweep"] if r["scoring"] == "random" and abs(r["ff_frac"] - ff) < 1e-3]
    return (f"random pruning of the same share: {same[0]:.2f}; of 5-30%: {min(rows):.2f}-{max(rows):.2f}" if same
            else f"random pruning: {min(rows):.2f}-{max(rows):.2f}")


def vit_compute(root: Sources) -> str:
    m = _vision(root)["methods"]
    return f"{100 * m['prune']['compute'] / m['retrain']['compute']:.0f}%"


def vit_better(root: Sources) -> str:
    """Baselines that forget the class at least as well as pruning while keeping more retain accuracy."""
    m = _vision(root)["methods"]
    sp = m["prune"]
    names = {"amnesiac": "amnesiac relabelling", "finetune": "fine-tuning on the retain set", "ga": "gradient ascent",
             "unsir": "UNSIR", "ssd": "SSD", "teacher": "bad teaching",
             "ssd_tuned": f"SSD at alpha {m.get('ssd_tuned', {}).get('details', {}).get('alpha', 'tuned'):g}"}
    better = [f"{names.get(k, k)} ({r['forget_acc']:.2f} / {r['retain_acc']:.2f})" for k, r in m.items()
              if k in names and r["forget_acc"] <= sp["forget_acc"] and r["retain_acc"] >= sp["retain_acc"]]
    if not better:
        return "as in the paper, no unlearning baseline forgets as much with more retain accuracy"
    return ("unlike the paper, it is **not** the best trade-off here: (forget / retain accuracy) " + ", ".join(better) +
            " remove the class at least as well and keep more retain accuracy")


def vit_ssd(root: Sources) -> str:
    m = _vision(root)["methods"]
    ssd, orig = m["ssd"], m["original"]
    same = abs(ssd["forget_acc"] - orig["forget_acc"]) < 1e-9 and abs(ssd["retain_acc"] - orig["retain_acc"]) < 1e-9
    return (f"SSD at the paper's alpha {ssd['details']['alpha']:g} dampens {ssd['details']['dampened']} parameters"
            + (" and changes nothing" if same else f" (forget accuracy {ssd['forget_acc']:.2f})"))


def tox_reading(root: Sources) -> str:
    d = root.metrics("selective_pruning_vision_toxicity")["toxicity"]["toxic_drop"]["toxic_prompted"]
    if d["ci"][0] > 0:
        return "the paper's result, with an interval above 0"
    return "the direction of the paper's result, not its size" if d["drop"] > 0 else "not the paper's result"


def vit_mia(root: Sources) -> str:
    v = _vision(root)
    aucs = [r["mia_auc"] for r in v["methods"].values()]
    lo, hi = v["mia_chance_band"]
    inside = sum(lo <= a <= hi for a in aucs)
    return (f"{min(aucs):.2f}-{max(aucs):.2f} over the methods, {inside} of {len(aucs)} inside the chance band "
            f"[{lo:.2f}, {hi:.2f}]")


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {
    "selective_pruning": selective_pruning, "selective_pruning_vision_toxicity": selective_pruning_vision_toxicity}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {
    "selective_pruning": Path(__file__).with_name("findings.md"),
    "selective_pruning_vision_toxicity": Path(__file__).with_name("findings_vision_toxicity.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "sp_retain_costs": sp_retain_costs,
    "sp_scoring": sp_scoring,
    "vit_random": vit_random,
    "vit_compute": vit_compute,
    "vit_better": vit_better,
    "vit_mia": vit_mia,
    "vit_ssd": vit_ssd,
    "tox_reading": tox_reading,
}
