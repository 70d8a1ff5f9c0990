"""Randomized-label forgetting (notebook 03): binarization, log-likelihood scoring, measures, stages, smoke run."""
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_metrics, step_args
from forgetlab.core.models import load_causal_lm, tiny_model
from forgetlab.papers.randomized_forgetting import experiment as fg

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


def forget_args(tmp_path, **overrides) -> dict:
    return step_args("randomized_forgetting_forget", finetuned=str(tmp_path), out=str(tmp_path / "o"), **overrides)


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="tasks"):
        fg.fine_tune(**step_args("randomized_forgetting_finetune", tasks=["strategyqa"], out=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="small_fraction"):
        fg.forget(**forget_args(tmp_path, n_forget=16, small_fraction=0.05))
    with pytest.raises(ValueError, match="small_fraction"):
        fg.forget(**forget_args(tmp_path, small_fraction=1.5))
    with pytest.raises(ValueError, match="mode"):
        fg.forget(**forget_args(tmp_path, modes=["random", "shuffled"]))
    with pytest.raises(ValueError, match="threshold"):
        fg.forget(**forget_args(tmp_path, threshold=1.5))
    with pytest.raises(ValueError, match="margin"):
        fg.forget(**forget_args(tmp_path, margin=-1.5))
    with pytest.raises(ValueError, match="tol"):
        fg.forget(**forget_args(tmp_path, tol=2.0))
    with pytest.raises(ValueError, match="max_epochs"):
        fg.forget(**forget_args(tmp_path, max_epochs=0))


# ---------------------------------------------------------------- forgetting to convergence, screen, ratios, probes
def _toy_items():
    """A learnable toy task for the tiny model: the answer is "yes" iff the word starts with b."""
    words = ("apple", "avocado", "apricot", "almond", "banana", "berry", "bean", "basil")
    return [{"prompt": f"{w}\nAnswer:", "choices": ["yes", "no"] if i % 2 else ["no", "yes"],
             "label": (int(w.startswith("b")) + i % 2) % 2} for i, w in enumerate(words)]


def _accs(rec):
    return [float(fg.correct(s).mean()) for s in rec["forget"]]


def test_convergence_loop_stops_at_the_first_epoch_within_the_tolerance():
    torch.manual_seed(0)
    model, tok = tiny_model("llama"), CharTok()
    items = _toy_items()
    assert all(it["choices"][it["label"]] == ("yes" if it["prompt"][0] == "b" else "no") for it in items)
    fg.train_items(model, tok, items, [it["label"] for it in items], lr=3e-3, batch_size=4, epochs=30, seed=0,
                   desc=None)
    assert fg.correct(fg.score_choices(model, tok, items)).mean() == 1.0  # learned: forgetting has work to do
    start = {k: v.clone() for k, v in model.state_dict().items()}
    flipped = fg.relabel(items, "flipped", 0)
    rec = fg.forget_to_convergence(model, tok, items, flipped, items[:4], target=fg.convergence_target("flipped"),
                                   tol=0.1, scoring="sum", max_epochs=40, lr=3e-3, batch_size=4, seed=0,
                                   test_layers=[0, 1])
    accs = _accs(rec)
    assert rec["converged"] and 1 < rec["epochs"] < 40 and len(accs) == rec["epochs"] == len(rec["test"])
    assert accs[-1] <= 0.1 and all(a > 0.1 for a in accs[:-1])  # stops at the first epoch within the tolerance
    assert len(rec["losses"]) == 2 * rec["epochs"]  # 8 items, batch 4: 2 steps per epoch, none after the stop
    assert rec["final_test"]["probe_x"].shape[:2] == (4, 2) and "probe_x" not in rec["test"][0]
    # the recorded scores are the model's at the end of the run
    assert torch.allclose(fg.score_choices(model, tok, items)["logp"], rec["forget"][-1]["logp"], atol=1e-5)
    # the same run capped below its convergence epoch: not converged, every epoch recorded, test only at the end
    model.load_state_dict(start)
    capped = fg.forget_to_convergence(model, tok, items, flipped, items[:4], target=0.0, tol=0.1, scoring="sum",
                                      max_epochs=rec["epochs"] - 1, lr=3e-3, batch_size=4, seed=0,
                                      test_every_epoch=False)
    assert not capped["converged"] and capped["epochs"] == rec["epochs"] - 1 and len(capped["test"]) == 1
    assert _accs(capped) == pytest.approx(accs[:-1])  # same seed, same trajectory
    # random labels: the target is chance, and a model that has learned the task is not there before forgetting
    assert fg.convergence_target("random") == 0.5 and fg.convergence_target("flipped") == 0.0
    with pytest.raises(ValueError, match="labels"):
        fg.forget_to_convergence(model, tok, items, flipped[:3], items, target=0.5, tol=0.1, scoring="sum",
                                 max_epochs=1, lr=1e-3, batch_size=4, seed=0)


def _scores(correct_flags):
    """Scores whose summed-log-likelihood prediction is correct exactly where correct_flags is 1."""
    c = torch.tensor(correct_flags, dtype=torch.float)
    label = torch.arange(len(c)) % 2
    pred = torch.where(c.bool(), label, 1 - label)
    logp = torch.stack([-(pred == 1).float() - 1, -(pred == 0).float() - 1], 1)  # the predicted choice is higher
    return {"logp": logp, "label": label, "n_chars": torch.ones(len(c), 2)}


def test_screen_rejects_a_task_that_was_already_high_before_fine_tuning():
    base = {"already_high": _scores([1] * 18 + [0] * 2), "learned": _scores([1, 0] * 5), "not_learned": _scores([1, 0] * 10),
            "exact_margin": _scores([1] * 6 + [0] * 4)}
    ft = {"already_high": _scores([1] * 19 + [0]), "learned": _scores([1] * 8 + [0] * 2),
          "not_learned": _scores([1] * 11 + [0] * 9), "exact_margin": _scores([1] * 7 + [0] * 3)}
    assert float(fg.correct(base["already_high"]).mean()) == pytest.approx(0.9)  # the helper makes what it says
    kept, table = fg.screen(base, ft, threshold=0.6, margin=0.1, scoring="sum")
    assert kept == ["learned", "exact_margin"]  # candidate order; a gain of exactly the margin passes
    assert table["already_high"]["gain"] == pytest.approx(0.05) and table["already_high"]["finetuned_acc"] == pytest.approx(0.95)
    assert not table["already_high"]["kept"] and "margin" in table["already_high"]["reason"]
    assert "threshold" not in table["already_high"]["reason"]  # it is high: rejected for not having learned
    assert table["learned"] == {"pretrained_acc": 0.5, "finetuned_acc": pytest.approx(0.8), "gain": pytest.approx(0.3),
                                "kept": True, "reason": ""}
    assert "threshold 0.6" in table["not_learned"]["reason"] and "margin 0.1" in table["not_learned"]["reason"]
    # a level-only screen (margin 0) would have kept the task that was high before
    assert "already_high" in fg.screen(base, ft, threshold=0.6, margin=0.0, scoring="sum")[0]
    with pytest.raises(ValueError, match="margin"):
        fg.screen(base, ft, threshold=0.6, margin=1.5, scoring="sum")
    # the screen reads `scoring`: per character, with the predicted choice 4x shorter, every prediction flips
    per_char = {k: {**s, "n_chars": torch.where(s["logp"] == s["logp"].max(1, keepdim=True).values, 1.0, 4.0)}
                for k, s in ft.items()}
    assert float(fg.correct(per_char["learned"], "norm").mean()) == pytest.approx(0.2)
    assert "learned" not in fg.screen(base, per_char, threshold=0.6, margin=0.1, scoring="norm")[0]


def test_normalized_forget_ratio_against_hand_computations():
    # test: 0.9 -> 0.7 is half-way to chance (0.2 / 0.4); forget set: 1.0 -> 0.5 all the way (1.0)
    assert fg.normalized_forget_ratio(0.9, 0.7, 1.0, 0.5) == pytest.approx(0.5)
    # forget set only half-way (1.0 -> 0.75): the test items fell as far as the forget set did
    assert fg.normalized_forget_ratio(0.9, 0.7, 1.0, 0.75) == pytest.approx(1.0)
    assert fg.normalized_forget_ratio(0.8, 0.8, 0.9, 0.5) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="forget set"):
        fg.normalized_forget_ratio(0.9, 0.7, 1.0, 1.0)
    with pytest.raises(ValueError, match="chance"):
        fg.normalized_forget_ratio(0.5, 0.4, 1.0, 0.5)
    t_ft, t_after = np.array([1] * 9 + [0]), np.array([1] * 7 + [0] * 3)
    f_ft, f_after = np.ones(8), np.array([1, 0] * 4)
    lo, hi = fg.bootstrap_normalized_ratio(t_ft, t_after, f_ft, f_after, n_boot=500, seed=0)
    assert lo <= 0.5 <= hi and hi - lo > 0.1
    # no spread in either sample: the interval is the point (test 1.0 -> 0.0 is r = 2, below chance; forget set
    # 1.0 -> 0.5 is r = 1)
    same = fg.bootstrap_normalized_ratio(np.ones(10), np.zeros(10), f_ft, np.full(8, 0.5), n_boot=50)
    assert same == pytest.approx((2.0, 2.0))


def test_probe_cv_reads_a_linear_signal_and_the_controls_do_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 20))
    y = (x[:, 3] > 0).astype(int)
    hit = fg.probe_cv(x, y, folds=5, C=1.0, seed=0)
    assert hit.shape == (120,) and set(np.unique(hit)) <= {0.0, 1.0} and hit.mean() > 0.85
    assert np.array_equal(hit, fg.probe_cv(x, y, folds=5, C=1.0, seed=0))  # seeded
    assert fg.probe_cv(x, y, folds=5, shuffle_labels=True, seed=0).mean() < 0.7  # the shuffled-label control
    assert fg.probe_cv(rng.normal(size=(120, 20)), y, folds=5).mean() < 0.7  # features without the signal
    # transfer: fit on x, read x_eval; features whose signal moved to another dimension lose it
    moved = x.copy()
    moved[:, 3] = rng.normal(size=120)
    assert fg.probe_cv(x, y, x_eval=moved).mean() < 0.75
    assert fg.probe_cv(x, y, x_eval=x).tolist() == hit.tolist()
    with pytest.raises(ValueError, match="same items"):
        fg.probe_cv(x, y, x_eval=x[:10])
    # one item of a class: the fold that holds it out is fit on one class only and predicts that class
    lone = np.array([0] * 7 + [1])
    hit = fg.probe_cv(x[:8], lone, folds=2)
    assert hit.shape == (8,) and hit[7] == 0.0


def test_bootstrap_spearman_interval():
    x = np.arange(10.0)
    assert fg.bootstrap_spearman(x, 2 * x + 1, n_boot=200) == pytest.approx((1.0, 1.0))
    assert fg.bootstrap_spearman(x, -x, n_boot=200) == pytest.approx((-1.0, -1.0))
    rng = np.random.default_rng(1)
    lo, hi = fg.bootstrap_spearman(rng.normal(size=8), rng.normal(size=8), n_boot=500, seed=0)
    assert lo < 0 < hi and hi - lo > 0.5  # eight unrelated pairs: wide, and it includes 0


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
    tasks = [f"hf:boolq@{tmp_path / 'a'}", f"hf:boolq@{tmp_path / 'b'}"]
    ft, out = tmp_path / "ft", tmp_path / "forget"
    fg.fine_tune(**step_args("randomized_forgetting_finetune", model=str(tmp_path / "lm"), tasks=tasks, out=str(ft),
                             n_train=12, n_test=8, max_prompt_tokens=64, batch_size=4, layers=[0, -1],
                             eval_batch_size=5))
    data = json.loads((ft / fg.DATA_FILE).read_text())
    assert list(data["tasks"]) == tasks
    res = torch.load(ft / fg.RESULTS_FILE)
    assert res["layers"] == [0, 2]
    assert res["finetuned"][tasks[0]]["probe_x"].shape == (8, 2, 32)
    assert res["base"][tasks[0]]["probe_x"].shape == (8, 2, 32)  # the probes' pre-trained control
    fg.forget(**step_args("randomized_forgetting_forget", finetuned=str(ft), out=str(out), threshold=0.0, margin=-1.0,
                          n_forget=8, small_fraction=0.5, n_cross=3, batch_size=4, max_epochs=2, tol=0.0,
                          eval_batch_size=5))
    r = torch.load(out / fg.RESULTS_FILE)
    a, b = tasks
    assert r["kept"] == [a, b] and set(r["runs"]) == {f"{a}|random", f"{a}|flipped", f"{b}|random", f"{b}|flipped"}
    assert set(r["screen"]) == {a, b} and r["n_small"] == 4
    run = r["runs"][f"{a}|random"]
    assert len(run["scores"][a]["label"]) == 8 and len(run["scores"][b]["label"]) == 3  # own task all, others n_cross
    # tol 0: an exact hit of chance stops the run, otherwise every epoch up to max_epochs is recorded
    for key, rr in r["runs"].items():
        assert rr["epochs"] == len(rr["forget"]) and rr["epochs"] <= 2
        assert rr["converged"] == (rr["epochs"] < 2 or float(fg.correct(rr["forget"][-1]).mean()) ==
                                   fg.convergence_target(key.split("|")[1]))
        assert len(rr["forget"][-1]["label"]) == 8
    assert len(run["test"]) == run["epochs"] and len(r["runs"][f"{a}|flipped"]["test"]) == 1  # curve: random only
    assert run["final_test"]["probe_x"].shape == (8, 2, 32) and r["before"][a]["q_hidden"].shape == (8, 2, 32)
    assert sum(run["labels"].tolist()) == 4 and len(run["small"]["forget"][-1]["label"]) == 4
    assert len(run["small"]["final_test"]["label"]) == 8 and sum(run["small"]["labels"].tolist()) == 2
    assert torch.equal(r["runs"][f"{a}|flipped"]["labels"],
                       1 - torch.tensor([it["label"] for it in data["tasks"][a]["train"][:8]]))
    # the scores before forgetting (fine-tune stage) are those of the saved model
    model, tk = load_causal_lm(str(ft / "model"), data_dir="data", device="cpu")
    again = fg.score_choices(model, tk, data["tasks"][a]["test"])
    assert torch.allclose(again["logp"], res["finetuned"][a]["logp"], atol=1e-4)
    with pytest.raises(ValueError, match="threshold"):  # nothing passes a threshold of 1
        fg.forget(**step_args("randomized_forgetting_forget", finetuned=str(ft), out=str(tmp_path / "x"),
                              threshold=1.0, margin=-1.0, n_forget=8, batch_size=4))


# ---------------------------------------------------------------- the smoke pipeline
@pytest.mark.notebook
def test_randomized_forgetting_smoke(smoke):
    from forgetlab.repro import profile
    params = profile.load_params("smoke", ROOT)
    p_ft, p_fg = params["randomized_forgetting_finetune"], params["randomized_forgetting_forget"]
    m = read_metrics(smoke, "randomized_forgetting")
    ck = smoke / "checkpoints" / "randomized_forgetting"
    data = json.loads((ck / "finetuned" / fg.DATA_FILE).read_text())
    assert m["candidates"] == p_ft["tasks"] == data["task_order"]
    assert set(data["tasks"]) == set(m["candidates"])
    assert m["n_forget"] == p_fg["n_forget"] and m["n_small"] == round(p_fg["small_fraction"] * p_fg["n_forget"])
    assert m["tol"] == p_fg["tol"] and m["max_epochs"] == p_fg["max_epochs"] and m["margin"] == p_fg["margin"]
    assert set(m["kept"]) | set(m["screened_out"]) == set(m["candidates"]) == set(m["screen"])
    res = torch.load(ck / "finetuned" / fg.RESULTS_FILE)
    fres = torch.load(ck / "forget" / fg.RESULTS_FILE)
    for t in m["kept"]:
        d = m["tasks"][t]
        assert d["n_test"] == p_ft["n_test"] and d["n_forget"] == p_fg["n_forget"]
        # the metrics are the notebook's reading of the stage's per-item scores
        assert d["finetuned_acc"] == pytest.approx(float(fg.correct(res["finetuned"][t]).mean()), abs=1e-6)
        assert d["pretrained_acc"] == pytest.approx(float(fg.correct(res["base"][t]).mean()), abs=1e-6)
        assert m["screen"][t]["gain"] == pytest.approx(d["finetuned_acc"] - d["pretrained_acc"], abs=1e-6)
        if d["finetuned_acc"] > 0.5:
            assert d["forget_ratio"] == pytest.approx(fg.forget_ratio(d["finetuned_acc"], d["forget_acc"]), abs=1e-5)
        # the curves: epoch 0 is the fine-tuned model, one point per epoch run, the stop rule as recorded
        run = fres["runs"][f"{t}|random"]
        assert len(d["forgetset_curve_random"]) == len(d["test_curve_random"]) == run["epochs"] + 1 == d["epochs"] + 1
        assert d["forgetset_curve_random"][0] == pytest.approx(d["forgetset_acc_before"])
        assert d["test_curve_random"][0] == pytest.approx(d["finetuned_acc"])
        assert d["converged"] == (abs(d["forgetset_curve_random"][-1] - 0.5) <= p_fg["tol"] + 1e-9)
        assert len(d["forgetset_curve_flipped"]) == fres["runs"][f"{t}|flipped"]["epochs"] + 1
        assert 0 <= d["confidence"] <= 1 and d["variance"] > 0
        for kind in ("pretrained", "finetuned", "after", "transfer", "shuffled"):
            assert len(d[f"probe_{kind}"]) == len(m["layers"]) == len(p_ft["layers"])
            assert all(0 <= a <= 1 for a in d[f"probe_{kind}"])
    assert set(m["cross_task_forget_ratio"]) == set(m["kept"])
    assert set(m["correlations"]) == {"confidence", "variance"}
    allowed = {"holds", "partly", "does not hold", "inconclusive", "not tested"}
    assert set(m["verdicts"].values()) <= allowed and len(m["verdicts"]) == 6
    assert m["verdicts"]["confidence_predicts_negatively"] == "not tested"  # 2 tasks: no correlation
    assert m["share_converged"] == 1.0  # smoke tol 0.5: random labels always stop after one epoch
    for name in ("fig0_forgetting_curves", "fig1_accuracy_per_task", "fig2_cross_task_heatmap", "fig3_predictors",
                 "fig4_n_and_label_modes", "fig5_probes"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "randomized_forgetting" / f"{name}.{fmt}").stat().st_size > 5000, name


def test_notebook_03s_correlation_and_ratio_helpers():
    from forgetlab.papers.randomized_forgetting import analysis as rf
    c = rf.correlation([1, 2, 3, 4, float("nan")], [2, 4, 6, 9, 1], n_boot=200, seed=0)
    assert c["n"] == 4 and c["spearman"] == pytest.approx(1.0) and c["spearman_ci"] == [1.0, 1.0]
    assert c["pearson"] == pytest.approx(0.99, abs=0.01)
    for xs, ys in (([1, 2], [3, 4]), ([1, 1, 1], [1, 2, 3])):  # too few pairs; a constant side
        c = rf.correlation(xs, ys, n_boot=200, seed=0)
        assert math.isnan(c["spearman"]) and math.isnan(c["pearson"])
    ft, after = np.array([1.0] * 9 + [0.0]), np.array([1.0] * 7 + [0.0] * 3)  # 0.9 -> 0.7: half the way to chance
    assert rf.hits_forget_ratio(ft, after) == pytest.approx(0.5)
    assert math.isnan(rf.hits_forget_ratio(np.array([1.0, 0.0]), after[:2]))  # fine-tuned at chance: undefined
    lo, hi = rf.hits_forget_ratio_ci(ft, after, n_boot=200, seed=0)
    assert lo <= 0.5 <= hi


def test_notebook_03s_n_vs_small_pools_the_ratios_by_hand():
    """Task a: fine-tuned 4 of 4, after N 2 of 4, after N_small 3 of 4; task b: 3/4, 1/4, 3/4. Pooled over items,
    sum(ft - after) / sum(ft - 0.5): (2 + 2) / (2 + 1) for N, (1 + 0) / 3 for N_small."""
    from forgetlab.papers.randomized_forgetting import analysis as rf
    h = lambda *x: np.array(x, float)  # noqa: E731
    out = rf.n_vs_small({"a": (h(1, 1, 1, 1), h(1, 1, 0, 0), h(1, 1, 1, 0)),
                         "b": (h(1, 1, 1, 0), h(1, 0, 0, 0), h(1, 1, 1, 0))}, n_boot=200, seed=0)
    assert out["tasks"] == ["a", "b"]
    assert out["pooled_forget_ratio"] == pytest.approx(4 / 3)
    assert out["pooled_forget_ratio_small"] == pytest.approx(1 / 3)
    lo, hi = out["difference_ci"]
    assert lo <= 1 <= hi
    assert rf.n_vs_small({}, n_boot=200, seed=0) == {}


def test_notebook_03s_claim_verdicts_follow_their_stated_rules():
    from forgetlab.papers.randomized_forgetting import analysis as rf
    tasks = {"a": {"forget_ratio_ci": [0.6, 0.9]}, "b": {"forget_ratio_ci": [0.1, 0.5]},
             "c": {"forget_ratio_ci": [-0.2, 0.3]}}
    corr = {"confidence": {"spearman_ci": [-0.9, -0.1]}, "variance": {"spearman_ci": [float("nan")] * 2}}
    shallow = {"probe_after_minus_model_after": (0.2, [0.1, 0.3]),
               "probe_after_minus_probe_pretrained": (0.0, [-0.1, 0.1])}
    kw = dict(enough_converged=True, offdiagonal_ci=[-0.1, 0.2], offdiagonal_above=1, n_offdiagonal=6,
              n_vs_small={"difference_ci": [-0.1, 0.4]}, correlations=corr, shallow=shallow)
    v = rf.claim_verdicts(tasks, ["a", "b", "c"], **kw)
    assert v == {"generalizes_and_varies": "holds", "spills_over": "partly",  # 1 cell > 2.5% of 6
                 "more_examples_more_forgetting": "inconclusive", "confidence_predicts_negatively": "holds",
                 "variance_predicts_negatively": "not tested", "shallow_probes": "partly"}
    # b and c overlap, and only b lies above 0: partly; no cell above 0 of 60; N_small better: does not hold
    v = rf.claim_verdicts(tasks, ["b", "c"], **{**kw, "offdiagonal_above": 1, "n_offdiagonal": 60,
                                                "n_vs_small": {"difference_ci": [-0.4, -0.1]}})
    assert (v["generalizes_and_varies"], v["spills_over"], v["more_examples_more_forgetting"]) == \
        ("partly", "does not hold", "does not hold")
    assert rf.claim_verdicts(tasks, ["c"], **{**kw, "offdiagonal_ci": [0.05, 0.2], "n_vs_small": {}})[
        "spills_over"] == "holds"
    # too few converged: the forget-ratio claims are not tested, the others still decided
    v = rf.claim_verdicts(tasks, ["a"], **{**kw, "enough_converged": False, "n_vs_small": {}})
    assert [v[k] for k in ("generalizes_and_varies", "spills_over", "more_examples_more_forgetting")] == \
        ["not tested"] * 3
    assert v["confidence_predicts_negatively"] == "holds"
    assert rf.nan_to_null({"r": np.float64("nan"), "n": np.int64(3), "ok": np.bool_(True), "xs": np.array([0.5])}) \
        == {"r": None, "n": 3, "ok": True, "xs": [0.5]}


def test_notebook_03s_cross_task_matrix_by_hand():
    """Two tasks, four items each (hits by _scores). Fine-tuned: a 4/4, b 3/4 right. Forgetting a leaves a at 3/4 and b at
    3/4: forget ratios (1 - 0.75) / 0.5 = 0.5 and 0; forgetting b leaves a at 4/4 and b at 2/4: 0 and
    (0.75 - 0.5) / 0.25 = 1."""
    from forgetlab.papers.randomized_forgetting import analysis as rf

    ft = {"finetuned": {"a": _scores([1, 1, 1, 1]), "b": _scores([1, 1, 1, 0])}}
    fg_res = {"runs": {"a|random": {"scores": {"a": _scores([1, 1, 1, 0]), "b": _scores([1, 1, 1, 0])}},
                       "b|random": {"scores": {"a": _scores([1, 1, 1, 1]), "b": _scores([1, 1, 0, 0])}}}}
    cross = rf.cross_task(ft, fg_res, ["a", "b"], scoring="sum", n_boot=50, seed=0)
    assert cross.matrix.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, 1.0])
    assert cross.diagonal == pytest.approx(0.75) and cross.offdiagonal == pytest.approx(0.0)
    assert cross.n_offdiagonal == 2 and cross.above == []
    lo, hi = cross.ci[("a", "b")]
    assert lo <= 0 <= hi and cross.ci[("b", "b")][1] >= 1.0


def test_notebook_03s_shallow_probe_differences_pool_the_items_of_the_pool():
    from forgetlab.papers.randomized_forgetting import analysis as rf
    h = lambda *x: np.array(x, float)  # noqa: E731
    probe = {"after": {"a": [h(0, 0), h(1, 1)], "b": [h(1, 0), h(1, 0)]},
             "pretrained": {"a": [h(0, 0), h(0, 1)], "b": [h(0, 0), h(0, 0)]},
             "finetuned": {"a": [h(1, 1), h(1, 1)], "b": [h(1, 1), h(1, 1)]}}
    best = {"a": 1, "b": 0}  # a read at layer 1, b at layer 0
    out = rf.shallow_probes(probe, best, {"a": h(0, 0), "b": h(0, 1)}, ["a", "b"], n_boot=50, seed=0)
    assert out["probe_after_minus_model_after"][0] == pytest.approx((1 + 1 + 1 - 1) / 4)
    assert out["probe_after_minus_probe_pretrained"][0] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert out["probe_after_minus_probe_finetuned"][0] == pytest.approx((0 + 0 + 0 - 1) / 4)
    assert rf.shallow_probes(probe, best, {"a": h(0, 0), "b": h(0, 1)}, ["b"], n_boot=50, seed=0)[
        "probe_finetuned_minus_probe_pretrained"][0] == pytest.approx(1.0)


def test_notebook_03s_converged_tasks_check_what_the_runs_recorded():
    from forgetlab.papers.randomized_forgetting import analysis as rf

    at_chance, fit = _scores([1, 0, 1, 0]), _scores([1, 1, 1, 0])  # 0.5 and 0.75 right on the forget set

    def run(last, converged, epochs=2):
        return {"forget": [fit, last][:epochs], "test": [fit, fit][:epochs], "epochs": 2, "converged": converged}
    res = {"tol": 0.1, "scoring": "sum", "runs": {"a|random": run(at_chance, True), "b|random": run(fit, False)}}
    assert rf.converged_tasks(res, ["a", "b"]) == ["a"]
    res["runs"]["b|random"]["converged"] = True  # 0.75 is 0.25 from chance: not converged
    with pytest.raises(ValueError, match="b: recorded converged=True, but the last epoch's forget-set accuracy "
                                         "is 0.750"):
        rf.converged_tasks(res, ["a", "b"])
    res["runs"]["b|random"] = run(fit, False, epochs=1)  # an epoch missing
    with pytest.raises(ValueError, match="b: the forgetting run recorded 1 forget-set and 1 test evaluations for 2"):
        rf.converged_tasks(res, ["a", "b"])
