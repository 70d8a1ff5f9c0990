"""How robust is each kind of forgetting? One benchmark over the methods of the other notebooks (notebook 06).

Remove one capability (forget set: code; retain set: prose) with every removal method the repository implements,
each tuned to the same forget top-1 drop (`target` +- `tolerance`) on VALIDATION windows, then attack the result
and score it on TEST windows from other documents (the tuning never sees a test window: `load_sets` draws the
two from disjoint held-out documents and records their ids):

* relearning: fine-tune on k forget training windows (k = 0 is no attack);
* quantization: 4-bit weights (bitsandbytes nf4, round-to-nearest), simulated exactly by forgetlab.methods.quantization;
* both: relearn, then quantize (for the k in `quantized_ks`).

What comes back is read with the shared views of forgetlab.core.metrics (share of the full-precision gap, the
same-precision gap closure, the share against the attacked original; one definition each, as in notebook 04).

Methods (all from src): selective pruning (forgetlab.methods.pruning, FF neurons, I_abs; the pruned columns of the down
projections are zeroed in the weights, so the released model is a plain checkpoint that fine-tuning can move again),
concept pruning (the probeless ranking of forgetlab.core.neurons.probeless, as neuroplasticity ranks, on FF
activations; the pruned units are held at zero by activation masks that stay in place during relearning, as in the
neuroplasticity paper), GA, GA_GDR, NPO_GDR (forgetlab.methods.unlearning), SURE (GA_GDR updating only the salient
rows), and random labels (fine-tuning on the forget sequences with shuffled next-token targets, the language-model form
of randomized forgetting); a small-step arm re-runs chosen gradient methods at a small learning rate
(`small_step_methods` at `small_lr`, named e.g. "NPO_GDR_lr1e-05"), the many-small-steps regime in which the
quantization paper finds 4 bits bring knowledge back. Controls: the original model, and random pruning of FF neurons (a
seeded random ranking, zeroed weights) tuned to the same drop like the others, attacked the same way.

Tuning (validation forget windows only): selective pruning grows the pruned set step by step, gradient methods
take optimizer steps at a fixed learning rate, evaluated every `eval_every` steps until the drop reaches
target - tolerance / 2; an evaluation that jumps over the band is scaled back by bisection between the two last
evaluated iterates (a fraction of the update). Concept and random pruning bisect the number of top-ranked
neurons. Every method's knob value in the results is the one of the model that is attacked (neurons pruned or
masked, optimizer steps).

    python -m forgetlab.papers.forgetting_robustness.experiment run --model smollm2-135m \\
        --out checkpoints/forgetting_robustness/run
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from forgetlab.core import eval as ev
from forgetlab.core import neurons
from forgetlab.core.train import TrainConfig, stack_collate, train
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_list, check_positive_int,
                                  seed_everything, write_json)
from forgetlab.data import load_split
from forgetlab.methods import pruning, quantization, unlearning

METHODS = ("selective_pruning", "concept_pruning", "GA", "GA_GDR", "NPO_GDR", "SURE", "random_labels")
CONTROLS = ("original", "random_pruning")
GRADIENT_LOSSES = {"GA": "GA", "GA_GDR": "GA_GDR", "NPO_GDR": "NPO_GDR", "SURE": "GA_GDR"}
RESULTS_FILE = "results.json"


# ================================================================ tuning
def in_band(drop: float, target: float, tolerance: float) -> bool:
    return abs(drop - target) <= tolerance + 1e-9


# ================================================================ data and evaluation
def split_held_out(seqs: dict, n_val: int, n_test: int) -> tuple[list[int], list[int], list[str]]:
    """Indices of validation and test windows among make_sequences' windows of the held-out documents, from
    DISJOINT documents: the first documents in make_sequences' seeded order feed the validation windows until
    there are n_val, every later one the test windows (a document's surplus windows are dropped, never moved to
    the other set). Also each window's id, "<document>/<window within it>"."""
    docs = seqs["doc"].tolist()
    ids = [f"{d}/{docs[:i].count(d)}" for i, d in enumerate(docs)]
    val_docs: set[int] = set()
    for d in dict.fromkeys(docs):  # documents in visiting order
        if sum(x in val_docs for x in docs) >= n_val:
            break
        val_docs.add(d)
    val = [i for i, d in enumerate(docs) if d in val_docs][:n_val]
    test = [i for i, d in enumerate(docs) if d not in val_docs][:n_test]
    return val, test, ids


def _take(seqs: dict, idx: list[int]) -> dict:
    return {k: v[idx] for k, v in seqs.items()}


def load_sets(tokenizer, *, forget: str, retain: str, data_dir: str, seq_len: int, n_train_seqs: int,
              n_eval_seqs: int, max_per_doc: int, test_fraction: float, max_docs: int, batch_size: int,
              seed: int, n_val_seqs: int = 0) -> dict:
    """Full-length token windows: training documents (pruning statistics, unlearning, relearning pool) and
    held-out documents split by document into validation windows (the forget set's n_val_seqs: the only score
    tuning sees) and test windows (n_eval_seqs per corpus: every reported score). sets[role]["ids"] holds the
    window ids of each part; validation and test ids are checked disjoint."""
    from forgetlab.core.tokens import iter_batches, make_sequences
    sets = {}
    for role, corpus in (("forget", forget), ("retain", retain)):
        n_val = n_val_seqs if role == "forget" else 0
        train_docs, test_docs = load_split(corpus, test_fraction, seed, data_dir, max_docs=max_docs)
        tr = make_sequences(tokenizer, train_docs, seq_len, n_train_seqs, max_per_doc=max_per_doc,
                            min_len=seq_len, seed=seed)
        held = make_sequences(tokenizer, test_docs, seq_len, n_val + n_eval_seqs + 2 * max_per_doc,
                              max_per_doc=max_per_doc, min_len=seq_len, seed=seed)
        val_idx, test_idx, ids = split_held_out(held, n_val, n_eval_seqs)
        for name, got, want, param in (("train", len(tr["input_ids"]), n_train_seqs, "n_train_seqs"),
                                       ("validation", len(val_idx), n_val, "n_val_seqs"),
                                       ("test", len(test_idx), n_eval_seqs, "n_eval_seqs")):
            if got < want:
                raise ValueError(f"corpus {corpus!r} has only {got} {name} windows of {seq_len} tokens (wanted "
                                 f"{want}): lower parameter {param!r} or 'seq_len'")
        part = {"val": [ids[i] for i in val_idx], "test": [ids[i] for i in test_idx]}
        if set(part["val"]) & set(part["test"]) or {held["doc"][i].item() for i in val_idx} & \
                {held["doc"][i].item() for i in test_idx}:
            raise AssertionError(f"{corpus!r}: validation and test windows share a document")
        sets[role] = {"corpus": corpus, "train": tr, "test": list(iter_batches(_take(held, test_idx), batch_size)),
                      "val": list(iter_batches(_take(held, val_idx), batch_size)) if val_idx else [],
                      "stat_batches": list(iter_batches(tr, batch_size)), "ids": part}
    return sets


def sequence_items(seqs: dict, n: int | None = None) -> list[dict]:
    """Training items (input_ids, attention_mask) of the first n windows."""
    n = len(seqs["input_ids"]) if n is None else n
    return [{"input_ids": seqs["input_ids"][i], "attention_mask": seqs["attention_mask"][i]} for i in range(n)]


def tuning_top1(model, sets: dict) -> float:
    """Forget top-1 on the VALIDATION windows: the only score the tuning of a method's strength sees."""
    if not sets["forget"]["val"]:
        raise ValueError("no validation windows: parameter 'n_val_seqs' must be positive to tune a method")
    return ev.summarize_counts(ev.token_counts(model, sets["forget"]["val"], desc=None))["top1"]


def evaluate(model, sets: dict) -> dict:
    """Per-sequence top-1 hits and token counts on the TEST forget and retain windows, and accuracies."""
    out = {}
    for role in ("forget", "retain"):
        counts = ev.token_counts(model, sets[role]["test"], desc=None)
        out[role] = {"top1": ev.summarize_counts(counts)["top1"], "hits": counts["top1"].long().tolist(),
                     "n": counts["n"].long().tolist()}
    return out


# ================================================================ removal: pruning
def zero_pruned_columns_(model, pruned: torch.Tensor, kind: str = "ff") -> None:
    """Bake a pruned set into the weights: zero the input columns of each layer's output projection."""
    for layer, module in enumerate(neurons.neuron_modules(model, kind)):
        idx = pruned[layer].nonzero().flatten()
        if len(idx):
            neurons.zero_input_neurons_(module, idx)


def remove_selective_pruning(model, sets: dict, *, acc_original: float, target: float, tolerance: float,
                             step_frac: float, eps: float, max_steps: int) -> dict:
    """Iterative selective pruning of FF neurons (I_abs) until the validation forget drop reaches the band; then
    the pruned columns are zeroed in the weights and the hooks removed. Knob: the number of pruned neurons."""
    cfg = pruning.PruneConfig(ff_frac=step_frac, attn_frac=0.0, scoring="abs", eps_ff=eps)
    pruner = pruning.Pruner(model, kinds=("ff",))
    history = [{"knob": 0, "drop": 0.0}]
    for _ in tqdm(range(max_steps), desc="selective pruning", leave=False):
        pruner.step(sets["forget"]["stat_batches"], sets["retain"]["stat_batches"], cfg)
        drop = acc_original - tuning_top1(model, sets)
        history.append({"knob": int(pruner.pruned["ff"].sum()), "drop": drop})
        if drop >= target - tolerance / 2:
            break
    pruned = pruner.pruned["ff"].clone()
    pruner.remove()
    zero_pruned_columns_(model, pruned)
    return {"history": history, "knob_name": "pruned FF neurons", "knob_value": int(pruned.sum()),
            "pruned": pruned}


def probeless_ff_scores(forget: neurons.NeuronStats, retain: neurons.NeuronStats) -> torch.Tensor:
    """The probeless concept ranking (neurons.probeless, as neuroplasticity ranks its concept) for two concepts,
    |mean on forget - mean on retain|, on the "layer" scale: divided by each layer's pooled standard deviation so
    that layers with large activations do not take every slot."""
    diff = neurons.probeless({"forget": forget.mean, "retain": retain.mean}, "forget")
    pooled = ((forget.var + retain.var) / 2).mean(1, keepdim=True).sqrt().clamp(min=1e-12)
    return (diff / pooled).float()


def bisect_count(drop_at: Callable[[int], float], n_max: int, target: float, tolerance: float,
                 max_evals: int) -> tuple[int, float]:
    """The count k in [0, n_max] whose drop_at(k) is closest to target, by bisection (drop_at is taken to grow
    with k); stops early inside the band, or after checking n_max when even that does not reach it."""
    lo, hi = 0, n_max  # drop(lo) is below the band; drop(hi) is measured first
    best = (hi, drop_at(hi))
    if best[1] < target - tolerance:
        return best  # not reachable within n_max
    for _ in tqdm(range(max_evals - 1), desc="bisection", leave=False):
        if in_band(best[1], target, tolerance) or hi - lo <= 1:
            break
        k = (lo + hi) // 2
        d = drop_at(k)
        if abs(d - target) < abs(best[1] - target):
            best = (k, d)
        lo, hi = (lo, k) if d > target else (k, hi)
    return best


def remove_by_ranking(model, sets: dict, scores: torch.Tensor, *, acc_original: float, target: float,
                      tolerance: float, max_frac: float, max_evals: int) -> dict:
    """Bisect the number k of top-scored FF neurons masked to zero (activation masks) until the validation
    forget drop is in the band; the masks are removed again. Knob: k, the number of neurons masked."""
    history = [{"knob": 0, "drop": 0.0}]

    def drop_at(k):
        with neurons.apply_masks(model, {"ff": (~neurons.top_k_mask(scores, k)).float()}):
            d = acc_original - tuning_top1(model, sets)
        history.append({"knob": k, "drop": d})
        return d

    k, _ = bisect_count(drop_at, round(max_frac * scores.numel()), target, tolerance, max_evals)
    return {"history": sorted(history, key=lambda h: h["knob"]), "knob_value": k,
            "pruned": neurons.top_k_mask(scores, k)}


def remove_concept_pruning(model, sets: dict, **tuning) -> dict:
    """Rank FF neurons once by the probeless score, bisect the number masked (remove_by_ranking); the mask then
    stays on the model during the attacks (a MaskHandle in the result, "handle")."""
    stats_f = neurons.collect_stats(model, sets["forget"]["stat_batches"], ("ff",), desc=None)["ff"]
    stats_r = neurons.collect_stats(model, sets["retain"]["stat_batches"], ("ff",), desc=None)["ff"]
    info = remove_by_ranking(model, sets, probeless_ff_scores(stats_f, stats_r), **tuning)
    info["handle"] = neurons.apply_masks(model, {"ff": (~info["pruned"]).float()})
    return {**info, "knob_name": "masked FF neurons"}


def remove_random_pruning(model, sets: dict, *, seed: int, **tuning) -> dict:
    """Control: FF neurons in a seeded random order (over all layers), as many as bring the validation drop into
    the band (remove_by_ranking), their weight columns then zeroed like selective pruning's."""
    g = torch.Generator().manual_seed(seed)
    info = remove_by_ranking(model, sets, torch.rand(tuple(neurons.n_neurons(model, "ff")), generator=g), **tuning)
    zero_pruned_columns_(model, info["pruned"])
    return {**info, "knob_name": "pruned FF neurons (random)"}


# ================================================================ removal: gradient methods
def random_label_loss(seed: int) -> Callable:
    """Next-token cross-entropy against shuffled targets: each batch's real next tokens permuted at random
    (the forget set's own token distribution, no longer tied to the context)."""
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(model, batch):
        ids, att = batch["input_ids"], batch["attention_mask"]
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1]
        mask = att[:, 1:].bool()
        targets = ids[:, 1:].clone()
        real = targets[mask]
        targets[mask] = real[torch.randperm(len(real), generator=gen)]
        ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        return (ce * mask).sum() / mask.sum()
    return loss_fn


class _Reached(Exception):
    """Raised from train's on_step to stop at the step that reaches the band."""


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def _interpolate_(model, a: dict, b: dict, alpha: float) -> None:
    """Set the parameters to a + alpha (b - a)."""
    for n, p in model.named_parameters():
        p.copy_(a[n] + alpha * (b[n] - a[n]))


@torch.no_grad()
def _restore_(model, params: dict) -> None:
    for n, p in model.named_parameters():
        p.copy_(params[n])


def remove_gradient(model, sets: dict, ref_items: list[dict], *, method: str, acc_original: float, target: float,
                    tolerance: float, lr: float, batch_size: int, max_steps: int, eval_every: int, beta: float,
                    retain_weight: float, weight_decay: float, warmup_steps: int, grad_clip: float,
                    sure_percentile: float, max_bisect: int, seed: int) -> dict:
    """Optimizer steps of an unlearning method (AdamW with `weight_decay` and `warmup_steps` of linear warmup,
    gradients clipped to norm `grad_clip`;
    `retain_weight` weighs a _GDR method's retain term) until the validation forget drop reaches the band
    (evaluated every `eval_every` steps and after the last); an evaluation past the band is scaled back by
    bisection between the two last evaluated iterates. Knob: optimizer steps (fractional after a bisection)."""
    check_choice("method", method, (*GRADIENT_LOSSES, "random_labels"))
    check_positive_int("eval_every", eval_every)
    hook = None
    if method == "random_labels":
        loss_fn = random_label_loss(seed)
    else:
        loss_fn = unlearning.make_loss(GRADIENT_LOSSES[method], beta=beta, retain_weight=retain_weight)
    if method == "SURE":
        forget_loss = unlearning.make_loss("GA")
        batches = [stack_collate(ref_items[i:i + batch_size]) for i in range(0, len(ref_items), batch_size)]
        hook = unlearning.sure_hook(model, forget_loss, batches, percentile=sure_percentile,
                                    recompute_every=0)  # the paper's SURE: the mask of the start
    history = [{"knob": 0, "drop": 0.0}]
    state = {"prev": _params(model), "prev_step": 0}

    def on_step(step, loss):
        if step % eval_every and step < max_steps:
            return
        model.eval()  # train() left the model in train mode: no dropout while measuring (OPT, GPT-2 have it)
        drop = acc_original - tuning_top1(model, sets)
        model.train()
        history.append({"knob": step, "drop": drop, "loss": loss})
        if drop >= target - tolerance / 2:
            raise _Reached
        state["prev"], state["prev_step"] = _params(model), step

    cfg = TrainConfig(lr=lr, epochs=math.ceil(max_steps * batch_size / len(ref_items)), batch_size=batch_size,
                      max_steps=max_steps, weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
                      seed=seed)
    try:
        train(model, ref_items, cfg, loss_fn=loss_fn, grad_hook=hook, on_step=on_step, desc=method)
    except _Reached:
        pass
    model.eval()
    last = history[-1]
    if last["drop"] > target + tolerance:  # scale the last evaluated stretch of updates back
        now, lo, hi = _params(model), 0.0, 1.0
        for _ in range(max_bisect):
            alpha = (lo + hi) / 2
            _interpolate_(model, state["prev"], now, alpha)
            drop = acc_original - tuning_top1(model, sets)
            history.append({"knob": state["prev_step"] + alpha * (last["knob"] - state["prev_step"]), "drop": drop})
            if in_band(drop, target, tolerance):
                break
            lo, hi = (lo, alpha) if drop > target else (alpha, hi)
    return {"history": history, "knob_name": "optimizer steps", "knob_value": history[-1]["knob"], "lr": lr}


# ================================================================ removal methods: one class each, registered by name
@dataclass
class Removal:
    """What every removal method gets: the model (changed in place), its windows, the reference items of the
    gradient methods, the seed, and the band it is tuned to: a validation forget top-1 drop of `target` +-
    `tolerance` below `acc_original`."""
    model: torch.nn.Module
    sets: dict
    ref_items: list
    acc_original: float
    target: float
    tolerance: float
    seed: int

    @property
    def tuning(self) -> dict:
        return dict(acc_original=self.acc_original, target=self.target, tolerance=self.tolerance)


class Remover:
    """A removal method: a dataclass of its hyperparameters, named as the `run` step's flags (no defaults of their
    own: they come from params.yaml through the flags), and `remove(removal)`, which tunes the removal into the
    band and returns (its info: tuning history, knob name and value; a mask handle to remove after the attacks, or
    None). Add one with @register("<name>") and its flags on `run`."""

    def remove(self, r: Removal) -> tuple[dict, neurons.MaskHandle | None]:
        raise NotImplementedError

    @classmethod
    def from_params(cls, name: str, params: dict) -> "Remover":
        return cls(**{f.name: params[f.name] for f in fields(cls)})


REGISTRY: dict[str, type[Remover]] = {}


def register(*names: str) -> Callable[[type[Remover]], type[Remover]]:
    def add(cls):
        REGISTRY.update(dict.fromkeys(names, cls))
        return cls
    return add


@register("selective_pruning")
@dataclass
class SelectivePruning(Remover):
    """Iterative selective pruning of FF neurons, `prune_step` of them per step (remove_selective_pruning)."""
    prune_step: float
    eps_ff: float
    max_prune_steps: int

    def remove(self, r):
        return remove_selective_pruning(r.model, r.sets, **r.tuning, step_frac=self.prune_step, eps=self.eps_ff,
                                        max_steps=self.max_prune_steps), None


@register("concept_pruning")
@dataclass
class ConceptPruning(Remover):
    """Probeless concept neurons masked, their number bisected (remove_concept_pruning); the mask stays on."""
    concept_max_frac: float
    max_evals: int

    def remove(self, r):
        info = remove_concept_pruning(r.model, r.sets, **r.tuning, max_frac=self.concept_max_frac,
                                      max_evals=self.max_evals)
        return info, info.pop("handle")


@register("random_pruning")
@dataclass
class RandomPruning(Remover):
    """The control: FF neurons in a seeded random order, as many as reach the band (remove_random_pruning)."""
    random_max_frac: float
    max_evals: int

    def remove(self, r):
        return remove_random_pruning(r.model, r.sets, seed=r.seed, **r.tuning, max_frac=self.random_max_frac,
                                     max_evals=self.max_evals), None


@register(*GRADIENT_LOSSES, "random_labels")
@dataclass
class Gradient(Remover):
    """Optimizer steps of an unlearning loss (its registered name: GA, GA_GDR, NPO_GDR, SURE, random labels) until
    the band, evaluated every `eval_every` steps (remove_gradient); `method` is not a flag but the name (the
    small-step arm replaces lr, max_unlearn_steps and eval_every with its own)."""
    method: str
    lr: float
    max_unlearn_steps: int
    unlearn_batch_size: int
    beta: float
    retain_weight: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    sure_percentile: float
    max_evals: int
    eval_every: int

    @classmethod
    def from_params(cls, name, params):
        return cls(method=name, **{f.name: params[f.name] for f in fields(cls) if f.name != "method"})

    def remove(self, r):
        return remove_gradient(r.model, r.sets, r.ref_items, method=self.method, **r.tuning, lr=self.lr,
                               batch_size=self.unlearn_batch_size, max_steps=self.max_unlearn_steps,
                               eval_every=self.eval_every, beta=self.beta, retain_weight=self.retain_weight,
                               weight_decay=self.weight_decay, warmup_steps=self.warmup_steps, grad_clip=self.grad_clip,
                               sure_percentile=self.sure_percentile, max_bisect=self.max_evals, seed=r.seed), None


def make_remover(name: str, params: dict) -> Remover:
    """The registered removal method `name` with its hyperparameters from `params` (the `run` step's flags)."""
    check_choice("method", name, tuple(REGISTRY))
    return REGISTRY[name].from_params(name, params)


# ================================================================ attacks
def relearn(model, items: list[dict], k: int, *, lr: float, epochs: int, batch_size: int, weight_decay: float,
            warmup_steps: int, grad_clip: float, seed: int) -> list[float]:
    """Fine-tune on the first k items (next-token loss; AdamW with `weight_decay` and `warmup_steps` of linear
    warmup, gradients clipped to norm `grad_clip`); k = 0 leaves the model untouched."""
    check_positive_int("k", k, allow_zero=True)
    if k > len(items):
        raise ValueError(f"relearning k = {k} is more than the {len(items)} forget training windows")
    if k == 0:
        return []
    loss = lambda m, b: unlearning.mean_ce(m, b["input_ids"], b["attention_mask"])  # noqa: E731
    return train(model, items[:k], TrainConfig(lr=lr, epochs=epochs, batch_size=min(batch_size, k), seed=seed,
                                               weight_decay=weight_decay, warmup_steps=warmup_steps,
                                               grad_clip=grad_clip), loss_fn=loss, desc=None)


def attack_grid(model, sets: dict, items: list[dict], *, ks: list[int], precisions: list[str], lr: float,
                epochs: int, batch_size: int, weight_decay: float, warmup_steps: int, grad_clip: float, seed: int,
                quantized_ks: list[int] | None = None,
                desc: str | None = None) -> dict:
    """Every (k, precision) attack of a removed model: relearn on k windows (from the removed weights each
    time), then evaluate at full precision and under each quantization (only for the k in `quantized_ks`, when
    given). Keys "k=8|nf4", "k=0|full"... `desc` shows a progress bar over the attacks."""
    start = _params(model)
    out = {}
    quant_at = set(ks if quantized_ks is None else quantized_ks)
    with tqdm(total=sum(1 + len(precisions) * (k in quant_at) for k in ks), desc=desc, disable=desc is None) as bar:
        for k in ks:
            _restore_(model, start)  # back to the removed weights
            relearn(model, items, k, lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                    warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed)
            for prec in ("full", *(precisions if k in quant_at else ())):
                bar.set_postfix_str(f"k={k}|{prec}")
                with quantization.quantized(model, prec):
                    out[f"k={k}|{prec}"] = evaluate(model, sets)
                bar.update(1)
    _restore_(model, start)
    return out


# ================================================================ the stage
def small_step_name(method: str, lr: float) -> str:
    """The small-step arm's name of a gradient method, e.g. "NPO_GDR_lr1e-05"."""
    return f"{method}_lr{lr:g}"


def run(model: str = "smollm2-135m", data_dir: str = "data", forget: str = "code", retain: str = "text",
        seq_len: int = 64, n_train_seqs: int = 32, n_val_seqs: int = 24, n_eval_seqs: int = 64,
        max_per_doc: int = 2, test_fraction: float = 0.3, max_docs: int = 20000, batch_size: int = 8,
        methods: list[str] = METHODS, target: float = 0.15, tolerance: float = 0.02, prune_step: float = 0.004,
        eps_ff: float = 0.001, max_prune_steps: int = 20, concept_max_frac: float = 0.2,
        random_max_frac: float = 0.5, max_evals: int = 10, lr: float = 1e-4, unlearn_batch_size: int = 4,
        max_unlearn_steps: int = 40, eval_every: int = 1, beta: float = 0.1, retain_weight: float = 1.0,
        weight_decay: float = 0.0, warmup_steps: int = 0, grad_clip: float = 1.0, sure_percentile: float = 90.0,
        small_step_methods: list[str] = ("NPO_GDR",), small_lr: float = 1e-5, small_max_steps: int = 100,
        small_eval_every: int = 5, relearn_ks: list[int] = (0, 8, 32), relearn_lr: float = 1e-4,
        relearn_epochs: int = 2, relearn_batch_size: int = 4, precisions: list[str] = ("nf4",),
        quantized_ks: list[int] = (0,), seed: int = 0,
        out: str = "checkpoints/forgetting_robustness/run", device: str = "auto") -> dict:
    """Remove the forget capability with every method, tuned to the same drop on validation windows, and attack
    each result (scored on test windows). `small_step_methods`: gradient methods re-run at `small_lr` ([]: no
    small-step arm). device: where the model is pruned, unlearned, attacked and scored
    (models.resolve_device). Each removal method's hyperparameters are the flags its class names (make_remover)."""
    params = dict(locals())  # the flags, named as in params.yaml
    from forgetlab.core.models import load_lm, resolve_device
    device = resolve_device(device)
    meths = [check_choice("methods", m, METHODS) for m in check_list("methods", methods, str)]
    small = [check_choice("small_step_methods", m, tuple(GRADIENT_LOSSES))
             for m in check_list("small_step_methods", small_step_methods, str)]
    ks = [check_positive_int("relearn_ks", k, allow_zero=True) for k in check_list("relearn_ks", relearn_ks, int)]
    if 0 not in ks:
        raise ValueError(f"parameter 'relearn_ks' must include 0 (the removed model itself), got {relearn_ks!r}")
    precs = check_list("precisions", precisions, str)
    for p in precs:
        quantization.parse_precision(p)
    qks = check_list("quantized_ks", quantized_ks, int)
    if not set(qks) <= set(ks) or 0 not in qks:
        raise ValueError(f"parameter 'quantized_ks' must include 0 and be among relearn_ks {ks}, got {quantized_ks!r}")
    for name, v in (("target", target), ("tolerance", tolerance), ("prune_step", prune_step),
                    ("concept_max_frac", concept_max_frac), ("random_max_frac", random_max_frac),
                    ("test_fraction", test_fraction), ("lr", lr), ("small_lr", small_lr)):
        check_fraction(name, v)
    for name, v in (("n_val_seqs", n_val_seqs), ("n_eval_seqs", n_eval_seqs), ("small_max_steps", small_max_steps),
                    ("small_eval_every", small_eval_every), ("max_unlearn_steps", max_unlearn_steps),
                    ("eval_every", eval_every)):
        check_positive_int(name, v)
    if max(ks) > n_train_seqs:
        raise ValueError(f"parameter 'relearn_ks' asks for {max(ks)} windows, more than n_train_seqs = "
                         f"{n_train_seqs}")
    t_start = time.perf_counter()
    seed_everything(seed)
    lm, tok = load_lm(model, data_dir=data_dir, device=device)
    sets = load_sets(tok, forget=forget, retain=retain, data_dir=data_dir, seq_len=seq_len,
                     n_train_seqs=n_train_seqs, n_val_seqs=n_val_seqs, n_eval_seqs=n_eval_seqs,
                     max_per_doc=max_per_doc, test_fraction=test_fraction, max_docs=max_docs,
                     batch_size=batch_size, seed=seed)
    forget_items = sequence_items(sets["forget"]["train"])
    ref_items = unlearning.unlearning_items(
        lm, [{"ids": it["input_ids"].tolist()} for it in forget_items],
        [{"ids": it["input_ids"].tolist()} for it in sequence_items(sets["retain"]["train"])])
    original = _params(lm)
    base = evaluate(lm, sets)
    acc0 = tuning_top1(lm, sets)  # the tuning's reference: the original on the validation windows
    attack = dict(ks=ks, precisions=precs, quantized_ks=qks, lr=relearn_lr, epochs=relearn_epochs,
                  batch_size=relearn_batch_size, weight_decay=weight_decay, warmup_steps=warmup_steps,
                  grad_clip=grad_clip, seed=seed)
    removal = Removal(lm, sets, ref_items, acc_original=acc0, target=target, tolerance=tolerance, seed=seed)
    # (arm name, method name, remover): the original, every method, the small-step arms, the random control
    plan = [("original", None, None), *((m, m, make_remover(m, params)) for m in meths),
            *((small_step_name(m, small_lr), m, replace(make_remover(m, params), lr=small_lr,
                                                        max_unlearn_steps=small_max_steps, eval_every=small_eval_every))
              for m in small),
            ("random_pruning", "random_pruning", make_remover("random_pruning", params))]
    results = {"base": base, "base_val_top1": acc0, "ids": {r: sets[r]["ids"] for r in ("forget", "retain")},
               "methods": {}, "attacks": {}}
    for name, method, remover in tqdm(plan, desc="methods"):
        t0 = time.perf_counter()
        _restore_(lm, original)
        seed_everything(seed)
        info, handle = {"history": [], "knob_name": "", "knob_value": 0}, None  # the original model
        if remover is not None:
            info, handle = remover.remove(removal)
        info.pop("pruned", None)
        val_drop = acc0 - tuning_top1(lm, sets)
        info["removal_s"] = time.perf_counter() - t0
        grid = attack_grid(lm, sets, forget_items, **attack)
        if handle is not None:
            handle.remove()
        removed = grid["k=0|full"]
        drop = base["forget"]["top1"] - removed["forget"]["top1"]
        info.update(method=method or name, val_drop=val_drop, in_band_val=in_band(val_drop, target, tolerance),
                    drop=drop, retain_drop=base["retain"]["top1"] - removed["retain"]["top1"],
                    in_band=in_band(drop, target, tolerance), time_s=time.perf_counter() - t0)
        results["methods"][name] = info
        results["attacks"][name] = grid
    results["config"] = {"forget": forget, "retain": retain, "target": target, "tolerance": tolerance, "ks": ks,
                         "precisions": precs, "quantized_ks": qks, "model": model, "lr": lr, "small_lr": small_lr,
                         "small_step_methods": small, "n_val_seqs": n_val_seqs, "n_eval_seqs": n_eval_seqs}
    # timings and the thread count live here, never in metrics/ (trained results depend on the thread count)
    results["run"] = {"torch_threads": torch.get_num_threads(), "time_s": time.perf_counter() - t_start}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_json(tmp / RESULTS_FILE, results)
    return results


def load_results(path: str | Path) -> dict:
    import json
    f = Path(path) / RESULTS_FILE
    if not f.exists():
        raise FileNotFoundError(f"{f} not found: run `dvc repro forgetting_robustness_run` first")
    return json.loads(f.read_text())


# the checkpoint step of dvc.yaml: `python -m forgetlab.papers.forgetting_robustness.experiment <step> --flag value ...`
STEPS = (run,)

if __name__ == "__main__":
    from forgetlab.repro.cli import run as cli_run
    cli_run(list(STEPS), description=__doc__.splitlines()[0])
