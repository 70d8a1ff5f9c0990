"""How robust is each kind of forgetting? One benchmark over the methods of the other notebooks (notebook 06).

Remove one capability (forget set: code; retain set: prose) with every removal method the repository implements,
each tuned to the same forget top-1 drop (`target` +- `tolerance`), then attack the result:

* relearning: fine-tune on k forget sequences (k = 0 is no attack);
* quantization: 4-bit weights (bitsandbytes nf4, round-to-nearest), simulated exactly by forgetlab.quantization;
* both: relearn, then quantize.

    recovery share = (acc_attacked - acc_removed) / (acc_original - acc_removed)   on the forget set,

0 when the attack brings nothing back, 1 when it brings the whole removed accuracy back (it can exceed 1).

Methods (all from src): selective pruning (forgetlab.pruning, FF neurons, I_abs; the pruned columns of the down
projections are zeroed in the weights, so the released model is a plain checkpoint that fine-tuning can move
again), concept pruning (the probeless ranking of forgetlab.neuroplasticity on FF activations; the pruned units
are held at zero by activation masks that stay in place during relearning, as in the neuroplasticity paper),
GA, GA_GDR, NPO_GDR (forgetlab.unlearning), SURE (GA_GDR updating only the salient rows), and random labels
(fine-tuning on the forget sequences with shuffled next-token targets, the language-model form of
randomized forgetting). Controls: the original model and a random pruning of as many FF neurons as selective
pruning removed (zeroed weights), attacked the same way.

Tuning (on the held-out forget windows that the attacks are scored on: the drop is a matched strength, not an
estimate): selective pruning grows the pruned set step by step, gradient methods take optimizer steps at a fixed
learning rate, each evaluated after every step until the drop reaches target - tolerance / 2; a gradient step that
jumps over the band is scaled back by bisection between the two last iterates (a fraction of the update).
Concept pruning bisects the number of top-ranked neurons.

    python -m forgetlab.robustness run --model smollm2-135m --out checkpoints/forgetting_robustness/run
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import eval as ev
from . import neurons, pruning, quantization, unlearning
from .data import load_split
from .train import TrainConfig, stack_collate, train
from .utils import (atomic_path, check_choice, check_fraction, check_positive_int, parse_list, seed_everything,
                    write_json)

METHODS = ("selective_pruning", "concept_pruning", "GA", "GA_GDR", "NPO_GDR", "SURE", "random_labels")
CONTROLS = ("original", "random_pruning")
GRADIENT_LOSSES = {"GA": "GA", "GA_GDR": "GA_GDR", "NPO_GDR": "NPO_GDR", "SURE": "GA_GDR"}
RESULTS_FILE = "results.json"


# ================================================================ the measure
def recovery_share(acc_attacked: float, acc_removed: float, acc_original: float) -> float:
    """Share of the removed accuracy that an attack brings back; NaN when nothing was removed."""
    gap = acc_original - acc_removed
    if gap <= 0:
        return float("nan")
    return (acc_attacked - acc_removed) / gap


def bootstrap_recovery_share(original, removed, attacked, n, *, n_boot: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of recovery_share, resampling test sequences (the three models are scored on the same
    sequences: per-sequence top-1 hits `original`, `removed`, `attacked` out of `n` tokens)."""
    o, r, a, n = (np.asarray(x, dtype=float) for x in (original, removed, attacked, n))
    idx = np.random.default_rng(seed).integers(0, len(n), size=(n_boot, len(n)))
    den = np.maximum(n[idx].sum(1), 1e-12)
    acc = {k: v[idx].sum(1) / den for k, v in (("o", o), ("r", r), ("a", a))}
    gap = acc["o"] - acc["r"]
    share = np.where(gap > 0, (acc["a"] - acc["r"]) / np.where(gap > 0, gap, 1.0), np.nan)
    if np.isnan(share).all():
        return float("nan"), float("nan")
    return float(np.nanquantile(share, alpha / 2)), float(np.nanquantile(share, 1 - alpha / 2))


def in_band(drop: float, target: float, tolerance: float) -> bool:
    return abs(drop - target) <= tolerance + 1e-9


# ================================================================ data and evaluation
def load_sets(tokenizer, *, forget: str, retain: str, data_dir: str, seq_len: int, n_train_seqs: int,
              n_eval_seqs: int, max_per_doc: int, test_fraction: float, max_docs: int, batch_size: int,
              seed: int) -> dict:
    """Full-length token windows: training documents (pruning statistics, unlearning, relearning) and held-out
    documents (evaluation) of the forget and retain corpora."""
    from .tokens import iter_batches, make_sequences
    sets = {}
    for role, corpus in (("forget", forget), ("retain", retain)):
        train_docs, test_docs = load_split(corpus, test_fraction, seed, data_dir, max_docs=max_docs)
        tr = make_sequences(tokenizer, train_docs, seq_len, n_train_seqs, max_per_doc=max_per_doc,
                            min_len=seq_len, seed=seed)
        te = make_sequences(tokenizer, test_docs, seq_len, n_eval_seqs, max_per_doc=max_per_doc,
                            min_len=seq_len, seed=seed)
        for name, s, want in (("train", tr, n_train_seqs), ("test", te, n_eval_seqs)):
            if len(s["input_ids"]) < want:
                raise ValueError(f"corpus {corpus!r} has only {len(s['input_ids'])} {name} windows of {seq_len} "
                                 f"tokens (wanted {want}): lower n_train_seqs/n_eval_seqs or seq_len")
        sets[role] = {"corpus": corpus, "train": tr, "test": list(iter_batches(te, batch_size)),
                      "stat_batches": list(iter_batches(tr, batch_size))}
    return sets


def sequence_items(seqs: dict, n: int | None = None) -> list[dict]:
    """Training items (input_ids, attention_mask) of the first n windows."""
    n = len(seqs["input_ids"]) if n is None else n
    return [{"input_ids": seqs["input_ids"][i], "attention_mask": seqs["attention_mask"][i]} for i in range(n)]


def forget_top1(model, sets: dict) -> float:
    return ev.summarize(ev.token_counts(model, sets["forget"]["test"], desc=None))["top1"]


def evaluate(model, sets: dict) -> dict:
    """Per-sequence top-1 hits and token counts on the held-out forget and retain windows, and accuracies."""
    out = {}
    for role in ("forget", "retain"):
        counts = ev.token_counts(model, sets[role]["test"], desc=None)
        out[role] = {"top1": ev.summarize(counts)["top1"], "hits": counts["top1"].long().tolist(),
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
    """Iterative selective pruning of FF neurons (I_abs) until the forget drop reaches the band; then the pruned
    columns are zeroed in the weights and the hooks removed."""
    cfg = pruning.PruneConfig(ff_frac=step_frac, attn_frac=0.0, scoring="abs", eps_ff=eps)
    pruner = pruning.Pruner(model, kinds=("ff",))
    history = [{"knob": 0.0, "drop": 0.0}]
    for _ in tqdm(range(max_steps), desc="selective pruning", leave=False):
        pruner.step(sets["forget"]["stat_batches"], sets["retain"]["stat_batches"], cfg)
        drop = acc_original - forget_top1(model, sets)
        history.append({"knob": pruner.fraction("ff"), "drop": drop})
        if drop >= target - tolerance / 2:
            break
    pruned = pruner.pruned["ff"].clone()
    pruner.remove()
    zero_pruned_columns_(model, pruned)
    return {"history": history, "knob_name": "pruned FF fraction", "pruned": pruned}


def probeless_ff_scores(forget: neurons.NeuronStats, retain: neurons.NeuronStats) -> torch.Tensor:
    """The probeless concept ranking (Antverg & Belinkov; forgetlab.neuroplasticity.probeless_scores) for two
    concepts, |mean on forget - mean on retain|, on the "layer" scale: divided by each layer's pooled standard
    deviation so that layers with large activations do not take every slot."""
    diff = (forget.mean - retain.mean).abs()
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


def remove_concept_pruning(model, sets: dict, *, acc_original: float, target: float, tolerance: float,
                           max_frac: float, max_evals: int) -> dict:
    """Rank FF neurons once by the probeless score, then bisect the number k of top neurons masked to zero until
    the forget drop is in the band. The mask stays on the model (a MaskHandle in the result)."""
    from .neuroplasticity import top_k_mask
    stats_f = neurons.collect_stats(model, sets["forget"]["stat_batches"], ("ff",), desc=None)["ff"]
    stats_r = neurons.collect_stats(model, sets["retain"]["stat_batches"], ("ff",), desc=None)["ff"]
    scores = probeless_ff_scores(stats_f, stats_r)
    history = [{"knob": 0.0, "drop": 0.0}]

    def drop_at(k):
        with neurons.apply_masks(model, {"ff": (~top_k_mask(scores, k)).float()}):
            d = acc_original - forget_top1(model, sets)
        history.append({"knob": k / scores.numel(), "drop": d})
        return d

    k, _ = bisect_count(drop_at, round(max_frac * scores.numel()), target, tolerance, max_evals)
    pruned = top_k_mask(scores, k)
    handle = neurons.apply_masks(model, {"ff": (~pruned).float()})
    return {"history": sorted(history, key=lambda h: h["knob"]), "knob_name": "masked FF fraction",
            "pruned": pruned, "handle": handle}


def random_pruning_(model, n_pruned: int, seed: int) -> torch.Tensor:
    """Control: zero the weight columns of n_pruned FF neurons drawn uniformly over all layers."""
    from .neuroplasticity import random_mask
    pruned = random_mask(neurons.n_neurons(model, "ff"), n_pruned, seed)
    zero_pruned_columns_(model, pruned)
    return pruned


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
                    tolerance: float, lr: float, batch_size: int, max_steps: int, beta: float,
                    sure_percentile: float, max_bisect: int, seed: int) -> dict:
    """Optimizer steps of an unlearning method until the forget drop reaches the band (evaluated after every
    step); an overshooting last step is scaled back by bisection between the two last iterates."""
    check_choice("method", method, (*GRADIENT_LOSSES, "random_labels"))
    hook = None
    if method == "random_labels":
        loss_fn = random_label_loss(seed)
    else:
        loss_fn = unlearning.make_loss(GRADIENT_LOSSES[method], beta=beta)
    if method == "SURE":
        forget_loss = unlearning.make_loss("GA")
        batches = [stack_collate(ref_items[i:i + batch_size]) for i in range(0, len(ref_items), batch_size)]
        hook = unlearning.mask_hook(unlearning.saliency_mask(
            unlearning.row_saliency(model, forget_loss, batches), sure_percentile))
    history = [{"knob": 0, "drop": 0.0}]
    state = {"prev": _params(model)}

    def on_step(step, loss):
        model.eval()  # train() left the model in train mode: no dropout while measuring (OPT, GPT-2 have it)
        drop = acc_original - forget_top1(model, sets)
        model.train()
        history.append({"knob": step, "drop": drop, "loss": loss})
        if drop >= target - tolerance / 2:
            raise _Reached
        state["prev"] = _params(model)

    cfg = TrainConfig(lr=lr, epochs=math.ceil(max_steps * batch_size / len(ref_items)), batch_size=batch_size,
                      max_steps=max_steps, weight_decay=0.0, grad_clip=1.0, seed=seed)
    try:
        train(model, ref_items, cfg, loss_fn=loss_fn, grad_hook=hook, on_step=on_step, desc=method)
    except _Reached:
        pass
    model.eval()
    last = history[-1]
    if last["drop"] > target + tolerance:  # scale the last update back
        now, lo, hi = _params(model), 0.0, 1.0
        for _ in range(max_bisect):
            alpha = (lo + hi) / 2
            _interpolate_(model, state["prev"], now, alpha)
            drop = acc_original - forget_top1(model, sets)
            history.append({"knob": last["knob"] - 1 + alpha, "drop": drop})
            if in_band(drop, target, tolerance):
                break
            lo, hi = (lo, alpha) if drop > target else (alpha, hi)
    return {"history": history, "knob_name": "optimizer steps"}


# ================================================================ attacks
def relearn(model, items: list[dict], k: int, *, lr: float, epochs: int, batch_size: int, seed: int) -> list[float]:
    """Fine-tune on the first k items (next-token loss); k = 0 leaves the model untouched."""
    check_positive_int("k", k, allow_zero=True)
    if k > len(items):
        raise ValueError(f"relearning k = {k} is more than the {len(items)} forget training windows")
    if k == 0:
        return []
    loss = lambda m, b: unlearning.mean_ce(m, b["input_ids"], b["attention_mask"])  # noqa: E731
    return train(model, items[:k], TrainConfig(lr=lr, epochs=epochs, batch_size=min(batch_size, k), seed=seed,
                                               weight_decay=0.0, grad_clip=1.0), loss_fn=loss, desc=None)


def attack_grid(model, sets: dict, items: list[dict], *, ks: list[int], precisions: list[str], lr: float,
                epochs: int, batch_size: int, seed: int, desc: str | None = None) -> dict:
    """Every (k, precision) attack of a removed model: relearn on k windows (from the removed weights each
    time), then evaluate at full precision and under each quantization. Keys "k=8|nf4", "k=0|full"...
    `desc` shows a progress bar over the attacks."""
    start = _params(model)
    out = {}
    with tqdm(total=len(ks) * (1 + len(precisions)), desc=desc, disable=desc is None) as bar:
        for k in ks:
            _restore_(model, start)  # back to the removed weights
            relearn(model, items, k, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
            for prec in ("full", *precisions):
                bar.set_postfix_str(f"k={k}|{prec}")
                with quantization.quantized(model, prec):
                    out[f"k={k}|{prec}"] = evaluate(model, sets)
                bar.update(1)
    _restore_(model, start)
    return out


# ================================================================ the stage
def run(model: str = "smollm2-135m", data_dir: str = "data", forget: str = "code", retain: str = "text",
        seq_len: int = 64, n_train_seqs: int = 32, n_eval_seqs: int = 16, max_per_doc: int = 2,
        test_fraction: float = 0.3, max_docs: int = 20000, batch_size: int = 8, methods: str = ",".join(METHODS),
        target: float = 0.15, tolerance: float = 0.02, prune_step: float = 0.004, eps_ff: float = 0.001,
        max_prune_steps: int = 20, concept_max_frac: float = 0.2, max_evals: int = 10, lr: float = 1e-4,
        unlearn_batch_size: int = 4, max_unlearn_steps: int = 40, beta: float = 0.1,
        sure_percentile: float = 90.0, relearn_ks: str = "0,8,32", relearn_lr: float = 1e-4,
        relearn_epochs: int = 2, relearn_batch_size: int = 4, precisions: str = "nf4,rtn4", seed: int = 0,
        out: str = "checkpoints/forgetting_robustness/run") -> dict:
    """Remove the forget capability with every method, tuned to the same drop, and attack each result."""
    from .models import load_lm
    meths = parse_list("methods", methods)
    for m in meths:
        check_choice("methods", m, METHODS)
    ks = parse_list("relearn_ks", relearn_ks, int)
    for k in ks:
        check_positive_int("relearn_ks", k, allow_zero=True)
    if 0 not in ks:
        raise ValueError(f"parameter 'relearn_ks' must include 0 (the removed model itself), got {relearn_ks!r}")
    precs = parse_list("precisions", precisions)
    for p in precs:
        quantization.parse_precision(p)
    for name, v in (("target", target), ("tolerance", tolerance), ("prune_step", prune_step),
                    ("concept_max_frac", concept_max_frac), ("test_fraction", test_fraction)):
        check_fraction(name, v)
    if max(ks) > n_train_seqs:
        raise ValueError(f"parameter 'relearn_ks' asks for {max(ks)} windows, more than n_train_seqs = "
                         f"{n_train_seqs}")
    t_start = time.perf_counter()
    seed_everything(seed)
    lm, tok = load_lm(model, data_dir=data_dir)
    sets = load_sets(tok, forget=forget, retain=retain, data_dir=data_dir, seq_len=seq_len,
                     n_train_seqs=n_train_seqs, n_eval_seqs=n_eval_seqs, max_per_doc=max_per_doc,
                     test_fraction=test_fraction, max_docs=max_docs, batch_size=batch_size, seed=seed)
    forget_items = sequence_items(sets["forget"]["train"])
    ref_items = unlearning.unlearning_items(
        lm, [{"ids": it["input_ids"].tolist()} for it in forget_items],
        [{"ids": it["input_ids"].tolist()} for it in sequence_items(sets["retain"]["train"])])
    original = _params(lm)
    base = evaluate(lm, sets)
    acc0 = base["forget"]["top1"]
    attack = dict(ks=ks, precisions=precs, lr=relearn_lr, epochs=relearn_epochs, batch_size=relearn_batch_size,
                  seed=seed)
    results = {"base": base, "methods": {}, "attacks": {}}
    n_sp = None
    for name in tqdm([*CONTROLS[:1], *meths, *CONTROLS[1:]], desc="methods"):
        t0 = time.perf_counter()
        _restore_(lm, original)
        seed_everything(seed)
        info, handle = {"history": [], "knob_name": ""}, None
        if name == "selective_pruning":
            info = remove_selective_pruning(lm, sets, acc_original=acc0, target=target, tolerance=tolerance,
                                            step_frac=prune_step, eps=eps_ff, max_steps=max_prune_steps)
            n_sp = int(info.pop("pruned").sum())
        elif name == "concept_pruning":
            info = remove_concept_pruning(lm, sets, acc_original=acc0, target=target, tolerance=tolerance,
                                          max_frac=concept_max_frac, max_evals=max_evals)
            info["n_pruned"] = int(info.pop("pruned").sum())
            handle = info.pop("handle")
        elif name == "random_pruning":
            if n_sp is None:
                continue  # the control matches selective pruning's count
            random_pruning_(lm, n_sp, seed)
            info["n_pruned"] = n_sp
        elif name != "original":
            info = remove_gradient(lm, sets, ref_items, method=name, acc_original=acc0, target=target,
                                   tolerance=tolerance, lr=lr, batch_size=unlearn_batch_size,
                                   max_steps=max_unlearn_steps, beta=beta, sure_percentile=sure_percentile,
                                   max_bisect=max_evals, seed=seed)
        info["removal_s"] = time.perf_counter() - t0
        grid = attack_grid(lm, sets, forget_items, **attack)
        if handle is not None:
            handle.remove()
        removed = grid["k=0|full"]
        drop = acc0 - removed["forget"]["top1"]
        info.update(drop=drop, retain_drop=base["retain"]["top1"] - removed["retain"]["top1"],
                    in_band=in_band(drop, target, tolerance), time_s=time.perf_counter() - t0)
        results["methods"][name] = info
        results["attacks"][name] = grid
    results["config"] = {"forget": forget, "retain": retain, "target": target, "tolerance": tolerance, "ks": ks,
                         "precisions": precs, "model": model}
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


if __name__ == "__main__":
    from .cli import run as cli_run
    cli_run([run], description=__doc__.splitlines()[0])
