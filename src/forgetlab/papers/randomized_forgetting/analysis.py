"""Notebook 03's analysis (Zhang, Choshen & Andreas, arXiv 2409.02228) of the forgetting runs' recorded scores:
per-task forget ratios with their intervals, the correlations with the paper's predictors, the linear probes and
their pooled differences. The fine-tuning and forgetting stages are `forgetlab.papers.randomized_forgetting.experiment`;
this module is read by the notebook stage only, so a change here never reruns a 7B fine-tune."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from forgetlab.core import metrics, utils
from forgetlab.core.utils import check_choice, check_fraction, check_positive_int, check_type
from forgetlab.papers.randomized_forgetting import experiment as fg


@dataclass(frozen=True)
class NotebookParams(utils.NotebookParams):
    """Notebook 03's parameters that need checking, checked once (forgetlab.core.utils.NotebookParams); the
    variance layer is checked against the recorded layers once the results are loaded."""
    scoring: str
    variance_layer: int
    probe_C: float
    probe_folds: int
    min_converged_share: float
    n_boot: int

    def __post_init__(self):
        check_choice("scoring", self.scoring, fg.SCORINGS)
        check_type("variance_layer", self.variance_layer, int)
        if check_type("probe_C", self.probe_C, (int, float)) <= 0:
            raise ValueError(f"parameter 'probe_C' must be > 0, got {self.probe_C}")
        if check_positive_int("probe_folds", self.probe_folds) < 2:
            raise ValueError(f"parameter 'probe_folds' must be at least 2, got {self.probe_folds}")
        check_fraction("min_converged_share", self.min_converged_share)
        check_positive_int("n_boot", self.n_boot)


def hits(scores: dict, scoring: str = "sum") -> np.ndarray:
    """Per item, 1.0 where the model picks the true answer (`correct`, as a numpy array)."""
    return fg.correct(scores, scoring).numpy()


def hits_forget_ratio(ft_hits: np.ndarray, after_hits: np.ndarray) -> float:
    """forget_ratio of two models' hits on the same items; NaN when the fine-tuned model is not above chance."""
    return fg.forget_ratio(ft_hits.mean(), after_hits.mean()) if ft_hits.mean() > 0.5 else math.nan


def hits_forget_ratio_ci(ft_hits: np.ndarray, after_hits: np.ndarray, *, n_boot: int, seed: int) -> tuple:
    """bootstrap_forget_ratio's interval of hits_forget_ratio (NaN, NaN where that is NaN)."""
    if ft_hits.mean() <= 0.5:
        return math.nan, math.nan
    return fg.bootstrap_forget_ratio(ft_hits, after_hits, n_boot=n_boot, seed=seed)


def task_forgetting(ft_res: dict, fg_res: dict, task: str, *, scoring: str, n_boot: int, seed: int) -> dict:
    """What random-label forgetting did to one kept task: accuracy of the pre-trained, fine-tuned and forgotten
    models on the test items (bootstrap intervals over items), the forget set's accuracy before and after, the
    forget ratios on test items and on the forget set (forget_ratio; NaN when the fine-tuned model is not above
    chance) with intervals, their quotient (normalized ratio), and the small-N and flipped-label runs' numbers
    where they ran."""

    def ci(values):
        return metrics.bootstrap_mean(np.asarray(values, float), n_boot=n_boot, seed=seed)

    def ratio_ci(a, b):
        return hits_forget_ratio_ci(a, b, n_boot=n_boot, seed=seed)
    runs = fg_res["runs"]
    r = runs[f"{task}|random"]
    c_base, c_ft = hits(ft_res["base"][task], scoring), hits(ft_res["finetuned"][task], scoring)
    c_after = hits(r["final_test"], scoring)
    fs_ft, fs_after = hits(fg_res["before"][task], scoring), hits(r["forget"][-1], scoring)
    e = {"converged": r["converged"], "epochs": r["epochs"], "n_test": len(c_ft), "n_forget": len(fs_ft),
         "pretrained_acc": c_base.mean(), "pretrained_ci": ci(c_base), "finetuned_acc": c_ft.mean(),
         "finetuned_ci": ci(c_ft), "forget_acc": c_after.mean(), "forget_ci": ci(c_after),
         "forgetset_acc_before": fs_ft.mean(), "forgetset_acc_after": fs_after.mean(),
         "forget_ratio": hits_forget_ratio(c_ft, c_after), "forget_ratio_ci": ratio_ci(c_ft, c_after),
         "forgetset_ratio": hits_forget_ratio(fs_ft, fs_after), "forgetset_ratio_ci": ratio_ci(fs_ft, fs_after)}
    ok = c_ft.mean() > 0.5 and fs_ft.mean() > 0.5 and e["forgetset_ratio"] > 0
    e["normalized_ratio"] = e["forget_ratio"] / e["forgetset_ratio"] if ok else math.nan
    e["normalized_ratio_ci"] = (fg.bootstrap_normalized_ratio(c_ft, c_after, fs_ft, fs_after, n_boot=n_boot, seed=seed)
                                if ok else (math.nan, math.nan))
    if "small" in r:
        c_small = hits(r["small"]["final_test"], scoring)
        e |= {"small_converged": r["small"]["converged"], "small_epochs": r["small"]["epochs"],
              "forget_acc_small": c_small.mean(), "forget_ratio_small": hits_forget_ratio(c_ft, c_small),
              "forget_ratio_small_ci": ratio_ci(c_ft, c_small),
              # paired over the same test items: r(N) - r(N_small) = sum(ft - after) / sum(ft - 0.5) difference
              "forget_ratio_minus_small_ci": metrics.bootstrap_diff_of_ratios(
                  c_ft - c_after, c_ft - 0.5, c_ft - c_small, c_ft - 0.5, n_boot=n_boot, seed=seed)}
    if f"{task}|flipped" in runs:
        f = runs[f"{task}|flipped"]
        c_fl = hits(f["final_test"], scoring)
        e |= {"flipped_converged": f["converged"], "flipped_epochs": f["epochs"], "flipped_acc": c_fl.mean(),
              "flipped_ci": ci(c_fl), "forget_ratio_flipped": hits_forget_ratio(c_ft, c_fl),
              "forget_ratio_flipped_ci": ratio_ci(c_ft, c_fl),
              "forgetset_acc_after_flipped": float(fg.correct(f["forget"][-1], scoring).mean())}
    return e


def correlation(xs, ys, *, n_boot: int, seed: int) -> dict:
    """Spearman's rho (with its p-value and a bootstrap interval over the pairs, bootstrap_spearman) and Pearson's r
    between xs and ys over the pairs where neither is NaN; NaN when fewer than 3 pairs or either side is constant."""
    from scipy import stats
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    out = {"n": int(ok.sum()), "spearman": math.nan, "spearman_p": math.nan, "spearman_ci": [math.nan, math.nan],
           "pearson": math.nan}
    if ok.sum() >= 3 and np.ptp(xs[ok]) > 0 and np.ptp(ys[ok]) > 0:
        out["spearman"], out["spearman_p"] = (float(v) for v in stats.spearmanr(xs[ok], ys[ok]))
        out["pearson"] = float(stats.pearsonr(xs[ok], ys[ok])[0])
        out["spearman_ci"] = list(fg.bootstrap_spearman(xs[ok], ys[ok], n_boot=n_boot, seed=seed))
    return out


PROBES = ("pretrained", "finetuned", "after", "transfer", "shuffled")


def layer_probes(ft_res: dict, fg_res: dict, tasks: Sequence[str], n_layers: int, *, folds: int, C: float,
                 seed: int) -> tuple[dict, dict]:
    """Linear probes of the true answer on each recorded layer's hidden states of the test items, out of fold:
    of the pre-trained, fine-tuned and forgotten models ("after", refit), the fine-tuned probe applied after
    forgetting ("transfer"), and the fine-tuned one fit to shuffled labels ("shuffled", the control). Returns
    ({kind: {task: [per-layer out-of-fold hits]}}, {task: the layer index chosen on OTHER items: the forget set's
    hidden states under the fine-tuned model, cross-validated there, so no test probe is selected on its own
    scores})."""
    probe = {k: {} for k in PROBES}
    best = {}
    for t in tasks:
        y = ft_res["finetuned"][t]["label"].numpy()
        feats = {"pretrained": ft_res["base"][t]["probe_x"], "finetuned": ft_res["finetuned"][t]["probe_x"],
                 "after": fg_res["runs"][f"{t}|random"]["final_test"]["probe_x"]}
        for k in PROBES:
            probe[k][t] = []
        for li in range(n_layers):
            f = {k: v[:, li].float().numpy() for k, v in feats.items()}
            kw = dict(folds=folds, C=C, seed=seed)
            probe["pretrained"][t].append(fg.probe_cv(f["pretrained"], y, **kw))
            probe["finetuned"][t].append(fg.probe_cv(f["finetuned"], y, **kw))
            probe["after"][t].append(fg.probe_cv(f["after"], y, **kw))
            probe["transfer"][t].append(fg.probe_cv(f["finetuned"], y, x_eval=f["after"], **kw))
            probe["shuffled"][t].append(fg.probe_cv(f["finetuned"], y, shuffle_labels=True, **kw))
        select = [float(fg.probe_cv(fg_res["before"][t]["probe_x"][:, li].float().numpy(),
                                 fg_res["before"][t]["label"].numpy(), folds=folds, C=C, seed=seed).mean())
                  for li in range(n_layers)]
        best[t] = int(np.argmax(select))
    return probe, best


def pooled_difference(diffs: Sequence[np.ndarray], *, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """Mean of per-item differences pooled over tasks, with a bootstrap interval over the pooled items."""
    d = np.concatenate(list(diffs))
    return float(d.mean()), list(metrics.bootstrap_mean(d, n_boot=n_boot, seed=seed))


def n_vs_small(hits_by_task: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_boot: int,
               seed: int) -> dict:
    """N vs N_small forgetting examples, pooled over tasks: from each task's test hits (fine-tuned, after forgetting
    N items, after forgetting N_small items), the pooled forget ratios sum(ft - after) / sum(ft - 0.5) of both and
    a bootstrap interval of their difference over the pooled test items. {} when no task is given."""
    if not hits_by_task:
        return {}
    num_n = np.concatenate([a - b for a, b, _ in hits_by_task.values()])
    num_s = np.concatenate([a - s for a, _, s in hits_by_task.values()])
    den = np.concatenate([a - 0.5 for a, _, _ in hits_by_task.values()])
    return {"tasks": list(hits_by_task), "pooled_forget_ratio": float(num_n.sum() / den.sum()),
            "pooled_forget_ratio_small": float(num_s.sum() / den.sum()),
            "difference_ci": list(metrics.bootstrap_diff_of_ratios(num_n, den, num_s, den, n_boot=n_boot,
                                                                   seed=seed))}


def claim_verdicts(per_task: dict, converged: Sequence[str], *, enough_converged: bool, offdiagonal_ci,
                   offdiagonal_above: int, n_offdiagonal: int, n_vs_small: dict, correlations: dict,
                   shallow: dict) -> dict[str, str]:
    """The notebook's verdict on each claim, by the rules its "Metrics and conclusions" section states (95%
    intervals; the forget-ratio claims are "not tested" unless `enough_converged`):
    generalizes_and_varies: holds if some converged task's forget-ratio interval lies above 0 and two converged
        tasks' intervals do not overlap; partly if one of the two; else does not hold.
    spills_over: holds if the mean off-diagonal ratio's interval lies above 0; partly if more off-diagonal cells lie
        above 0 (`offdiagonal_above`) than the 2.5% of `n_offdiagonal` expected by chance; else does not hold.
    more_examples_more_forgetting: holds / does not hold if n_vs_small's difference interval lies above / below 0,
        inconclusive if it contains 0, not tested without n_vs_small.
    confidence_ / variance_predicts_negatively: holds / does not hold if the Spearman interval lies below / above 0,
        inconclusive if it contains 0, not tested if undefined.
    shallow_probes: holds if probe-after minus model-after and probe-after minus pre-trained probe both have
        intervals above 0; partly if only the first; else does not hold."""
    verdicts = {}
    if not enough_converged:
        for k in ("generalizes_and_varies", "spills_over", "more_examples_more_forgetting"):
            verdicts[k] = "not tested"
    else:
        above0 = [t for t in converged if per_task[t]["forget_ratio_ci"][0] > 0]
        disjoint = [(a, b) for a in converged for b in converged
                    if per_task[a]["forget_ratio_ci"][0] > per_task[b]["forget_ratio_ci"][1]]
        verdicts["generalizes_and_varies"] = ("holds" if above0 and disjoint else "partly" if above0 or disjoint
                                              else "does not hold")
        verdicts["spills_over"] = ("holds" if offdiagonal_ci[0] > 0 else "partly"
                                   if offdiagonal_above > 0.025 * n_offdiagonal else "does not hold")
        if n_vs_small:
            d_lo, d_hi = n_vs_small["difference_ci"]
            verdicts["more_examples_more_forgetting"] = ("holds" if d_lo > 0 else "does not hold" if d_hi < 0
                                                         else "inconclusive")
        else:
            verdicts["more_examples_more_forgetting"] = "not tested"
    for key in ("confidence", "variance"):
        lo, hi = correlations[key]["spearman_ci"]
        verdicts[f"{key}_predicts_negatively"] = ("not tested" if math.isnan(lo) else "holds" if hi < 0
                                                  else "does not hold" if lo > 0 else "inconclusive")
    pa_ma, pa_pp = shallow["probe_after_minus_model_after"][1], shallow["probe_after_minus_probe_pretrained"][1]
    verdicts["shallow_probes"] = ("holds" if pa_ma[0] > 0 and pa_pp[0] > 0 else "partly" if pa_ma[0] > 0
                                  else "does not hold")
    return verdicts


def nan_to_null(obj):
    """Plain JSON for the metrics file: numpy scalars and arrays to Python, NaN (an undefined ratio) to null."""
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [nan_to_null(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


@dataclass
class CrossTask:
    """The cross-task forget ratios: matrix[i, j] = forgetting task i (random labels) read on task j's cross
    items (NaN where the fine-tuned model is not above chance on them), each cell's interval by (a, b), the
    mean on the diagonal and off it, the off-diagonal mean's interval (cells where a ratio is defined, items
    resampled) and the off-diagonal cells whose interval lies above 0."""
    tasks: list[str]
    matrix: np.ndarray
    ci: dict
    diagonal: float
    offdiagonal: float
    offdiagonal_ci: tuple
    above: list[tuple[str, str]]

    @property
    def n_offdiagonal(self) -> int:
        return len(self.tasks) * (len(self.tasks) - 1)


def cross_task(ft_res: dict, fg_res: dict, tasks: Sequence[str], *, scoring: str, n_boot: int,
               seed: int) -> CrossTask:
    """Every kept task's random-label forgetting read on every kept task: the fine-tuned model's hits on the first
    items of task b (as many as the forgetting run scored there) against the forgotten model's."""
    k = len(tasks)
    matrix, ci, off_cells = np.full((k, k), np.nan), {}, []
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            s_after = fg_res["runs"][f"{a}|random"]["scores"][b]
            n = len(s_after["label"])
            ft = {key: v[:n] for key, v in ft_res["finetuned"][b].items() if key in ("logp", "label", "n_chars")}
            c_ft = hits(ft, scoring)
            c_after = hits(s_after, scoring)
            matrix[i, j] = hits_forget_ratio(c_ft, c_after)
            ci[(a, b)] = hits_forget_ratio_ci(c_ft, c_after, n_boot=n_boot, seed=seed)
            if i != j and c_ft.mean() > 0.5:
                off_cells.append((c_ft, c_after))
    off_ci = (fg.bootstrap_mean_forget_ratio(off_cells, n_boot=n_boot, seed=seed) if off_cells
              else (math.nan, math.nan))
    return CrossTask(list(tasks), matrix, ci, float(np.nanmean(np.diag(matrix))),
                     float(np.nanmean(matrix[~np.eye(k, dtype=bool)])), off_ci,
                     [(a, b) for a in tasks for b in tasks if a != b and ci[(a, b)][0] > 0])


def shallow_probes(probe: dict, best_layer: dict, model_after_hits: dict, pool: Sequence[str], *, n_boot: int,
                   seed: int) -> dict:
    """Is forgetting shallow? Pooled over the `pool` tasks' items, at each task's best layer (layer_probes): probe
    after forgetting minus the model after, minus the pre-trained probe, and fine-tuned minus pre-trained probe and
    after minus fine-tuned probe; each (mean, [lo, hi]) (pooled_difference)."""
    def at_best(kind, t):
        return probe[kind][t][best_layer[t]]

    def pooled_diff(fa, fb):
        return pooled_difference([fa(t) - fb(t) for t in pool], n_boot=n_boot, seed=seed)
    return {"probe_after_minus_model_after": pooled_diff(lambda t: at_best("after", t),
                                                         lambda t: model_after_hits[t]),
            "probe_after_minus_probe_pretrained": pooled_diff(lambda t: at_best("after", t),
                                                              lambda t: at_best("pretrained", t)),
            "probe_finetuned_minus_probe_pretrained": pooled_diff(lambda t: at_best("finetuned", t),
                                                                  lambda t: at_best("pretrained", t)),
            "probe_after_minus_probe_finetuned": pooled_diff(lambda t: at_best("after", t),
                                                             lambda t: at_best("finetuned", t))}


def converged_tasks(fg_res: dict, tasks: Sequence[str]) -> list[str]:
    """The tasks whose random-label forgetting converged, after checking that each run did what the notebook reads:
    every epoch recorded (forget-set and test scores, at least one epoch), and its `converged` flag what its last
    epoch says (forget-set accuracy within `tol` of chance, under the stopping rule's scoring)."""
    tol = fg_res["tol"]
    for t in tasks:
        r = fg_res["runs"][f"{t}|random"]
        if not len(r["forget"]) == len(r["test"]) == r["epochs"] >= 1:
            raise ValueError(f"{t}: the forgetting run recorded {len(r['forget'])} forget-set and {len(r['test'])} "
                             f"test evaluations for {r['epochs']} epochs")
        last = float(fg.correct(r["forget"][-1], fg_res["scoring"]).mean())
        if r["converged"] != fg.reached(last, fg.convergence_target("random"), tol):
            raise ValueError(f"{t}: recorded converged={r['converged']}, but the last epoch's forget-set accuracy "
                             f"is {last:.3f} (tolerance {tol} around chance)")
    return [t for t in tasks if fg_res["runs"][f"{t}|random"]["converged"]]
