"""Document corpora: prose from squad_shifts, source code from pinned sdists, or any HF dataset at paper scale.

Every document is a dict with at least "id" and "text". Prose: {"id", "source", "title", "text"};
code: {"id" (its path under data/code), "language", "package", "text"}.

    docs = load_corpus("code")                                  # all languages; or "python", "c", "cpp"
    train, test = split_documents(load_corpus("text"), 0.2, seed=0)
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Iterable

from .bigbench import SQUAD_FILES, check_name, load_squad, need

TEXT_SOURCES = tuple(SQUAD_FILES)  # new_wiki, nyt, reddit, amazon, squad
CODE_LANGUAGES = ("python", "c", "cpp")
CORPORA = {"text": ("new_wiki", "nyt"), "wiki": ("new_wiki",), "nyt": ("nyt",), "reddit": ("reddit",),
           "amazon": ("amazon",), "squad": ("squad",), "code": CODE_LANGUAGES,
           **{lang: (lang,) for lang in CODE_LANGUAGES}}


def load_text_documents(sources: Iterable[str] = ("new_wiki", "nyt"), data_dir: str | Path = "data") -> list[dict]:
    """One document per squad_shifts article, paragraphs joined by a blank line, in source then file order.

    reddit ships as one pseudo-article of unrelated comments, so each of its paragraphs is a document.
    ids are "<source>/<n>" (n counts documents within the source).
    """
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    for s in sources:
        check_name("source", s, TEXT_SOURCES)
    docs = []
    for s in sources:
        units = [(a["title"], [p]) for a in load_squad(s, data_dir) for p in a["paragraphs"]] if s == "reddit" else \
            [(a["title"], a["paragraphs"]) for a in load_squad(s, data_dir)]
        docs += [{"id": f"{s}/{i:04d}", "source": s, "title": title,
                  "text": "\n\n".join(p["context"].strip() for p in paragraphs)}
                 for i, (title, paragraphs) in enumerate(units)]
    return docs


def load_code_documents(languages: Iterable[str] | None = None, data_dir: str | Path = "data") -> list[dict]:
    """Source files listed in data/code/index.jsonl (sorted by path), optionally only some languages."""
    if languages is None:
        languages = CODE_LANGUAGES
    languages = (languages,) if isinstance(languages, str) else tuple(languages)
    for lang in languages:
        check_name("language", lang, CODE_LANGUAGES)
    root = Path(data_dir) / "code"
    index = need(root / "index.jsonl", "code index")
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    return [{"id": r["path"], "language": r["language"], "package": r["package"],
             "text": (root / r["path"]).read_bytes().decode("utf-8")} for r in rows if r["language"] in languages]


def load_corpus(name: str, data_dir: str | Path = "data") -> list[dict]:
    """A named corpus: text (= wiki + nyt), wiki, nyt, reddit, amazon, squad, code (all languages), python, c, cpp."""
    check_name("corpus name", name, list(CORPORA))
    parts = CORPORA[name]
    if parts[0] in CODE_LANGUAGES:
        return load_code_documents(parts, data_dir)
    return load_text_documents(parts, data_dir)


def split_documents(docs: list, test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split by document into (train, test): a seeded random round(test_fraction * n) documents (at least one, at
    most n - 1) go to test. Both keep the input order; the same seed always gives the same split."""
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split, got {len(docs)}")
    n_test = min(len(docs) - 1, max(1, round(test_fraction * len(docs))))
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    test = set(order[:n_test])
    return [d for i, d in enumerate(docs) if i not in test], [d for i, d in enumerate(docs) if i in test]


def _get(row: dict, dotted: str):
    for key in dotted.split("."):
        row = row.get(key) if isinstance(row, dict) else None
    return row


# A corpus that is part of a larger one is split together with it, so its test documents are never training
# documents of the larger one (python is a subset of code, wiki and nyt of text).
PARENT = {**{lang: "code" for lang in CODE_LANGUAGES}, "wiki": "text", "nyt": "text"}


# The papers' corpora on the Hugging Face hub (paper-scale profile): name -> load_hf_text arguments.
HF_CORPORA = {
    "hf:pile": dict(dataset_name_or_path="monology/pile-uncopyrighted", text_column="text", streaming=True,
                    exclude={"meta.pile_set_name": "Github"}),
    "hf:github-code": dict(dataset_name_or_path="codeparrot/github-code-clean", config="all-all",
                           text_column="code", streaming=True),
    "hf:github-python": dict(dataset_name_or_path="codeparrot/github-code-clean", config="Python-all",
                             text_column="code", streaming=True),
}


def load_split(name: str, test_fraction: float, seed: int, data_dir: str | Path = "data",
               max_docs: int = 20_000) -> tuple[list, list]:
    """(train, test) documents of a named corpus, split by document consistently across nested corpora:
    `load_split("python", ...)` is the python part of `load_split("code", ...)` with the same seed.
    The papers' hub corpora (HF_CORPORA: "hf:pile", ...) stream the first `max_docs` documents of a hub dataset.
    Anything else that names documents (forgetlab.data.texts: a .txt or .jsonl file, a folder of them,
    "hf:<dataset>[:split][@revision]") is read and split by document the same way."""
    from .texts import FORMS, is_text_spec, load_texts
    if name in HF_CORPORA:
        return split_documents(load_hf_text(n_docs=max_docs, **HF_CORPORA[name]), test_fraction, seed)
    if name not in CORPORA:
        if is_text_spec(name):
            return split_documents(load_texts(name, max_docs), test_fraction, seed)
        raise ValueError(f"unknown corpus name {name!r}: use one of ({', '.join(list(CORPORA) + list(HF_CORPORA))})"
                         f" or your own documents: {'; '.join(FORMS)}")
    parent = PARENT.get(name, name)
    train, test = split_documents(load_corpus(parent, data_dir), test_fraction, seed)
    if parent == name:
        return train, test
    keep = set(CORPORA[name])
    key = "language" if parent == "code" else "source"
    return [d for d in train if d[key] in keep], [d for d in test if d[key] in keep]


def load_hf_text(dataset_name_or_path: str, split: str = "train", text_column: str = "text",
                 n_docs: int | None = None, *, config: str | None = None, streaming: bool = False,
                 filter_fn: Callable[[dict], bool] | None = None, exclude: dict | None = None,
                 **load_kwargs) -> list[dict]:
    """Documents {"id", "source", "title", "text"} from a Hugging Face dataset: the paper-scale path.

    A local folder written by `Dataset.save_to_disk` is read with `datasets.load_from_disk`; anything else goes to
    `datasets.load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)`: a hub id, or a packaged
    builder such as "json"/"parquet" with data_files=... . Rows are skipped when `exclude` matches ({"a.b": value or
    [values]}, dotted keys reach into nested columns), when `filter_fn(row)` is false, or when the text is empty;
    loading stops after n_docs documents. ids are "<dataset>/<row index>". Examples from the paper:

        # The Pile without its GitHub part (retain set)
        load_hf_text("monology/pile-uncopyrighted", n_docs=10_000, streaming=True,
                     exclude={"meta.pile_set_name": "Github"})
        # GitHub code (forget set): all languages, or config="Python-all"
        load_hf_text("codeparrot/github-code-clean", config="all-all", text_column="code", n_docs=10_000,
                     streaming=True)
    """
    from . import hub
    ds = hub.load_dataset(dataset_name_or_path, config, split=split, streaming=streaming, **load_kwargs)
    columns = ds.column_names
    if columns is not None and text_column not in columns:
        check_name("text_column", text_column, columns)
    exclude = {k: set(v) if isinstance(v, (list, tuple, set)) else {v} for k, v in (exclude or {}).items()}
    docs = []
    for i, row in enumerate(ds):
        if n_docs is not None and len(docs) >= n_docs:
            break
        if any(_get(row, k) in v for k, v in exclude.items()) or (filter_fn and not filter_fn(row)):
            continue
        if text_column not in row:
            check_name("text_column", text_column, list(row))
        text = row[text_column]
        if text:
            docs.append({"id": f"{dataset_name_or_path}/{i}", "source": str(dataset_name_or_path),
                         "title": str(row.get("title") or ""), "text": text})
    return docs
