"""MUSE-style unlearning evaluation (Shi et al., arXiv 2407.06460) at small scale: a news split and its metrics.

Split: the NYT paragraphs of BIG-bench squad_shifts (one passage per article: the first `seq_len` tokens of its
first paragraph) are shuffled (seeded) into a forget, a retain and a holdout set; each passage keeps up to
`qa_per_passage` of its SQuAD questions whose answer occurs in the passage. Paper scale: `muse-bench/MUSE-News`
(`load_muse_news`).

Metrics (greedy decoding, ROUGE-L F1 from `rouge-score`, AUC from scikit-learn):
* VerbMem: the continuation generated from the first `prompt_len` tokens of a forget passage vs the true rest;
* KnowMem: answers to the passage's questions, asked with a few-shot "Question: ...\\nAnswer: ..." prompt and
  no passage, vs the gold answers (best over the gold answers); on forget (should drop) and retain (utility);
* PrivLeak: Min-K% probability membership inference (score = mean of the lowest K% token log-probabilities of a
  passage), AUC of forget vs holdout with the holdout as the positive class (MUSE's orientation: a model that
  memorized the forget set scores it higher, so its AUC falls below 0.5), relative to the retrain model's AUC,
  in percent: (AUC - AUC_retrain) / AUC_retrain * 100. Strongly negative = under-unlearned, strongly positive =
  over-unlearned, about 0 = like the retrain model.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from forgetlab.core import tokens
from forgetlab.core.text import generate
from forgetlab.core.utils import check_fraction, check_positive_int, device_of

SPLITS = ("forget", "retain", "holdout")


# ================================================================ data
def _eligible(tokenizer, articles: list[dict], seq_len: int, qa_per_passage: int, min_qas: int) -> list[dict]:
    out = []
    for art in articles:
        para = art["paragraphs"][0]
        ids = tokenizer(para["context"], add_special_tokens=False)["input_ids"]
        if len(ids) < seq_len:
            continue
        ids = ids[:seq_len]
        text = tokenizer.decode(ids)
        qas = [{"question": q["question"], "answers": sorted({a for a in q["answers"] if a in text})}
               for q in para["qas"]]
        qas = [q for q in qas if q["answers"]]
        if len(qas) < min_qas:
            continue
        out.append({"title": art["title"], "ids": ids, "text": text, "qas": qas[:qa_per_passage]})
    return out


def news_split(tokenizer, *, n_forget: int, n_retain: int, n_holdout: int, seq_len: int = 64,
               qa_per_passage: int = 1, n_shots: int = 2, source: str = "nyt", data_dir: str = "data",
               seed: int = 0) -> dict[str, list[dict]]:
    """{"forget", "retain", "holdout": passages, "shots": few-shot QA pairs from other articles}.

    A passage is {"title", "ids": seq_len token ids, "text", "qas": [{"question", "answers"}]}; articles are
    split, never paragraphs of one article across sets. Deterministic for a seed.
    """
    from forgetlab.data import load_squad
    for name, v in (("n_forget", n_forget), ("n_retain", n_retain), ("n_holdout", n_holdout),
                    ("seq_len", seq_len), ("qa_per_passage", qa_per_passage)):
        check_positive_int(name, v)
    check_positive_int("n_shots", n_shots, allow_zero=True)
    pool = _eligible(tokenizer, load_squad(source, data_dir), seq_len, qa_per_passage, qa_per_passage)
    need = n_forget + n_retain + n_holdout + n_shots
    if len(pool) < need:
        raise ValueError(f"only {len(pool)} {source} articles have a first paragraph of >= seq_len={seq_len} "
                         f"tokens with {qa_per_passage} answerable questions; n_forget + n_retain + n_holdout + "
                         f"n_shots = {need}: lower them or seq_len")
    random.Random(seed).shuffle(pool)
    i = 0
    out = {}
    for name, n in (("forget", n_forget), ("retain", n_retain), ("holdout", n_holdout)):
        out[name] = pool[i:i + n]
        i += n
    out["shots"] = [{"question": p["qas"][0]["question"], "answer": p["qas"][0]["answers"][0]}
                    for p in pool[i:i + n_shots]]
    return out


def load_muse_news(name_or_path: str = "muse-bench/MUSE-News", tokenizer=None, *, n_forget: int = 0,
                   n_retain: int = 0, n_holdout: int = 0, seq_len: int = 2048, n_shots: int = 3,
                   **_) -> dict[str, list[dict]]:
    """The paper-scale split from MUSE-News (hub id or a `save_to_disk` folder of the same format): configs
    "raw" (splits forget, retain1, holdout: {"text"}) and "knowmem" (splits forget_qa, retain_qa,
    retain_qa_icl: {"question", "answer"}). QA pairs are attached to passages in order (MUSE scores them as
    one pool, so the passage they belong to does not matter for the metrics). n_* = 0 takes all."""
    from forgetlab.data import hub

    def get(config, split):
        return hub.load_dataset(name_or_path, config, split=split)

    out = {}
    qa = {"forget": list(get("knowmem", "forget_qa")), "retain": list(get("knowmem", "retain_qa"))}
    for name, split, n in (("forget", "forget", n_forget), ("retain", "retain1", n_retain),
                           ("holdout", "holdout", n_holdout)):
        rows = list(get("raw", split))
        rows = rows[:n] if n else rows
        passages = []
        for i, r in enumerate(rows):
            ids = tokenizer(r["text"], add_special_tokens=False)["input_ids"][:seq_len]
            qas = [{"question": q["question"], "answers": [q["answer"]]} for q in qa.get(name, [])[i::len(rows)]]
            passages.append({"title": f"{name}-{i}", "ids": ids, "text": tokenizer.decode(ids), "qas": qas})
        out[name] = passages
    shots = list(get("knowmem", "retain_qa_icl"))[:n_shots]
    out["shots"] = [{"question": s["question"], "answer": s["answer"]} for s in shots]
    return out


def lm_items(passages: Sequence[dict]) -> list[dict]:
    """Training items (input_ids, attention_mask, labels), one per passage (forgetlab.core.train.stack_collate pads
    passages shorter than the others)."""
    return [{"input_ids": torch.tensor(p["ids"]), "attention_mask": torch.ones(len(p["ids"]), dtype=torch.long),
             "labels": torch.tensor(p["ids"])} for p in passages]


# ================================================================ generation
def qa_prompt(shots: Sequence[dict], question: str) -> str:
    ctx = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return f"{ctx}Question: {question}\nAnswer:"


@torch.no_grad()
def token_logprobs(model, passages: Sequence[dict], batch_size: int = 16) -> list[list[float]]:
    """Log-probability of every token of each passage given the previous ones (the first token has none)."""
    out = []
    dev = device_of(model)
    for i in range(0, len(passages), batch_size):
        chunk = passages[i:i + batch_size]
        ids, _ = tokens.pad([p["ids"] for p in chunk], 0, device=dev)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out += [lp[j, :len(p["ids"]) - 1].tolist() for j, p in enumerate(chunk)]
    return out


def raw_outputs(model, tokenizer, split: dict, *, prompt_len: int = 32, max_new_tokens: int = 32,
                answer_tokens: int = 12, batch_size: int = 16) -> dict:
    """Everything the metrics need from one model: VerbMem continuations of the forget passages, KnowMem
    answers on forget and retain, token log-probabilities of forget and holdout (for Min-K%)."""
    forget = split["forget"]
    out = {"verbmem": generate(model, tokenizer, [p["ids"][:prompt_len] for p in forget],
                               max_new_tokens, batch_size=batch_size, stop_at_eos=False)}
    for name in ("forget", "retain"):
        qs = [q["question"] for p in split[name] for q in p["qas"]]
        prompts = [tokenizer(qa_prompt(split["shots"], q), add_special_tokens=False)["input_ids"] for q in qs]
        out[f"knowmem_{name}"] = [a.strip() for a in generate(model, tokenizer, prompts, answer_tokens,
                                                             batch_size=batch_size, stop="\n")]
    out["logprobs_forget"] = token_logprobs(model, forget, batch_size)
    out["logprobs_holdout"] = token_logprobs(model, split["holdout"], batch_size)
    return out


# ================================================================ metrics
@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(prediction: str, reference: str) -> float:
    return _scorer().score(reference, prediction)["rougeL"].fmeasure


def verbmem_scores(passages: Sequence[dict], continuations: Sequence[str], tokenizer, prompt_len: int = 32,
                   max_new_tokens: int = 32) -> np.ndarray:
    """ROUGE-L F1 of each generated continuation vs its passage's true next `max_new_tokens` tokens."""
    if len(passages) != len(continuations):
        raise ValueError(f"{len(continuations)} continuations for {len(passages)} passages")
    refs = [tokenizer.decode(p["ids"][prompt_len:prompt_len + max_new_tokens]) for p in passages]
    return np.array([rouge_l_f1(c, r) for c, r in zip(continuations, refs)])


def verbmem(model, tokenizer, passages: Sequence[dict], prompt_len: int, max_new_tokens: int, *,
            batch_size: int = 16) -> np.ndarray:
    """VerbMem of each passage: the greedy continuation of its first `prompt_len` tokens (all `max_new_tokens` of
    it, past an end-of-sequence token too) scored against its true next tokens (verbmem_scores)."""
    cont = generate(model, tokenizer, [p["ids"][:prompt_len] for p in passages], max_new_tokens,
                    batch_size=batch_size, stop_at_eos=False)
    return verbmem_scores(passages, cont, tokenizer, prompt_len, max_new_tokens)


def knowmem_scores(passages: Sequence[dict], answers: Sequence[str]) -> np.ndarray:
    """Best ROUGE-L F1 of each answer over the question's gold answers."""
    golds = [q["answers"] for p in passages for q in p["qas"]]
    if len(golds) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(golds)} questions")
    return np.array([max(rouge_l_f1(a, g) for g in gold) for a, gold in zip(answers, golds)])


def min_k_score(logprobs: Sequence[float], k: float = 0.4) -> float:
    """Min-K% probability: the mean of the lowest ceil-free max(1, int(k * n)) token log-probabilities."""
    check_fraction("k", k, allow_zero=False)
    lp = np.sort(np.asarray(logprobs, dtype=float))
    return float(lp[:max(1, int(len(lp) * k))].mean())


def mink_auc(forget_scores, holdout_scores) -> float:
    """MUSE's membership inference: the ROC AUC of forget (label 0) vs holdout (label 1, positive) Min-K% scores
    (members score higher); not the trained loss attack of forgetlab.papers.selective_pruning.vision.loss_attack_auc."""
    from sklearn.metrics import roc_auc_score
    y = np.r_[np.zeros(len(forget_scores)), np.ones(len(holdout_scores))]
    return float(roc_auc_score(y, np.r_[forget_scores, holdout_scores]))


def privleak(auc: float, auc_retrain: float) -> float:
    """MUSE's PrivLeak in percent: (AUC - AUC_retrain) / AUC_retrain * 100."""
    return (auc - auc_retrain) / auc_retrain * 100


def privleak_ci(forget, holdout, forget_ret, holdout_ret, *, n_boot: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> tuple[float, float]:
    """Bootstrap interval of PrivLeak, resampling forget and holdout passages (the same draws for the model and
    the retrain model). The resampled AUCs are Mann-Whitney U / (n_forget n_holdout) from scipy, vectorized over
    the draws (the same number as sklearn's roc_auc_score, ties counted one half)."""
    from scipy.stats import mannwhitneyu
    rng = np.random.default_rng(seed)
    f, h, fr, hr = map(np.asarray, (forget, holdout, forget_ret, holdout_ret))
    i = rng.integers(0, len(f), (n_boot, len(f)))
    j = rng.integers(0, len(h), (n_boot, len(h)))
    den = len(f) * len(h)
    auc = mannwhitneyu(h[j], f[i], axis=1, method="asymptotic").statistic / den
    auc_ret = mannwhitneyu(hr[j], fr[i], axis=1, method="asymptotic").statistic / den
    vals = (auc - auc_ret) / np.maximum(auc_ret, 1e-6) * 100
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def score(raw: dict, split: dict, tokenizer, *, k: float = 0.4, prompt_len: int = 32,
          max_new_tokens: int = 32) -> dict:
    """Per-item scores of one model's raw outputs: verbmem, knowmem_forget, knowmem_retain (ROUGE-L F1),
    minK_forget, minK_holdout (Min-K% scores)."""
    return {"verbmem": verbmem_scores(split["forget"], raw["verbmem"], tokenizer, prompt_len, max_new_tokens),
            "knowmem_forget": knowmem_scores(split["forget"], raw["knowmem_forget"]),
            "knowmem_retain": knowmem_scores(split["retain"], raw["knowmem_retain"]),
            "minK_forget": np.array([min_k_score(lp, k) for lp in raw["logprobs_forget"]]),
            "minK_holdout": np.array([min_k_score(lp, k) for lp in raw["logprobs_holdout"]])}


def summarize_scores(scores: dict, retrain_scores: dict) -> dict:
    """The four MUSE numbers of one model: VerbMem, KnowMem forget / retain (means), PrivLeak (percent)."""
    auc = mink_auc(scores["minK_forget"], scores["minK_holdout"])
    auc_ret = mink_auc(retrain_scores["minK_forget"], retrain_scores["minK_holdout"])
    return {"verbmem": float(np.mean(scores["verbmem"])),
            "knowmem_forget": float(np.mean(scores["knowmem_forget"])),
            "knowmem_retain": float(np.mean(scores["knowmem_retain"])),
            "auc": auc, "privleak": privleak(auc, auc_ret)}


def sequence_logprob(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the token log-probabilities of each sequence (positions 1..), [B]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return (lp * attention_mask[:, 1:]).sum(1)
