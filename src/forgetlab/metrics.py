"""Statistics shared by the notebooks: bootstrap intervals, curve areas."""
from __future__ import annotations

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
