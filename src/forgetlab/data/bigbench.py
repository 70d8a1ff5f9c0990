"""Readers for data/bigbench (built by `make data`): squad_shifts articles, multiple-choice tasks, CIFAR-10 images.

    articles = load_squad("nyt")                  # [{"title", "paragraphs": [{"context", "qas": [...]}]}]
    task = load_mc_task("social_iqa")             # MCTask(name, examples, description, keywords, prefixes, ...)
    images, labels, classes = load_cifar10()      # uint8 [10000, 32, 32, 3], [int], [str]
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SQUAD_FILES = {"new_wiki": "new_wiki_v1.0.json", "nyt": "nyt_v1.0.json", "reddit": "reddit_v1.0.json",
               "amazon": "amazon_reviews_v1.0.json", "squad": "squaddev_v1.1.json"}
PREFIX_KEYS = ("task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
               "few_shot_example_separator", "append_choices_to_input")


def need(path: str | Path, what: str) -> Path:
    """Return path, or raise FileNotFoundError telling to build the data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: run `make data`")
    return path


def check_name(arg: str, value, allowed) -> None:
    """Raise ValueError naming the argument and its allowed values when value is not one of them."""
    if value not in allowed:
        raise ValueError(f"unknown {arg} {value!r}; allowed values: {', '.join(map(str, allowed))}")


def load_squad(source: str, data_dir: str | Path = "data") -> list[dict]:
    """squad_shifts articles of one source (new_wiki, nyt, reddit, amazon, squad), in file order.

    Each is {"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [str, ...]}]}]}.
    """
    check_name("source", source, list(SQUAD_FILES))
    path = need(Path(data_dir) / "bigbench" / "squad_shifts" / SQUAD_FILES[source], f"squad_shifts {source}")
    return [{"title": a.get("title", ""),
             "paragraphs": [{"context": p["context"],
                             "qas": [{"id": q["id"], "question": q["question"],
                                      "answers": [x["text"] for x in q["answers"]]} for q in p["qas"]]}
                            for p in a["paragraphs"]]}
            for a in json.loads(path.read_text(encoding="utf-8"))["data"]]


@dataclass
class MCTask:
    """A BIG-bench multiple-choice task.

    examples: [{"input", "choices": [str], "target": index of the first best-scoring choice,
                "targets": indices of all best-scoring choices, "idx": position in task.json}]
    prefixes: the prompt pieces task.json sets (task_prefix, example_input_prefix, example_output_prefix,
              choice_prefix, few_shot_example_separator, append_choices_to_input); absent keys take BIG-bench's
              defaults ("\\nQ: ", "\\nA: ", "\\n  choice: ", append_choices_to_input=True).
    n_multi_target: number of examples with several best-scoring choices (`target` is then the first).
    """
    name: str
    examples: list[dict]
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    prefixes: dict = field(default_factory=dict)
    n_multi_target: int = 0


def _tasks_dir(data_dir) -> Path:
    return need(Path(data_dir) / "bigbench" / "tasks", "BIG-bench tasks")


def list_mc_tasks(data_dir: str | Path = "data") -> list[str]:
    """Names (`task` or `task/subtask`) of the multiple-choice tasks in data/bigbench/tasks, sorted."""
    root = _tasks_dir(data_dir)
    return sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("task.json"))


def load_mc_task(name: str, data_dir: str | Path = "data") -> MCTask:
    """Load one multiple-choice task (see list_mc_tasks) with choices in task.json order."""
    path = _tasks_dir(data_dir) / name / "task.json"
    if not path.is_file():
        check_name("task name", name, list_mc_tasks(data_dir))
    d = json.loads(path.read_text(encoding="utf-8"))
    examples, n_multi = [], 0
    for i, e in enumerate(d["examples"]):
        choices, scores = list(e["target_scores"]), list(e["target_scores"].values())
        targets = [j for j, s in enumerate(scores) if s == max(scores)]
        n_multi += len(targets) > 1
        examples.append({"input": e["input"], "choices": choices, "target": targets[0], "targets": targets, "idx": i})
    prefixes = {k: d[k] for k in PREFIX_KEYS if k in d}
    if isinstance(prefixes.get("append_choices_to_input"), str):  # a few tasks write "false"
        prefixes["append_choices_to_input"] = prefixes["append_choices_to_input"].lower() == "true"
    return MCTask(name, examples, d.get("description", ""), d.get("keywords", []), prefixes, n_multi)


def load_cifar10(data_dir: str | Path = "data", n: int | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """CIFAR-10 test images decoded from the base64 PNGs of cifar10_classification/base64.

    Returns (images uint8 [N, 32, 32, 3], labels [N] indices into class_names, class_names) for the first n
    (default all 10,000) examples.
    """
    from PIL import Image

    task = load_mc_task("cifar10_classification/base64", data_dir)
    ex = task.examples[:n]
    images = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(e["input"]))).convert("RGB")) for e in ex])
    return images, [e["target"] for e in ex], task.examples[0]["choices"]
