"""Selective pruning (Pochinkov & Schoots, arXiv 2403.01267).

Score every neuron by how much more important it is on the forget set than on the retain set,
    score(n) = I(forget, n) / (I(retain, n) + eps),
prune the global top fraction (over all layers at once), recollect statistics, repeat.
Importance functions are computed from forgetlab.core.neurons.NeuronStats over real tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from forgetlab.core.neurons import MaskHandle, NeuronStats, apply_masks, collect_stats, n_neurons
from forgetlab.core.utils import check_choice, check_fraction

SCORINGS = ("freq", "abs", "rms", "std", "random")
PRUNE_KINDS = ("ff", "attn")


def importance(stats: NeuronStats, scoring: str) -> torch.Tensor:
    """I_freq = mean 1[x>0]; I_abs = mean |x|; I_rms = sqrt(mean x^2); I_std = standard deviation."""
    check_choice("scoring", scoring, SCORINGS[:-1])
    return getattr(stats, {"freq": "freq", "abs": "mean_abs", "rms": "rms", "std": "std"}[scoring])


def forget_scores(forget: NeuronStats, retain: NeuronStats, scoring: str, eps: float) -> torch.Tensor:
    """score = I(forget) / (I(retain) + eps), per [layer, neuron]."""
    return importance(forget, scoring) / (importance(retain, scoring) + eps)


def select_global_top(scores: torch.Tensor, frac: float, pruned: torch.Tensor) -> torch.Tensor:
    """Bool [layers, neurons]: the top `frac` of ALL neurons (not per layer) by score, among those not yet
    pruned (already pruned neurons are never picked again)."""
    check_fraction("frac", frac)
    k = round(frac * scores.numel())
    s = scores.double().masked_fill(pruned, float("-inf")).flatten()
    k = min(k, int((~pruned).sum()))
    pick = torch.zeros_like(s, dtype=torch.bool)
    if k > 0:
        pick[s.topk(k).indices] = True
    return pick.view_as(pruned)


def select_random(pruned: torch.Tensor, frac: float, generator: torch.Generator) -> torch.Tensor:
    """Random baseline: in every layer, `frac` of its neurons chosen uniformly among those not yet pruned."""
    check_fraction("frac", frac)
    pick = torch.zeros_like(pruned)
    k = round(frac * pruned.shape[1])
    for layer in range(pruned.shape[0]):
        free = (~pruned[layer]).nonzero().flatten()
        order = torch.randperm(len(free), generator=generator)[:k]
        pick[layer, free[order]] = True
    return pick


@dataclass
class PruneConfig:
    """One pruning step: fractions of FF and attention neurons, scoring function, denominators' eps."""
    ff_frac: float = 0.02
    attn_frac: float = 0.0
    scoring: str = "abs"
    eps_ff: float = 1e-3
    eps_attn: float = 1e-4
    ablation: str = "zero"  # or "mean": replace pruned neurons by their mean activation on the retain set

    def __post_init__(self):
        check_fraction("ff_frac", self.ff_frac)
        check_fraction("attn_frac", self.attn_frac)
        if self.ff_frac == 0 and self.attn_frac == 0:
            raise ValueError("parameters 'ff_frac' and 'attn_frac' are both 0: at least one must be in (0, 1]")
        check_choice("scoring", self.scoring, SCORINGS)
        check_choice("ablation", self.ablation, ("zero", "mean"))

    def fracs(self) -> dict[str, float]:
        return {k: f for k, f in (("ff", self.ff_frac), ("attn", self.attn_frac)) if f > 0}

    def eps(self, kind: str) -> float:
        return self.eps_ff if kind == "ff" else self.eps_attn


class Pruner:
    """Holds the pruned set of a model and the live masks implementing it (zero or mean ablation)."""

    def __init__(self, model, kinds: Iterable[str] = PRUNE_KINDS):
        self.model = model
        self.pruned = {k: torch.zeros(n_neurons(model, k), dtype=torch.bool) for k in kinds}
        self.offsets: dict[str, torch.Tensor] = {}
        self.handle: MaskHandle | None = None

    def masks(self) -> dict[str, torch.Tensor]:
        return {k: (~p).float() for k, p in self.pruned.items()}

    def refresh(self) -> None:
        """Re-install the hooks after the pruned set changed."""
        if self.handle is not None:
            self.handle.remove()
        self.handle = apply_masks(self.model, self.masks(), self.offsets or None)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def fraction(self, kind: str) -> float:
        return float(self.pruned[kind].float().mean())

    def step(self, forget_batches, retain_batches, cfg: PruneConfig, generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
        """One pruning step; returns the newly pruned neurons per kind. Statistics are collected with the
        current masks in place, so they describe the model as already pruned."""
        kinds = list(cfg.fracs())
        need_retain = cfg.scoring != "random" or cfg.ablation == "mean"
        retain = collect_stats(self.model, retain_batches, kinds, desc="retain stats") if need_retain else {}
        forget = {} if cfg.scoring == "random" else collect_stats(self.model, forget_batches, kinds,
                                                                  desc="forget stats")
        new = {}
        for kind, frac in cfg.fracs().items():
            if cfg.scoring == "random":
                new[kind] = select_random(self.pruned[kind], frac, generator or torch.Generator().manual_seed(0))
            else:
                scores = forget_scores(forget[kind], retain[kind], cfg.scoring, cfg.eps(kind))
                new[kind] = select_global_top(scores, frac, self.pruned[kind])
            if cfg.ablation == "mean":
                off = self.offsets.get(kind, torch.zeros(self.pruned[kind].shape))
                self.offsets[kind] = torch.where(new[kind], retain[kind].mean.float(), off)
            self.pruned[kind] |= new[kind]
        self.refresh()
        return new


def iterative_prune(model, forget_batches, retain_batches, cfg: PruneConfig, n_steps: int,
                    evaluate: Callable[[object], dict], *, seed: int = 0, initial: dict | None = None,
                    desc: str | None = "pruning") -> tuple[list, Pruner]:
    """Prune `n_steps` times, evaluating after every step (and before the first, unless `initial` already holds
    the unpruned model's metrics).

    `evaluate(model)` returns a dict of metrics; the history holds them with the pruned fractions.
    The returned Pruner keeps the masks on the model (call .remove() to restore it).
    """
    pruner = Pruner(model, list(cfg.fracs()))
    gen = torch.Generator().manual_seed(seed)
    history = [{"step": 0, **{f"{k}_pruned": 0.0 for k in pruner.pruned}, **(initial or evaluate(model))}]
    forget_batches, retain_batches = list(forget_batches), list(retain_batches)
    for step in tqdm(range(1, n_steps + 1), desc=desc, disable=desc is None):
        pruner.step(forget_batches, retain_batches, cfg, gen)
        history.append({"step": step, **{f"{k}_pruned": pruner.fraction(k) for k in pruner.pruned},
                        **evaluate(model)})
    return history, pruner
