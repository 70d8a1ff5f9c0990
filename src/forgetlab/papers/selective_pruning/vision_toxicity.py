"""Notebook 01b's measures (Pochinkov & Schoots, arXiv 2403.01267, their Table 4 rebuttal experiment): the ViT
class-removal methods' accuracies and membership inference, and the one-shot pruning sweep of the base ViT. The
methods themselves and their stages are `forgetlab.papers.selective_pruning.vision`; this module is read by the notebook
stage only, so a change here never retrains a ViT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from forgetlab.core import metrics, utils
from forgetlab.core.utils import check_choice, check_fraction, check_list, check_positive_int, check_type
from forgetlab.methods import pruning
from forgetlab.papers.selective_pruning import toxicity, vision


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 01b's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams); the
    toxicity functions below take it whole."""
    mia_folds: int
    sweep_fracs: list
    sweep_attn_ratio: float
    tox_source: str
    tox_n_texts: int
    scorer: str
    min_words: int
    forget_min: float
    retain_max: float
    toxic_threshold: float
    n_screen: int
    n_gen: int
    n_toxic_samples: int
    prompt_words: int
    max_new_tokens: int
    temperature: float
    gen_batch_size: int
    seq_len: int
    min_tokens: int
    n_stat_seqs: int
    n_eval_seqs: int
    test_fraction: float
    ppl_source: str
    n_ppl_docs: int
    mmlu_source: str
    n_mmlu: int
    tox_ff_frac: float
    tox_attn_frac: float
    eps_ff: float
    eps_attn: float
    batch_size: int
    n_boot: int
    seed: int

    def __post_init__(self):
        check_positive_int("n_screen", self.n_screen, allow_zero=True)
        self.check_all(check_positive_int, "mia_folds", "tox_n_texts", "min_words", "n_gen", "n_toxic_samples",
                       "n_ppl_docs", "n_mmlu", "prompt_words", "max_new_tokens", "gen_batch_size", "seq_len",
                       "min_tokens", "n_stat_seqs", "n_eval_seqs", "batch_size", "n_boot")
        self.check_all(check_fraction, "forget_min", "retain_max", "toxic_threshold", "tox_ff_frac", "tox_attn_frac",
                       "sweep_attn_ratio")
        check_fraction("test_fraction", self.test_fraction, allow_zero=False)
        check_type("temperature", self.temperature, (int, float))
        check_type("seed", self.seed, int)
        check_type("eps_ff", self.eps_ff, float)
        check_type("eps_attn", self.eps_attn, float)
        check_choice("scorer", self.scorer, toxicity.SCORERS)
        for name, local, form in (("tox_source", "offline", "hf:<civil_comments-format dataset>"),
                                  ("ppl_source", "retain", "hf:<dataset>[@<config>]"),
                                  ("mmlu_source", "none", "hf:<dataset>[@<config>]")):
            value = check_type(name, getattr(self, name), str)
            if value != local and not value.startswith("hf:"):
                raise ValueError(f"unknown {name} {value!r}; allowed: {local}, {form}")
        for f in check_list("sweep_fracs", self.sweep_fracs, float):
            check_fraction("sweep_fracs", f, allow_zero=False)


def method_metrics(results: dict, *, mia_folds: int, n_boot: int, seed: int) -> dict:
    """Per method of the unlearn step's `results`: retain and forget test accuracy with bootstrap intervals over
    images, the membership-inference AUC on the forget class (training vs test images, vision.loss_attack_auc), the
    forget-class training accuracy, compute and details."""
    out = {}
    for m, r in results["methods"].items():
        e = r["eval"]
        ret, fgt = np.asarray(e["test_retain"]["correct"]), np.asarray(e["test_forget"]["correct"])
        out[m] = {"retain_acc": ret.mean(), "retain_ci": metrics.bootstrap_mean(ret, n_boot=n_boot, seed=seed),
                  "forget_acc": fgt.mean(), "forget_ci": metrics.bootstrap_mean(fgt, n_boot=n_boot, seed=seed),
                  "mia_auc": vision.loss_attack_auc(e["train_forget"]["loss"], e["test_forget"]["loss"],
                                                    folds=mia_folds, seed=seed),
                  "forget_train_acc": float(np.mean(e["train_forget"]["correct"])),
                  "compute": r["compute"], "details": r["details"]}
    return out


def prune_sweep(base, data: vision.Data, forget: int, fracs: Sequence[float], *, attn_ratio: float, eps_ff: float,
                eps_attn: float, seed: int = 0) -> list[dict]:
    """Retain and forget test accuracy of the base ViT pruned in one shot at each FF fraction of `fracs` (attention:
    attn_ratio times as many, at most all), by I_abs and by the random control, from one set of statistics of the
    unpruned model; the first row is the unpruned model (ff_frac 0). The model is left unpruned."""
    f_pix, _ = data.subset("train", forget, "forget")
    r_pix, _ = data.subset("train", forget, "retain")
    tr_pix, tr_lab = data.subset("test", forget, "retain")
    tf_pix, tf_lab = data.subset("test", forget, "forget")
    stats = (vision.image_stats(base, f_pix, ["ff", "attn"]), vision.image_stats(base, r_pix, ["ff", "attn"]))
    rows = []
    for frac in [0.0, *fracs]:
        for scoring in ("abs", "random"):
            if frac == 0 and scoring == "random":
                continue
            pruner = None
            if frac:
                pc = pruning.PruneConfig(ff_frac=frac, attn_frac=min(1.0, attn_ratio * frac), scoring=scoring,
                                         eps_ff=eps_ff, eps_attn=eps_attn)
                pruner = vision.prune_vit(base, f_pix, r_pix, pc, seed=seed, stats=stats)
            ra = vision.evaluate_images(base, tr_pix, tr_lab)["correct"].mean()
            fa = vision.evaluate_images(base, tf_pix, tf_lab)["correct"].mean()
            if pruner is not None:
                pruner.remove()
            rows.append({"ff_frac": frac, "scoring": scoring, "retain_acc": ra, "forget_acc": fa})
    return rows


# ================================================================ toxicity (notebook 01b, section 2)
def toxicity_sets(model, tokenizer, p: NotebookParams, data_dir: str) -> dict:
    """The toxicity experiment's data, in the order the notebook tells it. Texts (squad_shifts Reddit and Amazon
    sentences offline, civil_comments at paper scale) scored by `p.scorer` and screened into forget (toxic) and
    retain (non-toxic) sets; the model's own sampled generations from `p.n_screen` neutral prompts screened the same
    way, their toxic ones joining the forget set; each set split into held-out texts and statistics texts, as token
    batches; the evaluation prompts (neutral ones, and the opening of each held-out toxic text `p.n_toxic_samples`
    times). Returns {"counts", "forget_texts", "gen_forget", "forget_stat", "forget_eval", "prompts" ({"toxic":
    neutral, "toxic_prompted": toxic}), "batches" ({set name: token batches}), "mmlu" (paper scale, else [])}."""
    import pandas as pd
    from forgetlab.core.tokens import iter_batches
    if p.tox_source == "offline":
        texts = toxicity.offline_sentences(("reddit", "amazon"), data_dir, p.min_words)
        scores = toxicity.toxicity_scores([t["text"] for t in texts], p.scorer)
    else:
        texts = toxicity.load_civil_comments(p.tox_source[3:], p.tox_n_texts)
        scores = [t["score"] for t in texts]
    forget_texts, retain_texts = toxicity.screen(texts, scores, forget_min=p.forget_min, retain_max=p.retain_max)
    # held-out retain texts: prompts for the generations and the perplexity set; the rest: statistics
    split = toxicity.split_retain(retain_texts, n_screen=p.n_screen, n_gen=p.n_gen, n_eval=p.n_eval_seqs,
                                  n_stat=p.n_stat_seqs, prompt_words=p.prompt_words, seed=p.seed)
    counts = {"texts": len(texts), "forget": len(forget_texts), "retain": len(retain_texts),
              "forget_by_source": pd.Series([t["source"] for t in forget_texts]).value_counts().to_dict()}
    screen_gens = toxicity.sample_generations(model, tokenizer, split["prompts_screen"],
                                              max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                                              batch_size=p.gen_batch_size, seed=p.seed + 1000,
                                              desc="screening generations")
    gens = [{"id": f"gen/{i}", "source": "generation", "text": g} for i, g in enumerate(screen_gens)]
    gen_forget, _ = toxicity.screen(gens, toxicity.toxicity_scores(screen_gens, p.scorer), forget_min=p.forget_min,
                                    retain_max=p.retain_max)
    counts["screen_generations"], counts["toxic_generations"] = len(screen_gens), len(gen_forget)
    forget_eval, forget_stat = toxicity.split_forget(forget_texts, gen_forget, test_fraction=p.test_fraction,
                                                    n_eval=p.n_eval_seqs, n_stat=p.n_stat_seqs, seed=p.seed)
    counts["forget_stat"], counts["forget_eval"] = len(forget_stat), len(forget_eval)

    def seqs(items):
        return list(iter_batches(toxicity.sequences(tokenizer, items, p.seq_len, min_len=p.min_tokens, seed=p.seed),
                                 p.batch_size))

    batches = {"retain_eval": seqs(split["retain_eval"]), "retain_stat": seqs(split["retain_stat"]),
               "forget_stat": seqs(forget_stat)}
    if forget_eval:
        batches["forget_eval"] = seqs(forget_eval)
    if p.ppl_source != "retain":  # paper profile: WikiText
        general = seqs(toxicity.load_ppl_documents(p.ppl_source, p.n_ppl_docs))
        batches["general"] = general[:max(1, p.n_eval_seqs // p.batch_size)]
    prompts_toxic = [q for q in toxicity.prompts_from([t["text"] for t in forget_eval], p.prompt_words)
                     for _ in range(p.n_toxic_samples)]
    return {"counts": counts, "forget_texts": forget_texts, "gen_forget": gen_forget, "forget_stat": forget_stat,
            "forget_eval": forget_eval, "prompts": {"toxic": split["prompts_eval"], "toxic_prompted": prompts_toxic},
            "batches": batches,
            "mmlu": toxicity.load_mmlu(p.mmlu_source, p.n_mmlu) if p.mmlu_source != "none" else []}


def measure_toxicity(model, tokenizer, sets: dict, p: NotebookParams, tag: str) -> dict:
    """toxicity.measure of the model on the sets of toxicity_sets (generations of both prompt sets, scored;
    perplexities; MMLU at paper scale), with the notebook's settings; `tag` names the progress bars."""
    return toxicity.measure(model, tokenizer, sets["prompts"], sets["batches"], sets["mmlu"], scorer=p.scorer,
                            toxic_threshold=p.toxic_threshold, max_new_tokens=p.max_new_tokens,
                            temperature=p.temperature, gen_batch_size=p.gen_batch_size, mc_batch_size=p.batch_size,
                            n_boot=p.n_boot, seed=p.seed, tag=tag)


def prune_toxic_neurons(model, sets: dict, p: NotebookParams) -> pruning.Pruner:
    """One step of selective pruning (I_abs): the global top `p.tox_ff_frac` of FF neurons and `p.tox_attn_frac`
    of attention neurons by I(toxic) / (I(non-toxic) + eps), from the statistics batches of toxicity_sets. The
    masks stay on the model; the returned Pruner reports the fractions pruned and removes them."""
    pc = pruning.PruneConfig(ff_frac=p.tox_ff_frac, attn_frac=p.tox_attn_frac, scoring="abs", eps_ff=p.eps_ff,
                             eps_attn=p.eps_attn)
    pruner = pruning.Pruner(model, list(pc.fracs()))
    pruner.step(sets["batches"]["forget_stat"], sets["batches"]["retain_stat"], pc)
    return pruner
