"""Notebook 05 (SaLEM): its headline numbers, computed from metrics/salem.json only (`forgetlab.repro.headline` gathers
every paper's, decides the verdicts and writes the README table), and the sentences its README findings template asks
for by name (`TEXT`, placeholders `{{ text: <name> }}`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgetlab.core.report import Sources, number


def salem(m: dict) -> dict:
    c = m["classify"]
    d = c["intervals"]["salem_minus_mend_top"]
    return {
        "drawdown_diff": number(d["pass_drawdown"], d["pass_drawdown_ci"], "share",
                                "pass-sample drawdown, SaLEM minus MEND on the top 3 layers"),
        "edit_success_diff": number(d["fail_acc"], d["fail_acc_ci"], "share",
                                    "edit success on fail samples, SaLEM minus MEND top 3"),
        "salient_layer": number(c["salient_layer"], None, "block", "most salient block"),
        "checks": {"editors_edit": c["methods"]["salem"]["fail_acc"] > c["methods"]["no_edit"]["fail_acc"]},
    }


def salem_profile(root: Sources) -> str:
    """How the classifier's layer saliency runs with depth."""
    sal = root.metrics("salem")["classify"]["saliency"]
    top = max(range(len(sal)), key=sal.__getitem__)
    falls = all(a >= b for a, b in zip(sal, sal[1:]))
    return f"highest in block {top}" + (" and falls with depth" if falls else "")


# the headline function of each metrics file (by stem)
HEADLINES: dict[str, Callable[[dict], dict]] = {"salem": salem}
# the README findings paragraph's template of each metrics file (by stem; forgetlab.core.report.fill)
FINDINGS: dict[str, Path] = {"salem": Path(__file__).with_name("findings.md")}
# the sentences its findings template asks for ({{ text: <name> }})
TEXT: dict[str, Callable[[Sources], str]] = {
    "salem_profile": salem_profile,
}
