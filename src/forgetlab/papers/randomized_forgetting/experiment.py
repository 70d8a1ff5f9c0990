"""Randomized-label forgetting (Zhang, Choshen & Andreas, "Unforgettable Generalization in Language Models",
arXiv 2409.02228).

Fine-tune a causal LM on binarized multiple-choice tasks, then make it "forget" one task by fine-tuning on
examples of that task whose answers are drawn at random (or all flipped), and measure how far forgetting reaches:
on held-out items of the same task (forget ratio), on other tasks (cross-task matrix), and in the hidden states
(linear probes).

    python -m forgetlab.papers.randomized_forgetting.experiment fine-tune --model smollm2-135m \\
        --tasks strategyqa social_iqa ... \\
        --out checkpoints/randomized_forgetting/finetuned
    python -m forgetlab.papers.randomized_forgetting.experiment forget \\
        --finetuned checkpoints/randomized_forgetting/finetuned \\
        --out checkpoints/randomized_forgetting/forget

(abbreviated: a step takes every flag its dvc.yaml stage passes, none has a default; `dvc repro <stage>` runs it).

Tasks follow the LM Evaluation Harness zero-shot style: the prompt is the question followed by "\\nAnswer:", each
choice is a continuation " <choice>", and the prediction is the choice with the higher log-likelihood (the sum over
its tokens; `acc_norm` divides by the continuation's length in characters, as lm-eval does). Every example is
binarized: its correct answer plus one distractor drawn at random, in random order, so chance is 0.5.

Forgetting runs epoch by epoch until the forget set's accuracy against its TRUE labels is within `tol` of chance
(of 0 for flipped labels) or `max_epochs` is reached (`forget_to_convergence`); the paper's forget sets end near
chance, and a run that stops short of it measures a model that barely moved. Only tasks that fine-tuning actually
taught are forgotten (`screen`: a gain over the pre-trained model, not just a level).

Checkpoints on disk: only the multitask fine-tuned model (one save_pretrained). Every forgetting run starts from it
in memory, and the forget stage writes what the analysis needs (per-item log-likelihoods of every evaluation and
epoch, the hidden-state features of the probes), not the forgotten models (540 MB each for SmolLM2).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from forgetlab.core.models import load_causal_lm, resolve_device
from forgetlab.core.tokens import pad
from forgetlab.core.train import TrainConfig, train
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_list, check_positive_int, check_type,
                                  device_of, seed_everything, write_json)

LABEL_MODES = ("random", "flipped")
SCORINGS = ("sum", "norm")
DATA_FILE = "data.json"
RESULTS_FILE = "results.pt"
PROMPT_SUFFIX = "\nAnswer:"
IGNORE = -100
MAX_BALANCE_GROUPS = 10  # tasks with at most this many distinct answers get answer-balanced splits


# ================================================================ tasks: binarization and splits
def prompt_of(question: str) -> str:
    """lm-eval zero-shot prompt: the question, then "\\nAnswer:" (choices are scored as " <choice>")."""
    return question.strip() + PROMPT_SUFFIX


def binarize(example: dict, rng: random.Random) -> dict:
    """Keep the correct answer and one distractor drawn from the wrong choices, in random order.

    example: {"input", "choices", "target", "targets"?} (forgetlab.data.MCTask format). Returns
    {"prompt", "choices": [c0, c1], "label": index of the correct one (0 or 1), "answer", "distractor"}.
    """
    choices = [str(c).strip() for c in example["choices"]]
    correct = choices[example["target"]]
    targets = set(example.get("targets", [example["target"]]))
    wrong = [c for j, c in enumerate(choices) if j not in targets and c != correct]
    if not wrong:
        raise ValueError(f"example has no wrong choice to keep as a distractor: {example['choices']!r}")
    distractor = rng.choice(sorted(set(wrong)))
    label = rng.randrange(2)
    pair = [distractor, correct] if label else [correct, distractor]
    return {"prompt": prompt_of(example["input"]), "choices": pair, "label": label, "answer": correct,
            "distractor": distractor}


def _balanced_order(examples: list[dict], rng: random.Random) -> list[dict]:
    """Shuffle; when the task has few distinct answers (yes/no, true/false, ...) interleave them round-robin so
    that every prefix of the list is balanced over answers (a model that always says "yes" is then at chance)."""
    examples = list(examples)
    rng.shuffle(examples)
    answers = sorted({e["choices"][e["target"]].strip() for e in examples})
    if len(answers) > MAX_BALANCE_GROUPS:
        return examples
    groups = [[e for e in examples if e["choices"][e["target"]].strip() == a] for a in answers]
    if not groups:
        return []
    out = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    return out[:len(groups) * min(len(g) for g in groups)]  # equal counts per answer


def task_splits(name: str, examples: Sequence[dict], tokenizer, n_train: int, n_test: int,
                max_prompt_tokens: int, max_choice_tokens: int, seed: int) -> dict:
    """Binarized, deduplicated, disjoint train and test items of one task.

    Examples with a prompt longer than max_prompt_tokens or a choice longer than max_choice_tokens are dropped,
    duplicates of a question are dropped (first kept), and tasks with few distinct answers are answer-balanced.
    Returns {"train": [...], "test": [...], "info": {...}}; raises ValueError when there are too few examples.
    """
    seen, kept = set(), []
    n_long = n_dup = 0
    for e in examples:
        key = " ".join(e["input"].split()).lower()
        if key in seen:
            n_dup += 1
            continue
        seen.add(key)
        if len(e["choices"]) < 2:
            continue
        if (len(tokenizer(prompt_of(e["input"]))["input_ids"]) > max_prompt_tokens
                or max(len(tokenizer(" " + str(c).strip())["input_ids"]) for c in e["choices"]) > max_choice_tokens):
            n_long += 1
            continue
        kept.append(e)
    rng = random.Random(f"{seed}-{name}")
    ordered = _balanced_order(kept, rng)
    need = n_train + n_test
    if len(ordered) < need:
        raise ValueError(f"task {name!r} has {len(ordered)} usable examples (after dropping {n_long} too long and "
                         f"{n_dup} duplicates, balancing answers), fewer than n_train + n_test = {need}")
    # test first, so that changing n_train never changes the test items
    test, train_ex = ordered[:n_test], ordered[n_test:need]
    # each example's distractor and order are seeded by the example itself: a split never depends on the other
    items = {split: [dict(binarize(e, random.Random(f"{seed}-{name}-{e.get('idx', i)}-{e['input']}")), task=name,
                          idx=e.get("idx", i)) for i, e in enumerate(exs)]
             for split, exs in (("train", train_ex), ("test", test))}
    answers = sorted({e["choices"][e["target"]].strip() for e in kept})
    items["info"] = {"n_examples": len(examples), "n_usable": len(kept), "n_too_long": n_long, "n_duplicates": n_dup,
                     "answer_balanced": len(answers) <= MAX_BALANCE_GROUPS, "n_distinct_answers": len(answers),
                     "binarization": "correct answer + 1 random distractor, random order"}
    return items


def load_task(name: str, data_dir: str = "data") -> list[dict]:
    """Examples of a task in MCTask format: a local BIG-bench task, or "hf:<task>" (forgetlab.data.mc)."""
    if name.startswith("hf:") or name.startswith("disk:"):
        from forgetlab.data.mc import load_hf_mc
        return load_hf_mc(name)
    from forgetlab.data import load_mc_task
    return load_mc_task(name, data_dir).examples


def random_labels(n: int, seed: int) -> list[int]:
    """n labels in {0, 1}, exactly balanced (ceil/floor of n/2), in a seeded random order."""
    labels = [i % 2 for i in range(n)]
    random.Random(seed).shuffle(labels)
    return labels


def relabel(items: Sequence[dict], mode: str, seed: int) -> list[int]:
    """Training labels for forgetting: "random" (balanced random choice of the two options, independent of the
    truth) or "flipped" (always the wrong option)."""
    check_choice("label mode", mode, LABEL_MODES)
    if mode == "flipped":
        return [1 - it["label"] for it in items]
    return random_labels(len(items), seed)


# ================================================================ log-likelihood scoring
def _encode(tokenizer, items: Sequence[dict]) -> tuple[list[list[int]], list[list[list[int]]]]:
    prefixes = [tokenizer(it["prompt"])["input_ids"] for it in items]
    conts = [[tokenizer(" " + c)["input_ids"] for c in it["choices"]] for it in items]
    return prefixes, conts


def _layers_of(hidden: Sequence[torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
    return [hidden[l] for l in layers]


@torch.inference_mode()
def score_choices(model, tokenizer, items: Sequence[dict], *, batch_size: int = 16, layers: Sequence[int] = (),
                  cache_prefix: bool = True, desc: str | None = None) -> dict:
    """Log-likelihood of each of the two choices of every item, batched.

    Returns {"logp": [N, 2] summed log-probabilities of the continuation tokens, "n_chars": [N, 2] continuation
    lengths in characters, "label": [N]} and, when `layers` are given (indices into hidden_states, 0 = embeddings),
    "q_hidden": [N, len(layers), H] the hidden state of the last question token and "c_hidden": [N, len(layers),
    2, H] the hidden state of the last token of each choice (float32).

    cache_prefix=True runs each question once (left-padded, with explicit positions) and scores the two
    continuations on its key/value cache; cache_prefix=False runs every (question, choice) sequence in full.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefixes, conts = _encode(tokenizer, items)
    layers = list(layers)
    logp = torch.zeros(len(items), 2)
    q_hid = torch.zeros(len(items), len(layers), model.config.hidden_size) if layers else None
    c_hid = torch.zeros(len(items), len(layers), 2, model.config.hidden_size) if layers else None
    device = device_of(model)
    for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=desc is None):
        rows = range(start, min(start + batch_size, len(items)))
        pre = [prefixes[i] for i in rows]
        con = [c for i in rows for c in conts[i]]  # 2 per item, interleaved
        if cache_prefix:
            lp, qh, ch = _score_cached(model, pre, con, pad_id, layers, device)
        else:
            lp, qh, ch = _score_full(model, pre, con, pad_id, layers, device)
        logp[start:start + len(pre)] = lp.view(len(pre), 2)
        if layers:
            q_hid[start:start + len(pre)] = qh
            c_hid[start:start + len(pre)] = ch.view(len(pre), 2, len(layers), -1).transpose(1, 2)
    out = {"logp": logp, "label": torch.tensor([it["label"] for it in items]),
           "n_chars": torch.tensor([[len(" " + c) for c in it["choices"]] for it in items], dtype=torch.float)}
    if layers:
        out["q_hidden"], out["c_hidden"] = q_hid, c_hid
    return out


def _cont_logp(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


def _score_full(model, pre, con, pad_id, layers, device):
    seqs = [pre[i // 2] + c for i, c in enumerate(con)]
    ids, mask = pad(seqs, pad_id)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=bool(layers),
                use_cache=False)
    logits = out.logits.cpu()
    lp = torch.zeros(len(seqs))
    ends = torch.tensor([len(s) - 1 for s in seqs])
    qpos = torch.tensor([len(pre[i // 2]) - 1 for i in range(len(seqs))])
    for i, c in enumerate(con):
        p = len(pre[i // 2])
        t = torch.tensor(c)
        lp[i] = torch.log_softmax(logits[i, p - 1:p - 1 + len(c)].float(), -1).gather(-1, t[:, None]).sum()
    qh = ch = None
    if layers:
        hs = _layers_of(out.hidden_states, layers)
        r = torch.arange(len(seqs))
        ch = torch.stack([h.cpu()[r, ends] for h in hs], 1)  # [2B, L, H]
        qh = torch.stack([h.cpu()[r, qpos] for h in hs], 1)[0::2]
    return lp, qh, ch


def _score_cached(model, pre, con, pad_id, layers, device):
    ids, mask = pad(pre, pad_id, left=True)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    # only the last position's logits are needed (they predict the first answer token): skip the LM head elsewhere
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                use_cache=True, output_hidden_states=bool(layers), logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(2)
    first = torch.log_softmax(out.logits[:, -1].float().cpu(), -1).repeat_interleave(2, 0)  # predicts token 0
    cids, cmask = pad(con, pad_id)
    n_pre = mask.sum(1).repeat_interleave(2)
    cpos = n_pre[:, None] + torch.arange(cids.shape[1])[None]
    full_mask = torch.cat([mask.repeat_interleave(2, 0), cmask], 1)
    out2 = model(input_ids=cids.to(device), attention_mask=full_mask.to(device), position_ids=cpos.to(device),
                 past_key_values=cache, use_cache=True, output_hidden_states=bool(layers))
    logits = out2.logits.float().cpu()
    lp = first.gather(1, cids[:, :1]).squeeze(1)
    if cids.shape[1] > 1:
        lp = lp + _cont_logp(logits[:, :-1], cids[:, 1:], cmask[:, 1:].float())
    qh = ch = None
    if layers:
        r = torch.arange(len(con))
        ends = cmask.sum(1) - 1
        qh = torch.stack([h[:, -1].cpu() for h in _layers_of(out.hidden_states, layers)], 1)
        ch = torch.stack([h.cpu()[r, ends] for h in _layers_of(out2.hidden_states, layers)], 1)
    return lp, qh, ch


def predictions(scores: dict, scoring: str = "sum") -> torch.Tensor:
    """Predicted choice (0/1) per item: higher summed log-likelihood ("sum") or per character ("norm")."""
    check_choice("scoring", scoring, SCORINGS)
    s = scores["logp"] if scoring == "sum" else scores["logp"] / scores["n_chars"]
    return (s[:, 1] > s[:, 0]).long()


def correct(scores: dict, scoring: str = "sum") -> torch.Tensor:
    """1.0 where the prediction is the true answer, per item."""
    return (predictions(scores, scoring) == scores["label"]).float()


def confidence(scores: dict) -> torch.Tensor:
    """Per item, the probability the model gives the correct answer when the two choices are renormalized:
    softmax over the two summed log-likelihoods (0.5 = no preference)."""
    p = torch.softmax(scores["logp"], -1)
    return p.gather(1, scores["label"][:, None]).squeeze(1)


# ================================================================ measures
def forget_ratio(acc_ft: float, acc_forget: float, chance: float = 0.5) -> float:
    """(acc_ft - acc_forget) / (acc_ft - chance): 0 = nothing forgotten, 1 = at chance, > 1 = below chance."""
    if acc_ft <= chance:
        raise ValueError(f"forget ratio needs a fine-tuned accuracy above chance ({chance}), got {acc_ft}")
    return (acc_ft - acc_forget) / (acc_ft - chance)


def bootstrap_forget_ratio(ft_correct, forget_correct, *, n_boot: int = 1000, seed: int = 0,
                           alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the forget ratio, resampling test items (paired: same items before and after).
    Resamples whose fine-tuned accuracy is not above chance are left out."""
    a, b = np.asarray(ft_correct, float), np.asarray(forget_correct, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    fa, fb = a[idx].mean(1), b[idx].mean(1)
    ok = fa > 0.5 + 1e-9
    r = (fa[ok] - fb[ok]) / (fa[ok] - 0.5)
    return float(np.quantile(r, alpha / 2)), float(np.quantile(r, 1 - alpha / 2))


def normalized_forget_ratio(test_ft: float, test_after: float, fs_ft: float, fs_after: float,
                            chance: float = 0.5) -> float:
    """How much of the forgetting that happened on the forget set carried over to unseen items of the task:

        r_test / r_fs,   r_test = (acc_ft^test - acc_after^test) / (acc_ft^test - chance),
                         r_fs   = (acc_ft^fs   - acc_after^fs)   / (acc_ft^fs   - chance)

    (fs = the forget set, scored against its TRUE labels). 1 = the test items fell as far towards chance as the
    forget set itself, 0 = they did not move. Undefined (ValueError) when nothing was forgotten on the forget set
    (r_fs <= 0) or an accuracy before forgetting is not above chance."""
    r_fs = forget_ratio(fs_ft, fs_after, chance)
    if r_fs <= 0:
        raise ValueError(f"normalized forget ratio needs forgetting on the forget set (its forget ratio is {r_fs})")
    return forget_ratio(test_ft, test_after, chance) / r_fs


def _ratio_samples(a: np.ndarray, b: np.ndarray, idx: np.ndarray, chance: float = 0.5) -> np.ndarray:
    fa, fb = a[idx].mean(1), b[idx].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fa > chance + 1e-9, (fa - fb) / (fa - chance), np.nan)


def bootstrap_normalized_ratio(test_ft_correct, test_after_correct, fs_ft_correct, fs_after_correct, *,
                               n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of normalized_forget_ratio. The test items and the forget-set items are two different
    samples, resampled independently (each paired before/after). Resamples where either ratio is undefined (an
    accuracy before not above chance, or no forgetting on the forget set) are left out."""
    ta, tb, fa, fb = (np.asarray(v, float) for v in (test_ft_correct, test_after_correct, fs_ft_correct,
                                                      fs_after_correct))
    rng = np.random.default_rng(seed)
    r_t = _ratio_samples(ta, tb, rng.integers(0, len(ta), size=(n_boot, len(ta))))
    r_f = _ratio_samples(fa, fb, rng.integers(0, len(fa), size=(n_boot, len(fa))))
    ok = ~np.isnan(r_t) & ~np.isnan(r_f) & (r_f > 1e-9)
    if not ok.any():
        return math.nan, math.nan
    q = r_t[ok] / r_f[ok]
    return float(np.quantile(q, alpha / 2)), float(np.quantile(q, 1 - alpha / 2))


def bootstrap_mean_forget_ratio(cells: Sequence[tuple], *, n_boot: int = 1000, seed: int = 0,
                                alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean forget ratio over several cells (e.g. the off-diagonal of the cross-task
    matrix). cells: (ft_correct, after_correct) per cell, each paired over its own items; the items of every cell
    are resampled (the cells themselves are fixed). Cells whose resampled fine-tuned accuracy is not above chance
    drop out of that resample's mean."""
    if not cells:
        raise ValueError("bootstrap_mean_forget_ratio needs at least one cell")
    rng = np.random.default_rng(seed)
    samples = []
    for a, b in cells:
        a, b = np.asarray(a, float), np.asarray(b, float)
        samples.append(_ratio_samples(a, b, rng.integers(0, len(a), size=(n_boot, len(a)))))
    m = np.nanmean(np.stack(samples), 0)
    m = m[~np.isnan(m)]
    return float(np.quantile(m, alpha / 2)), float(np.quantile(m, 1 - alpha / 2))


def bootstrap_spearman(x, y, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of Spearman's rho between x and y, resampling the PAIRS (the tasks) with replacement;
    resamples with a constant x or y (rho undefined) are left out. With a handful of tasks the interval is wide:
    that is the point of reporting it."""
    from scipy.stats import spearmanr
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    rhos = []
    for idx in rng.integers(0, len(x), size=(n_boot, len(x))):
        xs, ys = x[idx], y[idx]
        if np.ptp(xs) > 0 and np.ptp(ys) > 0:
            rhos.append(spearmanr(xs, ys)[0])
    rhos = np.asarray([r for r in rhos if not np.isnan(r)])
    if not len(rhos):
        return math.nan, math.nan
    return float(np.quantile(rhos, alpha / 2)), float(np.quantile(rhos, 1 - alpha / 2))


def hidden_variance(h: torch.Tensor) -> float:
    """Trace of the covariance matrix (unbiased, across examples) of hidden states h [N, H] = the summed variance
    of every dimension."""
    h = torch.as_tensor(h, dtype=torch.float64)
    if h.shape[0] < 2:
        raise ValueError("hidden_variance needs at least 2 examples")
    return float(h.var(0, unbiased=True).sum())


def probe_accuracy(train_x, train_y, test_x, test_y, *, C: float = 1.0, seed: int = 0) -> float:
    """Accuracy of a standardized logistic-regression probe (scikit-learn) fit on train, scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(np.asarray(train_x, float), np.asarray(train_y))
    return float(clf.score(np.asarray(test_x, float), np.asarray(test_y)))


def probe_cv(x, y, *, folds: int = 5, C: float = 1.0, seed: int = 0, x_eval=None,
             shuffle_labels: bool = False) -> np.ndarray:
    """Out-of-fold correctness (0/1 per item) of a standardized logistic-regression probe, by stratified k-fold
    cross-validation over the items (seeded): each fold is predicted by a probe fit on the other folds.

    x_eval: features of the SAME items from another model, read by the probe fit on x (e.g. fit before
    forgetting, applied after: does the old read-out still work?). shuffle_labels: the control probe, fit on the
    training folds' labels permuted at random (seeded) and scored against the true labels; it measures what a probe
    of this size reaches on these features without the task's signal (about chance). A training fold with one
    class only (a handful of items) predicts that class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    check_positive_int("folds", folds)
    x = np.asarray(x, float)
    xe = x if x_eval is None else np.asarray(x_eval, float)
    y = np.asarray(y)
    if xe.shape != x.shape:
        raise ValueError(f"x_eval has shape {xe.shape}, x has {x.shape}: they must be the same items")
    rng = np.random.default_rng(seed)
    hit = np.zeros(len(y))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        y_fit = rng.permutation(y[train_idx]) if shuffle_labels else y[train_idx]
        if len(np.unique(y_fit)) < 2:  # a few items, one class in the training folds: the probe is that constant
            hit[test_idx] = y[test_idx] == y_fit[0]
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
        clf.fit(x[train_idx], y_fit)
        hit[test_idx] = clf.predict(xe[test_idx]) == y[test_idx]
    return hit


def probe_features(scores: dict) -> torch.Tensor:
    """Pairwise probe input per item and layer: hidden state after choice 0 minus after choice 1 [N, L, H]
    (the label says which choice is correct; both orders occur, so the probe cannot just learn a constant)."""
    return scores["c_hidden"][:, :, 0] - scores["c_hidden"][:, :, 1]


def compact(scores: dict) -> dict:
    """What the stages store of a scoring: log-likelihoods, labels, lengths and, if recorded, the probe features
    and question hidden states in float16 (a quarter of the raw choice states)."""
    out = {k: scores[k] for k in ("logp", "label", "n_chars")}
    if "c_hidden" in scores:
        out["probe_x"] = probe_features(scores).half()
        out["q_hidden"] = scores["q_hidden"].half()
    return out


# ================================================================ training
def training_batches(tokenizer, items: Sequence[dict], labels: Sequence[int], batch_size: int, seed: int) -> list[dict]:
    """Tokenized (prompt + " " + choice[label]) sequences with the loss on the answer tokens only, grouped into
    batches of similar length (less padding); the train loop shuffles the batches."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = []
    for it, lab in zip(items, labels):
        p = tokenizer(it["prompt"])["input_ids"]
        c = tokenizer(" " + it["choices"][lab])["input_ids"]
        seqs.append((p + c, [IGNORE] * len(p) + c))
    order = list(range(len(seqs)))
    random.Random(seed).shuffle(order)
    chunk = batch_size * 8  # sort by length inside chunks of 8 batches
    order = [i for s in range(0, len(order), chunk) for i in sorted(order[s:s + chunk], key=lambda j: len(seqs[j][0]))]
    batches = []
    for s in range(0, len(order), batch_size):
        rows = [seqs[i] for i in order[s:s + batch_size]]
        ids, mask = pad([r[0] for r in rows], pad_id)
        lab, _ = pad([r[1] for r in rows], IGNORE)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": lab})
    return batches


def _first(items):
    return items[0]


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy on the answer tokens only, with the LM head applied only where a label is
    (the same value as model(**batch).loss; the vocabulary projection of the prompt positions is skipped)."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              use_cache=False).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def train_plan(*, grad_accum: int, grad_checkpointing: bool, optimizer: str, mixed_precision: str,
               weight_decay: float, warmup_steps: int, grad_clip: float) -> dict:
    """A training stage's TrainConfig settings besides lr, epochs and batch: those that trade time for memory (the
    paper profile's 7B model on one GPU) and the optimizer's (weight decay, linear warmup, clipping norm); checked."""
    plan = dict(grad_accum=grad_accum, grad_checkpointing=grad_checkpointing, optimizer=optimizer,
                mixed_precision=mixed_precision, weight_decay=weight_decay, warmup_steps=warmup_steps,
                grad_clip=grad_clip)
    TrainConfig(**plan)  # a bad value fails here, naming the parameter, before any model is loaded
    return plan


def train_items(model, tokenizer, items, labels, *, lr: float, batch_size: int, epochs: int, seed: int,
                on_example=None, plan: dict | None = None, desc: str | None = "train") -> list[float]:
    """Fine-tune on items with the given labels (forgetlab.core.train.train over pre-made batches of batch_size, each
    optimizer step taking grad_accum of them; `plan`: train_plan's settings, None = TrainConfig's). on_example(n) is
    called after each optimizer step with the number of examples seen so far."""
    batches = training_batches(tokenizer, items, labels, batch_size, seed)
    cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=1, seed=seed, **(plan or {}))  # one pre-made batch per item

    def hook(step, loss):
        if on_example is not None:
            on_example(min(step * batch_size * cfg.grad_accum, len(items) * epochs))
    return train(model, batches, cfg, loss_fn=answer_loss, collate=_first, on_step=hook, desc=desc)


# ================================================================ stage 1: multitask fine-tune
def fine_tune(*, model: str, tasks: list[str], out: str, data_dir: str, n_train: int, n_test: int,
              max_prompt_tokens: int, max_choice_tokens: int, epochs: int, lr: float, batch_size: int,
              eval_batch_size: int, layers: list[int], seed: int, grad_accum: int, grad_checkpointing: bool,
              optimizer: str, mixed_precision: str, weight_decay: float, warmup_steps: int, grad_clip: float,
              device: str) -> None:
    """Binarize every candidate task, score the pre-trained model, fine-tune one model on all tasks jointly
    (correct labels), score it; save the model, the items (data.json) and the scores (results.pt).
    grad_accum, grad_checkpointing, optimizer, mixed_precision: the memory plan, and weight_decay, warmup_steps,
    grad_clip: the optimizer's settings (train_plan, forgetlab.core.train.TrainConfig);
    device: where the model is scored and trained (models.resolve_device: the scoring before training runs there
    too; a 7B model on the host CPU would take hours)."""
    plan = train_plan(grad_accum=grad_accum, grad_checkpointing=grad_checkpointing, optimizer=optimizer,
                      mixed_precision=mixed_precision, weight_decay=weight_decay, warmup_steps=warmup_steps,
                      grad_clip=grad_clip)
    device = resolve_device(device)
    names = check_list("tasks", tasks, str)
    if len(names) < 2:
        raise ValueError(f"parameter 'tasks' needs at least 2 tasks, got {names}")
    for name, v in (("n_train", n_train), ("n_test", n_test), ("max_prompt_tokens", max_prompt_tokens),
                    ("max_choice_tokens", max_choice_tokens), ("epochs", epochs), ("batch_size", batch_size),
                    ("eval_batch_size", eval_batch_size)):
        check_positive_int(name, v)
    seed_everything(seed)
    lm, tok = load_causal_lm(model, data_dir=data_dir, device=device)
    n_hidden = lm.config.num_hidden_layers + 1
    layer_ids = sorted({l % n_hidden for l in check_list("layers", layers, int)})
    data = {"model": model, "task_order": names, "tasks": {}}
    for name in names:
        data["tasks"][name] = task_splits(name, load_task(name, data_dir), tok, n_train, n_test, max_prompt_tokens,
                                          max_choice_tokens, seed)
    # the pre-trained model's hidden states too: the probes' control (what the task's read-out was before any
    # fine-tuning)
    base = {n: score_choices(lm, tok, d["test"], batch_size=eval_batch_size, layers=layer_ids,
                             desc=f"pre-trained {n}") for n, d in data["tasks"].items()}
    items = [it for d in data["tasks"].values() for it in d["train"]]
    losses = train_items(lm, tok, items, [it["label"] for it in items], lr=lr, batch_size=batch_size,
                         epochs=epochs, seed=seed, plan=plan, desc="multitask fine-tune")
    ft = {n: compact(score_choices(lm, tok, d["test"], batch_size=eval_batch_size, layers=layer_ids,
                                   desc=f"fine-tuned {n}")) for n, d in data["tasks"].items()}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        lm.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        (tmp / DATA_FILE).write_text(json.dumps(data, indent=1, sort_keys=True))
        torch.save({"base": {n: compact(v) for n, v in base.items()}, "finetuned": ft, "losses": losses,
                    "layers": layer_ids}, tmp / RESULTS_FILE)


# ================================================================ stage 2: forgetting runs
def check_margin(margin: float) -> float:
    """The screen's margin: a gain in accuracy, in [-1, 1] (a negative margin keeps tasks that lost accuracy in
    fine-tuning; -1 keeps every task, as the smoke profile does, which computes the screen without applying it)."""
    check_type("margin", margin, (int, float))
    if not -1 <= margin <= 1:
        raise ValueError(f"parameter 'margin' must be a gain in accuracy in [-1, 1], got {margin!r}")
    return float(margin)


def screen(base_scores: dict, ft_scores: dict, threshold: float, margin: float,
           scoring: str) -> tuple[list[str], dict[str, dict]]:
    """Screen on learning, not on level: keep a task iff its fine-tuned test accuracy (under `scoring`, sum or
    norm) is at least `threshold` AND fine-tuning raised it by at least `margin` over the pre-trained model (a
    task the model already solved before fine-tuning has nothing fine-tuning taught that forgetting could remove).

    Returns (kept tasks in candidate order, {task: {"pretrained_acc", "finetuned_acc", "gain", "kept",
    "reason"}}), where reason says why a task was rejected ("" when kept)."""
    check_fraction("threshold", threshold)
    check_margin(margin)
    table = {}
    for name, s in ft_scores.items():
        b, f = float(correct(base_scores[name], scoring).mean()), float(correct(s, scoring).mean())
        reasons = []
        if f < threshold:
            reasons.append(f"fine-tuned accuracy {f:.3f} < threshold {threshold}")
        if f - b < margin - 1e-6:  # accuracies are float32 means
            reasons.append(f"gain {f - b:+.3f} over the pre-trained model ({b:.3f} -> {f:.3f}) < margin {margin}")
        table[name] = {"pretrained_acc": b, "finetuned_acc": f, "gain": f - b, "kept": not reasons,
                       "reason": "; ".join(reasons)}
    return [n for n, r in table.items() if r["kept"]], table


def convergence_target(mode: str, chance: float = 0.5) -> float:
    """Forget-set accuracy (against the TRUE labels) that a converged forgetting run reaches: chance for random
    labels (the model has fit answers that are independent of the truth), 0 for flipped labels (it has fit the
    wrong answer of every item)."""
    check_choice("label mode", mode, LABEL_MODES)
    return chance if mode == "random" else 0.0


def reached(accuracy: float, target: float, tol: float) -> bool:
    """The stop rule: a forget set's accuracy against its true labels is within `tol` of `target`."""
    return abs(accuracy - target) <= tol + 1e-9


class _Converged(Exception):
    """Raised from the training loop's on_step hook to end a forgetting run at the epoch that reached the target."""


def forget_to_convergence(model, tokenizer, items: Sequence[dict], labels: Sequence[int], test_items: Sequence[dict],
                          *, target: float, tol: float, scoring: str, max_epochs: int, lr: float, batch_size: int,
                          seed: int, eval_batch_size: int = 16, test_every_epoch: bool = True,
                          test_layers: Sequence[int] = (), plan: dict | None = None, desc: str | None = None) -> dict:
    """Train on `items` with the given (random or flipped) `labels`, one optimizer and one shuffled pass per epoch
    (forgetlab.core.train.train), until the forget set's accuracy against its TRUE labels is within `tol` of
    `target` or `max_epochs` epochs are done.

    After every epoch the forget set is scored (the stop rule reads its accuracy under `scoring`) and, with
    test_every_epoch, the test items too (the curve of held-out accuracy); the test items are scored after the
    last epoch in any case, with the hidden states of `test_layers` (the probes). Returns {"epochs": epochs run,
    "converged": bool, "forget": [compact scores of the forget set after epoch 1..epochs], "test": [compact
    scores of the test items after each epoch, or only the last], "final_test": compact scores (with probe
    features if test_layers), "losses": per step}."""
    check_positive_int("max_epochs", max_epochs)
    check_fraction("tol", tol)
    check_choice("scoring", scoring, SCORINGS)
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    batches = training_batches(tokenizer, items, labels, batch_size, seed)
    cfg = TrainConfig(lr=lr, epochs=max_epochs, batch_size=1, seed=seed, **(plan or {}))  # one pre-made batch per item
    per_epoch = -(-len(batches) // cfg.grad_accum)  # optimizer steps per epoch
    rec = {"forget": [], "test": [], "losses": [], "converged": False, "epochs": 0}

    def score_test(layers=()):
        return score_choices(model, tokenizer, test_items, batch_size=eval_batch_size, layers=layers)

    def on_step(step, loss):
        rec["losses"].append(loss)
        if step % per_epoch:
            return
        model.eval()
        rec["epochs"] = step // per_epoch
        fs = score_choices(model, tokenizer, items, batch_size=eval_batch_size)
        rec["forget"].append(compact(fs))
        done = reached(float(correct(fs, scoring).mean()), target, tol)
        last = done or rec["epochs"] == max_epochs
        if test_every_epoch or last:
            ts = score_test(test_layers if last else ())
            rec["test"].append(compact(ts))
            if last:
                rec["final_test"] = rec["test"][-1]
        model.train()
        if done:
            rec["converged"] = True
            raise _Converged
    try:
        train(model, batches, cfg, loss_fn=answer_loss, collate=_first, on_step=on_step, desc=desc)
    except _Converged:
        pass
    model.eval()
    return rec


def forget(*, finetuned: str, out: str, data_dir: str, threshold: float, margin: float, n_forget: int,
           small_fraction: float, n_cross: int, lr: float, batch_size: int, max_epochs: int, tol: float,
           scoring: str, modes: list[str], eval_batch_size: int, seed: int, grad_accum: int, grad_checkpointing: bool,
           optimizer: str, mixed_precision: str, weight_decay: float, warmup_steps: int, grad_clip: float,
           device: str) -> None:
    """For every task that passes the screen (see `screen`): from the fine-tuned model, forget the task on its
    first n_forget training items with random (and flipped) labels until convergence (forget_to_convergence:
    the forget set within `tol` of chance, or of 0 for flipped labels, or max_epochs; the screen and this stop
    rule read accuracies under `scoring`), recording the forget-set
    accuracy after every epoch (and, for random labels, the test accuracy; otherwise the test items are scored
    after the last epoch); the same on the first round(small_fraction * n_forget) items (the
    small-N ablation, random labels); after the random-label run, score the first n_cross
    test items of every other kept task (the cross-task matrix). Records the forget set's scores and hidden states
    before forgetting (variance measure) and the test items' hidden states after (probes). Writes results.pt and
    summary.json, not models. grad_accum, grad_checkpointing, optimizer, mixed_precision: the memory plan, and
    weight_decay, warmup_steps, grad_clip: the optimizer's settings (train_plan);
    device: where the model is scored and trained (models.resolve_device)."""
    plan = train_plan(grad_accum=grad_accum, grad_checkpointing=grad_checkpointing, optimizer=optimizer,
                      mixed_precision=mixed_precision, weight_decay=weight_decay, warmup_steps=warmup_steps,
                      grad_clip=grad_clip)
    device = resolve_device(device)
    check_fraction("threshold", threshold)
    check_margin(margin)
    check_fraction("tol", tol)
    check_choice("scoring", scoring, SCORINGS)
    check_fraction("small_fraction", small_fraction)
    for name, v in (("n_forget", n_forget), ("n_cross", n_cross), ("batch_size", batch_size),
                    ("max_epochs", max_epochs), ("eval_batch_size", eval_batch_size)):
        check_positive_int(name, v)
    n_small = round(small_fraction * n_forget)
    if small_fraction and not 2 <= n_small < n_forget:
        raise ValueError(f"parameter 'small_fraction' ({small_fraction}) gives {n_small} items: it must give at "
                         f"least 2 and fewer than n_forget ({n_forget}); 0 turns the small-N ablation off")
    label_modes = check_list("modes", modes, str)
    for m in label_modes:
        check_choice("mode", m, LABEL_MODES)
    if "random" not in label_modes:
        raise ValueError("parameter 'modes' must include 'random' (the cross-task matrix uses it)")
    seed_everything(seed)
    src = Path(finetuned)
    data = json.loads((src / DATA_FILE).read_text())
    ft_res = torch.load(src / RESULTS_FILE)
    keep, table = screen(ft_res["base"], ft_res["finetuned"], threshold, margin, scoring)
    if len(keep) < 2:
        raise ValueError(f"only {len(keep)} task(s) pass the screen (threshold {threshold}, margin {margin}): lower "
                         "'threshold' or 'margin', or change the candidate tasks")
    for name in keep:
        if len(data["tasks"][name]["train"]) < n_forget:
            raise ValueError(f"parameter 'n_forget' ({n_forget}) exceeds the {len(data['tasks'][name]['train'])} "
                             f"training items of task {name!r}")
    if any(len(data["tasks"][n]["test"]) < n_cross for n in keep):
        raise ValueError(f"parameter 'n_cross' ({n_cross}) exceeds the test items of a kept task")
    lm, tok = load_causal_lm(str(src / "model"), data_dir=data_dir, device=device)
    layers = ft_res["layers"]
    start = {k: v.detach().to("cpu", copy=True) for k, v in lm.state_dict().items()}  # on the host: 27 GB at 7B
    tests = {n: data["tasks"][n]["test"] for n in keep}
    common = dict(tol=tol, scoring=scoring, max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                  eval_batch_size=eval_batch_size, plan=plan)
    before, runs = {}, {}
    for ti, name in enumerate(keep):
        items = data["tasks"][name]["train"][:n_forget]
        lm.load_state_dict(start)
        before[name] = compact(score_choices(lm, tok, items, batch_size=eval_batch_size, layers=layers,
                                             desc=f"forget set {name}"))
        for mode in label_modes:
            lm.load_state_dict(start)
            labels = relabel(items, mode, seed + ti)
            # the held-out curve (test items after every epoch) and the probe features: random labels only
            rnd = mode == "random"
            rec = forget_to_convergence(lm, tok, items, labels, tests[name], target=convergence_target(mode),
                                        seed=seed + ti, test_every_epoch=rnd, test_layers=layers if rnd else (),
                                        desc=f"forget {name} ({mode})", **common)
            run = {"labels": torch.tensor(labels), **rec, "scores": {name: rec["final_test"]}}
            if mode == "random":
                for b in keep:
                    if b != name:
                        run["scores"][b] = compact(score_choices(lm, tok, tests[b][:n_cross],
                                                                 batch_size=eval_batch_size,
                                                                 desc=f"after {name}: {b}"))
                if n_small:
                    lm.load_state_dict(start)
                    small_labels = relabel(items[:n_small], "random", seed + ti)
                    small = forget_to_convergence(lm, tok, items[:n_small], small_labels, tests[name],
                                                  target=convergence_target("random"), seed=seed + ti,
                                                  test_every_epoch=False, desc=f"forget {name} (N = {n_small})",
                                                  **common)
                    run["small"] = {"labels": torch.tensor(small_labels), **small}
            runs[f"{name}|{mode}"] = run
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        torch.save({"kept": keep, "screen": table, "threshold": threshold, "margin": margin, "layers": layers,
                    "n_cross": n_cross, "n_forget": n_forget, "n_small": n_small, "small_fraction": small_fraction,
                    "tol": tol, "max_epochs": max_epochs, "modes": label_modes, "scoring": scoring,
                    "before": before, "runs": runs}, tmp / RESULTS_FILE)
        write_json(tmp / "summary.json", {"kept": keep, "runs": {
            k: {"epochs": r["epochs"], "converged": r["converged"],
                "forget_set_acc": [float(correct(s, scoring).mean()) for s in r["forget"]]} for k, r in runs.items()}})


def load_results(finetuned: str, forget_dir: str) -> tuple[dict, dict, dict]:
    """(data.json, fine-tune results, forget results) of the two stages."""
    ft, fg = Path(finetuned), Path(forget_dir)
    for p in (ft / DATA_FILE, ft / RESULTS_FILE, fg / RESULTS_FILE):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run the randomized_forgetting stages (dvc repro)")
    return json.loads((ft / DATA_FILE).read_text()), torch.load(ft / RESULTS_FILE), torch.load(fg / RESULTS_FILE)


# the checkpoint steps of dvc.yaml: `python -m forgetlab.papers.randomized_forgetting.experiment <step> --flag ...`
STEPS = (fine_tune, forget)

if __name__ == "__main__":
    from forgetlab.repro.cli import run
    run(list(STEPS), description=__doc__.splitlines()[0])
