"""Neuroplasticity (Lo, Cohen & Barez): unit tests on hand examples and tiny models, then the smoke pipeline."""
import json

import pytest
import torch
from conftest import ROOT, bpe_tokenizer, read_metrics, step_args

from forgetlab.core import neurons
from forgetlab.core.models import tiny_model
from forgetlab.core.train import TrainConfig, train
from forgetlab.papers.neuroplasticity import experiment as npl
from forgetlab.papers.neuroplasticity import claims

# ---------------------------------------------------------------- silver labeler
GAZ = npl.Gazetteer.from_names(["New York", "New York City", "York", "Paris", "Rome", "Rio de Janeiro", "Turkey",
                                "United States", "les Escaldes"])


def tags(sentence, gaz=GAZ, not_places=frozenset()):
    words = npl.split_words(sentence)
    return list(zip(words, npl.silver_tags(words, gaz, not_places)))


def test_labeler_longest_multiword_match():
    got = tags("She moved from New York City to Rio de Janeiro and then to Paris .")
    assert [t for _, t in got] == ["O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O", "B-LOC", "I-LOC", "I-LOC", "O",
                                   "O", "O", "B-LOC", "O"]


def test_labeler_never_matches_inside_a_word_or_in_lowercase():
    got = dict(tags("A Parisian chef in Romeo said rome and turkey , not Paris-based ones ."))
    assert set(got.values()) == {"O"}
    assert dict(tags("Turkey's coast"))["Turkey"] == "B-LOC"  # possessive split off


def test_labeler_skips_places_inside_capitalized_phrases():
    assert set(t for _, t in tags("He read the New York Times in Paris .")[3:6]) == {"O"}  # New York Times
    assert dict(tags("He read the New York Times in Paris ."))["Paris"] == "B-LOC"
    assert dict(tags("Later , Mr. Paris spoke ."))["Paris"] == "O"  # after a title
    assert dict(tags("In Paris , Rome was discussed ."))["Paris"] == "B-LOC"  # capitalized first word is fine
    assert dict(tags("They met Rome there .", not_places={"Rome"}))["Rome"] == "O"


def test_gazetteer_keeps_only_capitalized_names():
    assert "Paris" in GAZ and "New York City" in GAZ
    assert "les Escaldes" not in GAZ


def test_geonames_gazetteer_real_names_and_bad_threshold():
    gaz = npl.geonames_gazetteer(15000, ambiguous={"split"})
    for name in ("France", "United States", "New York City", "Istanbul", "Europe", "Connecticut"):
        assert name in gaz, name
    assert "Split" not in gaz and "March" not in gaz  # lowercase in the corpus / a month
    with pytest.raises(ValueError, match="min_city_population"):
        npl.geonames_gazetteer(12345)


def test_silver_ner_and_sentence_split():
    docs = [{"text": "Barack Obama visited Paris. Obama later flew to Rome. The city of Nice is nice."}]
    rows = npl.silver_ner(docs, 15000, min_words=3, max_words=60)
    assert len(rows) == 3
    d = [dict(zip(r["tokens"], r["ner_tags"])) for r in rows]
    assert d[0]["Paris"] == "B-LOC" and d[0]["Obama"] == "O"
    assert d[1]["Obama"] == "O" and d[1]["Rome"] == "B-LOC"  # surname seen earlier in the document
    assert d[2]["Nice"] == "O"  # "nice" occurs in lowercase: ambiguous city name dropped


NAMES = npl.NameLists(frozenset({"John", "Mary", "Will", "George", "Grant"}),
                      frozenset({"Smith", "Kennedy", "Washington", "Bridge", "Brown", "Park"}),
                      frozenset({"Smith", "Brown"}))


def per_tags(sentence, lower=None, surnames=frozenset()):
    words = npl.split_words(sentence)
    return list(zip(words, npl.person_tags(words, ["O"] * len(words), NAMES, lower, surnames)))


def test_person_labeler_full_names_titles_and_initials():
    got = per_tags("Later John F. Kennedy met Mary Smith and Mr. Brown in the hall .")
    assert [t for _, t in got] == ["O", "B-PER", "I-PER", "I-PER", "I-PER", "O", "B-PER", "I-PER", "O", "O", "O",
                                   "B-PER", "O", "O", "O", "O"]


def test_person_labeler_skips_longer_phrases_lowercase_words_and_lone_first_names():
    lower = {"will", "bridge", "park", "brown"}
    assert {t for _, t in per_tags("They crossed the George Washington Bridge today .", lower)} == {"O"}
    assert {t for _, t in per_tags("Will Smith said that Grant Park is big .", lower)} == {"O"}  # sentence start;
    # "Park" is a lowercase word and not a common surname
    assert dict(per_tags("Then Will Smith and George Brown spoke .", lower))["Brown"] == "I-PER"  # common surname
    assert {t for _, t in per_tags("Mary went home .", lower)} == {"O"}  # a first name alone is not enough
    assert {t for _, t in per_tags("The Mary Smith Foundation paid .", lower)} == {"O"}  # followed by a capital


def test_person_labeler_document_surnames_and_locations_first():
    assert dict(per_tags("Kennedy said no .", surnames={"Kennedy"}))["Kennedy"] == "B-PER"
    assert dict(per_tags("Kennedy said no ."))["Kennedy"] == "O"
    docs = [{"text": "John Kennedy visited Paris. He said Kennedy flew to Rome with Mary Smith."}]
    rows = npl.silver_ner(docs, 15000, min_words=3, max_words=60)
    d = [dict(zip(r["tokens"], r["ner_tags"])) for r in rows]
    assert (d[0]["John"], d[0]["Kennedy"], d[0]["Paris"]) == ("B-PER", "I-PER", "B-LOC")
    assert (d[1]["Kennedy"], d[1]["Rome"], d[1]["Mary"], d[1]["Smith"]) == ("B-PER", "B-LOC", "B-PER", "I-PER")
    # a LOC tag is never overwritten by PER
    words = ["in", "Washington", "Smith", "said"]
    assert npl.person_tags(words, ["O", "B-LOC", "O", "O"], NAMES) == ["O", "B-LOC", "O", "O"]


def test_census_names_are_real_and_offline():
    people = npl.census_names()
    assert {"John", "Mary"} <= people.first and {"Smith", "Kennedy"} <= people.last
    assert "May" not in people.first and "Smith" in people.common and "Bridge" not in people.common


def test_label_ambiguity_counts_by_hand():
    rows = [{"tokens": ["Will", "Smith", "went", "to", "Paris"], "ner_tags": ["B-PER", "I-PER", "O", "O", "B-LOC"]},
            {"tokens": ["Jordan", "Brown", "saw", "Turkey"], "ner_tags": ["B-PER", "I-PER", "O", "B-LOC"]}]
    q = npl.label_ambiguity(rows, {"Jordan", "Paris", "Turkey"}, {"will", "turkey"})
    assert q["PER"] == {"entities": 2, "ambiguous": 2, "unambiguous_share": 0.0}  # "will", a place "Jordan"
    assert q["LOC"] == {"entities": 2, "ambiguous": 1, "unambiguous_share": 0.5}  # "turkey" only


# ---------------------------------------------------------------- probeless ranking
def test_probeless_ranking_hand_example():
    # 4 words, 1 layer x 3 neurons; tags O, B-LOC, I-LOC, B-PER -> concepts O, LOC, LOC, PER
    names = ["O", "B-LOC", "I-LOC", "B-PER"]
    acts = torch.tensor([[[0., 1., 5.]], [[2., 1., 1.]], [[4., 1., 3.]], [[1., 4., 5.]]])
    r = npl.probeless_scores(acts, [0, 1, 2, 3], names, "LOC")
    # q(LOC) = (3, 1, 2), q(O) = (0, 1, 5), q(PER) = (1, 4, 5)
    # r = |3-0|+|3-1|, |1-1|+|1-4|, |2-5|+|2-5| = 5, 3, 6
    assert r.tolist() == [[5.0, 3.0, 6.0]]
    sal = npl.saliency(r)
    assert sal.tolist() == [[0.5, 0.0, 1.0]]
    with pytest.raises(ValueError, match="concept"):
        npl.probeless_scores(acts, [0, 1, 2, 3], names, "ORG")


def test_layer_standardization_keeps_order_within_layer_and_equalizes_layers():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(200, 2, 8, generator=g)
    acts[:, 1] *= 100  # a high-norm layer
    st = npl.standardize(acts, "layer")
    assert st[:, 0].std().item() == pytest.approx(1, abs=1e-4) and st[:, 1].std().item() == pytest.approx(1, abs=1e-4)
    labels = [1 if i % 3 == 0 else 0 for i in range(200)]
    raw = npl.probeless_scores(acts, labels, ["O", "B-LOC"], "LOC")
    std = npl.probeless_scores(st, labels, ["O", "B-LOC"], "LOC")
    for layer in range(2):
        assert torch.equal(raw[layer].argsort(), std[layer].argsort())
    assert raw[1].mean() > 20 * raw[0].mean() and std[1].mean() < 3 * std[0].mean()


def test_raw_and_standardized_rankings_pick_different_layers_known_answer():
    """Layer 0: small scale, the concept shifts 8 neurons by 10 noise sd. Layer 1: scale 100, the concept shifts 8
    other neurons by 0.5 noise sd (20 raw units, more than layer 0's 1 raw unit). Raw activations (NeuroX) rank
    layer 1's neurons first; per-layer standardization ranks layer 0's first."""
    g = torch.Generator().manual_seed(0)
    n, labels = 2000, torch.arange(2000) % 4 == 0  # a quarter of the words are LOC
    acts = torch.randn(n, 2, 64, generator=g)
    acts[:, 0] *= 0.1
    acts[:, 1] *= 40
    acts[labels, 0, :8] += 1.0
    acts[labels, 1, 8:16] += 20.0
    names = ["O", "B-LOC"]
    raw = npl.probeless_scores(npl.standardize(acts, "none"), labels.long().tolist(), names, "LOC")
    std = npl.probeless_scores(npl.standardize(acts, "layer"), labels.long().tolist(), names, "LOC")
    top_raw, top_std = neurons.top_k_mask(raw, 8), neurons.top_k_mask(std, 8)
    assert top_raw.nonzero().tolist() == [[1, j] for j in range(8, 16)]
    assert top_std.nonzero().tolist() == [[0, j] for j in range(8)]
    assert npl.mean_layer(top_raw)["mean"] == 1.0 and npl.mean_layer(top_std)["mean"] == 0.0


def test_top_neurons_mean_layer_shift_and_polysemantic_by_hand():
    sal = torch.tensor([[0.9, float("nan"), 0.1, 0.2], [0.8, 0.7, 0.0, 0.3]])
    top = npl.top_neurons(sal, 0.5)  # half of the 7 unpruned neurons: round(3.5) = 4
    assert top.nonzero().tolist() == [[0, 0], [1, 0], [1, 1], [1, 3]]
    before = torch.tensor([[True, True, False, False], [False, False, False, False]])
    after = torch.tensor([[False, False, False, False], [True, False, True, False]])
    s = npl.mean_layer_shift(before, after, n_boot=50)
    assert (s["before"], s["after"], s["shift"], s["lo"], s["hi"]) == (0.0, 1.0, 1.0, 1.0, 1.0)
    concept_types = torch.tensor([True, False, True, False])
    top_words = torch.tensor([[[0, 2], [0, 1], [1, 3]]])  # all concept, mixed, none
    assert npl.polysemantic(top_words, concept_types).tolist() == [[False, True, False]]


def test_layer_matched_base_rate_by_hand():
    values = torch.tensor([[1., 0., 0., 0.], [1., 1., 1., 0.]])
    selected = torch.tensor([[True, False, False, False], [True, True, False, False]])
    eligible = torch.tensor([[True, True, True, True], [True, True, True, True]])
    r = npl.layer_matched_comparison(values, selected, eligible, n_boot=200, seed=0)
    # selected mean (1 + 1 + 1) / 3 = 1; others: layer 0 mean(0, 0, 0) = 0, layer 1 mean(1, 0) = 0.5; the selected
    # neurons sit 1/3 in layer 0 and 2/3 in layer 1 -> base rate 1/3 * 0 + 2/3 * 0.5 = 1/3
    assert r["selected"] == 1.0 and r["base_rate"] == pytest.approx(1 / 3) and r["diff"] == pytest.approx(2 / 3)
    assert r["n_selected"] == 3 and r["n_other"] == 5
    assert r["base_rate_ci"][0] >= 0 and r["base_rate_ci"][1] <= 2 / 3 and r["selected_ci"] == (1.0, 1.0)
    # all other neurons, one pool: mean(0, 0, 0, 1, 0) = 0.2
    flat = npl.layer_matched_comparison(values.view(1, -1), selected.view(1, -1), eligible.view(1, -1), n_boot=50)
    assert flat["base_rate"] == pytest.approx(0.2)
    # an ineligible (pruned) neuron counts in neither group
    eligible[1, 2] = False
    assert npl.layer_matched_comparison(values, selected, eligible, n_boot=50)["base_rate"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no other eligible"):
        npl.layer_matched_comparison(values, selected, selected, n_boot=10)


def test_saliency_excludes_pruned_neurons():
    scores = torch.tensor([[4., 3., 2., 1., 0.]])
    pruned = torch.tensor([[True, False, False, False, False]])
    sal = npl.saliency(scores, pruned)
    assert torch.isnan(sal[0, 0]) and sal[0, 1:].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert npl.share_above(sal, 0.5) == [0.5]


def test_random_baseline_samples_from_all_neurons():
    shape, k = (6, 50), 30
    hits = torch.zeros(shape)
    for seed in range(400):
        hits += neurons.random_mask(shape, k, seed).float()
    # every neuron is drawn about 400 * 30 / 300 = 40 times; ids 0..k-1 are not special
    assert hits.min() > 15 and hits.max() < 70
    assert hits.sum(1).tolist() == pytest.approx([400 * k / 6] * 6, rel=0.15)
    assert not torch.equal(neurons.random_mask(shape, k, 0).flatten().nonzero().flatten(), torch.arange(k))


# ---------------------------------------------------------------- masks that persist
def _resid_outputs(model, ids):
    with neurons.record_stats(model, ("resid",)):
        outs = {}
        hooks = [m.register_forward_hook(lambda mod, a, o, i=i: outs.__setitem__(i, neurons._first(o).detach()))
                 for i, m in enumerate(neurons.neuron_modules(model, "resid"))]
        model(input_ids=ids)
        for h in hooks:
            h.remove()
    return torch.stack([outs[i] for i in range(len(outs))], 2)  # [batch, seq, layers, hidden]


def test_masked_neurons_stay_exactly_zero_through_training_and_reload(tmp_path):
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_labels=3, id2label={0: "O", 1: "B-LOC", 2: "I-LOC"}, label2id={"O": 0, "B-LOC": 1, "I-LOC": 2})
    model = BertForTokenClassification(cfg)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]))
    tok = BertTokenizerFast(str(vocab))
    pruned = neurons.random_mask((2, 16), 6, seed=3)
    handle = npl.apply_prune_mask(model, pruned)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = [{"input_ids": torch.randint(5, 50, (8,)), "attention_mask": torch.ones(8, dtype=torch.long),
              "labels": torch.randint(0, 3, (8,))} for _ in range(8)]
    train(model, items, TrainConfig(lr=1e-2, batch_size=4, max_steps=2), desc=None)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it did train
    ids = torch.randint(5, 50, (3, 8))
    acts = _resid_outputs(model, ids)
    assert torch.all(acts[:, :, pruned] == 0) and torch.all(acts[:, :, ~pruned] != 0)
    npl.save_checkpoint(model, tok, tmp_path / "ck", pruned, {"label_position": "first"})
    handle.remove()
    reloaded, _, mask, handle2 = npl.load_checkpoint(tmp_path / "ck")
    assert torch.equal(mask, pruned) and handle2 is not None
    acts2 = _resid_outputs(reloaded, ids)
    assert torch.all(acts2[:, :, pruned] == 0)
    torch.testing.assert_close(acts2, acts)
    # and through a further training step after the reload
    train(reloaded, items, TrainConfig(lr=1e-2, batch_size=4, max_steps=1), desc=None)
    assert torch.all(_resid_outputs(reloaded, ids)[:, :, pruned] == 0)


def test_prune_sweep_masks_while_scoring_and_leaves_the_model_as_it_was(tmp_path):
    """Notebook 02's k sweep: one row per (k, method); with every neuron pruned the concept and random masks are the
    same mask (equal F1s), and no mask is left on the model afterwards."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast
    torch.manual_seed(0)
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    model = BertForTokenClassification(BertConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})).eval()
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]))
    tok = BertTokenizerFast(str(vocab))
    gen = torch.Generator().manual_seed(1)
    examples = [{"tokens": [f"w{int(i)}" for i in torch.randint(0, 45, (6,), generator=gen)],
                 "ner_tags": torch.randint(0, len(names), (6,), generator=gen).tolist()} for _ in range(12)]
    enc = npl.encode(tok, examples, 12, "first")
    scores = torch.rand(neurons.n_neurons(model, "resid"), generator=gen)
    before = npl.evaluate_ner(model, enc, examples, names, "LOC", 4, desc=None)
    n_all = scores.numel()
    rows = npl.prune_sweep(model, enc, examples, names, "LOC", scores, [3, n_all], batch_size=4, seed=0)
    assert [(r["k"], r["method"]) for r in rows] == [(3, "concept"), (3, "random"), (n_all, "concept"),
                                                     (n_all, "random")]
    assert set(rows[0]) == {"k", "method", "LOC", "PER"}
    assert rows[2]["LOC"] == rows[3]["LOC"] and rows[2]["PER"] == rows[3]["PER"]  # all pruned either way
    assert npl.evaluate_ner(model, enc, examples, names, "LOC", 4, desc=None) == before  # the masks came off


def _tiny_distilbert():
    from transformers import DistilBertConfig, DistilBertForTokenClassification
    torch.manual_seed(0)
    return DistilBertForTokenClassification(DistilBertConfig(vocab_size=97, dim=16, hidden_dim=32, n_layers=2,
                                                              n_heads=2, num_labels=3)).eval()


@pytest.mark.parametrize("build", [lambda: tiny_model("bert", hidden=16, ff=32, layers=2, heads=2), _tiny_distilbert],
                         ids=["bert", "distilbert"])
def test_activation_mask_equals_zeroed_layernorm_weight_and_bias(build):
    model = build()
    pruned = neurons.random_mask((2, 16), 5, seed=0)
    ids = torch.randint(3, 97, (2, 7))
    plain = model(input_ids=ids).logits
    with npl.apply_prune_mask(model, pruned):
        masked = model(input_ids=ids).logits
    assert not torch.allclose(plain, masked)
    npl.zero_block_output_weights_(model, pruned)
    torch.testing.assert_close(model(input_ids=ids).logits, masked)
    with pytest.raises(ValueError, match="post-LN"):
        npl.zero_block_output_weights_(tiny_model("gpt2"), torch.zeros(2, 32, dtype=torch.bool))


def test_mask_works_on_decoders():
    model = tiny_model("llama", hidden=16, ff=24, layers=2, heads=2)
    pruned = neurons.random_mask((2, 16), 4, seed=0)
    with npl.apply_prune_mask(model, pruned):
        acts = _resid_outputs(model, torch.randint(3, 97, (2, 5)))
    assert torch.all(acts[:, :, pruned] == 0)


# ---------------------------------------------------------------- encoding, evaluation, analysis helpers
@pytest.mark.parametrize("position", ["first", "last"])
def test_encode_puts_labels_on_first_or_last_subtoken(position):
    tok = bpe_tokenizer()
    ex = [{"tokens": ["Xanadu", "is", "in", "Paris"], "ner_tags": [1, 0, 0, 1]}]
    enc = npl.encode(tok, ex, 32, position)
    ids = enc["input_ids"][0]
    pos = enc["word_pos"][0].tolist()
    pieces = [tok.decode([int(i)]) for i in ids[:int(enc["attention_mask"].sum())]]
    first_word = [j for j, p in enumerate(pieces) if p.strip() and "Xanadu".find(p.strip()) >= 0]
    assert len(first_word) > 1  # "Xanadu" is split into several pieces by this tiny BPE
    assert pos[0] == (min(first_word) if position == "first" else max(first_word))
    labelled = (enc["labels"][0] != npl.IGNORE).nonzero().flatten().tolist()
    assert labelled == sorted(pos) and enc["labels"][0, pos].tolist() == [1, 0, 0, 1]


def test_entity_f1_uses_seqeval_entity_level():
    true = [["B-LOC", "I-LOC", "O", "B-LOC"]]
    pred = [["B-LOC", "O", "O", "B-LOC"]]  # one of two entities exactly right
    f = npl.entity_f1(true, pred, "LOC")
    assert f["LOC_precision"] == 0.5 and f["LOC_recall"] == 0.5 and f["LOC_f1"] == 0.5


def test_top_word_types_and_similarity():
    words = ["paris", "rome", "cat", "dog", "paris", "cat"]
    vocab, ids, eligible = npl.word_types(words, 1)
    assert vocab == ["cat", "dog", "paris", "rome"]
    acts = torch.tensor([[5.], [4.], [0.], [1.], [3.], [2.]]).view(6, 1, 1)  # paris mean 4, rome 4, cat 1, dog 1
    top = npl.top_word_types(acts, ids, eligible, 2)
    assert sorted(vocab[i] for i in top[0, 0].tolist()) == ["paris", "rome"]
    vec = torch.tensor([[0., 1.], [0., 1.], [1., 0.], [1., 0.]])
    assert npl.concept_similarity(top, vec, torch.tensor([1., 0.])).item() == pytest.approx(1.0)
    _, _, elig2 = npl.word_types(words, 2)
    assert elig2.tolist() == [True, False, True, False]


def test_entity_counts_give_seqeval_f1_and_intervals():
    import random
    rnd = random.Random(0)
    tags = ["O", "O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    true = [[rnd.choice(tags) for _ in range(rnd.randint(3, 12))] for _ in range(60)]
    pred = [[t if rnd.random() < 0.7 else rnd.choice(tags) for t in row] for row in true]
    ref = npl.entity_f1(true, pred, "LOC", ["O", "LOC", "PER"])
    for typ in ("LOC", "PER"):
        c = npl.entity_counts(true, pred, typ)
        got = npl.f1_interval(c, n_boot=200, seed=0)
        assert got["f1"] == pytest.approx(ref[f"{typ}_f1"])
        assert got["lo"] <= got["f1"] <= got["hi"] and got["hi"] - got["lo"] > 0.01
    same = npl.f1_diff_interval(npl.entity_counts(true, pred, "LOC"), npl.entity_counts(true, pred, "LOC"), 100)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)  # paired: identical predictions, no spread
    perfect = npl.f1_diff_interval(npl.entity_counts(true, true, "LOC"), npl.entity_counts(true, pred, "LOC"), 100)
    assert perfect["diff"] == pytest.approx(1 - ref["LOC_f1"]) and perfect["lo"] > 0


def _word_batch(n_sent=24, n_words=6, vocab=40, seed=0):
    """Sentences of token ids w5..w44, one word per token (word_pos = position); LOC = ids below 15."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 5 + vocab, (n_sent, n_words), generator=g)
    labels = (ids < 15).long()
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
           "word_pos": torch.arange(n_words).expand(n_sent, n_words).clone()}
    examples = [{"tokens": [f"w{int(i)}" for i in row], "ner_tags": lab.tolist()} for row, lab in zip(ids, labels)]
    return enc, examples


def test_before_after_similarity_on_a_tiny_model():
    """The paper's measure on a tiny token classifier: top words per neuron before and after retraining (with a
    pruned mask held), their similarity to the concept (checked by hand for one neuron) and to each other."""
    from transformers import BertConfig, BertForTokenClassification
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                                  num_hidden_layers=2, num_attention_heads=2, num_labels=2)).eval()
    names = ["O", "B-LOC"]
    enc, examples = _word_batch()
    words = npl.word_strings(enc, examples)
    vocab, type_ids, eligible = npl.word_types(words, 1)
    vectors = npl.centre(torch.randn(len(vocab), 8, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(vectors.mean(0), torch.zeros(8), atol=1e-6)
    concept_types = torch.tensor([int(w[1:]) < 15 for w in vocab])
    concept_vec = vectors[concept_types].mean(0)
    before = npl.analyse_checkpoint(model, enc, examples, names, "LOC", None, type_ids, eligible, n_top=3)
    pruned = neurons.top_k_mask(before.scores, 4)
    with npl.apply_prune_mask(model, pruned):
        items = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(examples))]
        train(model, items, TrainConfig(lr=3e-2, batch_size=8, max_steps=6), desc=None)
        after = npl.analyse_checkpoint(model, enc, examples, names, "LOC", pruned, type_ids, eligible, n_top=3)
    assert torch.isnan(after.saliency[pruned]).all() and not torch.isnan(before.saliency).any()
    sim_b = npl.concept_similarity(before.top_words, vectors, concept_vec)
    layer, unit = 1, 5
    hand = torch.nn.functional.cosine_similarity(vectors[before.top_words[layer, unit]].mean(0), concept_vec, dim=0)
    assert sim_b[layer, unit].item() == pytest.approx(hand.item(), abs=1e-6)
    assert torch.allclose(npl.top_word_similarity(before.top_words, before.top_words, vectors), torch.ones(2, 16))
    pre_post = npl.top_word_similarity(before.top_words, after.top_words, vectors)
    same = (before.top_words.sort(-1).values == after.top_words.sort(-1).values).all(-1)
    assert (~same).any(), "retraining changed no neuron's top words"
    assert torch.allclose(pre_post[same], torch.ones(int(same.sum())), atol=1e-5)
    assert (pre_post[~same & ~pruned] < 1 - 1e-4).all()
    # priming against the base rate runs on these views: carriers after, measured before
    carriers = npl.top_neurons(after.saliency, 0.25)
    r = npl.layer_matched_comparison(sim_b, carriers, ~pruned, n_boot=50)
    assert r["n_selected"] == int(carriers.sum()) == round(0.25 * 28)

    # the notebook's summaries of these views, against the same quantities by hand
    live = ~pruned
    sims = npl.carrier_similarity(before, after, vectors, concept_vec, carriers, live, n_boot=50, seed=0)
    sim, sim_a = sims.summary, sims.after
    assert torch.isnan(sim_a[pruned]).all() and torch.equal(sims.before, sim_b)
    assert torch.allclose(npl.neuron_similarity(after, vectors, concept_vec), sim_a, equal_nan=True)
    assert sim["mean_similarity_per_layer_after"] == [x["mean"] for x in sims.layer_means["after"]]
    assert sim["carriers_change"] == pytest.approx(float((sim_a - sim_b)[carriers].double().mean()))
    assert sim["carriers_same_top_words"] == int(same[carriers].sum())
    assert sim["others_pre_post_similarity"] == pytest.approx(float(pre_post[live & ~carriers].mean()))
    primed = npl.priming({"similarity": sim_b}, carriers, live, n_boot=50, seed=0)["similarity"]
    assert primed["same_layers"] == r
    assert primed["all_others"]["base_rate"] == pytest.approx(float(sim_b[live & ~carriers].double().mean()))
    rel = npl.relocation(before, after, top_fraction=0.25, saliency_threshold=0.5, n_boot=50, seed=0)
    assert torch.equal(rel.top_after, carriers) and rel.summary["n_top"] == int(carriers.sum())
    assert rel.summary["overlap_top"] == int((rel.top_before & carriers).sum())
    assert rel.summary["after"] == pytest.approx(float(carriers.nonzero()[:, 0].double().mean()))
    assert rel.summary["mean_saliency_per_layer_after"] == [x["mean"] for x in rel.layer_means["after"]]
    poly = npl.polysemanticity(before, after, concept_types, carriers, live, n_boot=50, seed=0)
    n_concept = concept_types[before.top_words[carriers]].sum(-1)  # concept words among each carrier's 3
    assert poly["carriers_before"] == pytest.approx(float(((n_concept > 0) & (n_concept < 3)).double().mean()))


def test_analysis_words_call_a_type_a_concept_type_when_most_of_its_words_are_labelled_so():
    """Paris: LOC twice, O once (2/3: a concept type); rome: LOC once, O once (1/2: not); words lowercased."""
    tok = bpe_tokenizer()
    names = ["O", "B-LOC", "B-PER"]
    rows = [{"tokens": ["Paris", "is", "big"], "ner_tags": ["B-LOC", "O", "O"]},
            {"tokens": ["paris", "Rome", "Ann"], "ner_tags": ["B-LOC", "B-LOC", "B-PER"]},
            {"tokens": ["Paris", "rome", "is"], "ner_tags": ["O", "O", "O"]},
            {"tokens": ["not", "read"], "ner_tags": ["O", "O"]}]
    ds = npl.to_dataset_dict({"train": rows}, names)
    words = npl.analysis_words(ds, tok, names, "LOC", n=3, max_len=16, label_position="first", min_word_count=2)
    assert words.n_words == 9 and len(words.examples) == 3
    assert words.vocab == ["ann", "big", "is", "paris", "rome"]
    assert words.concept_types.tolist() == [False, False, False, True, False]
    assert words.eligible.tolist() == [False, False, True, True, True]


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="arm"):
        npl.prune_retrain(**step_args("neuroplasticity_concept", base=str(tmp_path), data=str(tmp_path),
                                      out=str(tmp_path / "o"), arm="best"))
    with pytest.raises(ValueError, match="sensitivity_standardize_by"):
        npl.prune_retrain(**step_args("neuroplasticity_concept", base=str(tmp_path), data=str(tmp_path),
                                      out=str(tmp_path / "o"), sensitivity_standardize_by="global"))
    with pytest.raises(ValueError, match="standardize"):
        npl.standardize(torch.zeros(2, 1, 1), "global")
    with pytest.raises(ValueError, match="label_position"):
        npl.encode(None, [{"tokens": ["a"], "ner_tags": [0]}], 8, "middle")
    with pytest.raises(ValueError, match="top_fraction"):
        npl.top_neurons(torch.zeros(2, 3), 0.0)


# ---------------------------------------------------------------- real data and the smoke pipeline
def test_load_ner_reads_conll_format_from_disk_and_data_files(tmp_path):
    ds = npl.to_dataset_dict({s: [{"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-LOC", "O", "O", "O"]}]
                              for s in ("train", "validation", "test")}, npl.SILVER_TAGS)
    ds.save_to_disk(str(tmp_path / "disk"))
    assert npl.tag_names(npl.load_ner(str(tmp_path / "disk"))) == list(npl.SILVER_TAGS)
    # the hub layout (data files per split) goes through datasets.load_dataset, as hf:<id> does
    (tmp_path / "hub").mkdir()
    for s in ds:
        ds[s].to_parquet(str(tmp_path / "hub" / f"{s}.parquet"))
    hub = npl.load_ner(str(tmp_path / "hub"))
    assert set(hub) == {"train", "validation", "test"} and hub["train"][0]["tokens"][0] == "EU"
    with pytest.raises(ValueError, match="source"):
        npl.load_ner(str(tmp_path / "missing"))


def test_stages_end_to_end_on_a_tiny_decoder_and_conll_format_files(tmp_path):
    """The paper-scale path (a conll2003-format dataset read by datasets.load_dataset, a decoder labelled on the
    last sub-token) run through the three checkpoint stages on a tiny local GPT-2 and tiny data files."""
    from transformers import GPT2Config, GPT2LMHeadModel
    tok = bpe_tokenizer()
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_inner=32, n_layer=2, n_head=2,
                                    pad_token_id=tok.pad_token_id))
    lm.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rows = [{"tokens": ["the", "cat", "sat", "in", "Paris"], "ner_tags": ["O", "O", "O", "O", "B-LOC"]},
            {"tokens": ["New", "York", "is", "big"], "ner_tags": ["B-LOC", "I-LOC", "O", "O"]},
            {"tokens": ["the", "cat", "is", "big"], "ner_tags": ["B-PER", "I-PER", "O", "O"]}] * 4
    ds = npl.to_dataset_dict({s: rows for s in ("train", "validation", "test")}, names)
    (tmp_path / "hub").mkdir()
    for s in ds:
        ds[s].to_parquet(str(tmp_path / "hub" / f"{s}.parquet"))
    ner, base, out = (str(tmp_path / n) for n in ("ner", "base", "concept"))
    with pytest.raises(ValueError, match=r"'max_words' \(4\) must be at least min_words \(5\)"):
        npl.build_data(**step_args("neuroplasticity_data", source=str(tmp_path / "hub"), out=ner, min_words=5,
                                   max_words=4))
    npl.build_data(**step_args("neuroplasticity_data", source=str(tmp_path / "hub"), out=ner))
    assert json.loads((tmp_path / "ner" / "label_stats.json").read_text())["train"]["entities"] == {"LOC": 8,
                                                                                                    "PER": 4}
    npl.fine_tune(**step_args("neuroplasticity_base", model=str(tmp_path / "gpt2"), data=ner, out=base, batch_size=4,
                              max_len=16))
    assert json.loads((tmp_path / "base" / npl.META_FILE).read_text())["label_position"] == "last"
    npl.prune_retrain(**step_args("neuroplasticity_concept", base=base, data=ner, out=out, k=5, n_stages=2,
                                  steps_per_stage=1, batch_size=4, max_len=16))
    hist = json.loads((tmp_path / "concept" / "history.json").read_text())
    assert [h["stage"] for h in hist] == [0, 1, 2]
    model, _, pruned, handle = npl.load_checkpoint(tmp_path / "concept" / "stage_2")
    assert pruned.sum() == 5 and handle is not None
    assert torch.equal(pruned, torch.load(tmp_path / "concept" / "ranking.pt")["pruned"])

    # the notebook reads the runs back, checking what the stages recorded
    test_ex, types = npl._examples(npl.load_ner(ner), "test"), ["LOC", "PER"]
    how = json.loads((tmp_path / "concept" / "stage_0" / npl.META_FILE).read_text())["standardize_by"]
    runs = npl.load_retraining_runs(base, {"concept": out}, test_ex, names, types, standardize_by={"concept": how},
                                    n_boot=20, seed=0)
    assert (runs.k, runs.n_stages, len(runs.steps)) == (5, 2, 3) and set(runs.f1) == {"base", *(("concept", s)
                                                                                             for s in range(3))}
    assert runs.f1["base"]["LOC"]["f1"] == pytest.approx(runs.base_meta["test"]["LOC_f1"], abs=1e-6)
    with pytest.raises(ValueError, match="ranked with standardize_by"):
        npl.load_retraining_runs(base, {"concept": out}, test_ex, names, types, n_boot=20, seed=0,
                                 standardize_by={"concept": "neuron" if how != "neuron" else "layer"})
    assert runs.base_meta["test"]["LOC_f1"] < 1  # an untrained tiny model: the gold tags are not its predictions
    preds = tmp_path / "base" / npl.PRED_FILE  # predictions that no longer give the recorded F1
    preds.write_text(json.dumps(npl.true_tags(test_ex, names)))
    with pytest.raises(ValueError, match="the saved predictions give F1 1.000000"):
        npl.load_retraining_runs(base, {"concept": out}, test_ex, names, types, n_boot=20, seed=0, standardize_by={})


def p_analysis(params):
    return params["neuroplasticity"]


@pytest.mark.notebook
def test_neuroplasticity_smoke(smoke):
    from forgetlab.repro import profile
    params = profile.load_params("smoke", ROOT)
    p = {**params["neuroplasticity_prune"], **params["neuroplasticity"]}
    m = read_metrics(smoke, "neuroplasticity")
    ck = smoke / "checkpoints" / "neuroplasticity"
    stats = json.loads((ck / "ner" / "label_stats.json").read_text())
    assert stats["train"]["entities"]["LOC"] > 50 and stats["train"]["entities"]["PER"] > 20
    quality = json.loads((ck / "ner" / "label_quality.json").read_text())
    assert set(quality) == {"LOC", "PER"} and all(0 < q["unambiguous_share"] <= 1 for q in quality.values())
    assert m["concept"] == "LOC" and m["other_types"] == ["PER"]
    assert m["k"] == p["k"] and sum(m["pruned_per_layer"]) == sum(m["pruned_per_layer_std"]) == p["k"]
    assert m["n_neurons"] == 6 * 384
    assert len(m["concept_f1"]) == len(m["random_f1"]) == len(m["concept_std_f1"]) == p["n_stages"] + 1
    assert len(m["other_f1"]["PER"]["concept"]) == p["n_stages"] + 1
    assert 0.2 < m["base_f1"] <= 1 and all(0 <= f <= 1 for f in m["concept_f1"] + m["random_f1"])
    base = m["f1_intervals"]["base/LOC"]
    assert base["lo"] <= base["f1"] == m["base_f1"] <= base["hi"]
    # the pruned concept neurons are the top of the saved ranking (raw activations by default, standardized in the
    # sensitivity run), and the mask is saved with every stage, next to the test predictions
    assert m["standardize_by"] == p["standardize_by"] == "none" and m["sensitivity_standardize_by"] == "layer"
    for run in ("concept", "concept_std"):
        ranking = torch.load(ck / run / "ranking.pt")
        assert torch.equal(ranking["pruned"], neurons.top_k_mask(ranking["scores"], p["k"]))
        for stage in range(p["n_stages"] + 1):
            assert torch.equal(torch.load(ck / run / f"stage_{stage}" / npl.MASK_FILE), ranking["pruned"])
            assert (ck / run / f"stage_{stage}" / npl.PRED_FILE).exists()
    ranking = torch.load(ck / "concept" / "ranking.pt")
    assert set(m["relocation"]) == {"raw", "std"}
    for r in m["relocation"].values():
        assert r["lo"] <= r["shift"] <= r["hi"] and r["n_top"] == round(p_analysis(params)["top_fraction"]
                                                                         * (6 * 384 - p["k"]))
    assert set(m["verdicts"].values()) <= {"holds", "partly", "does not hold", "not tested"}
    for measure in ("similarity", "saliency"):
        for pool in ("all_others", "same_layers"):
            c = m["priming"][measure][pool]
            assert c["diff_ci"][0] <= c["diff"] <= c["diff_ci"][1]
    assert 0 <= m["polysemantic"]["after"]["base_rate"] <= 1
    rnd = torch.load(ck / "random" / "stage_0" / npl.MASK_FILE)
    assert rnd.sum() == p["k"] and not torch.equal(rnd, ranking["pruned"])
    assert {r["k"] for r in m["sweep"]} == set(p["sweep_ks"])
    for name in ("k_sweep", "f1_retraining", "saliency_heatmap", "saliency_per_layer", "similarity",
                 "example_neurons"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "neuroplasticity" / f"{name}.{fmt}").stat().st_size > 5000, name


def test_the_claim_verdicts_follow_their_stated_rules():
    def f1(base, pruned, final, other_base=0.8, other_pruned=0.8):
        return {"base": {"LOC": {"f1": base}, "PER": {"f1": other_base}},
                ("concept", 0): {"LOC": {"f1": pruned}, "PER": {"f1": other_pruned}},
                ("concept", 2): {"LOC": {"f1": final}, "PER": {"f1": other_pruned}}}
    ci = lambda lo: {"diff_ci": [lo, lo + 0.2]}  # noqa: E731
    priming = {"similarity": {"same_layers": ci(0.1), "all_others": ci(0.1)}}
    poly = {"after": ci(0.1), "carriers_change_ci": [-0.1, 0.1]}
    reloc = {"raw": {"lo": -2.0, "hi": -0.5}, "std": {"lo": -0.5, "hi": 0.5}}
    directions, v = claims.claim_verdicts(f1(0.9, 0.1, 0.85), "LOC", ["PER"], 2, reloc, priming, poly)
    assert directions == {"raw": "earlier", "std": "no clear shift"}
    assert v == {"removal_concept_specific": "holds", "relearned": "holds", "moves_earlier": "partly",
                 "primed": "holds", "polysemantic": "partly"}
    # the other type lost too much: only partly specific; half the concept back: relearning partly holds
    _, v = claims.claim_verdicts(f1(0.9, 0.1, 0.5, other_pruned=0.5), "LOC", ["PER"], 2, reloc, priming, poly)
    assert (v["removal_concept_specific"], v["relearned"]) == ("partly", "partly")
    # pruning did not remove the concept (0.5 > 0.2 x 0.9): relearning is not tested
    _, v = claims.claim_verdicts(f1(0.9, 0.5, 0.9), "LOC", ["PER"], 2, reloc,
                                 {"similarity": {"same_layers": ci(-0.3), "all_others": ci(0.1)}}, poly)
    assert (v["removal_concept_specific"], v["relearned"], v["primed"]) == ("does not hold", "not tested", "partly")


def test_the_stated_rules_print_the_shares_the_verdicts_use(monkeypatch):
    """Notebook 02 states its rules through claims.rules_markdown, so the text follows the shares of base F1 that
    claim_verdicts reads (no second, typed copy)."""
    text = claims.rules_markdown("LOC")
    assert "LOC F1 is at most 20% of its" in text and "keeps at least 80%" in text and "partly* at 50% to 80%" in text
    monkeypatch.setattr(claims, "GONE", 0.3)
    monkeypatch.setattr(claims, "PARTLY_BACK", 0.6)
    text = claims.rules_markdown("MISC")
    assert "MISC F1 is at most 30% of its" in text and "partly* at 60% to 80%" in text
