"""Batched next-token evaluation: top-1 / top-k accuracy (also skipping the most common tokens), loss, perplexity.

Per-sequence counts are kept so that metrics.bootstrap_ratio can put intervals on every number.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from forgetlab.core.utils import device_of

COUNTS = ("n", "top1", "topk", "nll", "n_skip", "top1_skip", "topk_skip")


def most_common_tokens(seqs: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """The n most frequent token ids among the real tokens of a sequence set (ties broken by id)."""
    ids = seqs["input_ids"][seqs["attention_mask"].bool()].tolist()
    counts = Counter(ids)
    return torch.tensor(sorted(counts, key=lambda t: (-counts[t], t))[:n], dtype=torch.long)


def _counts(logits, target, valid, skip_ids, top_k, out) -> None:
    """Accumulate per-sequence counts for predictions `logits` [B, T, V] of `target` [B, T] where `valid`."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0), reduction="none")
    topk = logits.topk(top_k, dim=-1).indices
    hit1 = topk[..., 0] == target
    hitk = (topk == target.unsqueeze(-1)).any(-1)
    keep = valid if skip_ids is None else valid & ~torch.isin(target, skip_ids.to(target.device))
    for name, mask in (("", valid), ("_skip", keep)):
        out["n" + name].append(mask.sum(1))
        out["top1" + name].append((hit1 & mask).sum(1))
        out["topk" + name].append((hitk & mask).sum(1))
    out["nll"].append((nll * valid).sum(1))


@torch.inference_mode()
def token_counts(model, batches: Iterable[dict], *, top_k: int = 10, skip_ids: torch.Tensor | None = None,
                 desc: str | None = "eval") -> dict[str, torch.Tensor]:
    """Per sequence: number of predicted tokens, top-1 / top-k hits, summed NLL, and the same restricted to
    target tokens not in skip_ids. Targets are the real tokens at positions 1.. (position t predicts t+1)."""
    device = device_of(model)
    out = {k: [] for k in COUNTS}
    for batch in tqdm(list(batches), desc=desc, disable=desc is None, leave=False):
        ids, att = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1]
        _counts(logits, ids[:, 1:], att[:, 1:].bool(), skip_ids, top_k, out)
    return {k: torch.cat(v).double().cpu() for k, v in out.items()}


def mlm_corrupt(ids: torch.Tensor, candidates: torch.Tensor, mask_token_id: int, vocab_size: int,
                generator: torch.Generator, p: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption: pick each candidate token with probability p as a target; of the targets 80% become
    [MASK], 10% a random token, 10% stay. Returns (corrupted ids, bool target positions)."""
    targets = (torch.rand(ids.shape, generator=generator) < p) & candidates
    r = torch.rand(ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[targets & (r < 0.8)] = mask_token_id
    rand_pos = targets & (r >= 0.8) & (r < 0.9)
    corrupted[rand_pos] = torch.randint(vocab_size, ids.shape, generator=generator)[rand_pos]
    return corrupted, targets


@torch.inference_mode()
def mlm_token_counts(model, batches: Iterable[dict], *, mask_token_id: int, special_ids: torch.Tensor,
                     top_k: int = 10, skip_ids: torch.Tensor | None = None, p: float = 0.15, seed: int = 0,
                     desc: str | None = "eval (MLM)") -> dict[str, torch.Tensor]:
    """Masked-token prediction for encoders (the paper's RoBERTa evaluation): the same counts as token_counts,
    over 15% of the real, non-special tokens (80/10/10 corruption, seeded so every pruning step sees the same
    corruption)."""
    device = device_of(model)
    gen = torch.Generator().manual_seed(seed)
    out = {k: [] for k in COUNTS}
    for batch in tqdm(list(batches), desc=desc, disable=desc is None, leave=False):
        ids, att = batch["input_ids"], batch["attention_mask"]
        candidates = att.bool() & ~torch.isin(ids, special_ids)
        corrupted, targets = mlm_corrupt(ids, candidates, mask_token_id, model.config.vocab_size, gen, p)
        logits = model(input_ids=corrupted.to(device), attention_mask=att.to(device)).logits
        _counts(logits, ids.to(device), targets.to(device), skip_ids, top_k, out)
    return {k: torch.cat(v).double().cpu() for k, v in out.items()}


def lm_counts(model, tokenizer, batches: Iterable[dict], *, top_k: int = 10, skip_ids: torch.Tensor | None = None,
              seed: int = 0, desc: str | None = "eval") -> dict[str, torch.Tensor]:
    """token_counts for causal LMs, mlm_token_counts (15% masked, 80/10/10) for encoders."""
    from forgetlab.core.models import is_encoder
    if not is_encoder(model):
        return token_counts(model, batches, top_k=top_k, skip_ids=skip_ids, desc=desc)
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    return mlm_token_counts(model, batches, mask_token_id=tokenizer.mask_token_id, special_ids=specials,
                            top_k=top_k, skip_ids=skip_ids, seed=seed, desc=desc)


def summarize_counts(counts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Token-level aggregates of token_counts: accuracies in [0, 1], mean loss, perplexity."""
    s = {k: float(v.sum()) for k, v in counts.items()}
    loss = s["nll"] / max(s["n"], 1)
    return {"top1": s["top1"] / max(s["n"], 1), "topk": s["topk"] / max(s["n"], 1),
            "top1_skip": s["top1_skip"] / max(s["n_skip"], 1), "topk_skip": s["topk_skip"] / max(s["n_skip"], 1),
            "loss": loss, "perplexity": math.exp(min(loss, 50.0)), "n_tokens": int(s["n"])}


def evaluate_lm(model, batches: Iterable[dict], *, top_k: int = 10, skip_ids: torch.Tensor | None = None,
                desc: str | None = "eval") -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """(summary, per-sequence counts) of next-token prediction over `batches`."""
    counts = token_counts(model, batches, top_k=top_k, skip_ids=skip_ids, desc=desc)
    return summarize_counts(counts), counts
