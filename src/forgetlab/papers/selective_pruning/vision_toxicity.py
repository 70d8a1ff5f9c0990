"""Notebook 01b's measures (Pochinkov & Schoots, arXiv 2403.01267, their Table 4 rebuttal experiment): the ViT
class-removal methods' accuracies and membership inference, and the one-shot pruning sweep of the base ViT. The
methods themselves and their stages are `forgetlab.papers.selective_pruning.vision`; this module is read by the notebook
stage only, so a change here never retrains a ViT."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from forgetlab.core import metrics
from forgetlab.core.utils import check_choice, check_fraction, check_positive_int, check_type
from forgetlab.methods import pruning
from forgetlab.papers.selective_pruning import toxicity, vision


@dataclass(frozen=True)
class NotebookParams:
    """Notebook 01b's parameters that need checking, checked once here (the notebook builds it from its parameters
    cell with `from_namespace(globals())`): a bad value fails before any model loads, naming the parameter and what
    is allowed. No defaults: the values are the notebook's, which dvc.yaml fills from params.yaml."""
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

    @classmethod
    def from_namespace(cls, namespace: dict) -> "NotebookParams":
        return cls(**{f.name: namespace[f.name] for f in fields(cls)})

    def __post_init__(self):
        check_positive_int("n_screen", self.n_screen, allow_zero=True)
        for name in ("mia_folds", "tox_n_texts", "min_words", "n_gen", "n_toxic_samples", "n_ppl_docs", "n_mmlu",
                     "prompt_words", "max_new_tokens", "gen_batch_size", "seq_len", "n_stat_seqs", "n_eval_seqs",
                     "batch_size", "n_boot"):
            check_positive_int(name, getattr(self, name))
        for name in ("forget_min", "retain_max", "toxic_threshold", "tox_ff_frac", "tox_attn_frac",
                     "sweep_attn_ratio"):
            check_fraction(name, getattr(self, name))
        check_fraction("test_fraction", self.test_fraction, allow_zero=False)
        check_type("temperature", self.temperature, (int, float))
        check_type("seed", self.seed, int)
        check_type("eps_ff", self.eps_ff, float)
        check_type("eps_attn", self.eps_attn, float)
        check_choice("scorer", self.scorer, toxicity.SCORERS)
        for name, local, form in (("tox_source", "offline", "hf:<civil_comments-format dataset>"),
                                  ("ppl_source", "retain", "hf:<dataset>[@<config>]"),
                                  ("mmlu_source", "none", "hf:<dataset>[@<config>]")):
            value = getattr(self, name)
            if value != local and not value.startswith("hf:"):
                raise ValueError(f"unknown {name} {value!r}; allowed: {local}, {form}")
        check_type("sweep_fracs", self.sweep_fracs, list)
        for f in self.sweep_fracs:
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
