"""Randomized-label forgetting (notebook 03): binarization, log-likelihood scoring, measures, stages, smoke run."""
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_metrics
from forgetlab import forgetting as fg
from forgetlab.models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


class CharTok:
    """A character tokenizer for the tiny models (vocab 97): what score_choices / training_batches need."""
    pad_token_id = 0

    def __call__(self, text):
        return {"input_ids": [3 + ord(c) % 90 for c in text]}


def _mc(n, rng, n_choices=4, answers=None):
    out = []
    for i in range(n):
        choices = [f"opt{i}-{j}" for j in range(n_choices)] if answers is None else list(answers)
        out.append({"input": f"question number {i} ?", "choices": choices, "target": rng.randrange(len(choices)),
                    "idx": i})
    return out


def _items(n, seed=0):
    rng = random.Random(seed)
    return [fg.binarize({"input": "q" * rng.randint(1, 12) + " what now?", "choices": ["yes", "no", "maybe so"],
                         "target": rng.randrange(3)}, rng) for _ in range(n)]


# ---------------------------------------------------------------- binarization and splits
def test_binarize_keeps_the_right_answer_and_one_distractor_seeded():
    ex = {"input": "Capital of France?", "choices": ["Paris", "Rome", "Berlin", "Madrid"], "target": 0}
    outs = [fg.binarize(ex, random.Random(s)) for s in range(40)]
    for b in outs:
        assert len(b["choices"]) == 2 and b["choices"][b["label"]] == "Paris"
        assert b["choices"][1 - b["label"]] in {"Rome", "Berlin", "Madrid"}
        assert b["prompt"] == "Capital of France?\nAnswer:"
    assert {b["label"] for b in outs} == {0, 1}  # both orders occur
    assert len({b["distractor"] for b in outs}) == 3  # every wrong choice can be drawn
    assert fg.binarize(ex, random.Random(7)) == fg.binarize(ex, random.Random(7))  # seeded
    # a choice tied with the target (several best answers) is never the distractor
    tied = {"input": "q", "choices": ["a", "b", "c"], "target": 0, "targets": [0, 1]}
    assert all(fg.binarize(tied, random.Random(s))["distractor"] == "c" for s in range(10))
    with pytest.raises(ValueError, match="distractor"):
        fg.binarize({"input": "q", "choices": ["a"], "target": 0}, random.Random(0))


def test_task_splits_are_disjoint_deduplicated_seeded_and_answer_balanced():
    rng = random.Random(0)
    exs = _mc(60, rng, answers=("Yes", "No"))
    exs += [dict(exs[0], idx=99)]  # a duplicate question
    exs[1]["target"] = 0
    tok = CharTok()
    s = fg.task_splits("t", exs, tok, n_train=20, n_test=10, max_prompt_tokens=64, max_choice_tokens=8, seed=0)
    assert s["info"]["n_duplicates"] == 1 and s["info"]["answer_balanced"]
    train_q = {it["prompt"] for it in s["train"]}
    test_q = {it["prompt"] for it in s["test"]}
    assert len(train_q) == 20 and len(test_q) == 10 and not train_q & test_q
    assert sum(it["answer"] == "Yes" for it in s["test"]) == 5  # balanced over answers
    assert s == fg.task_splits("t", exs, tok, 20, 10, 64, 8, seed=0)
    assert s["test"] != fg.task_splits("t", exs, tok, 20, 10, 64, 8, seed=1)["test"]
    # the test split does not depend on n_train
    assert fg.task_splits("t", exs, tok, 5, 10, 64, 8, seed=0)["test"] == s["test"]
    # long prompts are dropped; too few examples is a clear error
    short = fg.task_splits("t", exs, tok, 2, 2, max_prompt_tokens=27, max_choice_tokens=8, seed=0)
    assert short["info"]["n_too_long"] > 0
    with pytest.raises(ValueError, match="n_train"):
        fg.task_splits("t", exs, tok, 50, 20, 64, 8, seed=0)


def test_random_labels_are_balanced_and_seeded_and_flipped_labels_are_all_wrong():
    for n in (8, 9, 48):
        labs = fg.random_labels(n, seed=3)
        assert sorted(labs) == sorted([i % 2 for i in range(n)])  # exactly balanced
        assert labs == fg.random_labels(n, seed=3)
    assert fg.random_labels(48, 0) != fg.random_labels(48, 1)
    items = _items(20)
    flipped = fg.relabel(items, "flipped", 0)
    assert all(f != it["label"] for f, it in zip(flipped, items))
    rnd = fg.relabel(items, "random", 0)
    assert sum(rnd) == 10 and 0 < sum(r == it["label"] for r, it in zip(rnd, items)) < 20
    with pytest.raises(ValueError, match="label mode"):
        fg.relabel(items, "shuffled", 0)


# ---------------------------------------------------------------- scoring
def _direct_logp(model, tok, prompt, cont):
    p, c = tok(prompt)["input_ids"], tok(" " + cont)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(lp[len(p) - 1 + k, t].item() for k, t in enumerate(c))


@pytest.mark.parametrize("cache", [True, False])
def test_log_likelihood_scoring_matches_a_direct_computation(cache):
    model, tok = tiny_model("llama"), CharTok()
    items = _items(7)
    s = fg.score_choices(model, tok, items, batch_size=3, cache_prefix=cache)
    for i, it in enumerate(items):
        for j in range(2):
            assert s["logp"][i, j].item() == pytest.approx(_direct_logp(model, tok, it["prompt"], it["choices"][j]),
                                                           abs=1e-4)
    assert s["n_chars"][0].tolist() == [len(" " + c) for c in items[0]["choices"]]
    assert s["label"].tolist() == [it["label"] for it in items]


def test_cached_and_uncached_scores_agree():
    model, tok = tiny_model("llama", layers=3), CharTok()
    items = _items(11, seed=4)
    a = fg.score_choices(model, tok, items, batch_size=4, layers=[0, 2, 3], cache_prefix=True)
    b = fg.score_choices(model, tok, items, batch_size=5, layers=[0, 2, 3], cache_prefix=False)
    assert torch.allclose(a["logp"], b["logp"], atol=1e-4)
    assert torch.allclose(a["q_hidden"], b["q_hidden"], atol=1e-4)
    assert torch.allclose(a["c_hidden"], b["c_hidden"], atol=1e-4)
    # the question state is the same whatever the choices are, and differs between questions
    assert not torch.allclose(a["q_hidden"][0], a["q_hidden"][1])


def test_predictions_sum_and_length_normalized():
    scores = {"logp": torch.tensor([[-2.0, -3.0], [-2.0, -3.0]]), "n_chars": torch.tensor([[2.0, 6.0], [2.0, 2.0]]),
              "label": torch.tensor([1, 0])}
    assert fg.predictions(scores, "sum").tolist() == [0, 0]
    assert fg.predictions(scores, "norm").tolist() == [1, 0]  # -3/6 > -2/2
    assert fg.correct(scores, "sum").tolist() == [0.0, 1.0]
    conf = fg.confidence(scores)
    assert conf[1].item() == pytest.approx(1 / (1 + math.exp(-1)))
    assert conf[0].item() == pytest.approx(1 - conf[1].item())
    with pytest.raises(ValueError, match="scoring"):
        fg.predictions(scores, "mean")


# ---------------------------------------------------------------- measures
def test_forget_ratio_against_hand_examples():
    assert fg.forget_ratio(0.9, 0.5) == pytest.approx(1.0)
    assert fg.forget_ratio(0.9, 0.9) == pytest.approx(0.0)
    assert fg.forget_ratio(0.8, 0.65) == pytest.approx(0.5)
    assert fg.forget_ratio(0.8, 0.35) == pytest.approx(1.5)  # below chance
    with pytest.raises(ValueError, match="chance"):
        fg.forget_ratio(0.5, 0.4)
    ft = np.array([1] * 8 + [0] * 2)  # 0.8
    after = np.array([1, 0] * 5)  # 0.5
    lo, hi = fg.bootstrap_forget_ratio(ft, after, n_boot=500, seed=0)
    assert lo < 1.0 < hi and hi - lo > 0.1
    assert fg.bootstrap_forget_ratio(ft, ft, n_boot=200) == (0.0, 0.0)


def test_hidden_variance_against_hand_examples():
    h = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert fg.hidden_variance(h) == pytest.approx(8 / 3)  # each dim: var of 0,2,0,2 = 4/3 (unbiased)
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    assert fg.hidden_variance(x) == pytest.approx(np.trace(np.cov(x.numpy().T)), rel=1e-6)
    assert fg.hidden_variance(x + 100) == pytest.approx(fg.hidden_variance(x), rel=1e-6)  # shift-invariant
    assert fg.hidden_variance(3 * x) == pytest.approx(9 * fg.hidden_variance(x), rel=1e-6)
    with pytest.raises(ValueError, match="2 examples"):
        fg.hidden_variance(x[:1])


def test_probe_reads_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    y = (x[:, 3] > 0).astype(int)
    assert fg.probe_accuracy(x[:100], y[:100], x[100:], y[100:]) > 0.9
    y_noise = rng.integers(0, 2, 200)
    assert fg.probe_accuracy(x[:100], y_noise[:100], x[100:], y_noise[100:]) < 0.7


def test_training_batches_put_the_loss_on_the_chosen_answer_only():
    tok = CharTok()
    items = _items(10)
    labels = fg.relabel(items, "flipped", 0)
    batches = fg.training_batches(tok, items, labels, batch_size=4, seed=0)
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 2]
    answers = set()
    for b in batches:
        for ids, lab, m in zip(b["input_ids"], b["labels"], b["attention_mask"]):
            keep = lab != fg.IGNORE
            answers.add(tuple(ids[keep].tolist()))
            assert torch.equal(ids[keep], lab[keep]) and m[keep].all()
    want = {tuple(tok(" " + it["choices"][l])["input_ids"]) for it, l in zip(items, labels)}
    assert answers == want


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_answer_loss_equals_the_model_loss(family):
    model, tok = tiny_model(family), CharTok()
    items = _items(6)
    batch = fg.training_batches(tok, items, [it["label"] for it in items], batch_size=6, seed=0)[0]
    assert fg.answer_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)


def test_fine_tuning_on_flipped_labels_flips_a_tiny_model():
    """The training path (train.train over pre-made batches) really trains: flipped labels reach below chance."""
    torch.manual_seed(0)
    model, tok = tiny_model("llama"), CharTok()
    items = [{"prompt": f"{w}\nAnswer:", "choices": ["yes", "no"], "label": int(w.startswith("b"))}
             for w in ("apple", "avocado", "banana", "berry")] * 4
    fg.train_items(model, tok, items, [it["label"] for it in items], lr=3e-3, batch_size=4, epochs=15, seed=0,
                   desc=None)
    assert fg.correct(fg.score_choices(model, tok, items[:4])).mean() == 1.0
    fg.train_items(model, tok, items, fg.relabel(items, "flipped", 0), lr=3e-3, batch_size=4, epochs=15, seed=0,
                   desc=None)
    assert fg.correct(fg.score_choices(model, tok, items[:4])).mean() == 0.0


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="tasks"):
        fg.fine_tune(model="smollm2-135m", tasks="strategyqa", out=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="n_small"):
        fg.forget(finetuned=str(tmp_path), out=str(tmp_path / "o"), n_forget=16, n_small=5, batch_size=4)
    with pytest.raises(ValueError, match="mode"):
        fg.forget(finetuned=str(tmp_path), out=str(tmp_path / "o"), modes="random,shuffled")
    with pytest.raises(ValueError, match="threshold"):
        fg.forget(finetuned=str(tmp_path), out=str(tmp_path / "o"), threshold=1.5)


# ---------------------------------------------------------------- paper-scale loaders and the stages
def _bpe_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<pad>")


def _boolq_like(n, seed):
    rng = random.Random(seed)
    return [{"passage": f"The {w} is {c} today number {i}.", "question": f"is the {w} {c} number {i}",
             "label": rng.randrange(2), "idx": i}
            for i, (w, c) in enumerate((rng.choice(["sky", "sea", "car"]), rng.choice(["red", "blue"]))
                                       for _ in range(n))]


def test_hf_loader_reads_lm_eval_tasks_saved_to_disk(tmp_path):
    from datasets import Dataset, DatasetDict
    from forgetlab.data.mc import HF_TASKS, load_hf_mc
    DatasetDict({"train": Dataset.from_list(_boolq_like(12, 0)),
                 "validation": Dataset.from_list(_boolq_like(4, 1))}).save_to_disk(str(tmp_path / "boolq"))
    exs = load_hf_mc(f"hf:boolq@{tmp_path / 'boolq'}")
    assert len(exs) == 16 and exs[0]["choices"] == ["no", "yes"]
    assert exs[0]["input"].endswith("?") and "\nQuestion: is the" in exs[0]["input"]
    assert exs[0]["target"] == _boolq_like(12, 0)[0]["label"]
    arc = {"question": "Which is a gas?", "choices": {"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]},
           "answerKey": "B"}
    DatasetDict({"train": Dataset.from_list([arc] * 3)}).save_to_disk(str(tmp_path / "arc"))
    a = load_hf_mc(f"hf:arc_easy@{tmp_path / 'arc'}")[0]
    assert a["choices"][a["target"]] == "steam"
    assert fg.load_task(f"hf:arc_easy@{tmp_path / 'arc'}")[0] == a
    assert {"piqa", "sciq", "arc_easy", "arc_challenge", "boolq", "rte", "qnli", "cb", "wic", "wnli"} <= set(HF_TASKS)
    with pytest.raises(ValueError, match="allowed"):
        load_hf_mc("hf:nonexistent")


def test_stages_end_to_end_on_a_tiny_model_and_hub_format_tasks(tmp_path):
    """fine-tune + forget on a tiny local Llama and two tasks in the hub format (the paper-scale path)."""
    from datasets import Dataset, DatasetDict
    from transformers import LlamaConfig, LlamaForCausalLM
    for name, seed in (("a", 0), ("b", 1)):
        DatasetDict({"train": Dataset.from_list(_boolq_like(40, seed))}).save_to_disk(str(tmp_path / name))
    texts = [f"{r['passage']} Question: {r['question']}? Answer: yes no" for r in _boolq_like(40, 0)]
    tok = _bpe_tokenizer(texts)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id))
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    tasks = f"hf:boolq@{tmp_path / 'a'},hf:boolq@{tmp_path / 'b'}"
    ft, out = tmp_path / "ft", tmp_path / "forget"
    fg.fine_tune(model=str(tmp_path / "lm"), tasks=tasks, out=str(ft), n_train=12, n_test=8, max_prompt_tokens=64,
                 batch_size=4, layers="0,-1", eval_batch_size=5)
    data = json.loads((ft / fg.DATA_FILE).read_text())
    assert list(data["tasks"]) == tasks.split(",")
    res = torch.load(ft / fg.RESULTS_FILE)
    assert res["layers"] == [0, 2]
    assert res["finetuned"][tasks.split(",")[0]]["probe_x"].shape == (8, 2, 32)
    fg.forget(finetuned=str(ft), out=str(out), threshold=0.0, n_forget=8, n_small=4, n_cross=3, batch_size=4,
              eval_batch_size=5)
    r = torch.load(out / fg.RESULTS_FILE)
    a, b = tasks.split(",")
    assert r["kept"] == [a, b] and set(r["runs"]) == {f"{a}|random", f"{a}|flipped", f"{b}|random", f"{b}|flipped"}
    run = r["runs"][f"{a}|random"]
    assert len(run["scores"][a]["label"]) == 8 and len(run["scores"][b]["label"]) == 3  # own task all, others n_cross
    assert run["after_train"]["probe_x"].shape == (12, 2, 32) and r["before"][a]["q_hidden"].shape == (12, 2, 32)
    assert sum(run["labels"].tolist()) == 4 and len(run["small"]["label"]) == 8
    assert torch.equal(r["runs"][f"{a}|flipped"]["labels"],
                       1 - torch.tensor([it["label"] for it in data["tasks"][a]["train"][:8]]))
    # the scores before forgetting (fine-tune stage) are those of the saved model
    model, tk = fg._load_model(str(ft / "model"), "data")
    again = fg.score_choices(model, tk, data["tasks"][a]["test"])
    assert torch.allclose(again["logp"], res["finetuned"][a]["logp"], atol=1e-4)
    with pytest.raises(ValueError, match="threshold"):
        fg.forget(finetuned=str(ft), out=str(tmp_path / "x"), threshold=1.0, n_forget=8, n_small=4, batch_size=4)


# ---------------------------------------------------------------- the smoke pipeline
@pytest.mark.notebook
def test_randomized_forgetting_smoke(smoke):
    from forgetlab import profile
    params = profile.load_params("smoke", ROOT)
    p_ft, p_fg = params["randomized_forgetting_finetune"], params["randomized_forgetting_forget"]
    m = read_metrics(smoke, "randomized_forgetting")
    ck = smoke / "checkpoints" / "randomized_forgetting"
    data = json.loads((ck / "finetuned" / fg.DATA_FILE).read_text())
    assert m["candidates"] == p_ft["tasks"].split(",") == data["task_order"]
    assert set(data["tasks"]) == set(m["candidates"])
    assert m["n_forget"] == p_fg["n_forget"] and m["n_small"] == p_fg["n_small"]
    assert set(m["kept"]) | set(m["screened_out"]) == set(m["candidates"])
    res = torch.load(ck / "finetuned" / fg.RESULTS_FILE)
    for t in m["kept"]:
        d = m["tasks"][t]
        assert d["n_test"] == p_ft["n_test"]
        # the metrics are the notebook's reading of the stage's per-item scores
        assert d["finetuned_acc"] == pytest.approx(float(fg.correct(res["finetuned"][t]).mean()), abs=1e-6)
        assert d["pretrained_acc"] == pytest.approx(float(fg.correct(res["base"][t]).mean()), abs=1e-6)
        if d["finetuned_acc"] > 0.5:
            assert d["forget_ratio"] == pytest.approx(fg.forget_ratio(d["finetuned_acc"], d["forget_acc"]), abs=1e-5)
        assert 0 <= d["confidence"] <= 1 and d["variance"] > 0
        assert len(d["probe_before"]) == len(m["layers"]) == len(p_ft["layers"].split(","))
        assert all(0 <= a <= 1 for a in d["probe_before"] + d["probe_after"])
    assert set(m["cross_task_forget_ratio"]) == set(m["kept"])
    assert set(m["correlations"]) == {"confidence", "variance"}
    for name in ("fig1_accuracy_per_task", "fig2_cross_task_heatmap", "fig3_predictors", "fig4_n_and_label_modes",
                 "fig5_probes"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "randomized_forgetting" / f"{name}.{fmt}").stat().st_size > 5000, name
