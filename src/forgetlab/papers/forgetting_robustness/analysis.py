"""Notebook 06's analysis of the forgetting-robustness run's recorded hits (our benchmark: how robust each kind of
forgetting is to relearning and 4-bit attacks): drops with intervals, every recovery view per method and attack,
quantization alone against the original's proportional damage, the small-step arms, and the stated verdict rules.
The removal methods, the attacks and the run stage are `forgetlab.papers.forgetting_robustness.experiment`; this module
is read by the notebook stage only, so a change here never reruns the removals."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from forgetlab.core import metrics, utils
from forgetlab.core.utils import check_positive_int, check_type


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 06's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams); that the
    headline attack is one the run made is checked once its results are loaded."""
    n_boot: int
    seed: int
    headline_k: int
    headline_precision: str

    def __post_init__(self):
        check_positive_int("n_boot", self.n_boot)
        check_positive_int("seed", self.seed, allow_zero=True)
        check_positive_int("headline_k", self.headline_k, allow_zero=True)
        check_type("headline_precision", self.headline_precision, str)


def attack_hits(res: dict, name: str, attack: str, role: str = "forget") -> tuple[np.ndarray, np.ndarray]:
    """(per-window hits, per-window token counts) of method `name` after `attack` ("k=<K>|<precision>")."""
    r = res["attacks"][name][attack][role]
    return np.asarray(r["hits"], float), np.asarray(r["n"], float)


def attack_acc(res: dict, name: str, attack: str, role: str = "forget") -> float:
    h, n = attack_hits(res, name, attack, role)
    return float(h.sum() / n.sum())


def removal_rows(res: dict, names: Sequence[str], *, n_boot: int, seed: int) -> list[dict]:
    """Per method: its knob, the drop it was tuned to on validation windows, and its forget and retain drops on
    test windows with bootstrap intervals over windows (paired with the original on the same windows)."""
    b_hits, b_n = attack_hits(res, "original", "k=0|full")
    brh, brn = attack_hits(res, "original", "k=0|full", "retain")
    rows = []
    for m in names:
        info = res["methods"][m]
        h, n = attack_hits(res, m, "k=0|full")
        rh, rn = attack_hits(res, m, "k=0|full", "retain")
        rows.append({"method": m, "knob": info["knob_name"] or "-", "knob value": info["knob_value"],
                     "lr": info.get("lr"), "validation drop": info["val_drop"],
                     "in band (validation)": info["in_band_val"], "test drop": info["drop"],
                     "test drop_ci": list(metrics.bootstrap_diff_of_ratios(b_hits, b_n, h, n, n_boot=n_boot,
                                                                           seed=seed)),
                     "retain drop": info["retain_drop"],
                     "retain drop_ci": list(metrics.bootstrap_diff_of_ratios(brh, brn, rh, rn, n_boot=n_boot,
                                                                             seed=seed)),
                     "in band (test)": info["in_band"]})
    return rows


def recovery_table(res: dict, names: Sequence[str], attacks: Sequence[str], *, n_boot: int, seed: int) -> dict:
    """{method: {attack: forget and retain top-1 after the attack, the original's under the same attack, and every
    recovery view of metrics.RECOVERY_VIEWS with its bootstrap interval over windows}}."""
    b_hits, _ = attack_hits(res, "original", "k=0|full")
    out = {}
    for m in names:
        rh, _ = attack_hits(res, m, "k=0|full")
        out[m] = {}
        for a in attacks:
            ah, an = attack_hits(res, m, a)
            oh, _ = attack_hits(res, "original", a)
            row = {"forget_top1": attack_acc(res, m, a), "retain_top1": attack_acc(res, m, a, "retain"),
                   "original_forget_top1": attack_acc(res, "original", a)}
            for view in metrics.RECOVERY_VIEWS:
                r = metrics.bootstrap_recovery(view, ah, rh, b_hits, oh, an, n_boot=n_boot, seed=seed)
                row[view], row[f"{view}_ci"] = r["value"], r["ci"]
            out[m][a] = row
    return out


def excess_closure(a, r, o, oa):
    """Same-precision gap closure beyond the proportional damage the quantization does to the original itself
    (1 - oa/o): accuracies a (removed, then quantized), r (removed), o (original), oa (original quantized)."""
    return metrics.recovery_view("gap_closure", a, r, o, oa) - (1 - oa / o)


def gap_change(a, r, o, oa):
    """How much the retain gap to the original grows under quantization ((oa - a) - (o - r))."""
    return (oa - a) - (o - r)


def quantization_verdict(ci: Sequence[float]) -> str:
    """The stated rule on a method's excess closure under quantization alone (its 95% interval): "comes back" when
    the interval lies above 0 (more of the removed gap returns than quantizing the original would explain),
    "removal deepens" when it lies below 0, "uniform damage" when it covers 0, "undefined" without an interval."""
    if np.isnan(ci[0]):
        return "undefined"
    return "comes back" if ci[0] > 0 else "removal deepens" if ci[1] < 0 else "uniform damage"


def quantization_views(res: dict, recovery: dict, names: Sequence[str], precisions: Sequence[str], *, n_boot: int,
                       seed: int) -> dict:
    """Per precision (quantization alone, k = 0): the original's accuracies and proportional closure, and per
    method its recovery views, excess closure (undefined where the gap closure is), retain gap change, verdict."""
    b_hits, b_n = attack_hits(res, "original", "k=0|full")
    brh, brn = attack_hits(res, "original", "k=0|full", "retain")
    quant = {}
    for p in precisions:
        a_key = f"k=0|{p}"
        oh, _ = attack_hits(res, "original", a_key)
        orh, _ = attack_hits(res, "original", a_key, "retain")
        quant[p] = {"original_forget_top1": attack_acc(res, "original", a_key),
                    "original_retain_top1": attack_acc(res, "original", a_key, "retain"),
                    "proportional_closure": metrics.bootstrap_paired_stat(lambda o, oa: 1 - oa / o, [b_hits, oh], b_n,
                                                                          n_boot=n_boot, seed=seed),
                    "methods": {}}
        for m in names:
            rh, _ = attack_hits(res, m, "k=0|full")
            ah, _ = attack_hits(res, m, a_key)
            rrh, _ = attack_hits(res, m, "k=0|full", "retain")
            arh, _ = attack_hits(res, m, a_key, "retain")
            v = recovery[m][a_key]
            ex = metrics.bootstrap_paired_stat(excess_closure, [ah, rh, b_hits, oh], b_n, n_boot=n_boot, seed=seed)
            if np.isnan(v["gap_closure"]):
                ex = {"value": float("nan"), "ci": [float("nan")] * 2}
            rg = metrics.bootstrap_paired_stat(gap_change, [arh, rrh, brh, orh], brn, n_boot=n_boot, seed=seed)
            quant[p]["methods"][m] = {
                **{k: v[k] for k in (*metrics.RECOVERY_VIEWS, *(f"{x}_ci" for x in metrics.RECOVERY_VIEWS))},
                "forget_top1": v["forget_top1"], "excess_closure": ex["value"], "excess_closure_ci": ex["ci"],
                "retain_gap_change": rg["value"], "retain_gap_change_ci": rg["ci"],
                "verdict": quantization_verdict(ex["ci"])}
    return quant


def comparison_verdict(ci: Sequence[float]) -> str:
    """The stated rule on a difference of gap closures (small-step arm minus the same method at its larger lr)."""
    if np.isnan(ci[0]):
        return "undefined"
    return "closes more" if ci[0] > 0 else "closes less" if ci[1] < 0 else "not told apart"


def small_step_comparison(res: dict, recovery: dict, quant: dict, arms: Sequence[str], precisions: Sequence[str],
                          attacks: Sequence[str], *, n_boot: int, seed: int) -> dict:
    """Per small-step arm: its lr and steps beside its method's at the larger lr; per precision, the two gap
    closures and their paired difference with an interval and comparison_verdict; the relearning shares of both."""
    b_hits, b_n = attack_hits(res, "original", "k=0|full")

    def diff(a1, r1, a2, r2, o, oa):
        return (metrics.recovery_view("gap_closure", a1, r1, o, oa)
                - metrics.recovery_view("gap_closure", a2, r2, o, oa))
    out = {}
    for arm in arms:
        base_m = res["methods"][arm]["method"]
        large = res["methods"].get(base_m)
        out[arm] = {"method": base_m, "lr": res["methods"][arm]["lr"], "steps": res["methods"][arm]["knob_value"],
                    "large_lr": None if large is None else large["lr"],
                    "large_lr_steps": None if large is None else large["knob_value"]}
        if large is None:
            continue
        for p in precisions:
            a_key = f"k=0|{p}"
            oh, _ = attack_hits(res, "original", a_key)
            arrays = [attack_hits(res, arm, a_key)[0], attack_hits(res, arm, "k=0|full")[0],
                      attack_hits(res, base_m, a_key)[0], attack_hits(res, base_m, "k=0|full")[0], b_hits, oh]
            d = metrics.bootstrap_paired_stat(diff, arrays, b_n, n_boot=n_boot, seed=seed)
            q = quant[p]["methods"]
            out[arm][p] = {"gap_closure": q[arm]["gap_closure"], "gap_closure_ci": q[arm]["gap_closure_ci"],
                           "large_lr_gap_closure": q[base_m]["gap_closure"],
                           "large_lr_gap_closure_ci": q[base_m]["gap_closure_ci"],
                           "difference": d["value"], "difference_ci": d["ci"], "verdict": q[arm]["verdict"],
                           "comparison": comparison_verdict(d["ci"])}
        out[arm]["relearn"] = {a: {"small": recovery[arm][a]["share_full_gap"],
                                   "large": recovery[base_m][a]["share_full_gap"]}
                               for a in attacks if a.endswith("|full")}
    return out


def mean_share(recovery: dict, methods: Sequence[str], attack: str) -> float:
    """Mean share of the full gap back under `attack`, over the methods whose full gap is resolved (NaN if none)."""
    vals = [recovery[m][attack]["share_full_gap"] for m in methods]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def share_ranking(recovery: dict, methods: Sequence[str], attack: str) -> tuple[list[str], list[str], bool]:
    """(methods by share of the full gap back under `attack`, lowest first, unresolved last; the resolved ones;
    whether the two ends' intervals are disjoint, False when fewer than one is resolved)."""
    head = {m: recovery[m][attack] for m in methods}
    ranking = sorted(methods, key=lambda m: (np.isnan(head[m]["share_full_gap"]), head[m]["share_full_gap"]))
    resolved = [m for m in ranking if not np.isnan(head[m]["share_full_gap"])]
    separated = bool(resolved) and (head[resolved[0]]["share_full_gap_ci"][1]
                                    < head[resolved[-1]]["share_full_gap_ci"][0])
    return ranking, resolved, separated
