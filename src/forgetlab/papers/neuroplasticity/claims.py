"""Notebook 02's verdicts on the neuroplasticity paper's five claims (Lo, Cohen & Barez, arXiv 2401.01814), by
stated rules on the recorded F1 scores and intervals. Pruning and retraining are
`forgetlab.papers.neuroplasticity.experiment`; this module is read by the notebook stage only, so changing a rule never
reruns a fine-tune or a retraining. It also holds the notebook's typed parameters (NotebookParams)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from forgetlab.core import utils
from forgetlab.core.utils import check_choice, check_fraction, check_list, check_positive_int, check_type
from forgetlab.papers.neuroplasticity.headline import BACK, GONE, KEPT, PARTLY_BACK  # the rules' shares of base F1


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 02's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams)."""
    n_analysis: int
    n_top: int
    min_word_count: int
    n_examples: int
    n_boot: int
    batch_size: int
    n_label_sample: int
    saliency_threshold: float
    top_fraction: float
    standardize_by: str
    sensitivity_standardize_by: str
    embedding_model: str
    sweep_ks: list

    def __post_init__(self):
        from forgetlab.papers.neuroplasticity.experiment import STANDARDIZE
        self.check_all(check_positive_int, "n_analysis", "n_top", "min_word_count", "n_examples", "n_boot",
                       "batch_size", "n_label_sample")
        check_fraction("saliency_threshold", self.saliency_threshold)
        check_fraction("top_fraction", self.top_fraction, allow_zero=False)
        check_choice("standardize_by", self.standardize_by, STANDARDIZE)
        check_choice("sensitivity_standardize_by", self.sensitivity_standardize_by, STANDARDIZE)
        check_type("embedding_model", self.embedding_model, str)
        for k in check_list("sweep_ks", self.sweep_ks, int):
            check_positive_int("sweep_ks", k)


def shift_direction(r: dict) -> str:
    """A layer shift's direction from its 95% interval ({"lo", "hi"}): "earlier" below 0, "later" above 0."""
    return "earlier" if r["hi"] < 0 else "later" if r["lo"] > 0 else "no clear shift"


def rules_markdown(concept: str) -> str:
    """claim_verdicts' rules as notebook 02 states them before its numbers, with the shares of base F1 they use."""
    def pct(x):
        return f"{x:.0%}"
    return f"""\
* **Removal is concept-specific**: *holds* if, right after concept pruning, {concept} F1 is at most {pct(GONE)} of its
  base value and every other type keeps at least {pct(KEPT)} of its base F1; *partly* if {concept} falls that far but
  another type loses more than {pct(1 - KEPT)} (the removal is not specific); *does not hold* otherwise.
* **The concept is relearned**: *not tested* if pruning did not remove it ({concept} F1 above {pct(GONE)} of base
  right after pruning); otherwise *holds* if the last retraining stage reaches at least {pct(BACK)} of the base
  {concept} F1, *partly* at {pct(PARTLY_BACK)} to {pct(BACK)}, *does not hold* below. The random baseline's drop and
  recovery are reported beside it, and the concept-pruned model is compared with the random-pruned one after
  retraining (paired interval: below, within or above).
* **The concept moves to earlier layers**: per ranking, the shift of the top neurons' mean layer is *earlier* if its
  95% interval lies below 0, *later* if above, *no clear shift* otherwise; *holds* if earlier under both rankings,
  *partly* if under one, *does not hold* otherwise.
* **The carriers were primed**: *holds* if the carriers' concept similarity in the base model exceeds the
  layer-matched base rate (interval of the difference above 0); *partly* if it exceeds only the all-neurons base
  rate; *does not hold* otherwise.
* **The carriers become polysemantic**: *holds* if their polysemantic share after retraining exceeds both the
  layer-matched base rate and their own share in the base model (both intervals above 0); *partly* if only one;
  *does not hold* otherwise."""


def claim_verdicts(f1: dict, concept: str, others: Sequence[str], n_stages: int, relocation: dict, priming: dict,
                   polysemantic: dict, method: str = "concept") -> tuple[dict, dict]:
    """(direction of each ranking's layer shift, verdict on each of the paper's five claims), each "holds",
    "partly", "does not hold" or "not tested", by these rules on `f1` ({"base" or (run, stage): {type: {"f1"}}}):

    * removal is concept-specific: pruning (stage 0) leaves the concept at most GONE of its base F1 (else "does
      not hold") and every other type at least KEPT of its own (else "partly");
    * relearned (only tested where removal took the concept below GONE): the last stage is back to BACK of the
      base F1 ("holds") or PARTLY_BACK ("partly");
    * moves earlier: every ranking's shift is "earlier" (some: "partly");
    * primed: the carriers' base-model concept similarity exceeds that of other neurons of the same layers
      (interval above 0; "partly" if only above all other neurons');
    * polysemantic: the carriers are more polysemantic than other neurons of their layers after retraining, and
      more than they were before (both intervals above 0: "holds"; one: "partly")."""
    base = {t: f1["base"][t]["f1"] for t in (concept, *others)}
    pruned = f1[(method, 0)]
    gone = pruned[concept]["f1"] <= GONE * base[concept]
    if gone:
        removal = "holds" if all(pruned[t]["f1"] >= KEPT * base[t] for t in others) else "partly"
        share = f1[(method, n_stages)][concept]["f1"] / max(base[concept], 1e-12)
        relearned = "holds" if share >= BACK else "partly" if share >= PARTLY_BACK else "does not hold"
    else:
        removal, relearned = "does not hold", "not tested"
    directions = {v: shift_direction(r) for v, r in relocation.items()}
    n_earlier = sum(d == "earlier" for d in directions.values())
    verdicts = {
        "removal_concept_specific": removal,
        "relearned": relearned,
        "moves_earlier": "holds" if n_earlier == len(directions) else "partly" if n_earlier else "does not hold",
        "primed": ("holds" if priming["similarity"]["same_layers"]["diff_ci"][0] > 0 else
                   "partly" if priming["similarity"]["all_others"]["diff_ci"][0] > 0 else "does not hold"),
        "polysemantic": {2: "holds", 1: "partly", 0: "does not hold"}[
            int(polysemantic["after"]["diff_ci"][0] > 0) + int(polysemantic["carriers_change_ci"][0] > 0)],
    }
    return directions, verdicts
