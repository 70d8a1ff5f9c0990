"""Hugging Face datasets behind the LM Evaluation Harness multiple-choice tasks (paper-scale profile of the
randomized-forgetting notebook), converted to forgetlab's MCTask example format
{"input", "choices", "target", "targets", "idx"} with lm-eval's zero-shot prompts (the "\\nAnswer:" suffix is added
by forgetlab.papers.randomized_forgetting.experiment.prompt_of).

    load_hf_mc("hf:boolq")                       # datasets.load_dataset("aps/super_glue", "boolq") (network)
    load_hf_mc("hf:boolq@/path/to/saved")        # the same converter on a DatasetDict saved with save_to_disk

The splits of a dataset (train, validation) are pooled; forgetlab.papers.randomized_forgetting.experiment.task_splits
deduplicates and makes disjoint train and test sets.
"""
from __future__ import annotations

from typing import Callable


def _key_index(labels, key) -> int:
    key = str(key).strip()
    labels = [str(l) for l in labels]
    return labels.index(key) if key in labels else "ABCDE12345".index(key) % 5


def _lettered(question_field: str, prefix: str):
    """Converter for datasets with {question_field, choices: {label, text}, answerKey} (ARC, OpenBookQA,
    CommonsenseQA): the input is prefix + the question."""
    def convert(r):
        return {"input": f"{prefix}{r[question_field]}", "choices": list(r["choices"]["text"]),
                "target": _key_index(r["choices"]["label"], r["answerKey"])}
    return convert


# name -> (hub path, config, converter(row) -> {"input", "choices", "target"} or None to skip)
HF_TASKS: dict[str, tuple[str, str | None, Callable]] = {
    "piqa": ("ybisk/piqa", None, lambda r: {"input": f"Question: {r['goal']}", "choices": [r["sol1"], r["sol2"]],
                                            "target": int(r["label"])}),
    "sciq": ("allenai/sciq", None, lambda r: {
        "input": f"{r['support'].strip()}\nQuestion: {r['question']}".strip(),
        "choices": [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]], "target": 3}),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", _lettered("question", "Question: ")),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", _lettered("question", "Question: ")),
    "openbookqa": ("allenai/openbookqa", "main", _lettered("question_stem", "")),
    "commonsense_qa": ("tau/commonsense_qa", None, _lettered("question", "Question: ")),
    "boolq": ("aps/super_glue", "boolq", lambda r: {
        "input": f"{r['passage']}\nQuestion: {r['question']}?", "choices": ["no", "yes"], "target": int(r["label"])}),
    "cb": ("aps/super_glue", "cb", lambda r: {
        "input": f"{r['premise']}\nQuestion: {r['hypothesis']}. True, False, or Neither?",
        "choices": ["True", "False", "Neither"], "target": int(r["label"])}),
    "wic": ("aps/super_glue", "wic", lambda r: {
        "input": f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nQuestion: Is the word "
                 f"'{r['word']}' used in the same way in the two sentences above?",
        "choices": ["no", "yes"], "target": int(r["label"])}),
    "rte": ("nyu-mll/glue", "rte", lambda r: {
        "input": f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?", "choices": ["True", "False"],
        "target": int(r["label"])}),
    "qnli": ("nyu-mll/glue", "qnli", lambda r: {
        "input": f"{r['question']}\n{r['sentence']}\nQuestion: Does this response answer the question?",
        "choices": ["yes", "no"], "target": int(r["label"])}),
    "wnli": ("nyu-mll/glue", "wnli", lambda r: {
        "input": f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?", "choices": ["False", "True"],
        "target": int(r["label"])}),
    "sst2": ("nyu-mll/glue", "sst2", lambda r: {
        "input": f"{r['sentence']}\nQuestion: Is this sentence positive or negative?",
        "choices": ["negative", "positive"], "target": int(r["label"])}),
    "mrpc": ("nyu-mll/glue", "mrpc", lambda r: {
        "input": f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nQuestion: Do both sentences mean "
                 "the same thing?", "choices": ["no", "yes"], "target": int(r["label"])}),
}
SPLITS = ("train", "validation")  # pooled; test splits of GLUE/SuperGLUE have no labels


def load_hf_mc(spec: str) -> list[dict]:
    """Examples of an lm-eval task: "hf:<task>" from the hub, or "hf:<task>@<folder>" from a DatasetDict saved
    with save_to_disk (offline). <task> is one of HF_TASKS."""
    if not spec.startswith("hf:"):
        raise ValueError(f"task {spec!r}: hub tasks are written 'hf:<task>' or 'hf:<task>@<folder>'")
    name, _, folder = spec[3:].partition("@")
    if name not in HF_TASKS:
        raise ValueError(f"unknown hub task {name!r}; allowed: {', '.join(sorted(HF_TASKS))}")
    from . import hub
    path, config, convert = HF_TASKS[name]
    ds = hub.load_dataset(folder) if folder else hub.load_dataset(path, config)
    out = []
    for split in SPLITS:
        if split not in ds:
            continue
        for row in ds[split]:
            ex = convert(row)
            if ex is None or not 0 <= ex["target"] < len(ex["choices"]):
                continue  # unlabeled rows (label -1)
            ex["targets"] = [ex["target"]]
            ex["idx"] = len(out)
            out.append(ex)
    if not out:
        raise ValueError(f"task {spec!r} has no labelled examples in splits {SPLITS}")
    return out
