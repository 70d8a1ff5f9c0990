"""Where quantization brings unlearned knowledge back (notebook 04): per-epoch recovery shares of the unlearning
runs (`forgetlab.papers.quantization_recovery.experiment`) and the paper's regime, "forgotten at full precision, back at
4 bits".

An analysis module: the checkpoint stages never import it, so changing it never re-runs unlearning.
"""
from __future__ import annotations

import numpy as np

from forgetlab.core.metrics import bootstrap_recovery
from forgetlab.methods.unlearning import REGISTRY
from forgetlab.papers.quantization_recovery.experiment import EMB_SUFFIX

# the paper's utility-constrained methods: those with a retain regularizer (GA_GDR, GA_KLR, NPO_GDR, NPO_KLR)
CONSTRAINED = tuple(name for name, spec in REGISTRY.items() if spec.regularizer)


def epoch_recovery(results: dict, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per run x epoch x epoch precision: the mean forget VerbMem and its recovery share
    (VerbMem_unlearned - VerbMem_retrain) / (VerbMem_target - VerbMem_retrain), all three at that precision
    ("<p>+target_emb" against the target and retrain at <p>), with a bootstrap interval over forget passages.
    The share and its interval are NaN when the target-retrain gap's own interval reaches 0
    (metrics.bootstrap_recovery). Rows also carry the utility and the code-change shares of that epoch."""
    ref = results["reference"]
    rows = []
    for run in results["runs"]:
        for h in run["history"]:
            for prec, items in h["verbmem_forget"].items():
                base = prec.partition(EMB_SUFFIX)[0]
                tar, ret = ref["target"]["verbmem_forget"][base], ref["retrain"]["verbmem_forget"][base]
                b = bootstrap_recovery("share_full_gap", items, ret, tar, tar, np.ones(len(items)), n_boot=n_boot,
                                       seed=seed)
                rows.append({"name": run["name"], "method": run["method"], "lr": run["lr"], "sure": run["sure"],
                             "dtype": run.get("dtype", "float32"), "klr_variant": run.get("klr_variant", "correct"),
                             "epoch": h["epoch"], "step": h["step"], "selected": h["epoch"] == run["selected_epoch"],
                             "precision": prec, "verbmem": float(np.mean(items)), "share": b["value"],
                             "share_ci": b["ci"], "gap": b["gap"], "gap_ci": b["gap_ci"], "utility": h["utility"],
                             "code_change": h.get("code_change", {}).get(base, float("nan"))})
    return rows


def recovery_regime(rows: list[dict], *, full_max: float, quant_min: float, methods=CONSTRAINED) -> dict:
    """The paper's prediction on the per-epoch rows of epoch_recovery: an epoch of a constrained method whose
    full-precision share is <= full_max (forgot) while a 4-bit share is >= quant_min (recovered).

    Returns {"hits": [(name, epoch, precision, full share, 4-bit share)], "forgot": number of constrained epochs
    that forgot at full precision, "closest": the forgotten epoch with the largest 4-bit share (if none forgot:
    the epoch with the lowest full-precision share, at its largest 4-bit share),
    "verdict": "holds" (a hit), "partly" (a forgotten epoch whose 4-bit share's interval lies above its full share),
    "does not hold" (epochs forgot, none recovered), or "not tested" (no constrained epoch forgot)}.
    Control runs (target_emb precisions) and SURE runs are not candidates."""
    full = {(r["name"], r["epoch"]): r for r in rows if r["precision"] == "full" and r["method"] in methods
            and not r["sure"]}
    forgot = {k: r for k, r in full.items() if not np.isnan(r["share"]) and r["share"] <= full_max}
    quant = [r for r in rows if (r["name"], r["epoch"]) in forgot and r["precision"] != "full"
             and EMB_SUFFIX not in r["precision"] and not np.isnan(r["share"])]
    hits = [(r["name"], r["epoch"], r["precision"], forgot[(r["name"], r["epoch"])]["share"], r["share"])
            for r in quant if r["share"] >= quant_min]
    closest = max(quant, key=lambda r: r["share"], default=None)
    ref = forgot
    if closest is None and full:  # nothing forgot: the epoch that came nearest at full precision, its best 4 bits
        k = min((k for k, r in full.items() if not np.isnan(r["share"])), key=lambda k: full[k]["share"], default=None)
        ref = full
        closest = max((r for r in rows if (r["name"], r["epoch"]) == k and r["precision"] != "full"
                       and EMB_SUFFIX not in r["precision"]), key=lambda r: np.nan_to_num(r["share"], nan=-1),
                      default=None)
    if hits:
        verdict = "holds"
    elif any(r["share_ci"][0] > forgot[(r["name"], r["epoch"])]["share"] for r in quant):
        verdict = "partly"
    elif forgot:
        verdict = "does not hold"
    else:
        verdict = "not tested"
    return {"hits": hits, "forgot": len(forgot), "verdict": verdict,
            "closest": None if closest is None else {
                "name": closest["name"], "epoch": closest["epoch"], "precision": closest["precision"],
                "full_share": ref[(closest["name"], closest["epoch"])]["share"], "share": closest["share"],
                "share_ci": closest["share_ci"]}}
