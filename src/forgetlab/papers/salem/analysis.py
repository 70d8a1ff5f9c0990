"""Notebook 05's analysis (SaLEM, salient-layer editing with MEND): the tables it shows and the metrics it writes,
from what the editing stages recorded and what `editing.compare_methods` measured. Saliency, MEND and the edit
evaluation themselves are `forgetlab.papers.salem.experiment`; this module is read by the notebook stage only, so a
change here never retrains an editor."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forgetlab.core import utils
from forgetlab.core.utils import check_list, check_positive_int, check_type
from forgetlab.papers.salem import experiment as editing


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 05's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams); the
    editors named in `sweep` are checked against the trained ones when the methods are compared."""
    edit_batch: int
    max_edits: int
    ft_steps: int
    ft_lr: float
    qa_edit_batch: int
    qa_max_edits: int
    qa_ft_steps: int
    qa_ft_lr: float
    scales: list
    sweep: list
    n_boot: int
    seed: int

    def __post_init__(self):
        self.check_all(check_positive_int, "edit_batch", "max_edits", "ft_steps", "qa_edit_batch", "qa_max_edits",
                       "qa_ft_steps", "n_boot")
        check_positive_int("seed", self.seed, allow_zero=True)
        for name in ("ft_lr", "qa_ft_lr"):
            check_type(name, getattr(self, name), (int, float))
        scales = check_list("scales", self.scales, float)
        if 1.0 not in scales or min(scales) <= 0:
            raise ValueError(f"parameter 'scales' must be positive and include 1 (the edit as trained), got {scales}")
        check_list("sweep", self.sweep)

SETTING_TITLES = {"classify": "fact verification", "qa": "question answering"}


def load_editors(model, folder: str | Path) -> tuple[dict, dict]:
    """Every editor the stage trained, by name (names that share their blocks share one editor), in
    editing.METHODS order, and the stage's saliency.json."""
    sal_info = json.loads((Path(folder) / "saliency.json").read_text())
    logs = sal_info["train_logs"]
    out = {name: editing.load_editor(model, Path(folder) / name) for name in logs if not logs[name]["same_as"]}
    out.update({name: out[log["same_as"]] for name, log in logs.items() if log["same_as"]})
    return {name: out[name] for name in editing.METHODS if name in out}, sal_info


def shift_row(info: dict) -> dict:
    """Does the most salient block move when an edit's target is permuted (saliency.json's per_edit_shift)?"""
    sh = info["per_edit_shift"]
    return {"edits": sh["n_edits"],
            "argmax blocks, gold": {i: c for i, c in enumerate(sh["argmax_gold"]) if c},
            "argmax blocks, permuted": {i: c for i, c in enumerate(sh["argmax_permuted"]) if c},
            "argmax moves": f"{sh['share_argmax_moved']:.0%}",
            "profile L1 change (mean, min)": f"{sh['profile_l1_mean']:.3f}, {sh['profile_l1_min']:.3f}",
            "argmax of mini-batches (gold)": {i: c for i, c in enumerate(info["argmax_batches"]) if c}}


def training_row(setting: str, name: str, log: dict, blocks) -> dict:
    """One editor's training: steps, early stopping, held-out loss first -> best, learned edit lr range."""
    last = log["val"][-1] if log["val"] else {}
    return {"setting": setting, "editor": name, "blocks": blocks, "steps": log["n_steps"],
            "best step": log["best_step"], "stopped early": log["stopped_early"],
            "held-out loss first -> best": (f"{log['val'][0]['val_loss']:.3f} -> "
                                            f"{min(v['val_loss'] for v in log['val']):.3f}") if log["val"] else "n/a",
            "edit lr / initial (min, max)": (f"{last['edit_lr_min'] / log['edit_lr_init']:.2f}, "
                                             f"{last['edit_lr_max'] / log['edit_lr_init']:.2f}") if last else "n/a"}


def method_table(res: dict, ci: dict) -> pd.DataFrame:
    """Every method's measures (editing.METHODS order) with the intervals of edit success and pass drawdown."""
    table = pd.DataFrame(res["methods"]).T.loc[[m for m in editing.METHODS if m in res["methods"]]]
    for col in ("fail_acc", "pass_drawdown"):
        table[f"{col} 95% CI"] = [" - ".join(f"{v:.2f}" for v in ci["methods"][m][f"{col}_ci"]) for m in table.index]
    return table


def differences(ci: dict) -> pd.DataFrame:
    """SaLEM minus every other method, in percentage points, with the intervals over edit batches."""
    def pp(value, interval):
        return f"{100 * value:+.1f} [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"
    rows = {key[len("salem_minus_"):]: {"edit success (pp)": pp(d["fail_acc"], d["fail_acc_ci"]),
                                        "pass drawdown (pp)": pp(d["pass_drawdown"], d["pass_drawdown_ci"])}
            for key, d in ci.items() if key.startswith("salem_minus_")}
    return pd.DataFrame(rows).T.rename_axis("SaLEM minus")


def matched_table(matched: dict) -> pd.DataFrame:
    """Drawdown at equal edit success (editing.matched_strength), per setting and comparison."""
    return pd.DataFrame({(s, k): {"edit success level": f"{100 * m['level']:.1f}%",
                                  "SaLEM drawdown (pp)": f"{100 * m['salem_drawdown']:.1f}",
                                  "other drawdown (pp)": f"{100 * m[k.split('_vs_')[1] + '_drawdown']:.1f}",
                                  "SaLEM - other (pp)": f"{100 * m['diff']:+.1f} [{100 * m['diff_ci'][0]:+.1f}, "
                                                        f"{100 * m['diff_ci'][1]:+.1f}]"}
                         for s, d in matched.items() for k, m in d.items()}).T


def random_flips(methods: dict, heldout_acc: float) -> dict:
    """What the held-out drawdown would be if an edit flipped a share c of predictions at random (c = the pass
    drawdown, since pass samples start right): flipping a right one loses 1, a wrong one gains 1/2 on a 3-way
    task, so drawdown = c (acc - (1 - acc) / 2); next to the observed held-out drawdown."""
    return {m: {"pass drawdown = flip share c": round(s["pass_drawdown"], 3),
                "held-out drawdown if random flips": round(s["pass_drawdown"] * (heldout_acc - (1 - heldout_acc) / 2),
                                                           3),
                "held-out drawdown observed": round(s["heldout_drawdown"], 3)}
            for m, s in methods.items() if m != "no_edit"}


def setting_metrics(res: dict, ci: dict, sal_info: dict, match: dict, extra: dict) -> dict:
    """One setting's metrics: everything but wall-clock times (those go to benchmarks/, so that metrics are
    identical run to run)."""
    methods = {m: {k: v for k, v in s.items() if k != "time_per_edit_s"} for m, s in res["methods"].items()}
    training = {name: {"n_steps": log["n_steps"], "best_step": log["best_step"], "stopped_early": log["stopped_early"],
                       "same_as": log["same_as"], "edit_lr_init": log["edit_lr_init"], "val": log["val"]}
                for name, log in sal_info["train_logs"].items()}
    return {"saliency": sal_info["saliency"], "saliency_scale_1e6": sal_info["saliency_scale_1e6"],
            "salient_layer": sal_info["salient_layer"], "layers": sal_info["layers"],
            "mend_top_layers": sal_info["layers"]["mend_top"], "argmax_batches": sal_info["argmax_batches"],
            "per_edit_shift": sal_info["per_edit_shift"], "training": training,
            "base": res["base"], "methods": methods, "intervals": ci, "matched": match, **extra}
