"""Notebook 04's analysis (Zhang et al., arXiv 2410.16454): the MUSE metrics of every model at every precision, and
the share of the target's forget knowledge an unlearned model keeps above the retrain model's (the recovery share).
Unlearning, quantization and the MUSE metrics themselves are `forgetlab.methods.unlearning`,
`forgetlab.methods.quantization` and `forgetlab.methods.muse`; this module is read by the notebook stage only, so a
change here never reruns an unlearning."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from forgetlab.core import metrics, utils
from forgetlab.core.utils import check_choice, check_fraction, check_list, check_positive_int, check_type
from forgetlab.methods import muse, quantization, unlearning


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 04's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams); that the
    unlearn stage evaluated every precision, and ran the headline method, is checked once its results are loaded."""
    prompt_len: int
    max_new_tokens: int
    answer_tokens: int
    n_boot: int
    seed: int
    min_k: float
    validate_bnb: bool
    precisions: list
    base_precisions: list
    headline: str
    full_max: float
    quant_min: float
    group_sizes: list

    def __post_init__(self):
        self.check_all(check_positive_int, "prompt_len", "max_new_tokens", "answer_tokens", "n_boot")
        check_positive_int("seed", self.seed, allow_zero=True)
        check_fraction("min_k", self.min_k, allow_zero=False)
        check_type("validate_bnb", self.validate_bnb, bool)
        for name in ("precisions", "base_precisions"):
            for p in check_list(name, getattr(self, name)):
                quantization.parse_precision(p)
        if self.precisions[:1] != ["full"]:
            raise ValueError(f"parameter 'precisions' must start with full, got {self.precisions!r}")
        check_choice("headline", self.headline, unlearning.METHODS)
        check_fraction("full_max", self.full_max)
        check_fraction("quant_min", self.quant_min)
        for g in check_list("group_sizes", self.group_sizes, int):
            check_positive_int("group_sizes", g)

RECOVERY_KEYS = ("verbmem", "knowmem_forget")  # the forget-side metrics whose recovery under quantization is read


def muse_table(scores: dict, *, n_boot: int, seed: int) -> dict:
    """{model: {precision: muse.summarize_scores against the retrain model at full precision, with PrivLeak's bootstrap
    interval}} from `scores` ({model: {precision: muse.score}}, which must hold "retrain" at "full")."""
    ret_full = scores["retrain"]["full"]

    def summary(m, p):
        s = muse.summarize_scores(scores[m][p], ret_full)
        s["privleak_ci"] = muse.privleak_ci(scores[m][p]["minK_forget"], scores[m][p]["minK_holdout"],
                                            ret_full["minK_forget"], ret_full["minK_holdout"], n_boot=n_boot,
                                            seed=seed)
        return s
    return {m: {p: summary(m, p) for p in scores[m]} for m in scores}


def recovery_shares(table: dict, methods: Sequence[str], precisions: Sequence[str]) -> dict:
    """{key: {method: {precision: (K_unlearned - K_retrain) / (K_target - K_retrain)}}} for each RECOVERY_KEYS
    metric K, all at the same precision (metrics.recovery_share: NaN when target and retrain coincide)."""
    return {key: {m: {p: metrics.recovery_share(table[m][p][key], table["retrain"][p][key], table["target"][p][key])
                      for p in precisions} for m in methods} for key in RECOVERY_KEYS}


def mean_recovery(recovery: dict, methods: Sequence[str], precisions: Sequence[str]) -> dict:
    """Per metric and precision, the mean recovery share over the methods (NaN shares left out)."""
    return {key: {p: float(np.nanmean([recovery[key][m][p] for m in methods])) for p in precisions}
            for key in recovery}


def target_retrain_gaps(table: dict, precisions: Sequence[str]) -> dict:
    """The recovery share's denominator: target minus retrain, per metric and precision."""
    return {key: {p: table["target"][p][key] - table["retrain"][p][key] for p in precisions} for key in RECOVERY_KEYS}
