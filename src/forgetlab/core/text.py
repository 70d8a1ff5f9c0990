"""Text in and out of a model: sentences of a document, and continuations of prompts (greedy or sampled).

The papers split sentences by three rules, one per kind of text, kept apart because changing a rule changes which
sentences an experiment sees (and so its numbers):
- `punctuation`: after . ! ? and the spaces that follow (SaLEM's question-answering contexts, Wikipedia prose);
- `lines`: the same, and at line breaks (notebook 01b's toxicity screen: Reddit comments and Amazon reviews,
  where a line often ends without a full stop);
- `capitalized`: after . ! ? (and a closing quote or bracket) followed by a space and a capital letter or a digit,
  so "Mr. smith" or "3.5 m" stay whole (notebook 02's silver NER on news text).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import torch
from tqdm.auto import tqdm

from forgetlab.core import tokens
from forgetlab.core.utils import check_choice, check_positive_int, device_of

SENTENCE_RULES = {
    "punctuation": re.compile(r"(?<=[.!?])\s+"),
    "lines": re.compile(r"(?<=[.!?])\s+|\n+"),
    "capitalized": re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[\"“(]?[A-Z0-9])"),
}


def split_sentences(text: str, rule: str, min_words: int = 1) -> list[str]:
    """The sentences of `text` by one of SENTENCE_RULES, stripped, those of fewer than `min_words` words dropped
    (with the default 1, only empty pieces go)."""
    check_positive_int("min_words", min_words, allow_zero=True)
    pattern = SENTENCE_RULES[check_choice("rule", rule, SENTENCE_RULES)]
    return [s.strip() for s in pattern.split(text) if len(s.split()) >= min_words]


@lru_cache(maxsize=8)
def _stop_ids(tokenizer, stop: str) -> tuple[int, ...]:
    """Ids of every token whose text contains `stop`."""
    vocab = tokenizer.get_vocab()
    return tuple(sorted(i for t, i in vocab.items() if stop in tokenizer.convert_tokens_to_string([t])))


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, batch_size: int = 16,
             temperature: float = 0.0, seed: int = 0, min_new_tokens: int = 0, stop: str | None = None,
             stop_at_eos: bool = True, desc: str | None = None) -> list[str]:
    """Continuations (decoded text, special tokens dropped) of token-id prompts, left-padded in batches of
    `batch_size` on the model's device.

    temperature 0 decodes greedily; above 0 it samples at that temperature with no top-k or top-p truncation, and
    batch i is seeded with seed + i, so two models given the same prompts draw the same random stream (a pruned
    model against its original). `min_new_tokens` forbids the end-of-sequence token before that many tokens. With
    `stop`, a row ends at a token containing it (not at the end-of-sequence token) and its text is cut before it;
    `stop_at_eos=False` (without `stop`) generates all `max_new_tokens`, past an end-of-sequence token too (MUSE's
    VerbMem here, which compares continuations of a fixed length). `desc` shows a progress bar over the batches."""
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("batch_size", batch_size)
    if temperature < 0:
        raise ValueError(f"parameter 'temperature' must be >= 0 (0 = greedy), got {temperature}")
    options = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
        dict(do_sample=False)
    if min_new_tokens:
        options["min_new_tokens"] = min_new_tokens
    if stop:
        options["eos_token_id"] = list(_stop_ids(tokenizer, stop))
    elif not stop_at_eos:
        options["eos_token_id"] = None
    pad_id = tokenizer.pad_token_id
    dev = device_of(model)
    out = []
    for i, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc=desc, disable=desc is None)):
        ids, att = tokens.pad(prompts[start:start + batch_size], pad_id, left=True, device=dev)
        if temperature > 0:
            torch.manual_seed(seed + i)
        gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             **options)
        texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
        out += [t.split(stop)[0] for t in texts] if stop else texts
    return out
