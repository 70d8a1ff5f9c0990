"""Gradient unlearning: the losses of the LLM unlearning baselines (GA, NPO, each with GDR or KLR) and SURE's
saliency mask, for `forgetlab.core.train.train`. The quantization-recovery paper (Zhang et al., arXiv
2410.16454) runs them in `forgetlab.papers.quantization_recovery.experiment`; the forgetting-robustness
benchmark uses them too.

Losses (each a `loss_fn(model, batch)` for `forgetlab.core.train.train`; a batch carries a forget part
`input_ids`/`attention_mask`, the reference model's sequence log-likelihoods `ref_logp` of it, and a retain part
`retain_input_ids`/`retain_attention_mask`):

* GA: -CE on the forget batch (gradient ascent);
* NPO: -(2/beta) mean log sigmoid(-beta (log p_theta(x) - log p_ref(x))) with log p the SEQUENCE
  log-likelihood (sum over tokens; the official code uses a per-logit difference, we do not), beta = 0.1;
* _GDR adds CE on the retain batch; _KLR adds KL(p_ref || p_theta) on the retain batch, per token, averaged over
  tokens, computed from log-probabilities (`klr_variant="correct"`, the default). `klr_variant="official"` is the
  official code's term, kept as a labelled variant to measure what it does: `F.kl_div(logits_theta, logits_ref,
  reduction="batchmean", log_target=True)` on RAW logits, i.e. sum_v exp(z_ref) (z_ref - z_theta) per token.
  Its value is 0 at theta = ref, but its gradient, -exp(z_ref) per logit, is not: orders of magnitude larger than
  GA's, so after gradient clipping it decides the update's direction.

SURE (the paper's mitigation): per output row of every linear weight matrix (embeddings and the tied output head
excluded), the saliency is the L2 norm of that row's forget-loss gradient (summed over the forget set) at the
start of unlearning; rows above the `percentile` of all rows (one global threshold) are updated, everything else
(other rows, embeddings, norms) is frozen: the mask multiplies the gradients after backward and before the
optimizer step (train's `grad_hook`; the official code computed the mask and never applied it). AdamW's moments
of a masked row stay zero, so its weights do not move at all. `recompute_every` > 0 recomputes the mask every
that many steps (the official code's choice), where moments of a row that leaves the mask keep moving it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from forgetlab.core.utils import check_choice, device_of
from forgetlab.methods import muse


# ================================================================ losses
def mean_ce(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token-mean next-token cross-entropy over real tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    mask = attention_mask[:, 1:].float()
    ce = F.cross_entropy(logits.float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return (ce * mask).sum() / mask.sum()


@torch.no_grad()
def reference_logits(ref_model, input_ids, attention_mask) -> torch.Tensor:
    """The reference model's fp32 logits, computed where the reference is and returned on the batch's device (the
    trained model may have been moved to a GPU by train() while the reference stayed where it was loaded)."""
    dev = device_of(ref_model)
    return ref_model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                     use_cache=False).logits.float().to(input_ids.device)


def kl_to_reference(model, ref_model, input_ids, attention_mask) -> torch.Tensor:
    """KL(p_ref || p_theta) of the next-token distributions, per token, averaged over real tokens."""
    ref_lp = torch.log_softmax(reference_logits(ref_model, input_ids, attention_mask)[:, :-1], -1)
    lp = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=False).logits[:, :-1].float(), -1)
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
    mask = attention_mask[:, 1:].float()
    return (kl * mask).sum() / mask.sum()


def kl_official(model, ref_model, input_ids, attention_mask) -> torch.Tensor:
    """The official code's KL term: F.kl_div(z_theta, z_ref, reduction="batchmean", log_target=True) on the RAW
    logits of every real token, i.e. mean over tokens of sum_v exp(z_ref,v) (z_ref,v - z_theta,v). Not a
    divergence (the logits are not log-probabilities): 0 at theta = ref, gradient -exp(z_ref) per logit."""
    ref = reference_logits(ref_model, input_ids, attention_mask)
    cur = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    real = attention_mask.bool()
    return F.kl_div(cur[real], ref[real], reduction="batchmean", log_target=True)


KLR_VARIANTS = {"correct": kl_to_reference, "official": kl_official}


def ga_forget_loss(model, batch: dict, beta: float) -> torch.Tensor:
    """Gradient ascent: -CE on the forget batch (beta unused)."""
    return -mean_ce(model, batch["input_ids"], batch["attention_mask"])


def npo_forget_loss(model, batch: dict, beta: float) -> torch.Tensor:
    logp = muse.sequence_logprob(model, batch["input_ids"], batch["attention_mask"])
    return -(2 / beta) * F.logsigmoid(-beta * (logp - batch["ref_logp"])).mean()


def gdr_regularizer(model, batch: dict, ref_model, kl: Callable) -> torch.Tensor:
    """Gradient descent on the retain batch: its CE."""
    return mean_ce(model, batch["retain_input_ids"], batch["retain_attention_mask"])


def klr_regularizer(model, batch: dict, ref_model, kl: Callable) -> torch.Tensor:
    """KL to the target (ref_model) on the retain batch, with the KL of the run's klr_variant."""
    return kl(model, ref_model, batch["retain_input_ids"], batch["retain_attention_mask"])


FORGET_LOSSES = {"GA": ga_forget_loss, "NPO": npo_forget_loss}
REGULARIZERS = {"GDR": gdr_regularizer, "KLR": klr_regularizer}


@dataclass(frozen=True)
class Method:
    """An unlearning method of MUSE: a loss on the forget batch (FORGET_LOSSES) plus, optionally, a regularizer on
    the retain batch (REGULARIZERS), added with weight retain_weight."""
    forget: str
    regularizer: str | None = None


# every method by name; a new one is one entry here (and a loss or regularizer above if it needs a new one)
REGISTRY = {"GA": Method("GA"), "GA_GDR": Method("GA", "GDR"), "GA_KLR": Method("GA", "KLR"),
            "NPO": Method("NPO"), "NPO_GDR": Method("NPO", "GDR"), "NPO_KLR": Method("NPO", "KLR")}
METHODS = tuple(REGISTRY)


def make_loss(method: str, *, beta: float = 0.1, ref_model=None, retain_weight: float = 1.0,
              klr_variant: str = "correct") -> Callable:
    """The loss_fn of an unlearning method (forget loss + retain regularizer); klr_variant picks the KL of _KLR."""
    spec = REGISTRY[check_choice("method", method, METHODS)]
    kl = KLR_VARIANTS[check_choice("klr_variant", klr_variant, KLR_VARIANTS)]
    if spec.regularizer == "KLR" and ref_model is None:
        raise ValueError(f"method {method} needs ref_model (the target) for its KL regularizer")
    forget = FORGET_LOSSES[spec.forget]
    regularizer = REGULARIZERS.get(spec.regularizer)

    def loss_fn(model, batch):
        loss = forget(model, batch, beta)
        if regularizer is not None:
            loss = loss + retain_weight * regularizer(model, batch, ref_model, kl)
        return loss

    return loss_fn


@torch.no_grad()
def unlearning_items(model, forget: list[dict], retain: list[dict]) -> list[dict]:
    """One item per forget passage, paired with a retain passage (cycled), with the reference (= the model
    before unlearning) sequence log-likelihood of the forget passage for NPO."""
    items = []
    dev = device_of(model)  # items stay on the CPU (train() moves batches); the forward runs on dev
    for i, p in enumerate(forget):
        r = retain[i % len(retain)]
        ids = torch.tensor(p["ids"])
        att = torch.ones_like(ids)
        ref = muse.sequence_logprob(model, ids[None].to(dev), att[None].to(dev))[0].cpu()
        items.append({"input_ids": ids, "attention_mask": att, "ref_logp": ref,
                      "retain_input_ids": torch.tensor(r["ids"]),
                      "retain_attention_mask": torch.ones(len(r["ids"]), dtype=torch.long)})
    return items


# ================================================================ SURE
def saliency_params(model) -> dict[str, nn.Parameter]:
    """Weights of every Linear layer but the output head (tied to the embeddings in SmolLM2)."""
    from forgetlab.methods.quantization import quantizable_linears
    return {f"{n}.weight": lin.weight for n, lin in quantizable_linears(model).items()}


def row_saliency(model, loss_fn: Callable, batches) -> dict[str, torch.Tensor]:
    """L2 norm, per output row, of the forget-loss gradient summed over `batches`."""
    params = saliency_params(model)
    model.zero_grad(set_to_none=True)
    for b in batches:
        loss_fn(model, b).backward()
    sal = {n: p.grad.detach().norm(dim=1) if p.grad is not None else torch.zeros(p.shape[0])
           for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    return sal


def saliency_mask(saliency: dict[str, torch.Tensor], percentile: float = 90.0) -> dict[str, torch.Tensor]:
    """Rows whose saliency is at or above the global `percentile` of all rows (bool per row)."""
    if not 0 <= percentile < 100:
        raise ValueError(f"parameter 'percentile' must be in [0, 100), got {percentile!r}")
    allrows = torch.cat(list(saliency.values()))
    thr = torch.quantile(allrows.double(), percentile / 100).item()
    return {n: s >= thr for n, s in saliency.items()}


def mask_hook(mask: dict[str, torch.Tensor]) -> Callable:
    """A grad_hook that keeps the gradient of salient rows only and zeroes every other gradient."""
    def hook(model):
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            if name in mask:
                p.grad.mul_(mask[name].to(p.grad.dtype)[:, None])
            else:
                p.grad.zero_()
    return hook


def sure_hook(model, forget_loss: Callable, batches, *, percentile: float, recompute_every: int) -> Callable:
    """SURE's grad_hook: the mask of `model`'s rows at or above the saliency `percentile` of `forget_loss` over
    `batches`, computed now (the start of unlearning), applied to every step's gradients. `recompute_every` > 0
    recomputes the mask before every that-many-th step after the first (the step's own gradients are kept)."""
    state = {"mask": saliency_mask(row_saliency(model, forget_loss, batches), percentile), "step": 0}

    def hook(m):
        state["step"] += 1
        if recompute_every and state["step"] > 1 and (state["step"] - 1) % recompute_every == 0:
            grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
            state["mask"] = saliency_mask(row_saliency(m, forget_loss, batches), percentile)
            for n, p in m.named_parameters():
                if n in grads:
                    p.grad = grads[n]
        mask_hook(state["mask"])(m)
    return hook
