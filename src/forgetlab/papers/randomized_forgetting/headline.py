"""Notebook 03 (randomized forgetting, Zhang, Choshen & Andreas, arXiv 2409.02228): its headline numbers, computed from
metrics/randomized_forgetting.json only (`forgetlab.repro.headline` gathers every paper's, decides the verdicts and
writes the README table), and the sentences its README findings template asks for by name (`TEXT`, placeholders `{{
text: <name> }}`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, fmt_interval, fmt_value, number


def randomized_forgetting(m: dict) -> dict:
    """The notebook decides its verdicts by rules stated in it (notebook_verdicts); the numbers behind them.
    Undefined ratios are null in its metrics (NaN here)."""
    nan = float("nan")
    val = lambda v: nan if v is None else v  # noqa: E731
    ci = lambda c: None if not c or c[0] is None else c  # noqa: E731
    out = {"share_converged": number(m["share_converged"], None, "share",
                                     "kept tasks whose forget set reached chance (within tol)"),
           "n_kept": number(len(m["kept"]), None, "tasks", "tasks that pass the screen"),
           "mean_forget_ratio": number(val(m["mean_forget_ratio_converged"]), None, "ratio",
                                       "mean test forget ratio over converged tasks"),
           "mean_normalized_ratio": number(val(m["mean_normalized_ratio_converged"]), None, "ratio",
                                           "mean test / forget-set forget ratio over converged tasks"),
           "offdiagonal": number(val(m["mean_forget_ratio_offdiagonal"]), ci(m["mean_forget_ratio_offdiagonal_ci"]),
                                 "ratio", "mean forget ratio on the other tasks (cross-task cells)")}
    ratios = [(t, m["tasks"][t]["forget_ratio"], m["tasks"][t].get("forget_ratio_ci")) for t in m["converged"]
              if m["tasks"][t].get("forget_ratio") is not None]
    if ratios:
        lo = min(ratios, key=lambda r: r[1])
        hi = max(ratios, key=lambda r: r[1])
        out["lowest_ratio"] = number(lo[1], ci(lo[2]), "ratio", f"lowest test forget ratio ({lo[0]})")
        out["highest_ratio"] = number(hi[1], ci(hi[2]), "ratio", f"highest test forget ratio ({hi[0]})")
    out["notebook_verdicts"] = m["verdicts"]
    # the notebook's own check, against its min_converged_share (the rule its verdicts use)
    out["checks"] = {"forgetting_converged": m["checks"]["converged_share_reached"]}
    return out


def _rf(root: Sources) -> dict:
    return root.metrics("randomized_forgetting")


def _short(task: str) -> str:
    return task.split("/")[-1].replace("_", " ")


def rf_screen(root: Sources) -> str:
    m = _rf(root)
    out = [f"{_short(t)} ({m['screen'][t]['pretrained_acc']:.2f} -> {m['screen'][t]['finetuned_acc']:.2f})"
           for t in m["screened_out"]]
    return (f"**{len(m['kept'])} of {len(m['candidates'])} candidates pass the screen on learning** (fine-tuned test "
            f"accuracy at least {m['threshold']} and a gain of at least {m['margin']} over the pre-trained model); "
            f"rejected (pre-trained -> fine-tuned): " + (", ".join(out) if out else "none"))


def rf_converged(root: Sources) -> str:
    m = _rf(root)
    epochs = [m["tasks"][t]["epochs"] for t in m["kept"]]
    return (f"**Forgetting converged on {len(m['converged'])} of {len(m['kept'])} tasks** (forget set "
            f"{m['mean_forgetset_acc_after']:.2f} on average, after {min(epochs)}-{max(epochs)} epochs)")


def rf_ratios(root: Sources) -> str:
    m = _rf(root)
    rows = sorted(((t, m["tasks"][t]) for t in m["converged"] if m["tasks"][t]["forget_ratio"] is not None),
                  key=lambda r: r[1]["forget_ratio"])
    if not rows:
        return "no converged task has a defined test forget ratio"
    (lo_t, lo), (hi_t, hi) = rows[0], rows[-1]
    return (f"test forget ratio {fmt_interval(lo['forget_ratio'], lo['forget_ratio_ci'])} ({_short(lo_t)}) to "
            f"{fmt_interval(hi['forget_ratio'], hi['forget_ratio_ci'])} ({_short(hi_t)}), mean "
            f"{fmt_value(m['mean_forget_ratio_converged'])} over the {len(rows)}, mean normalized ratio r_test / r_fs "
            f"{fmt_value(m['mean_normalized_ratio_converged'])}; on the lowest, {_short(lo_t)}, the forget set fell "
            f"from {fmt_value(lo['forgetset_acc_before'])} to {fmt_value(lo['forgetset_acc_after'])} while its test "
            f"items went from {fmt_value(lo['finetuned_acc'])} to {fmt_value(lo['forget_acc'])}")


def rf_n_vs_small(root: Sources) -> str:
    m = _rf(root)
    nv, verdict = m["n_vs_small"], m["verdicts"]["more_examples_more_forgetting"]
    head = f"Forgetting on {m['n_small']} items instead of {m['n_forget']} (each to convergence): "
    if not nv:  # the notebook pools only converged tasks fine-tuned above chance (a ratio needs ft - 0.5 > 0)
        return head + f"no converged task was fine-tuned above chance, so no pooled ratio (*{verdict}*)"
    lo, hi = nv["difference_ci"]
    return (head + f"pooled ratio {fmt_value(nv['pooled_forget_ratio_small'])} vs "
            f"{fmt_value(nv['pooled_forget_ratio'])}, difference [{fmt_value(lo)}, {fmt_value(hi)}] (*{verdict}*)")


def rf_flipped(root: Sources) -> str:
    m = _rf(root)
    reached = [t for t in m["kept"] if m["tasks"][t]["forgetset_acc_after_flipped"] <= m["tol"]]
    below = [t for t in m["kept"] if m["tasks"][t]["flipped_ci"][1] < 0.5]
    return (f"Flipped labels (forget set within {m['tol']} of accuracy 0 on {len(reached)} of {len(m['kept'])} tasks) "
            f"push held-out accuracy below chance (the upper end of its 95% interval under 0.5) on {len(below)} tasks"
            + (f" ({', '.join(_short(t) for t in below)})" if below else ""))


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {"randomized_forgetting": randomized_forgetting}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {"randomized_forgetting": Path(__file__).with_name("findings.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "rf_screen": rf_screen,
    "rf_converged": rf_converged,
    "rf_ratios": rf_ratios,
    "rf_flipped": rf_flipped,
    "rf_n_vs_small": rf_n_vs_small,
}
