"""Notebook 01's experiment (Pochinkov & Schoots, arXiv 2403.01267) on a language model: the held-out evaluation of
each corpus, the iterative pruning curves (selective and random), the single-shot comparison of importance
functions, and the numbers read off the curves (drops with their gap's interval, the cost over random pruning).
The pruning itself is `forgetlab.methods.pruning`; the notebook calls these functions, plots and explains.

`sets` is {corpus: {"train": statistics batches, "test": held-out batches, "skip": the corpus's most common token
ids}}; an evaluation is {corpus: {"summary": forgetlab.core.eval.summarize_counts(counts), "counts": per-sequence
counts}}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from forgetlab.core import eval as ev
from forgetlab.core import metrics, neurons, utils
from forgetlab.core.utils import check_choice, check_fraction, check_list, check_positive_int, check_type
from forgetlab.methods import pruning

COST_STATS = ("top1", "top1_skip", "topk_skip", "perplexity")  # the retain-side costs reported against random
DROP_STATS = ("top1", "topk", "top1_skip", "topk_skip")  # accuracy drops read off a curve


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 01's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams)."""
    seq_len: int
    n_stat_seqs: int
    n_eval_seqs: int
    max_per_doc: int
    min_len: int
    batch_size: int
    n_steps: int
    n_common: int
    top_k: int
    n_boot: int
    max_docs: int
    ff_frac: float
    attn_frac: float
    compare_frac: float
    test_fraction: float
    scoring: str
    compare_scorings: list
    ablation: str
    eps_ff: float
    eps_attn: float
    pairs: list
    main_pairs: list

    def __post_init__(self):
        self.check_all(check_positive_int, "seq_len", "n_stat_seqs", "n_eval_seqs", "max_per_doc", "min_len",
                       "batch_size", "n_steps", "n_common", "top_k", "n_boot", "max_docs")
        self.check_all(check_fraction, "ff_frac", "attn_frac", "compare_frac")
        check_fraction("test_fraction", self.test_fraction, allow_zero=False)
        check_choice("scoring", self.scoring, pruning.SCORINGS[:-1])
        for s in check_list("compare_scorings", self.compare_scorings):
            check_choice("compare_scorings", s, pruning.SCORINGS)
        check_choice("ablation", self.ablation, ("zero", "mean"))
        check_type("eps_ff", self.eps_ff, float)
        check_type("eps_attn", self.eps_attn, float)
        for name in ("pairs", "main_pairs"):
            for pair in check_list(name, getattr(self, name)):
                if len(pair.split("/")) != 2:
                    raise ValueError(f"parameter {name!r} takes forget/retain pairs such as code/text, got {pair!r}")
        if not set(self.main_pairs) <= set(self.pairs):
            raise ValueError(f"parameter 'main_pairs' must be a subset of 'pairs', got {self.main_pairs!r}")


def evaluate_sets(model, tok, sets: dict, corpora: Sequence[str], *, top_k: int, seed: int) -> dict:
    """Per-sequence counts and their summary on the held-out sequences of each corpus."""
    out = {}
    for c in corpora:
        counts = ev.lm_counts(model, tok, sets[c]["test"], top_k=top_k, skip_ids=sets[c]["skip"], seed=seed,
                              desc=f"eval {c}")
        out[c] = {"summary": ev.summarize_counts(counts), "counts": counts}
    return out


def pruning_curve(model, tok, sets: dict, base: dict, forget: str, retain: str, kind: str, scoring: str, *,
                  ff_frac: float, attn_frac: float, eps_ff: float, eps_attn: float, ablation: str, n_steps: int,
                  top_k: int, seed: int) -> dict:
    """`n_steps` steps of iterative pruning of one kind of neuron ("ff" or "attn", the other kind untouched) by
    `scoring` ("random": the control), each step evaluated on both corpora; the model is left unpruned.
    Returns {"history": per step (step 0 = `base`), "pruned": the final bool mask [layers, neurons]}."""
    cfg = pruning.PruneConfig(ff_frac=ff_frac if kind == "ff" else 0.0, attn_frac=attn_frac if kind == "attn" else 0.0,
                              scoring=scoring, eps_ff=eps_ff, eps_attn=eps_attn, ablation=ablation)
    initial = {"eval": {c: base[c] for c in (forget, retain)}}
    history, pruner = pruning.iterative_prune(
        model, sets[forget]["train"], sets[retain]["train"], cfg, n_steps,
        lambda m: {"eval": evaluate_sets(m, tok, sets, (forget, retain), top_k=top_k, seed=seed)}, seed=seed,
        initial=initial, desc=f"{forget} vs {retain}: {kind} {scoring}")
    pruned = pruner.pruned[kind].clone()
    pruner.remove()
    return {"history": history, "pruned": pruned}


def compare_scorings(model, tok, sets: dict, base: dict, forget: str, retain: str, scorings: Sequence[str], *,
                     frac: float, eps_ff: float, eps_attn: float, top_k: int, n_boot: int, seed: int) -> list[dict]:
    """Single-shot comparison of importance functions (the paper's figure 2): for FF and attention neurons, prune
    `frac` of all neurons in one shot by each scoring ("random": per layer at random, from one seeded generator
    shared by both kinds) from statistics of the unpruned model, and record the top-1 drop on both corpora with
    a paired bootstrap interval over held-out sequences."""
    stats = {role: neurons.collect_stats(model, sets[c]["train"], ("ff", "attn"), desc=f"{role} stats")
             for role, c in (("forget", forget), ("retain", retain))}
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for kind in ("ff", "attn"):
        none = torch.zeros(neurons.n_neurons(model, kind), dtype=torch.bool)
        eps = eps_ff if kind == "ff" else eps_attn
        for method in scorings:
            if method == "random":
                pick = pruning.select_random(none, frac, gen)
            else:
                pick = pruning.select_global_top(pruning.forget_scores(stats["forget"][kind], stats["retain"][kind],
                                                                       method, eps), frac, none)
            with neurons.apply_masks(model, {kind: (~pick).float()}):
                res = evaluate_sets(model, tok, sets, (forget, retain), top_k=top_k, seed=seed)
            row = {"kind": kind, "scoring": method, "pruned": float(pick.float().mean())}
            for role, c in (("forget", forget), ("retain", retain)):  # drop = base - pruned, paired per sequence
                row[f"{role}_drop"], row[f"{role}_drop_ci"] = metrics.paired_bootstrap_diff(
                    base[c]["counts"], res[c]["counts"], "top1", n_boot=n_boot, seed=seed)
            rows.append(row)
    return rows


def curve_metrics(run: dict, forget: str, retain: str, kind: str, *, n_boot: int, seed: int) -> dict:
    """What a curve shows at its last step: the drops of every accuracy, the forget-minus-retain top-1 gap with a
    bootstrap interval over sequences, the area between the two top-1 drop curves, the final perplexities, and
    the top-1 drop curves themselves."""
    h0, h1 = run["history"][0], run["history"][-1]
    drops = {f"{role}_{key}_drop": h0["eval"][c]["summary"][key] - h1["eval"][c]["summary"][key]
             for role, c in (("forget", forget), ("retain", retain)) for key in DROP_STATS}
    pruned = [h[f"{kind}_pruned"] for h in run["history"]]
    f_drop = [h0["eval"][forget]["summary"]["top1"] - h["eval"][forget]["summary"]["top1"] for h in run["history"]]
    r_drop = [h0["eval"][retain]["summary"]["top1"] - h["eval"][retain]["summary"]["top1"] for h in run["history"]]
    return {"pruned": pruned[-1], **drops,
            "gap_top1": drops["forget_top1_drop"] - drops["retain_top1_drop"],
            "gap_top1_ci": metrics.drop_gap_ci(h0["eval"][forget]["counts"], h1["eval"][forget]["counts"],
                                               h0["eval"][retain]["counts"], h1["eval"][retain]["counts"],
                                               n_boot=n_boot, seed=seed),
            "area_between_top1": metrics.area_between(pruned, f_drop, r_drop),
            "forget_perplexity": h1["eval"][forget]["summary"]["perplexity"],
            "retain_perplexity": h1["eval"][retain]["summary"]["perplexity"],
            "curve": {"pruned": pruned, "forget_top1_drop": f_drop, "retain_top1_drop": r_drop}}


def costs_vs_random(base: dict, selective: dict, random: dict, forget: str, retain: str, *, n_boot: int,
                    seed: int) -> dict:
    """Selective against random pruning of the same number of neurons (the last steps of the two curves,
    `selective` and `random` evaluations), on both corpora and every COST_STATS statistic: the values, and the
    extra cost of selective pruning (accuracy lost, or perplexity gained, beyond random's) with a paired bootstrap
    interval over held-out sequences."""
    costs = {}
    for role, c in (("forget", forget), ("retain", retain)):
        costs[role] = {}
        for stat in COST_STATS:
            value = {name: float(metrics.COUNT_STATS[stat]({k: v.sum().item() for k, v in ev_[c]["counts"].items()}))
                     for name, ev_ in (("selective", selective), ("random", random))}
            diff, ci = metrics.paired_bootstrap_diff(selective[c]["counts"], random[c]["counts"], stat,
                                                     n_boot=n_boot, seed=seed)
            sign = 1 if stat == "perplexity" else -1  # a lower accuracy is a cost, a higher perplexity is
            costs[role][stat] = {"base": base[c]["summary"][stat], "selective": value["selective"],
                                 "random": value["random"], "extra_cost": sign * diff,
                                 "extra_cost_ci": sorted(sign * x for x in ci)}
    return costs
