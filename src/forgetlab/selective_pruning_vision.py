"""Notebook 01b's measures (Pochinkov & Schoots, arXiv 2403.01267, their Table 4 rebuttal experiment): the ViT
class-removal methods' accuracies and membership inference, and the one-shot pruning sweep of the base ViT. The
methods themselves and their stages are `forgetlab.vision`; this module is read by the notebook stage only, so a
change here never retrains a ViT."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import metrics, pruning, vision


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
