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
from forgetlab.papers.quantization_recovery.experiment import run_name


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


def granularities(group_sizes: Sequence[int]) -> list[str]:
    """The 4-bit RTN granularities of figure 3: per tensor, per channel, then each group size."""
    return ["rtn4-tensor", "rtn4-channel"] + [f"rtn4-g{g}" for g in group_sizes]


def granularity_verbmem(models: dict, tok, passages: Sequence[dict], group_sizes: Sequence[int], *, prompt_len: int,
                        max_new_tokens: int) -> list[dict]:
    """Forget VerbMem of each model ({label: model}) quantized to 4-bit RTN at every granularity: rows {"model",
    "granularity" ("tensor", "channel", "g<size>"), "verbmem" (mean over passages)}; each model is restored
    after each granularity."""
    rows = []
    for label, m in models.items():
        for g in granularities(group_sizes):
            with quantization.quantized(m, g):
                score = muse.verbmem(m, tok, passages, prompt_len, max_new_tokens).mean()
            rows.append({"model": label, "granularity": g.removeprefix("rtn4-"), "verbmem": float(score)})
    return rows


def sure_comparison(sure_runs: Sequence[dict], epochs) -> list[dict]:
    """SURE against its baseline (the same method and learning rate without the saliency mask) at the selected
    epoch, at full precision and nf4: rows {"method", "lr", "variant" ("baseline" | "SURE"), "precision", "verbmem",
    "share", "utility", "code_change_nf4"} from `epochs`, the notebook's DataFrame of every epoch of every run
    (recovery.epoch_recovery rows)."""
    sel = epochs[epochs["selected"] & epochs["precision"].isin(["full", "nf4"])]
    rows = []
    for r in sure_runs:
        for name, variant in ((run_name(r["method"], r["lr"]), "baseline"), (r["name"], "SURE")):
            code_change = float(epochs[(epochs["name"] == name) & epochs["selected"]
                                       & (epochs["precision"] == "nf4")]["code_change"].max())
            for _, row in sel[sel["name"] == name].iterrows():
                rows.append({"method": r["method"], "lr": r["lr"], "variant": variant, "precision": row["precision"],
                             "verbmem": row["verbmem"], "share": row["share"], "utility": row["utility"],
                             "code_change_nf4": code_change})
    return rows
