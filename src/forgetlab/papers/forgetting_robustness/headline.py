"""Notebook 06 (forgetting robustness): its headline numbers, computed from metrics/forgetting_robustness.json only
(`forgetlab.repro.headline` gathers every paper's, decides the verdicts and writes the README table), and the
sentences its README findings template asks for by name (`TEXT`, placeholders `{{ text: <name> }}`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, fmt_ci, fmt_span, number


def forgetting_robustness(m: dict) -> dict:
    out = {}
    key = m["headline_attack"]
    quant = [p for p in m["precisions"] if p != "full"][:1]  # the first 4-bit attack alone
    for method, attacks in m["recovery"].items():
        a = attacks[key]
        out[f"{method}|{key}"] = number(a["share_full_gap"], a["share_full_gap_ci"], "share",
                                        f"share of the full-precision forget gap recovered by {key}, {method}")
        for p in quant:
            q = m["quantization"][p]["methods"][method]
            out[f"{method}|k=0|{p}|gap_closure"] = number(q["gap_closure"], q["gap_closure_ci"], "share",
                                                          f"same-precision gap closure under {p} alone, {method}")
            out[f"{method}|k=0|{p}|excess_closure"] = number(
                q["excess_closure"], q["excess_closure_ci"], "share",
                f"gap closure under {p} minus the proportional closure 1 - oa / o, {method}")
    matched = [r["in_band_val"] for name, r in m["removal"].items() if name not in ("original", "random_pruning")]
    out["checks"] = {"every_method_reached_the_drop": all(matched)}
    return out


def _fr(root: Sources) -> dict:
    return root.metrics("forgetting_robustness")


def _fr_methods(m: dict) -> dict:
    """The removal methods and small-step arms (not the controls)."""
    return {k: r for k, r in m["removal"].items() if k not in ("original", "random_pruning")}


def _fr_kmax(m: dict) -> int:
    return max(m["ks"])


def _fr_quant(m: dict) -> str:
    return [p for p in m["precisions"] if p != "full"][0]


def fr_matching(root: Sources) -> str:
    """How well the methods matched the target drop: on validation (tuned) and on test (estimated)."""
    m = _fr(root)
    rows = _fr_methods(m)
    half = max((r["forget_drop_ci"][1] - r["forget_drop_ci"][0]) / 2 for r in rows.values())
    return (f"{sum(r['in_band_val'] for r in rows.values())} of {len(rows)} methods land in the band on validation, "
            f"{sum(r['in_band'] for r in rows.values())} on test, where the drops are "
            f"{fmt_span([r['forget_drop'] for r in rows.values()], '.1f', 100)} pp (95% intervals at most "
            f"+-{half * 100:.1f} pp wide) and the retain drops "
            f"{fmt_span([r['retain_drop'] for r in rows.values()], '.1f', 100)} pp")


def fr_knobs(root: Sources) -> str:
    r = _fr(root)["removal"]
    parts = [f"{label} {r[k]['knob_value']} FF neurons" for k, label in
             (("selective_pruning", "selective pruning zeroes"), ("concept_pruning", "concept pruning masks"),
              ("random_pruning", "random pruning (the control, tuned alike) zeroes")) if k in r]
    return ", ".join(parts)


def fr_steps(root: Sources) -> str:
    m = _fr(root)
    big = [r["knob_value"] for r in _fr_methods(m).values() if r.get("lr") == m["lr"]]
    small = [f"{k.rsplit('_lr', 1)[0]} {r['knob_value']:.0f} steps at lr {r['lr']:g}"
             for k, r in _fr_methods(m).items() if r.get("lr") == m["small_lr"] and r.get("lr") != m["lr"]]
    return (f"{fmt_span(big, '.0f')} optimizer steps at lr {m['lr']:g}"
            + (f"; the small-step arm takes {', '.join(small)}" if small else ""))


def fr_shares(root: Sources, attack: str | None = None) -> str:
    """Every method's share of the full gap for one attack (default: the headline attack), smallest first, each
    with its interval."""
    m = _fr(root)
    attack = attack or m["headline_attack"]
    rows = sorted(((k, r[attack]) for k, r in m["recovery"].items() if k != "random_pruning"),
                  key=lambda kv: (kv[1]["share_full_gap"] is None or math.isnan(kv[1]["share_full_gap"]),
                                  kv[1]["share_full_gap"]))
    return "; ".join(f"{k} {fmt_ci(r['share_full_gap'], r['share_full_gap_ci'])}" for k, r in rows)


def fr_order(root: Sources) -> str:
    m = _fr(root)
    rec = {k: r[m["headline_attack"]] for k, r in m["recovery"].items() if k != "random_pruning"}
    rows = [(k, r["share_full_gap_ci"]) for k, r in rec.items() if not math.isnan(r["share_full_gap"])]
    pairs = [(a, b) for a, ca in rows for b, cb in rows if ca[1] < cb[0]]
    if not pairs:
        return "no method's interval lies below another's, so no two methods are ordered"
    return (f"{len(pairs)} of {len(rows) * (len(rows) - 1) // 2} pairs are ordered (one interval below the other), "
            "e.g. " + ", ".join(f"{a} below {b}" for a, b in pairs[:3]))


def fr_random(root: Sources) -> str:
    m = _fr(root)
    a = m["headline_attack"]
    r, s = m["recovery"].get("random_pruning"), m["recovery"].get("selective_pruning")
    if r is None:
        return "not run"
    rp = m["removal"]["random_pruning"]
    return (f"{fmt_ci(r[a]['share_full_gap'], r[a]['share_full_gap_ci'])} (drop on test "
            f"{fmt_ci(rp['forget_drop'], rp['forget_drop_ci'], '.1f', 100)} pp"
            + (f"; selective pruning {fmt_ci(s[a]['share_full_gap'], s[a]['share_full_gap_ci'])})" if s else ")"))


def fr_range(root: Sources, attack: str) -> str:
    vals = [r[attack]["share_full_gap"] for k, r in _fr(root)["recovery"].items() if k != "random_pruning"]
    return fmt_span([v for v in vals if not math.isnan(v)])


def fr_original(root: Sources, attack: str, role: str = "forget") -> str:
    m = _fr(root)
    return f"{m['original'][f'{role}_top1']:.3f} to {m['controls']['original'][attack][role]:.3f}"


def fr_quant_views(root: Sources) -> str:
    """Under the first 4-bit precision alone: every method's three views and its verdict."""
    m = _fr(root)
    q = m["quantization"][_fr_quant(m)]["methods"]
    return "; ".join(f"{k}: {fmt_ci(r['share_full_gap'], r['share_full_gap_ci'])} of the full gap, closure "
                     f"{fmt_ci(r['gap_closure'], r['gap_closure_ci'])}, excess "
                     f"{fmt_ci(r['excess_closure'], r['excess_closure_ci'])} ({r['verdict']})" for k, r in q.items())


def fr_quant_original(root: Sources) -> str:
    m = _fr(root)
    p = _fr_quant(m)
    q = m["quantization"][p]
    pc = q["proportional_closure"]
    return (f"{p} lowers the original model too (forget top-1 {m['original']['forget_top1']:.3f} -> "
            f"{q['original_forget_top1']:.3f}, retain {m['original']['retain_top1']:.3f} -> "
            f"{q['original_retain_top1']:.3f}), so a proportional loss of both models alone would close "
            f"{fmt_ci(pc['value'], pc['ci'])} of any gap")


def fr_quant_verdicts(root: Sources) -> str:
    m = _fr(root)
    q = m["quantization"][_fr_quant(m)]["methods"]
    counts = {}
    for k, r in q.items():
        counts.setdefault(r["verdict"], []).append(k)
    return "; ".join(f"{v} for {len(ks)} ({', '.join(ks)})" for v, ks in sorted(counts.items()))


def fr_retain_control(root: Sources) -> str:
    m = _fr(root)
    q = m["quantization"][_fr_quant(m)]["methods"]
    vals = [r["retain_gap_change"] for r in q.values()]
    zero = sum(r["retain_gap_change_ci"][0] <= 0 <= r["retain_gap_change_ci"][1] for r in q.values())
    return (f"changes by {fmt_span(vals, '+.1f', 100)} pp, its interval including 0 for {zero} of {len(q)} models")


def fr_small_step(root: Sources) -> str:
    m = _fr(root)
    p = _fr_quant(m)
    parts = []
    for arm, d in m["small_step"].items():
        if p not in d:
            continue
        x = d[p]
        parts.append(f"{d['method']} at lr {d['lr']:g} ({d['steps']:.0f} steps against {d['large_lr_steps']:.0f} at "
                     f"{d['large_lr']:g}) has a {p} gap closure of {fmt_ci(x['gap_closure'], x['gap_closure_ci'])} "
                     "against "
                     f"{fmt_ci(x['large_lr_gap_closure'], x['large_lr_gap_closure_ci'])}, a difference of "
                     f"{fmt_ci(x['difference'], x['difference_ci'])}: by the notebook's rule the comparison reads "
                     f"*{x['comparison']}*, and against proportional damage the verdict is *{x['verdict']}*")
    return "; ".join(parts) or "no small-step arm in this run"


def fr_vs_attacked(root: Sources, attack: str) -> str:
    rec = {k: r for k, r in _fr(root)["recovery"].items() if k != "random_pruning"}
    rows = sorted(((k, r[attack]["share_attacked_original"]) for k, r in rec.items()),
                  key=lambda kv: (math.isnan(kv[1]), kv[1]))
    return ", ".join(f"{k} {'undefined' if math.isnan(v) else format(v, '.2f')}" for k, v in rows)


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {"forgetting_robustness": forgetting_robustness}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {"forgetting_robustness": Path(__file__).with_name("findings.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "fr_matching": fr_matching,
    "fr_knobs": fr_knobs,
    "fr_steps": fr_steps,
    "fr_shares": fr_shares,
    "fr_order": fr_order,
    "fr_random": fr_random,
    "fr_kmax": lambda root: str(_fr_kmax(_fr(root))),
    "fr_headline_k": lambda root: _fr(root)["headline_attack"].split("|")[0][2:],
    "fr_range_kmax": lambda root: fr_range(root, f"k={_fr_kmax(_fr(root))}|full"),
    "fr_original_kmax": lambda root: fr_original(root, f"relearn k={_fr_kmax(_fr(root))}"),
    "fr_vs_attacked": lambda root: fr_vs_attacked(root, f"k={_fr_kmax(_fr(root))}|full"),
    "fr_quant_original": fr_quant_original,
    "fr_quant_views": fr_quant_views,
    "fr_quant_verdicts": fr_quant_verdicts,
    "fr_retain_control": fr_retain_control,
    "fr_small_step": fr_small_step,
}
