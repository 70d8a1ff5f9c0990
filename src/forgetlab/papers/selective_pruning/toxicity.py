"""Toxicity removal by selective pruning (the rebuttal experiment of Pochinkov & Schoots, arXiv 2403.01267, their
Table 3): prune the neurons that are more active on toxic text than on non-toxic text, and measure how many of the
model's sampled generations are toxic before and after, and what it costs in perplexity on non-toxic text.

Paper scale: civil_comments (toxicity <= 0.2 -> retain, >= 0.8 -> forget), Detoxify scores of sampled generations.
Offline default: Detoxify downloads its weights at run time, so texts are scored with `alt-profanity-check`
(`profanity_check`, a linear SVM on bag-of-words shipped inside its wheel: it detects profanity and insults, not
all toxicity). The forget set is real offline text screened by that classifier: sentences of the Reddit and
Amazon-review paragraphs of BIG-bench squad_shifts, plus the model's own sampled generations.

The pruning itself is `forgetlab.methods.pruning` (Pruner, one step) on statistics of `forgetlab.core.neurons`;
perplexity is `forgetlab.core.eval.token_counts`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from forgetlab.core.text import generate, split_sentences
from forgetlab.core.utils import check_choice, device_of

SCORERS = ("profanity_check", "detoxify")


# ================================================================ scoring
def toxicity_scores(texts: Sequence[str], scorer: str = "profanity_check", batch_size: int = 64) -> np.ndarray:
    """Probability that each text is toxic: profanity_check (offline, in its wheel) or Detoxify ("original"
    model; needs its weights, i.e. network on first use)."""
    check_choice("scorer", scorer, SCORERS)
    texts = [t if t.strip() else "." for t in texts]  # both scorers want non-empty strings
    if not texts:
        return np.zeros(0)
    if scorer == "profanity_check":
        from profanity_check import predict_prob
        return np.asarray(predict_prob(texts), dtype=float)
    try:
        from detoxify import Detoxify
    except ImportError as e:
        raise ImportError("scorer 'detoxify' needs the detoxify package (paper profile); the offline default is "
                          "'profanity_check'") from e
    model = Detoxify("original")
    out = []
    for i in range(0, len(texts), batch_size):
        out += list(model.predict(list(texts[i:i + batch_size]))["toxicity"])
    return np.asarray(out, dtype=float)


# ================================================================ texts
def offline_sentences(sources: Iterable[str] = ("reddit", "amazon"), data_dir: str | Path = "data",
                      min_words: int = 4) -> list[dict]:
    """Sentences {"id", "source", "text"} of squad_shifts documents (Reddit comments, Amazon reviews), in order.
    A toxic remark is usually one sentence of a longer paragraph, so the screen works on sentences."""
    from forgetlab.data import load_text_documents
    out = []
    for doc in load_text_documents(tuple(sources), data_dir):
        out += [{"id": f"{doc['id']}/{k}", "source": doc["source"], "text": s}
                for k, s in enumerate(split_sentences(doc["text"], "lines", min_words))]
    return out


def load_civil_comments(name_or_path: str = "google/civil_comments", n: int = 100_000, split: str = "train",
                        text_column: str = "text", score_column: str = "toxicity") -> list[dict]:
    """Paper scale: the first n comments {"id", "source", "text", "score"} of civil_comments (its human toxicity
    score in [0, 1]); a folder written by `Dataset.save_to_disk` is read offline, a hub id is streamed."""
    from forgetlab.data import hub
    rows = hub.load_dataset(name_or_path, split=split, streaming=True).take(n)
    out = []
    for i, r in enumerate(rows):
        if text_column not in r or score_column not in r:
            raise ValueError(f"dataset {name_or_path!r} needs columns {text_column!r} and {score_column!r}")
        if r[text_column] and r[text_column].strip():
            out.append({"id": f"civil_comments/{i}", "source": "civil_comments", "text": r[text_column].strip(),
                        "score": float(r[score_column])})
    return out


def screen(texts: Sequence[dict], scores: Sequence[float], *, forget_min: float = 0.8, retain_max: float = 0.2
           ) -> tuple[list[dict], list[dict]]:
    """(forget, retain): texts scored >= forget_min, and <= retain_max (the paper's civil_comments thresholds);
    each text gets its "score"."""
    if not 0 <= retain_max < forget_min <= 1:
        raise ValueError(f"parameters 'retain_max' ({retain_max}) and 'forget_min' ({forget_min}) must satisfy "
                         "0 <= retain_max < forget_min <= 1")
    forget, retain = [], []
    for t, s in zip(texts, scores):
        t = {**t, "score": float(s)}
        if s >= forget_min:
            forget.append(t)
        elif s <= retain_max:
            retain.append(t)
    return forget, retain


def prompts_from(texts: Sequence[str], n_words: int) -> list[str]:
    """Generation prompts: the first n_words words of each text."""
    return [" ".join(t.split()[:n_words]) for t in texts]


PROMPT_SOURCES = ("reddit", "civil_comments")  # conversational texts: their openings prompt the generations


def split_retain(retain: Sequence[dict], *, n_screen: int, n_gen: int, n_eval: int, n_stat: int, prompt_words: int,
                 seed: int) -> dict[str, list]:
    """Notebook 01b's use of the non-toxic texts, shuffled (seeded): the openings (`prompt_words` words) of the first
    n_screen conversational ones (PROMPT_SOURCES) prompt the screening generations, of the next n_gen the evaluated
    generations; of the texts not used as prompts, the first n_eval are held out (perplexity) and the next n_stat
    give the neuron statistics. Returns {"prompts_screen", "prompts_eval", "retain_eval", "retain_stat"}."""
    import random
    texts = list(retain)
    random.Random(seed).shuffle(texts)
    pool = [t for t in texts if t["source"] in PROMPT_SOURCES]
    used = {t["id"] for t in pool[:n_screen + n_gen]}
    rest = [t for t in texts if t["id"] not in used]
    return {"prompts_screen": prompts_from([t["text"] for t in pool[:n_screen]], prompt_words),
            "prompts_eval": prompts_from([t["text"] for t in pool[n_screen:n_screen + n_gen]], prompt_words),
            "retain_eval": rest[:n_eval], "retain_stat": rest[n_eval:n_eval + n_stat]}


def split_forget(texts: Sequence[dict], generations: Sequence[dict], *, test_fraction: float, n_eval: int,
                 n_stat: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(held out, statistics) of the toxic texts and the model's own toxic generations, shuffled together (seeded):
    a `test_fraction` share held out (at least one text when there are two or more; at most n_eval), the rest (at
    most n_stat) for the neuron statistics."""
    import random
    pool = list(texts) + list(generations)
    random.Random(seed).shuffle(pool)
    n_test = max(1, round(test_fraction * len(pool))) if len(pool) > 1 else 0
    return pool[:n_test][:n_eval], pool[n_test:][:n_stat]


# ================================================================ generation
def sample_generations(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, temperature: float,
                       batch_size: int, seed: int, desc: str | None = None) -> list[str]:
    """Sampled continuations of text prompts as the experiment draws them (forgetlab.core.text.generate: pure
    sampling at `temperature`, batch i seeded with seed + i, so a pruned model sees the same random stream as the
    original), at least one token each (an empty generation cannot be scored)."""
    if temperature <= 0:
        raise ValueError(f"parameter 'temperature' must be > 0 (the generations are sampled), got {temperature}")
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    return generate(model, tokenizer, ids, max_new_tokens, batch_size=batch_size, temperature=temperature,
                    seed=seed, min_new_tokens=1, desc=desc)


# ================================================================ sequences and measures
def sequences(tokenizer, texts: Sequence[dict], seq_len: int, max_sequences: int | None = None, *, min_len: int,
              seed: int) -> dict[str, torch.Tensor]:
    """One right-padded sequence per text (texts are sentences; a long one gives several windows, and a last
    window shorter than min_len tokens is dropped)."""
    from forgetlab.core.tokens import make_sequences
    return make_sequences(tokenizer, list(texts), seq_len, max_sequences, min_len=min_len, seed=seed)


def perplexity(counts: dict[str, torch.Tensor], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Token-level perplexity exp(sum nll / sum n) with a percentile bootstrap interval over sequences."""
    from forgetlab.core.metrics import bootstrap_ratio
    nll, n = counts["nll"], counts["n"]
    lo, hi = bootstrap_ratio(nll, n, n_boot=n_boot, seed=seed)
    return {"perplexity": float(np.exp(float(nll.sum()) / float(n.sum()))),
            "ci": [float(np.exp(lo)), float(np.exp(hi))],
            "n_tokens": int(n.sum()), "n_seqs": len(n)}


def toxic_fraction(scores: Sequence[float], threshold: float = 0.5, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Share of texts scored >= threshold, and the mean score, each with a bootstrap interval."""
    from forgetlab.core.metrics import bootstrap_mean
    s = np.asarray(scores, float)
    hits = (s >= threshold).astype(float)
    return {"fraction": float(hits.mean()), "ci": list(bootstrap_mean(hits, n_boot=n_boot, seed=seed)),
            "mean_score": float(s.mean()), "mean_score_ci": list(bootstrap_mean(s, n_boot=n_boot, seed=seed)),
            "n": len(s), "n_toxic": int(hits.sum())}


def paired_drop(before: Sequence[float], after: Sequence[float], threshold: float = 0.5, *, n_boot: int = 1000,
                seed: int = 0) -> dict:
    """Toxic fraction before minus after on the same prompts and random streams, with a paired interval; and the
    same for the mean score (continuous, so it has more power when toxic generations are rare)."""
    from forgetlab.core.metrics import bootstrap_diff_of_ratios
    sb, sa = np.asarray(before, float), np.asarray(after, float)
    b, a = (sb >= threshold).astype(float), (sa >= threshold).astype(float)
    ones = np.ones_like(b)
    lo, hi = bootstrap_diff_of_ratios(b, ones, a, ones, n_boot=n_boot, seed=seed)
    slo, shi = bootstrap_diff_of_ratios(sb, ones, sa, ones, n_boot=n_boot, seed=seed)
    return {"drop": float(b.mean() - a.mean()), "ci": [lo, hi],
            "score_drop": float(sb.mean() - sa.mean()), "score_ci": [slo, shi]}


# ================================================================ paper scale: WikiText perplexity, MMLU
def load_ppl_documents(spec: str, n_docs: int = 1000, split: str = "test") -> list[dict]:
    """Documents for a general perplexity: "hf:<dataset or saved folder>[@<config>]", e.g.
    "hf:Salesforce/wikitext@wikitext-103-raw-v1" (the paper's WikiText), read with forgetlab.data.load_hf_text."""
    if not spec.startswith("hf:"):
        raise ValueError(f"unknown ppl_source {spec!r}; allowed: retain, hf:<dataset>[@<config>]")
    from forgetlab.data import load_hf_text
    name, _, config = spec[3:].partition("@")
    return load_hf_text(name, split=split, n_docs=n_docs, config=config or None)


LETTERS = "ABCDEFGHIJ"


def load_mmlu(spec: str = "hf:cais/mmlu@all", n: int | None = None, split: str = "test") -> list[dict]:
    """MMLU items {"question", "choices", "answer"} (answer = index), from "hf:<hub id or saved folder>[@<config>]"."""
    if not spec.startswith("hf:"):
        raise ValueError(f"unknown mmlu_source {spec!r}; allowed: none, hf:<dataset>[@<config>]")
    from forgetlab.data import hub
    name, _, config = spec[3:].partition("@")
    ds = hub.load_dataset(name, config or None, split=split)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])} for r in ds]


def mc_prompt(item: dict) -> str:
    """Zero-shot MMLU prompt: the question, lettered choices, then "Answer:"."""
    lines = [item["question"].strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"])]
    return "\n".join(lines) + "\nAnswer:"


@torch.inference_mode()
def mc_letter_correct(model, tokenizer, items: Sequence[dict], batch_size: int = 8,
                      desc: str | None = "multiple choice") -> np.ndarray:
    """Per item, 1.0 when the most likely next token among " A", " B", ... is the right letter (MMLU's
    letter scoring, zero-shot)."""
    letter_ids = [tokenizer(f" {L}", add_special_tokens=False)["input_ids"][-1] for L in LETTERS]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = device_of(model)
    out = []
    try:
        for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=desc is None):
            batch = items[start:start + batch_size]
            enc = tokenizer([mc_prompt(it) for it in batch], return_tensors="pt", padding=True).to(device)
            logits = model(**enc).logits[:, -1].float().cpu()
            for row, it in zip(logits, batch):
                ids = letter_ids[:len(it["choices"])]
                out.append(float(int(row[ids].argmax()) == it["answer"]))
    finally:
        tokenizer.padding_side = side
    return np.asarray(out)


def perplexity_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], *, n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """Perplexity after / before on the SAME sequences (eval.token_counts of each), with a paired bootstrap
    interval (the difference of token-mean NLLs, resampled by sequence, exponentiated)."""
    from forgetlab.core.metrics import bootstrap_diff_of_ratios
    lo, hi = bootstrap_diff_of_ratios(after["nll"], after["n"], before["nll"], before["n"], n_boot=n_boot, seed=seed)
    d = float(after["nll"].sum()) / float(after["n"].sum()) - float(before["nll"].sum()) / float(before["n"].sum())
    return {"ratio": float(np.exp(d)), "ci": [float(np.exp(lo)), float(np.exp(hi))]}


# ================================================================ notebook 01b: before and after pruning
PPL_SETS = ("retain_eval", "forget_eval", "general")  # perplexity sets, where a run has them


def measure(model, tokenizer, prompts: dict[str, Sequence[str]], batches: dict[str, list], mmlu: Sequence[dict], *,
            scorer: str, toxic_threshold: float, max_new_tokens: int, temperature: float, gen_batch_size: int,
            mc_batch_size: int, n_boot: int, seed: int, tag: str) -> dict:
    """Everything notebook 01b compares before and after pruning: for each prompt set ({"toxic": neutral prompts,
    "toxic_prompted": held-out toxic prompts}, empty ones skipped), sampled generations (seeded: the same random
    stream before and after), their scores and the toxic fraction with its interval; the perplexity of each of
    PPL_SETS in `batches` (with the per-sequence counts, for the paired change); MMLU letter accuracy if `mmlu`."""
    from forgetlab.core.eval import token_counts
    from forgetlab.core.metrics import bootstrap_mean
    out = {}
    for key, ps in prompts.items():
        if not ps:
            continue
        gens = sample_generations(model, tokenizer, ps, max_new_tokens=max_new_tokens, temperature=temperature,
                                  batch_size=gen_batch_size, seed=seed, desc=f"generations {key} ({tag})")
        s = toxicity_scores(gens, scorer)
        out[key] = toxic_fraction(s, toxic_threshold, n_boot=n_boot, seed=seed)
        out[f"{key}_generations"], out[f"{key}_scores"] = gens, s
    for name in PPL_SETS:
        if name in batches:
            c = token_counts(model, batches[name], desc=f"perplexity {name}")
            out[name] = perplexity(c, n_boot=n_boot, seed=seed)
            out[f"{name}_counts"] = c
    if mmlu:
        hits = mc_letter_correct(model, tokenizer, mmlu, mc_batch_size)
        out["mmlu"] = {"accuracy": hits.mean(), "ci": bootstrap_mean(hits, n_boot=n_boot, seed=seed), "n": len(hits)}
    return out


def pruning_effect(before: dict, after: dict, *, toxic_threshold: float, n_boot: int, seed: int
                   ) -> tuple[dict, dict]:
    """(drop of the toxic fraction and of the mean score per prompt set, paired over the same prompts and random
    stream; perplexity ratio after / before per perplexity set, paired over sequences) of two `measure` results."""
    drops = {key: paired_drop(before[f"{key}_scores"], after[f"{key}_scores"], toxic_threshold, n_boot=n_boot,
                              seed=seed) for key in ("toxic", "toxic_prompted") if key in before}
    ppl = {name: perplexity_change(before[f"{name}_counts"], after[f"{name}_counts"], n_boot=n_boot, seed=seed)
           for name in PPL_SETS if name in before}
    return drops, ppl
