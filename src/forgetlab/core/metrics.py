"""Statistics shared by the notebooks: bootstrap intervals, curve areas, recovery shares."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def bootstrap_ratio(num, den, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of sum(num) / sum(den), resampling items (e.g. test sequences) with replacement."""
    num, den = _np(num), _np(den)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    stats = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12)
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def bootstrap_diff_of_ratios(num_a, den_a, num_b, den_b, *, n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> tuple[float, float]:
    """Interval of ratio_a - ratio_b where a and b are measured on the SAME items (paired resampling)."""
    num_a, den_a, num_b, den_b = map(_np, (num_a, den_a, num_b, den_b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num_a), size=(n_boot, len(num_a)))
    ra = num_a[idx].sum(1) / np.maximum(den_a[idx].sum(1), 1e-12)
    rb = num_b[idx].sum(1) / np.maximum(den_b[idx].sum(1), 1e-12)
    d = ra - rb
    return float(np.quantile(d, alpha / 2)), float(np.quantile(d, 1 - alpha / 2))


def bootstrap_mean(values, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean of `values`."""
    values = _np(values)
    return bootstrap_ratio(values, np.ones_like(values), n_boot=n_boot, seed=seed, alpha=alpha)


# ================================================================ recovery of removed knowledge (notebooks 04, 06)
# One formula, three views of an attack on a removed model, named apart. Accuracies on the same items: o the
# original, r the removed (unlearned) model, a the removed model attacked, oa the original attacked the same way.
#   share_full_gap           (a - r) / (o - r)          share of the full-precision gap an attack brings back
#   gap_closure              1 - (oa - a) / (o - r)     same precision: how much of the gap is gone when both
#                                                       models are attacked alike (the removed model's change
#                                                       minus the original's, over the gap)
#   share_attacked_original  (a - r) / (oa - r)         the removed model's gain against the attacked original
# A uniform degradation of both models also closes the gap; read gap_closure beside the retain set's gap under
# the same attack and beside the closure a proportional loss would give, 1 - oa / o.
RECOVERY_VIEWS = ("share_full_gap", "gap_closure", "share_attacked_original")


def recovery_share(value, floor, ceiling):
    """(value - floor) / (ceiling - floor): where `value` sits between a floor (0) and a ceiling (1); NaN when the
    ceiling is not above the floor (nothing to recover). Notebook 04: recovery_share(K_unlearned, K_retrain,
    K_target); notebook 06: recovery_share(acc_attacked, acc_removed, acc_original). Scalars or arrays."""
    value, floor, ceiling = (np.asarray(x, dtype=float) for x in (value, floor, ceiling))
    gap = ceiling - floor
    out = np.where(gap > 0, (value - floor) / np.where(gap > 0, gap, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def recovery_view(view: str, attacked, removed, original, original_attacked):
    """One of RECOVERY_VIEWS from the four accuracies (scalars or arrays); each is recovery_share of suitable
    arguments, so every view is 0 when the attack changes nothing and NaN when its gap is not positive."""
    if view == "share_full_gap":
        return recovery_share(attacked, removed, original)
    if view == "gap_closure":  # the attacked model shifted back by the original's own change under the attack
        return recovery_share(np.asarray(attacked, float) + original - np.asarray(original_attacked, float),
                              removed, original)
    if view == "share_attacked_original":
        return recovery_share(attacked, removed, original_attacked)
    raise ValueError(f"view must be one of {', '.join(RECOVERY_VIEWS)}, got {view!r}")


def _view_gap(view: str, removed, original, original_attacked):
    return (original_attacked if view == "share_attacked_original" else original) - removed


def bootstrap_recovery(view: str, attacked, removed, original, original_attacked, n, *, n_boot: int = 1000,
                       seed: int = 0, alpha: float = 0.05) -> dict:
    """A recovery view with its percentile interval, resampling items (windows) with replacement; the four
    models' per-item hits and the item sizes `n` are paired (the same items score all four).

    Returns {"value", "ci", "gap", "gap_ci"}: the view on the summed hits, its interval, and the gap it divides
    by (o - r, or oa - r for share_attacked_original) with the gap's own interval. When that interval reaches
    0 (the removed gap is not told from noise), value and ci are NaN: a share of an unresolved gap means
    nothing."""
    arrays = [_np(x) for x in (attacked, removed, original, original_attacked, n)]
    if len({len(x) for x in arrays}) != 1:
        raise ValueError("bootstrap_recovery: attacked, removed, original, original_attacked and n must have "
                         "one entry per item each")
    *hits, n = arrays
    acc = [h.sum() / max(n.sum(), 1e-12) for h in hits]
    idx = np.random.default_rng(seed).integers(0, len(n), size=(n_boot, len(n)))
    den = np.maximum(n[idx].sum(1), 1e-12)
    boot = [h[idx].sum(1) / den for h in hits]
    q = (alpha / 2, 1 - alpha / 2)
    gap, gaps = _view_gap(view, *acc[1:]), _view_gap(view, *boot[1:])
    gap_ci = [float(v) for v in np.quantile(gaps, q)]
    value, values = recovery_view(view, *acc), recovery_view(view, *boot)
    if gap_ci[0] <= 0 or np.isnan(values).all():
        return {"value": float("nan"), "ci": [float("nan")] * 2, "gap": float(gap), "gap_ci": gap_ci}
    return {"value": float(value), "ci": [float(v) for v in np.nanquantile(values, q)], "gap": float(gap),
            "gap_ci": gap_ci}


def bootstrap_paired_stat(stat, hits: list, n, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """{"value", "ci"} of stat(*accuracies), where each accuracy is sum(hits_i) / sum(n) over items scored by
    every model (e.g. a gap's change under an attack, (oa - a) - (o - r)); items resampled with replacement,
    NaN draws skipped."""
    hits, n = [_np(h) for h in hits], _np(n)
    idx = np.random.default_rng(seed).integers(0, len(n), size=(n_boot, len(n)))
    den = np.maximum(n[idx].sum(1), 1e-12)
    values = np.asarray(stat(*(h[idx].sum(1) / den for h in hits)), dtype=float)
    value = float(stat(*(h.sum() / max(n.sum(), 1e-12) for h in hits)))
    if np.isnan(values).all():
        return {"value": value, "ci": [float("nan")] * 2}
    return {"value": value, "ci": [float(v) for v in np.nanquantile(values, (alpha / 2, 1 - alpha / 2))]}


def area_between(x, upper, lower) -> float:
    """Trapezoid area of (upper - lower) over x (e.g. forget drop minus retain drop over pruned fraction)."""
    x, d = _np(x), _np(upper) - _np(lower)
    return float(np.sum((d[1:] + d[:-1]) / 2 * np.diff(x)))


def _drop_samples(base_hits, pruned_hits, n, rng, n_boot) -> np.ndarray:
    base_hits, pruned_hits, n = map(_np, (base_hits, pruned_hits, n))
    idx = rng.integers(0, len(n), size=(n_boot, len(n)))
    den = np.maximum(n[idx].sum(1), 1e-12)
    return (base_hits[idx].sum(1) - pruned_hits[idx].sum(1)) / den


def drop_gap_ci(forget_base, forget_pruned, retain_base, retain_pruned, *, key: str = "top1", n_boot: int = 1000,
                seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Interval of (forget accuracy drop) - (retain accuracy drop). Each argument is a per-sequence counts dict
    (eval.token_counts); each drop is paired (same test sequences before and after), and the forget and retain
    sequences are resampled independently."""
    rng = np.random.default_rng(seed)
    f = _drop_samples(forget_base[key], forget_pruned[key], forget_base["n"], rng, n_boot)
    r = _drop_samples(retain_base[key], retain_pruned[key], retain_base["n"], rng, n_boot)
    gap = f - r
    return float(np.quantile(gap, alpha / 2)), float(np.quantile(gap, 1 - alpha / 2))


def bootstrap_clusters(statistic, n_clusters: int, *, n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of `statistic(idx)` over resamples of whole clusters: idx is an int array of
    n_clusters cluster indices drawn with replacement (e.g. edit batches that share one weight change, or
    (seed, batch) pairs). For statistics that are not a plain mean, such as a value read off a curve."""
    if n_clusters < 1:
        raise ValueError("bootstrap_clusters needs at least one cluster")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n_clusters, size=n_clusters)) for _ in range(n_boot)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return float("nan"), float("nan")
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def bootstrap_clustered_mean(values, clusters, *, n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (one per item) when items come in clusters (`clusters`: one
    label per item): whole clusters are resampled with replacement and the mean is taken over every item of
    the drawn clusters, so items of one cluster (the edits of one batch) never count as independent."""
    values = _np(values)
    labels = list(clusters)
    if len(labels) != len(values):
        raise ValueError(f"values ({len(values)}) and clusters ({len(labels)}) differ in length")
    names = sorted(set(labels), key=labels.index)
    index = {c: i for i, c in enumerate(names)}
    ids = np.array([index[c] for c in labels])
    sums = np.bincount(ids, weights=values, minlength=len(names))
    counts = np.bincount(ids, minlength=len(names)).astype(float)
    return bootstrap_clusters(lambda idx: sums[idx].sum() / counts[idx].sum(), len(names), n_boot=n_boot,
                              seed=seed, alpha=alpha)


# Token-level summaries of per-sequence counts (forgetlab.core.eval.token_counts keys), as eval.summarize_counts
# computes them, written for sums that carry a leading bootstrap axis (a test keeps the two in step).
COUNT_STATS: dict[str, Callable[[dict], np.ndarray]] = {
    "top1": lambda s: s["top1"] / np.maximum(s["n"], 1),
    "topk": lambda s: s["topk"] / np.maximum(s["n"], 1),
    "top1_skip": lambda s: s["top1_skip"] / np.maximum(s["n_skip"], 1),
    "topk_skip": lambda s: s["topk_skip"] / np.maximum(s["n_skip"], 1),
    "perplexity": lambda s: np.exp(np.minimum(s["nll"] / np.maximum(s["n"], 1), 50.0)),
}


def paired_bootstrap_diff(counts_a: dict, counts_b: dict, stat: str, *, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05) -> tuple[float, list[float]]:
    """COUNT_STATS[stat] of model a minus that of model b, both scored on the same sequences (per-sequence
    counts), with a percentile interval that resamples sequences once for both (paired)."""
    if stat not in COUNT_STATS:
        raise ValueError(f"stat must be one of {', '.join(COUNT_STATS)}, got {stat!r}")
    a, b = ({k: _np(v) for k, v in c.items()} for c in (counts_a, counts_b))
    n_seq = len(a["n"])
    if any(len(v) != n_seq for c in (a, b) for v in c.values()):
        raise ValueError("paired_bootstrap_diff: both models need per-sequence counts of the same sequences")
    f = COUNT_STATS[stat]
    diff = float(f({k: v.sum() for k, v in a.items()}) - f({k: v.sum() for k, v in b.items()}))
    idx = np.random.default_rng(seed).integers(0, n_seq, size=(n_boot, n_seq))
    boot = f({k: v[idx].sum(1) for k, v in a.items()}) - f({k: v[idx].sum(1) for k, v in b.items()})
    return diff, [float(q) for q in np.quantile(boot, (alpha / 2, 1 - alpha / 2))]
