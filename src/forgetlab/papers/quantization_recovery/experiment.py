"""The quantization-recovery checkpoints (Zhang et al., arXiv 2410.16454): the target and retrain models, and
the unlearning runs with the losses of `forgetlab.methods.unlearning`, scored after every epoch at every
precision.

Unlearning runs one optimizer (and one schedule) across all epochs, as MUSE's code does, and evaluates after every
epoch: forget VerbMem at full precision and at every 4-bit precision of `epoch_precisions`, the retain passages'
VerbMem at full precision (the utility), and the share of weights whose 4-bit code differs from the target's.
Selection (`select_epoch`): the first epoch whose full-precision forget VerbMem is at or below the retrain model's
plus `tolerance`, or whose utility falls below `utility_share` of the target's, whichever comes first; else the
last epoch. (MUSE's rule, "the first epoch whose retain KnowMem falls below the retrain model's", cannot work at
this scale: the target's own retain KnowMem is below the retrain model's, so it fired after the first epoch.)
Training stops at the selected epoch plus `extra_epochs` (more of the curve past it).

Arms: `dtype="bfloat16"` unlearns in bf16 end to end (weights, gradients, AdamW states), as the official code
does: a 1e-5 step below half a bf16 spacing leaves a weight unchanged. `embedding_control` also evaluates every
epoch with the target's embedding matrix (tied to the output head, never quantized by bitsandbytes) put back
before quantizing, which measures how much forgetting lives in that matrix.

Stages (`python -m forgetlab.papers.quantization_recovery.experiment <step> ...`):
    fine-tune  --role target (forget + retain passages) -> the target;   --role retrain (retain only) -> the retrain
               model
    unlearn    --methods GA NPO_KLR ... --lrs ... -> per-run raw evaluation outputs at every precision (+ kept
               checkpoints), since 540 MB per SmolLM2 checkpoint x tens of runs would not fit.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from forgetlab.core.train import TrainConfig, stack_collate, train
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_list, check_positive_int,
                                  seed_everything, write_json)
from forgetlab.methods import muse
from forgetlab.methods.unlearning import KLR_VARIANTS, METHODS, REGISTRY, make_loss, sure_hook, unlearning_items

SPLIT_FILE = "split.json"
RESULTS_FILE = "results.json"


# ================================================================ runs
def split_from_args(data_dir: str, source: str, n_forget: int, n_retain: int, n_holdout: int, seq_len: int,
                    qa_per_passage: int, n_shots: int, seed: int, tokenizer):
    if source.startswith("hf:"):
        return muse.load_muse_news(source[3:], tokenizer, n_forget=n_forget, n_retain=n_retain,
                                   n_holdout=n_holdout, seq_len=seq_len, n_shots=n_shots)
    return muse.news_split(tokenizer, n_forget=n_forget, n_retain=n_retain, n_holdout=n_holdout,
                           seq_len=seq_len, qa_per_passage=qa_per_passage, n_shots=n_shots, source=source,
                           data_dir=data_dir, seed=seed)


ROLES = {"target": ["forget", "retain"], "retrain": ["retain"]}  # fine_tune's role -> the splits it trains on


def fine_tune(*, role: str, model: str, retrain_model: str, data_dir: str, source: str, n_forget: int,
              n_retain: int, n_holdout: int, seq_len: int, qa_per_passage: int, n_shots: int, epochs: int, lr: float,
              batch_size: int, weight_decay: float, warmup_steps: int, grad_clip: float, seed: int, out: str,
              device: str) -> None:
    """Fine-tune the model of `role` (ROLES): the target (`model` on the forget and retain passages) or the retrain
    model (`retrain_model` on the retain passages only), with the same split, epochs, lr and optimizer settings
    (AdamW's weight decay, linear warmup steps, gradient clipping norm); epochs = 0 keeps the
    model as it is (paper profile: MUSE's published target and retrain models). device: where it trains
    (models.resolve_device)."""
    from forgetlab.core.models import load_causal_lm, resolve_device
    check_choice("role", role, tuple(ROLES))
    device = resolve_device(device)
    seed_everything(seed)
    names = ROLES[role]
    lm, tok = load_causal_lm({"target": model, "retrain": retrain_model}[role], data_dir=data_dir, device=device)
    split = split_from_args(data_dir, source, n_forget, n_retain, n_holdout, seq_len, qa_per_passage, n_shots,
                            seed, tok)
    passages = [p for n in names for p in split[n]]
    check_positive_int("epochs", epochs, allow_zero=True)
    losses = []  # epochs = 0: a published target / retrain model (MUSE's), saved with the split as is
    if epochs:
        cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                          warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed)
        losses = train(lm, muse.lm_items(passages), cfg, desc=f"fine-tune {role}")
    with atomic_path(out) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / SPLIT_FILE, split)
        write_json(tmp / "train.json", {"splits": names, "epochs": epochs, "lr": lr, "losses": losses})


def load_split(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / SPLIT_FILE).read_text())


EMB_SUFFIX = "+target_emb"  # a precision evaluated with the target's embedding matrix put back first
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@contextmanager
@torch.no_grad()
def target_embeddings(model, ref_model):
    """For the block, `model` holds the target's input embedding matrix (and output head, tied or not)."""
    pairs = [(model.get_input_embeddings().weight, ref_model.get_input_embeddings().weight)]
    head, ref_head = model.get_output_embeddings(), ref_model.get_output_embeddings()
    if head is not None and head.weight is not pairs[0][0]:
        pairs.append((head.weight, ref_head.weight))
    saved = [w.data for w, _ in pairs]
    try:
        for w, r in pairs:
            w.data = r.data.to(w.device, w.dtype)
        yield model
    finally:
        for (w, _), d in zip(pairs, saved):
            w.data = d


@contextmanager
def evaluated_as(model, precision: str, ref_model=None):
    """`model` quantized to `precision` for the block; "<precision>+target_emb" first puts back the target's
    (ref_model's) embedding matrix, so only the quantizable layers keep the unlearning update."""
    from forgetlab.methods.quantization import quantized
    base, emb, _ = precision.partition(EMB_SUFFIX)
    if emb and ref_model is None:
        raise ValueError(f"precision {precision!r} needs ref_model (the target)")
    if emb:
        with target_embeddings(model, ref_model), quantized(model, base):
            yield model
    else:
        with quantized(model, base):
            yield model


def check_precisions(name: str, value) -> list[str]:
    from forgetlab.methods.quantization import parse_precision
    precs = check_list(name, value, str)
    for p in precs:
        parse_precision(p.partition(EMB_SUFFIX)[0])
    return precs


def evaluate_precisions(model, tok, split: dict, precisions: list[str], *, prompt_len: int, max_new_tokens: int,
                        answer_tokens: int, batch_size: int = 16, ref_model=None) -> dict:
    """raw_outputs of `model` at every precision (in-memory quantization)."""
    out = {}
    for prec in precisions:
        with evaluated_as(model, prec, ref_model):
            out[prec] = muse.raw_outputs(model, tok, split, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                                         answer_tokens=answer_tokens, batch_size=batch_size)
    return out


@torch.no_grad()
def epoch_scores(model, tok, split: dict, precisions: list[str], *, prompt_len: int, max_new_tokens: int,
                 ref_model=None, ref_codes: dict | None = None, batch_size: int = 16) -> dict:
    """What is measured after every epoch: per forget passage, VerbMem at each precision; per retain passage,
    VerbMem at full precision (the utility); the share of weights whose code under each precision of ref_codes
    differs from the target's. Scores are per passage (ROUGE-L F1), so intervals can resample passages."""
    from forgetlab.methods.quantization import code_change_share
    dtype = next(model.parameters()).dtype
    model.float()  # a bf16 model is evaluated with its bf16 weights in fp32 (exact), like the fp32 arms
    try:
        def verbmem(passages, prec):
            with evaluated_as(model, prec, ref_model):
                return muse.verbmem(model, tok, passages, prompt_len, max_new_tokens, batch_size=batch_size).tolist()

        out = {"verbmem_forget": {p: verbmem(split["forget"], p) for p in precisions},
               "verbmem_retain": verbmem(split["retain"], "full")}
        if ref_codes:
            out["code_change"] = {p: code_change_share(ref_model, model, p, c) for p, c in ref_codes.items()}
    finally:
        model.to(dtype)
    return out


def select_epoch(history: list[dict], *, retrain_verbmem: float, target_utility: float, tolerance: float,
                 utility_share: float) -> dict:
    """The selected epoch of an unlearning run: the first epoch whose full-precision forget VerbMem is at or below
    retrain_verbmem + tolerance ("forgot"), or whose utility is below utility_share * target_utility
    ("utility"; "both" when one epoch meets both), whichever comes first; else the last epoch ("last").
    history: [{"epoch", "verbmem_forget" (mean, full precision), "utility"}] in epoch order."""
    check_fraction("utility_share", utility_share)
    if not history:
        raise ValueError("select_epoch: empty history")
    for h in history:
        forgot = h["verbmem_forget"] <= retrain_verbmem + tolerance
        lost = h["utility"] < utility_share * target_utility
        if forgot or lost:
            return {"epoch": h["epoch"], "reason": "both" if forgot and lost else "forgot" if forgot else "utility"}
    return {"epoch": history[-1]["epoch"], "reason": "last"}


def run_unlearning(model, tok, ref_model, split: dict, *, method: str, lr: float, epochs: int, batch_size: int,
                   beta: float, retain_weight: float, weight_decay: float, warmup_steps: int, grad_clip: float,
                   sure_percentile: float | None, recompute_every: int, klr_variant: str,
                   levels: dict, tolerance: float, utility_share: float, extra_epochs: int,
                   epoch_precisions: list[str], code_precisions: list[str], prompt_len: int, max_new_tokens: int,
                   seed: int) -> dict:
    """Unlearn `model` in place with `method` (one AdamW across epochs, with `weight_decay`, a linear warmup over
    `warmup_steps` and gradients clipped to norm `grad_clip`, in the dtype of `model`, which ref_model shares;
    `retain_weight` weighs the retain regularizer of _GDR and _KLR methods), score every epoch (epoch_scores) and
    select one (select_epoch with the target's and the retrain model's `levels`: {"retrain_verbmem",
    "target_utility"}). Training stops `extra_epochs` after the selection fires; `model` ends as it was at the
    selected epoch."""
    from forgetlab.methods.quantization import model_codes
    check_choice("method", method, METHODS)
    items = unlearning_items(ref_model, split["forget"], split["retain"])
    loss_fn = make_loss(method, beta=beta, ref_model=ref_model, retain_weight=retain_weight, klr_variant=klr_variant)
    hook = None
    if sure_percentile is not None:
        forget_loss = make_loss(REGISTRY[method].forget, beta=beta)  # the forget term alone ("GA" or "NPO")
        batches = [stack_collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
        hook = sure_hook(model, forget_loss, batches, percentile=sure_percentile, recompute_every=recompute_every)
    # the reference's codes are kept on the host (int8 per weight and precision: 6.5 GB each at 7B)
    ref_codes = {p: {n: c.cpu() for n, c in model_codes(ref_model, p).items()} for p in code_precisions}
    history, chosen = [], {}
    steps_per_epoch = -(-len(items) // batch_size)

    def on_epoch(epoch: int) -> bool:
        sc = epoch_scores(model, tok, split, epoch_precisions, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                          ref_model=ref_model, ref_codes=ref_codes)
        history.append({"epoch": epoch, "step": epoch * steps_per_epoch, **sc,
                        "verbmem_forget_mean": {p: float(np.mean(v)) for p, v in sc["verbmem_forget"].items()},
                        "utility": float(np.mean(sc["verbmem_retain"]))})
        sel = select_epoch([{"epoch": h["epoch"], "verbmem_forget": h["verbmem_forget_mean"]["full"],
                             "utility": h["utility"]} for h in history], tolerance=tolerance,
                           utility_share=utility_share, **levels)
        if sel["reason"] != "last" and not chosen:
            chosen.update(sel)
            if extra_epochs:  # training goes on past the selection: keep the selected weights to come back to,
                # on the host (a 7B model's copy would take 27 GB of GPU memory)
                chosen["state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return sel["reason"] != "last" and epoch >= sel["epoch"] + extra_epochs

    losses = train(model, items, TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                                             weight_decay=weight_decay, warmup_steps=warmup_steps,
                                             grad_clip=grad_clip),
                   loss_fn=loss_fn, grad_hook=hook, on_epoch=on_epoch, desc=None)
    sel = {"epoch": chosen["epoch"], "reason": chosen["reason"]} if chosen else \
        {"epoch": history[-1]["epoch"], "reason": "last"}
    if "state" in chosen:
        model.load_state_dict(chosen["state"])
    return {"method": method, "lr": lr, "selected_epoch": sel["epoch"], "selected_by": sel["reason"],
            "history": history, "losses": losses, "sure": sure_percentile is not None, "klr_variant": klr_variant,
            "steps_per_epoch": steps_per_epoch}


def _sure_options(sure: str) -> list[bool]:
    check_choice("sure", sure, ("false", "true", "both"))
    return {"false": [False], "true": [True], "both": [False, True]}[sure]


def run_name(method: str, lr: float, sure: bool = False, dtype: str = "float32", klr_variant: str = "correct") -> str:
    """E.g. GA_KLR@1e-05, NPO_GDR+SURE@0.0001, GA_KLR+bf16@1e-05, GA_KLR+officialKL@1e-05."""
    return (f"{method}{'+SURE' if sure else ''}{'+bf16' if dtype == 'bfloat16' else ''}"
            f"{'+officialKL' if klr_variant == 'official' else ''}@{lr:g}")


def unlearn(*, target: str, retrain: str, methods: list[str], lrs: list[float], sure: str, dtype: str,
            klr_variant: str, epochs: int, extra_epochs: int, tolerance: float, utility_share: float, batch_size: int,
            beta: float, retain_weight: float, weight_decay: float, warmup_steps: int, grad_clip: float,
            sure_percentile: float | None = None, recompute_every: int | None = None,
            precisions: list[str], epoch_precisions: list[str], prompt_len: int, max_new_tokens: int,
            answer_tokens: int, keep: str, seed: int, out: str, device: str) -> None:
    """Unlearn the target with every method x lr (x SURE off/on: sure = false | true | both), in `dtype`, with the
    `klr_variant` KL for _KLR methods; score every epoch at `epoch_precisions` (add "<precision>+target_emb" for
    the embedding control), select an epoch (select_epoch), and record the selected model's raw evaluation outputs
    at every precision of `precisions`. Checkpoints of the selected models are kept for the method `keep` ('' =
    none; non-SURE runs), in out/<run name> (run_name). sure_percentile, recompute_every: SURE's mask (None when no
    SURE run is made). device: where the reference, the retrain model and every unlearned copy run
    (models.resolve_device; on the host CPU a 7B forward per step takes minutes); every function here builds its
    inputs on the model's device."""
    from forgetlab.core.models import load_causal_lm, resolve_device
    from forgetlab.methods.quantization import weight_change_share
    device = resolve_device(device)
    method_list = [check_choice("methods", m, METHODS) for m in check_list("methods", methods, str)]
    lr_list = check_list("lrs", lrs, float)
    for lr in lr_list:
        if lr <= 0:
            raise ValueError(f"parameter 'lrs' must hold positive learning rates, got {lr}")
    sure_list = _sure_options(sure)
    if True in sure_list and (sure_percentile is None or recompute_every is None):
        raise ValueError(f"parameters 'sure_percentile' and 'recompute_every' are needed when sure is {sure!r}")
    check_choice("dtype", dtype, DTYPES)
    check_choice("klr_variant", klr_variant, KLR_VARIANTS)
    if klr_variant != "correct" and not any(REGISTRY[m].regularizer == "KLR" for m in method_list):
        raise ValueError(f"parameter 'klr_variant' {klr_variant!r} changes only _KLR methods; methods: {method_list}")
    precs = check_precisions("precisions", precisions)
    eprecs = check_precisions("epoch_precisions", epoch_precisions)
    if "full" not in eprecs:
        raise ValueError(f"parameter 'epoch_precisions' must include full (the selection reads it), got {eprecs}")
    plain = [p for p in eprecs if EMB_SUFFIX not in p]  # the target and retrain models are scored at these
    code_precs = [p for p in plain if p != "full"]
    check_positive_int("epochs", epochs)
    check_positive_int("extra_epochs", extra_epochs, allow_zero=True)
    check_fraction("utility_share", utility_share)
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"parameter 'tolerance' must be a number >= 0, got {tolerance!r}")
    keep_list = [check_choice("keep", keep, METHODS)] if keep else []
    if set(keep_list) - set(method_list):
        raise ValueError(f"parameter 'keep' names a method that is not run: {keep}; methods: {method_list}")
    split = load_split(target)
    seed_everything(seed)
    ref, tok = load_causal_lm(target, device=device)
    retrain_model, _ = load_causal_lm(retrain, device=device)
    gen = dict(prompt_len=prompt_len, max_new_tokens=max_new_tokens)
    reference = {"target": epoch_scores(ref, tok, split, plain, **gen),
                 "retrain": epoch_scores(retrain_model, tok, split, plain, **gen)}
    del retrain_model
    levels = {"retrain_verbmem": float(np.mean(reference["retrain"]["verbmem_forget"]["full"])),
              "target_utility": float(np.mean(reference["target"]["verbmem_retain"]))}
    ref.to(DTYPES[dtype])
    runs = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for method in method_list:
            variant = klr_variant if REGISTRY[method].regularizer == "KLR" else "correct"
            for lr in lr_list:
                for use_sure in sure_list:
                    name = run_name(method, lr, use_sure, dtype, variant)
                    t0 = time.time()
                    seed_everything(seed)
                    model, _ = load_causal_lm(target, device=device)
                    model.to(DTYPES[dtype])
                    info = run_unlearning(model, tok, ref, split, method=method, lr=lr, epochs=epochs,
                                          batch_size=batch_size, beta=beta, retain_weight=retain_weight,
                                          weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
                                          sure_percentile=sure_percentile if use_sure else None,
                                          recompute_every=recompute_every, klr_variant=variant, levels=levels,
                                          tolerance=tolerance, utility_share=utility_share,
                                          extra_epochs=extra_epochs, epoch_precisions=eprecs,
                                          code_precisions=code_precs, seed=seed, **gen)
                    model.float()
                    info.update(name=name, dtype=dtype)
                    info["raw"] = evaluate_precisions(model, tok, split, precs, answer_tokens=answer_tokens,
                                                      ref_model=ref, **gen)
                    info["weight_change"] = weight_change_share(ref, model)
                    runs.append(info)
                    if method in keep_list and not use_sure:
                        model.save_pretrained(tmp / name)
                        tok.save_pretrained(tmp / name)
                    print(f"{name}: {len(info['history'])} epochs, selected {info['selected_epoch']} "
                          f"({info['selected_by']}), {time.time() - t0:.0f} s", flush=True)
                    del model
        write_json(tmp / RESULTS_FILE, {"levels": levels, "reference": reference, "precisions": precs,
                                        "epoch_precisions": eprecs, "epochs": epochs, "extra_epochs": extra_epochs,
                                        "tolerance": tolerance, "utility_share": utility_share, "dtype": dtype,
                                        "batch_size": batch_size, "beta": beta, "runs": runs})


def load_results(path: str | Path) -> dict:
    return json.loads((Path(path) / RESULTS_FILE).read_text())


# the checkpoint steps of dvc.yaml: `python -m forgetlab.papers.quantization_recovery.experiment <step> --flag value
# ...`
STEPS = (fine_tune, unlearn)

if __name__ == "__main__":
    from forgetlab.repro.cli import run
    run(list(STEPS), description=__doc__)
