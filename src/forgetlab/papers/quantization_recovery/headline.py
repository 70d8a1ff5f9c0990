"""Notebook 04 (quantization recovery, Zhang et al., arXiv 2410.16454): its headline numbers, computed from
metrics/quantization_recovery.json only (`forgetlab.repro.headline` gathers every paper's, decides the verdicts and
writes the README table), and the sentences its README findings template asks for by name (`TEXT`, placeholders `{{
text: <name> }}`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, number


def quantization_recovery(m: dict) -> dict:
    """The notebook's rule (recovery.recovery_regime): the claim holds if an epoch of a utility-constrained run
    kept <= full_max of the target's forget VerbMem at full precision and >= quant_min at 4 bits; partly if a
    forgotten epoch's 4-bit share lies above its full-precision share (interval); not tested if none forgot."""
    if "regime" not in m:  # metrics of the earlier protocol (one selected epoch per run, MUSE's rule)
        return {"target_nf4_verbmem_kept": number(m["target_quantized_verbmem_share"]["nf4"], None, "share",
                                                  "target's VerbMem kept under nf4"),
                "checks": {"per_epoch_protocol_run": False, "a_constrained_method_unlearned": False},
                "notebook_verdicts": {"regime": "not tested"}}
    reg = m["regime"]
    c = reg["closest"] or {}
    where = f"{c.get('name')}, epoch {c.get('epoch')}"
    return {
        "closest_full": number(c.get("full_share"), None, "share",
                               f"share of the forget VerbMem kept at full precision by the closest epoch ({where})"),
        "closest_quantized": number(c.get("share"), c.get("share_ci"), "share",
                                    f"the same epoch under {c.get('precision')} ({where})"),
        "target_nf4_verbmem_kept": number(m["target_quantized_verbmem_share"]["nf4"], None, "share",
                                          "target's VerbMem kept under nf4"),
        "checks": {"per_epoch_protocol_run": True, "a_constrained_method_unlearned": reg["forgot"] > 0},
        "notebook_verdicts": {"regime": reg["verdict"]},
    }


def _qr(root: Sources) -> dict:
    return root.metrics("quantization_recovery")


def qr_verdict(root: Sources) -> str:
    """What the per-epoch curves show, by the notebook's rule (recovery.recovery_regime)."""
    m = _qr(root)
    if "regime" not in m:
        return ("**not tested**: these metrics come from the earlier protocol (every run stopped after 4 optimizer "
                "steps at lr 1e-5 and unlearned nothing); rerun `dvc repro quantization_recovery` for the per-epoch "
                "protocol")
    reg, c = m["regime"], m["regime"]["closest"]
    rule = (f"an epoch that keeps <= {m['full_max']:g} of the target's forget VerbMem at full precision and "
            f">= {m['quant_min']:g} at 4 bits")
    if reg["verdict"] == "not tested":
        near = "" if c is None else (f"; the closest, {c['name']} at epoch {c['epoch']}, kept {c['full_share']:.2f} at "
                                     f"full precision ({c['precision']}: {c['share']:.2f})")
        return f"**not tested**: no epoch of a utility-constrained run forgot at full precision{near}"
    ci = "" if c["share_ci"] is None or any(v != v for v in c["share_ci"]) else \
        f" [{c['share_ci'][0]:.2f}, {c['share_ci'][1]:.2f}]"
    head = {"holds": f"**holds**: {len(reg['hits'])} epoch(s) reach {rule}",
            "partly": f"**partly**: no epoch reaches {rule}, but 4 bits bring some back",
            "does not hold": f"**does not hold**: {reg['forgot']} epoch(s) of constrained runs forgot at full "
                             f"precision, none came back to {m['quant_min']:g} at 4 bits"}[reg["verdict"]]
    return (f"{head}; the strongest 4-bit return was {c['name']} at epoch {c['epoch']}: {c['full_share']:.2f} kept at "
            f"full precision, {c['share']:.2f}{ci} under {c['precision']}")


def qr_selection(root: Sources) -> str:
    """Where the selection rule stopped the runs, by method and learning rate."""
    m = _qr(root)
    if "selected_by" not in m:
        return "not run with the per-epoch protocol yet"
    by = {}
    for name, e in m["selected_epochs"].items():
        by.setdefault(name.split("@")[1], []).append(f"{name.split('@')[0]} {e} ({m['selected_by'][name]})")
    return "; ".join(f"lr {lr}: " + ", ".join(v) for lr, v in sorted(by.items(), key=lambda kv: float(kv[0])))


def qr_arms(root: Sources) -> str:
    """The bf16 arm, the official KL and the embedding control, at the selected epochs (forget VerbMem)."""
    if "epochs" not in _qr(root):
        return "not run yet"
    rows = [r for r in _qr(root)["epochs"] if r["selected"]]
    def val(name_part, prec):
        v = [r["verbmem"] for r in rows if name_part(r["name"]) and r["precision"] == prec]
        return "n/a" if not v else ", ".join(f"{x:.2f}" for x in v)
    bf16, official_kl = (lambda n: "+bf16" in n), (lambda n: "+officialKL" in n)
    return (f"bf16 runs keep forget VerbMem {val(bf16, 'full')} at full precision and {val(bf16, 'nf4')} under nf4; "
            f"with the official KL {val(official_kl, 'full')} and {val(official_kl, 'nf4')}; "
            f"with the target's embedding put back before nf4 the "
            f"fp32 runs keep {val(lambda n: '+' not in n, 'nf4+target_emb')}")


def qr_group(root: Sources) -> str:
    rows = [r for r in _qr(root)["group_size"] if r["model"] == "target"]
    def label(g):  # "tensor", "channel" or "g<size>"
        return f"per {g}" if g in ("tensor", "channel") else f"with groups of {g[1:]}"
    return ", ".join(f"{r['verbmem']:.2f} {label(r['granularity'])}" for r in rows)


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {"quantization_recovery": quantization_recovery}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {"quantization_recovery": Path(__file__).with_name("findings.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "qr_selection": qr_selection,
    "qr_arms": qr_arms,
    "qr_verdict": qr_verdict,
    "qr_group": qr_group,
}
