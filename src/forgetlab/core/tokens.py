"""Turn documents into fixed-length token sequences and batches."""
from __future__ import annotations

import random
from typing import Iterator

import torch

from forgetlab.core.utils import check_positive_int


def make_sequences(tokenizer, docs: list[dict], seq_len: int, max_sequences: int | None = None, *,
                   max_per_doc: int | None = None, min_len: int = 16, seed: int | None = None
                   ) -> dict[str, torch.Tensor]:
    """Cut each document's tokens into windows of `seq_len`; a last window of >= min_len tokens is right-padded.

    With `seed`, documents are visited in a seeded random order (so the first `max_sequences` sample the whole
    corpus, not its first files); `max_per_doc` caps the windows taken from one document.

    Returns {"input_ids": [N, seq_len], "attention_mask": [N, seq_len], "doc": [N] document index}. Sequences
    never cross documents, so a split by document stays a split by sequence.
    """
    check_positive_int("seq_len", seq_len)
    ids, att, doc_idx = [], [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = list(range(len(docs)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    for d in order:
        doc = docs[d]
        toks = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        windows = [toks[i:i + seq_len] for i in range(0, len(toks), seq_len)]
        windows = [w for w in windows if len(w) >= min_len][:max_per_doc]
        for w in windows:
            n = len(w)
            ids.append(w + [pad] * (seq_len - n))
            att.append([1] * n + [0] * (seq_len - n))
            doc_idx.append(d)
            if max_sequences is not None and len(ids) >= max_sequences:
                break
        if max_sequences is not None and len(ids) >= max_sequences:
            break
    if not ids:
        raise ValueError("no sequences: the documents are empty or shorter than min_len tokens")
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att), "doc": torch.tensor(doc_idx)}


def iter_batches(seqs: dict[str, torch.Tensor], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches of a sequence dict (deterministic order)."""
    check_positive_int("batch_size", batch_size)
    n = len(seqs["input_ids"])
    for i in range(0, n, batch_size):
        yield {k: v[i:i + batch_size] for k, v in seqs.items()}


def n_tokens(seqs: dict[str, torch.Tensor]) -> int:
    return int(seqs["attention_mask"].sum())


def pad(seqs, value: int, *, left: bool = False, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists of unequal length as one [batch, longest] tensor, padded with `value` on the right (or on the
    left, for generation), and the attention mask (1 on real tokens), both created on `device`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
