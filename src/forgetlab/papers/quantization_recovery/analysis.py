"""Notebook 04's analysis (Zhang et al., arXiv 2410.16454): the MUSE metrics of every model at every precision, and
the share of the target's forget knowledge an unlearned model keeps above the retrain model's (the recovery share).
Unlearning, quantization and the MUSE metrics themselves are `forgetlab.methods.unlearning`,
`forgetlab.methods.quantization` and `forgetlab.methods.muse`; this module is read by the notebook stage only, so a
change here never reruns an unlearning."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from forgetlab.core import metrics
from forgetlab.methods import muse

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
