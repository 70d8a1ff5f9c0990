"""LLM unlearning baselines and SURE, and the quantization-recovery checkpoints (Zhang et al., arXiv 2410.16454).

Losses (each a `loss_fn(model, batch)` for `forgetlab.train.train`; a batch carries a forget part
`input_ids`/`attention_mask`, the reference model's sequence log-likelihoods `ref_logp` of it, and a retain part
`retain_input_ids`/`retain_attention_mask`):

* GA: -CE on the forget batch (gradient ascent);
* NPO: -(2/beta) mean log sigmoid(-beta (log p_theta(x) - log p_ref(x))) with log p the SEQUENCE
  log-likelihood (sum over tokens; the official code uses a per-logit difference, we do not), beta = 0.1;
* _GDR adds CE on the retain batch; _KLR adds KL(p_ref || p_theta) on the retain batch, per token, averaged over
  tokens, computed from log-probabilities (the official code passed raw logits to the KL, we do not).

SURE (the paper's mitigation): per output row of every linear weight matrix (embeddings and the tied output head
excluded), the saliency is the L2 norm of that row's forget-loss gradient (summed over the forget set) at the
start of unlearning; rows above the `percentile` of all rows (one global threshold) are updated, everything else
(other rows, embeddings, norms) is frozen: the mask multiplies the gradients after backward and before the
optimizer step (train's `grad_hook`; the official code computed the mask and never applied it). AdamW's moments
of a masked row stay zero, so its weights do not move at all. `recompute_every` > 0 recomputes the mask every
that many steps (the official code's choice), where moments of a row that leaves the mask keep moving it.

Checkpoint selection as in MUSE: after each epoch the retain KnowMem is measured; the first epoch where it falls
below the retrain model's is kept, else the last epoch.

Stages (`python -m forgetlab.unlearning <step> ...`):
    fine-tune  --splits forget,retain -> the target;   --splits retain -> the retrain model
    unlearn    --methods GA,NPO_KLR,... --lrs ... -> per-run raw evaluation outputs at every precision (+ kept
               checkpoints), since 540 MB per SmolLM2 checkpoint x tens of runs would not fit.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import muse
from .train import TrainConfig, stack_collate, train
from .utils import (atomic_path, check_choice, check_fraction, check_positive_int, parse_list, seed_everything,
                    write_json)

METHODS = ("GA", "GA_GDR", "GA_KLR", "NPO", "NPO_GDR", "NPO_KLR")
SPLIT_FILE = "split.json"
RESULTS_FILE = "results.json"


# ================================================================ losses
def mean_ce(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token-mean next-token cross-entropy over real tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    mask = attention_mask[:, 1:].float()
    ce = F.cross_entropy(logits.float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return (ce * mask).sum() / mask.sum()


def kl_to_reference(model, ref_model, input_ids, attention_mask) -> torch.Tensor:
    """KL(p_ref || p_theta) of the next-token distributions, per token, averaged over real tokens."""
    with torch.no_grad():
        ref_lp = torch.log_softmax(ref_model(input_ids=input_ids, attention_mask=attention_mask,
                                             use_cache=False).logits[:, :-1].float(), -1)
    lp = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=False).logits[:, :-1].float(), -1)
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
    mask = attention_mask[:, 1:].float()
    return (kl * mask).sum() / mask.sum()


def npo_forget_loss(model, batch: dict, beta: float) -> torch.Tensor:
    logp = muse.sequence_logprob(model, batch["input_ids"], batch["attention_mask"])
    return -(2 / beta) * F.logsigmoid(-beta * (logp - batch["ref_logp"])).mean()


def make_loss(method: str, *, beta: float = 0.1, ref_model=None, retain_weight: float = 1.0) -> Callable:
    """The loss_fn of an unlearning method (forget loss + retain regularizer)."""
    check_choice("method", method, METHODS)
    forget, _, reg = method.partition("_")
    if reg == "KLR" and ref_model is None:
        raise ValueError(f"method {method} needs ref_model (the target) for its KL regularizer")

    def loss_fn(model, batch):
        if forget == "GA":
            loss = -mean_ce(model, batch["input_ids"], batch["attention_mask"])
        else:
            loss = npo_forget_loss(model, batch, beta)
        if reg == "GDR":
            loss = loss + retain_weight * mean_ce(model, batch["retain_input_ids"], batch["retain_attention_mask"])
        elif reg == "KLR":
            loss = loss + retain_weight * kl_to_reference(model, ref_model, batch["retain_input_ids"],
                                                          batch["retain_attention_mask"])
        return loss

    return loss_fn


@torch.no_grad()
def unlearning_items(model, forget: list[dict], retain: list[dict]) -> list[dict]:
    """One item per forget passage, paired with a retain passage (cycled), with the reference (= the model
    before unlearning) sequence log-likelihood of the forget passage for NPO."""
    items = []
    for i, p in enumerate(forget):
        r = retain[i % len(retain)]
        ids = torch.tensor(p["ids"])
        att = torch.ones_like(ids)
        ref = muse.sequence_logprob(model, ids[None], att[None])[0]
        items.append({"input_ids": ids, "attention_mask": att, "ref_logp": ref,
                      "retain_input_ids": torch.tensor(r["ids"]),
                      "retain_attention_mask": torch.ones(len(r["ids"]), dtype=torch.long)})
    return items


# ================================================================ SURE
def saliency_params(model) -> dict[str, nn.Parameter]:
    """Weights of every Linear layer but the output head (tied to the embeddings in SmolLM2)."""
    from .quantization import quantizable_linears
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


# ================================================================ runs
def split_from_args(data_dir: str, source: str, n_forget: int, n_retain: int, n_holdout: int, seq_len: int,
                    qa_per_passage: int, n_shots: int, seed: int, tokenizer):
    if source.startswith("hf:"):
        return muse.load_muse_news(source[3:], tokenizer, n_forget=n_forget, n_retain=n_retain,
                                   n_holdout=n_holdout, seq_len=seq_len, n_shots=n_shots)
    return muse.news_split(tokenizer, n_forget=n_forget, n_retain=n_retain, n_holdout=n_holdout,
                           seq_len=seq_len, qa_per_passage=qa_per_passage, n_shots=n_shots, source=source,
                           data_dir=data_dir, seed=seed)


def fine_tune(model: str = "smollm2-135m", data_dir: str = "data", source: str = "nyt", splits: str = "forget,retain",
              n_forget: int = 16, n_retain: int = 16, n_holdout: int = 16, seq_len: int = 64,
              qa_per_passage: int = 1, n_shots: int = 2, epochs: int = 10, lr: float = 2e-4, batch_size: int = 8,
              seed: int = 0, out: str = "checkpoints/quantization_recovery/target") -> None:
    """Fine-tune `model` on the passages of `splits` (the target: forget,retain; the retrain model: retain);
    epochs = 0 keeps the model as it is (paper profile: MUSE's published target and retrain models)."""
    from .models import load_causal_lm
    seed_everything(seed)
    names = parse_list("splits", splits)
    for n in names:
        check_choice("splits", n, ("forget", "retain"))
    lm, tok = load_causal_lm(model, data_dir=data_dir)
    split = split_from_args(data_dir, source, n_forget, n_retain, n_holdout, seq_len, qa_per_passage, n_shots,
                            seed, tok)
    passages = [p for n in names for p in split[n]]
    check_positive_int("epochs", epochs, allow_zero=True)
    losses = []  # epochs = 0: a published target / retrain model (MUSE's), saved with the split as is
    if epochs:
        losses = train(lm, muse.lm_items(passages), TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size,
                                                                  seed=seed), desc=f"fine-tune {splits}")
    with atomic_path(out) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / SPLIT_FILE, split)
        write_json(tmp / "train.json", {"splits": names, "epochs": epochs, "lr": lr, "losses": losses})


def load_split(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / SPLIT_FILE).read_text())


def evaluate_precisions(model, tok, split: dict, precisions: list[str], *, prompt_len: int, max_new_tokens: int,
                        answer_tokens: int, batch_size: int = 16) -> dict:
    """raw_outputs of `model` at every precision (in-memory quantization)."""
    from .quantization import quantized
    out = {}
    for prec in precisions:
        with quantized(model, prec):
            out[prec] = muse.raw_outputs(model, tok, split, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                                         answer_tokens=answer_tokens, batch_size=batch_size)
    return out


def run_unlearning(model, tok, ref_model, split: dict, *, method: str, lr: float, epochs: int, batch_size: int,
                   beta: float, sure_percentile: float | None, recompute_every: int, retain_floor: float | None,
                   answer_tokens: int, seed: int) -> dict:
    """Unlearn `model` in place with `method`; per epoch, retain KnowMem; stop at MUSE's selected epoch."""
    check_choice("method", method, METHODS)
    items = unlearning_items(ref_model, split["forget"], split["retain"])
    loss_fn = make_loss(method, beta=beta, ref_model=ref_model)
    hook = None
    if sure_percentile is not None:
        forget_loss = make_loss(method.split("_")[0], beta=beta)
        batches = [stack_collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
        state = {"mask": saliency_mask(row_saliency(model, forget_loss, batches), sure_percentile), "step": 0}

        def hook(m):
            state["step"] += 1
            if recompute_every and state["step"] > 1 and (state["step"] - 1) % recompute_every == 0:
                grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
                state["mask"] = saliency_mask(row_saliency(m, forget_loss, batches), sure_percentile)
                for n, p in m.named_parameters():
                    if n in grads:
                        p.grad = grads[n]
            mask_hook(state["mask"])(m)
    history, losses = [], []
    for epoch in range(1, epochs + 1):
        # one train call per epoch (train has no early stop): AdamW's moments restart at each epoch
        losses += train(model, items, TrainConfig(lr=lr, epochs=1, batch_size=batch_size, seed=seed + epoch,
                                                  weight_decay=0.0, grad_clip=1.0),  # the HF Trainer defaults
                        loss_fn=loss_fn, grad_hook=hook, desc=None)
        qs = [q["question"] for p in split["retain"] for q in p["qas"]]
        prompts = [tok(muse.qa_prompt(split["shots"], q), add_special_tokens=False)["input_ids"] for q in qs]
        answers = [a.strip() for a in muse.generate(model, tok, prompts, answer_tokens, stop="\n")]
        km = float(muse.knowmem_scores(split["retain"], answers).mean())
        history.append({"epoch": epoch, "knowmem_retain": km})
        if retain_floor is not None and km < retain_floor:
            break
    return {"method": method, "lr": lr, "selected_epoch": history[-1]["epoch"], "history": history,
            "losses": losses, "sure": sure_percentile is not None}


def _sure_options(sure: str) -> list[bool]:
    check_choice("sure", sure, ("false", "true", "both"))
    return {"false": [False], "true": [True], "both": [False, True]}[sure]


def run_name(method: str, lr: float, sure: bool) -> str:
    return f"{method}{'+SURE' if sure else ''}@{lr:g}"


def unlearn(target: str = "checkpoints/quantization_recovery/target",
            retrain: str = "checkpoints/quantization_recovery/retrain", methods: str = ",".join(METHODS),
            lrs: str = "1e-5", sure: str = "false", epochs: int = 3, batch_size: int = 4, beta: float = 0.1,
            sure_percentile: float = 90.0, recompute_every: int = 0, precisions: str = "full,int8,fp4,nf4,rtn4",
            change_precisions: str = "nf4", prompt_len: int = 32, max_new_tokens: int = 32,
            answer_tokens: int = 8, keep: str = "", seed: int = 0,
            out: str = "checkpoints/quantization_recovery/unlearn") -> None:
    """Unlearn the target with every method x lr (x SURE off/on: sure = false | true | both), select the epoch as
    MUSE does, and record each selected model's raw evaluation outputs at every precision plus the share of
    weights whose quantized value changed. Checkpoints are kept only for the (non-SURE) runs of the methods in
    `keep`, in out/<run name> (run names like GA_KLR@1e-05, NPO+SURE@0.0001)."""
    from .models import load_causal_lm
    from .quantization import code_change_share, model_codes, weight_change_share
    method_list = [check_choice("methods", m, METHODS) for m in parse_list("methods", methods)]
    lr_list = parse_list("lrs", lrs, float)
    for lr in lr_list:
        if lr <= 0:
            raise ValueError(f"parameter 'lrs' must hold positive learning rates, got {lr}")
    sure_list = _sure_options(sure)
    precs = parse_list("precisions", precisions)
    check_positive_int("epochs", epochs)
    keep_list = [check_choice("keep", m, METHODS) for m in parse_list("keep", keep)]
    if set(keep_list) - set(method_list):
        raise ValueError(f"parameter 'keep' names methods that are not run: {sorted(set(keep_list) - set(method_list))}"
                         f"; methods: {method_list}")
    split = load_split(target)
    seed_everything(seed)
    ref, tok = load_causal_lm(target)
    retrain_model, _ = load_causal_lm(retrain)
    qs = [q["question"] for p in split["retain"] for q in p["qas"]]
    prompts = [tok(muse.qa_prompt(split["shots"], q), add_special_tokens=False)["input_ids"] for q in qs]
    answers = [a.strip() for a in muse.generate(retrain_model, tok, prompts, answer_tokens, stop="\n")]
    floor = float(muse.knowmem_scores(split["retain"], answers).mean())
    del retrain_model
    change_precs = parse_list("change_precisions", change_precisions)
    ref_codes = {p: model_codes(ref, p) for p in change_precs}
    runs = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for method in method_list:
            for lr in lr_list:
                for use_sure in sure_list:
                    name = run_name(method, lr, use_sure)
                    t0 = time.time()
                    seed_everything(seed)
                    model, _ = load_causal_lm(target)
                    info = run_unlearning(model, tok, ref, split, method=method, lr=lr, epochs=epochs,
                                          batch_size=batch_size, beta=beta,
                                          sure_percentile=sure_percentile if use_sure else None,
                                          recompute_every=recompute_every, retain_floor=floor,
                                          answer_tokens=answer_tokens, seed=seed)
                    info["name"] = name
                    info["raw"] = evaluate_precisions(model, tok, split, precs, prompt_len=prompt_len,
                                                      max_new_tokens=max_new_tokens, answer_tokens=answer_tokens)
                    info["weight_change"] = weight_change_share(ref, model)
                    info["code_change"] = {p: code_change_share(ref, model, p, ref_codes[p]) for p in change_precs}
                    runs.append(info)
                    if method in keep_list and not use_sure:
                        model.save_pretrained(tmp / name)
                        tok.save_pretrained(tmp / name)
                    print(f"{name}: epoch {info['selected_epoch']}, {time.time() - t0:.0f} s", flush=True)
                    del model
        write_json(tmp / RESULTS_FILE, {"retain_floor": floor, "precisions": precs, "epochs": epochs,
                                        "batch_size": batch_size, "beta": beta, "runs": runs})


def load_results(path: str | Path) -> dict:
    return json.loads((Path(path) / RESULTS_FILE).read_text())


if __name__ == "__main__":
    from .cli import run
    run([fine_tune, unlearn], description=__doc__)
