"""Forgetting robustness (notebook 06): the shared recovery views, validation/test separation, the tuning rules,
the attacks, the smoke run."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import as_written, read_metrics
from forgetlab.core import metrics, neurons
from forgetlab.core.models import tiny_model
from forgetlab.papers.forgetting_robustness import experiment as rb

ROOT = Path(__file__).resolve().parents[1]
OPT = {"weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 1.0}  # forgetting_robustness_run's optimizer settings


def _windows(n, seq_len=12, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _same_params(a: dict, model) -> bool:
    return all(torch.equal(a[n], p) for n, p in model.named_parameters())


# ---------------------------------------------------------------- the shared measure (forgetlab.core.metrics)
def test_recovery_share_by_hand_in_both_orientations():
    # notebook 06: recovery_share(acc_attacked, acc_removed, acc_original) = (a - r) / (o - r)
    a, r, o = 0.43, 0.40, 0.55
    assert metrics.recovery_share(a, r, o) == pytest.approx((0.43 - 0.40) / (0.55 - 0.40)) == pytest.approx(0.2)
    assert metrics.recovery_share(0.40, 0.40, 0.55) == 0.0  # nothing comes back
    assert metrics.recovery_share(0.55, 0.40, 0.55) == pytest.approx(1.0)  # all of it
    assert metrics.recovery_share(0.37, 0.40, 0.55) == pytest.approx(-0.2)  # the attack removes even more
    assert math.isnan(metrics.recovery_share(0.5, 0.55, 0.55))  # nothing was removed
    # notebook 04: recovery_share(K_unlearned, K_retrain, K_target) = (K_u - K_retrain) / (K_target - K_retrain)
    k_u, k_retrain, k_target = 0.3, 0.1, 0.9
    assert metrics.recovery_share(k_u, k_retrain, k_target) == pytest.approx((0.3 - 0.1) / (0.9 - 0.1))
    # arrays, elementwise
    assert metrics.recovery_share(np.array([0.43, 0.5]), 0.40, 0.55) == pytest.approx([0.2, 2 / 3])


def test_the_three_views_by_hand():
    a, r, o, oa = 0.37, 0.40, 0.55, 0.505  # 4 bits: the removed model 0.40 -> 0.37, the original 0.55 -> 0.505
    assert metrics.recovery_view("share_full_gap", a, r, o, oa) == pytest.approx((0.37 - 0.40) / 0.15)
    assert metrics.recovery_view("gap_closure", a, r, o, oa) == pytest.approx(1 - (0.505 - 0.37) / 0.15)
    assert metrics.recovery_view("share_attacked_original", a, r, o, oa) == pytest.approx((0.37 - 0.40) / 0.105)
    for v in metrics.RECOVERY_VIEWS:  # an attack that changes neither model: 0 in every view
        assert metrics.recovery_view(v, r, r, o, o) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="view"):
        metrics.recovery_view("share", a, r, o, oa)


def test_bootstrap_recovery_is_exact_when_every_window_agrees():
    n = np.full(20, 10.0)
    orig, removed, half = np.full(20, 6.0), np.full(20, 4.0), np.full(20, 5.0)
    for att, want in ((removed, 0.0), (orig, 1.0), (half, 0.5)):
        r = metrics.bootstrap_recovery("share_full_gap", att, removed, orig, orig, n, n_boot=200)
        assert r["value"] == pytest.approx(want) and r["ci"] == pytest.approx([want, want])
        assert r["gap"] == pytest.approx(0.2) and r["gap_ci"] == pytest.approx([0.2, 0.2])
    # noisy per-window hits: the interval brackets the point estimate, which is recovery_share of the sums
    att = removed + np.random.default_rng(0).integers(0, 3, 20)
    r = metrics.bootstrap_recovery("share_full_gap", att, removed, orig, orig, n, n_boot=500)
    assert r["value"] == pytest.approx(metrics.recovery_share(att.sum() / 200, 0.4, 0.6))
    assert r["ci"][0] < r["value"] < r["ci"][1]


def test_bootstrap_recovery_is_nan_when_the_gap_is_inside_its_interval():
    rng = np.random.default_rng(1)
    n = np.full(30, 10.0)
    orig = rng.integers(3, 8, 30).astype(float)
    removed = orig + np.tile([-1.0, 1.0], 15)  # the removal moved windows both ways: a gap of 0 +- noise
    r = metrics.bootstrap_recovery("share_full_gap", orig, removed, orig, orig, n, n_boot=300)
    assert r["gap_ci"][0] <= 0 <= r["gap_ci"][1]
    assert math.isnan(r["value"]) and all(math.isnan(v) for v in r["ci"])
    # a clear gap on the same windows is resolved
    r = metrics.bootstrap_recovery("share_full_gap", orig, orig - 2, orig, orig, n, n_boot=300)
    assert r["value"] == pytest.approx(1.0) and r["gap_ci"][0] > 0


def test_bootstrap_paired_stat():
    n = np.full(10, 4.0)
    r = metrics.bootstrap_paired_stat(lambda a, b: a - b, [np.full(10, 3.0), np.full(10, 1.0)], n, n_boot=50)
    assert r["value"] == pytest.approx(0.5) and r["ci"] == pytest.approx([0.5, 0.5])


# ---------------------------------------------------------------- validation and test windows
class _WordTokenizer:
    """A stand-in tokenizer: one id per word (enough for make_sequences)."""
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + sum(map(ord, w)) % 90 for w in text.split()]}


def test_load_sets_draws_validation_and_test_windows_from_disjoint_documents(tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for name, k in (("forget", 0), ("retain", 5)):
        docs = [" ".join(words[(i + j + k) % len(words)] for j in range(20 + i % 7)) for i in range(60)]
        (tmp_path / f"{name}.txt").write_text("\n\n".join(docs))
    sets = rb.load_sets(_WordTokenizer(), forget=str(tmp_path / "forget.txt"), retain=str(tmp_path / "retain.txt"),
                        data_dir="data", seq_len=8, n_train_seqs=6, n_val_seqs=7, n_eval_seqs=9, max_per_doc=2,
                        test_fraction=0.5, max_docs=1000, batch_size=4, seed=0)
    ids = sets["forget"]["ids"]
    assert len(ids["val"]) == 7 and len(ids["test"]) == 9 and not set(ids["val"]) & set(ids["test"])
    val_docs, test_docs = ({i.split("/")[0] for i in ids[p]} for p in ("val", "test"))
    assert not val_docs & test_docs  # disjoint documents, not only windows
    assert sum(len(b["input_ids"]) for b in sets["forget"]["val"]) == 7
    assert sum(len(b["input_ids"]) for b in sets["forget"]["test"]) == 9
    assert sets["retain"]["ids"]["val"] == [] and len(sets["retain"]["ids"]["test"]) == 9
    with pytest.raises(ValueError, match="n_val_seqs"):
        rb.load_sets(_WordTokenizer(), forget=str(tmp_path / "forget.txt"), retain=str(tmp_path / "retain.txt"),
                     data_dir="data", seq_len=8, n_train_seqs=6, n_val_seqs=500, n_eval_seqs=9, max_per_doc=2,
                     test_fraction=0.5, max_docs=1000, batch_size=4, seed=0)


def test_split_held_out_never_puts_a_document_in_both():
    seqs = {"doc": torch.tensor([5, 5, 2, 2, 9, 9, 4, 1, 1])}
    val, test, ids = rb.split_held_out(seqs, 3, 10)
    assert val == [0, 1, 2] and test == [4, 5, 6, 7, 8]  # document 2's surplus window (3) is dropped
    assert ids[:4] == ["5/0", "5/1", "2/0", "2/1"]


def test_tuning_never_sees_a_test_window(monkeypatch):
    """Every removal method runs on a tiny model with validation windows of tokens < 50 and test windows of tokens
    >= 50; every batch the tuning evaluates is recorded: none is a test batch."""
    from forgetlab.core import eval as ev
    model = tiny_model("llama", layers=2)
    g = torch.Generator().manual_seed(0)

    def batches(lo, hi, n):
        ids = torch.randint(lo, hi, (n, 10), generator=g)
        return [{"input_ids": ids[i:i + 4], "attention_mask": torch.ones_like(ids[i:i + 4])} for i in range(0, n, 4)]
    sets = {r: {"val": batches(3, 50, 8), "test": batches(50, 97, 8), "stat_batches": batches(3, 50, 8)}
            for r in ("forget", "retain")}
    seen = []
    real = ev.token_counts
    monkeypatch.setattr(ev, "token_counts", lambda m, b, **kw: seen.extend(b) or real(m, b, **kw))
    tuning = dict(acc_original=1.0, target=0.15, tolerance=0.02)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    rb.remove_selective_pruning(model, sets, **tuning, step_frac=0.05, eps=1e-3, max_steps=2)
    rb._restore_(model, start)
    rb.remove_concept_pruning(model, sets, **tuning, max_frac=0.5, max_evals=3)["handle"].remove()
    rb.remove_random_pruning(model, sets, seed=0, **tuning, max_frac=0.5, max_evals=3)
    rb._restore_(model, start)
    items = [{"input_ids": b["input_ids"][i], "attention_mask": b["attention_mask"][i]}
             for b in batches(3, 50, 8) for i in range(len(b["input_ids"]))]
    for it in items:
        it["retain_input_ids"], it["retain_attention_mask"] = it["input_ids"], it["attention_mask"]
    rb.remove_gradient(model, sets, items, method="GA_GDR", **tuning, lr=1e-3, batch_size=4, max_steps=3,
                       eval_every=2, beta=0.1, retain_weight=1.0, **OPT, sure_percentile=90, max_bisect=2, seed=0)
    assert seen and all(int(b["input_ids"].max()) < 50 for b in seen)


def test_in_band():
    assert rb.in_band(0.15, 0.15, 0.02) and rb.in_band(0.13, 0.15, 0.02) and rb.in_band(0.17, 0.15, 0.02)
    assert not rb.in_band(0.125, 0.15, 0.02) and not rb.in_band(0.175, 0.15, 0.02)


# ---------------------------------------------------------------- tuning rules
def test_bisect_count_finds_the_count_in_the_band_with_few_evaluations():
    calls = []

    def drop_at(k):  # drop grows linearly: 1 pp per 10 neurons
        calls.append(k)
        return k / 1000
    k, d = rb.bisect_count(drop_at, 1000, target=0.15, tolerance=0.02, max_evals=12)
    assert rb.in_band(d, 0.15, 0.02) and d == k / 1000 and len(calls) <= 12
    assert calls[0] == 1000  # the largest allowed set first


def test_bisect_count_stops_when_the_largest_set_is_not_enough():
    calls = []
    k, d = rb.bisect_count(lambda k: calls.append(k) or k / 10000, 1000, 0.15, 0.02, max_evals=10)
    assert (k, d) == (1000, 0.1) and calls == [1000]


def test_gradient_tuning_stops_at_the_band_and_scales_an_overshooting_step_back(monkeypatch):
    """tuning_top1 is replaced by a function of the weights: the drop is the distance the parameters moved, so
    the stopping rule and the bisection between the two last iterates can be checked exactly."""
    model = tiny_model("llama", layers=1)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    w0 = start["model.layers.0.mlp.down_proj.weight"]

    modes = []

    def moved(m, sets):
        modes.append(m.training)
        w = dict(m.named_parameters())["model.layers.0.mlp.down_proj.weight"]
        return 1.0 - float((w - w0).abs().max()) * 10  # acc falls by 0.1 per 0.01 of movement

    monkeypatch.setattr(rb, "tuning_top1", moved)
    items = [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in _windows(8)["input_ids"]]
    for it in items:
        it["retain_input_ids"], it["retain_attention_mask"] = it["input_ids"], it["attention_mask"]
    info = rb.remove_gradient(model, {}, items, method="GA", acc_original=1.0, target=0.15, tolerance=0.02,
                              lr=0.004, batch_size=4, max_steps=20, eval_every=1, beta=0.1, retain_weight=1.0,
                              **OPT, sure_percentile=90, max_bisect=10, seed=0)
    steps = [h for h in info["history"] if h["knob"] > 0]
    # Adam moves every weight by ~lr = 0.004 per step, i.e. 0.04 of drop: it stops at the first step >= 0.14
    assert [h["knob"] for h in steps] == list(range(1, len(steps) + 1)) and 3 <= len(steps) <= 5
    assert all(h["drop"] < 0.14 for h in steps[:-1]) and steps[-1]["drop"] >= 0.14
    assert rb.in_band(1.0 - moved(model, None), 0.15, 0.02)
    assert not any(modes)  # measured in eval mode (no dropout), though train() runs in train mode


def test_gradient_tuning_bisects_when_one_step_jumps_over_the_band(monkeypatch):
    model = tiny_model("llama", layers=1)
    w0 = dict(model.named_parameters())["model.layers.0.mlp.down_proj.weight"].detach().clone()

    def moved(m, sets):
        w = dict(m.named_parameters())["model.layers.0.mlp.down_proj.weight"]
        return 1.0 - float((w - w0).abs().max()) * 100  # one Adam step of 0.01 drops 1.0: far over the band

    monkeypatch.setattr(rb, "tuning_top1", moved)
    items = [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in _windows(4)["input_ids"]]
    info = rb.remove_gradient(model, {}, items, method="random_labels", acc_original=1.0, target=0.15,
                              tolerance=0.02, lr=0.01, batch_size=4, max_steps=5, eval_every=1, beta=0.1,
                              retain_weight=1.0, **OPT, sure_percentile=90, max_bisect=12, seed=0)
    assert info["history"][1]["drop"] > 0.5  # the first step overshot ...
    assert rb.in_band(1.0 - moved(model, None), 0.15, 0.02)  # ... and was scaled back into the band
    assert 0 < info["history"][-1]["knob"] < 1  # a fraction of the first step


# ---------------------------------------------------------------- removal pieces
def test_probeless_scores_rank_the_neuron_whose_mean_differs_most():
    f, r = neurons.NeuronStats(2, 3), neurons.NeuronStats(2, 3)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, generator=g)
    r.update(0, base), r.update(1, base)
    shifted = base.clone()
    shifted[:, 2] += 1.0  # layer 0, neuron 2 fires 1.0 higher on the forget set
    f.update(0, shifted), f.update(1, base)
    s = rb.probeless_ff_scores(f, r)
    assert s.argmax().item() == 2 and s[1].abs().max() == 0
    # on the layer scale: |diff| / sqrt(mean over the layer's neurons of the pooled variance)
    pooled = ((f.var[0] + r.var[0]) / 2).mean().sqrt()
    assert s[0, 2].item() == pytest.approx(1.0 / pooled.item(), rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_baking_a_pruned_set_into_the_weights_equals_the_mask(family):
    model = tiny_model(family)
    pruned = torch.zeros(neurons.n_neurons(model, "ff"), dtype=torch.bool)
    pruned[0, [1, 5, 7]] = True
    pruned[1, [0, 2]] = True
    x = _windows(2)
    with neurons.apply_masks(model, {"ff": (~pruned).float()}), torch.no_grad():
        masked = model(**x).logits
    rb.zero_pruned_columns_(model, pruned)
    with torch.no_grad():
        baked = model(**x).logits
    assert torch.allclose(masked, baked, atol=1e-5)


def test_random_pruning_control_zeroes_the_chosen_count_seeded(monkeypatch):
    monkeypatch.setattr(rb, "bisect_count", lambda drop_at, n_max, *a, **kw: (10, 0.15))
    out = []
    for _ in range(2):
        model = tiny_model("llama")
        info = rb.remove_random_pruning(model, {}, seed=3, acc_original=1.0, target=0.15, tolerance=0.02,
                                        max_frac=0.5, max_evals=3)
        zero_cols = sum(int((m.weight == 0).all(0).sum()) for m in neurons.neuron_modules(model, "ff"))
        assert info["knob_value"] == 10 == int(info["pruned"].sum()) == zero_cols
        out.append(info["pruned"])
    assert torch.equal(*out)  # seeded


def test_random_label_loss_permutes_the_real_targets_and_is_seeded(monkeypatch):
    model = tiny_model("llama")
    batch = _windows(3)
    seen = []
    real_ce = torch.nn.functional.cross_entropy

    def spy(logits, targets, **kw):
        seen.append(targets.clone())
        return real_ce(logits, targets, **kw)
    monkeypatch.setattr(rb.F, "cross_entropy", spy)
    a = rb.random_label_loss(0)(model, batch)
    b = rb.random_label_loss(0)(model, batch)
    assert torch.equal(a, b)  # seeded
    true = batch["input_ids"][:, 1:]
    assert sorted(seen[0].flatten().tolist()) == sorted(true.flatten().tolist())  # the same tokens ...
    assert (seen[0] != true).float().mean() > 0.5  # ... in another order


# ---------------------------------------------------------------- attacks
def test_relearning_with_k_0_leaves_the_model_unchanged():
    model = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = rb.sequence_items(_windows(8))
    assert rb.relearn(model, items, 0, lr=1e-2, epochs=3, batch_size=4, **OPT, seed=0) == []
    assert _same_params(before, model)
    losses = rb.relearn(model, items, 4, lr=1e-2, epochs=3, batch_size=4, **OPT, seed=0)
    assert len(losses) == 3 and not _same_params(before, model)  # k > 0 does train
    with pytest.raises(ValueError, match="k = 9"):
        rb.relearn(model, items, 9, lr=1e-2, epochs=1, batch_size=4, **OPT, seed=0)


def test_relearning_lowers_the_loss_on_the_relearned_windows():
    model = tiny_model("llama")
    items = rb.sequence_items(_windows(4))
    losses = rb.relearn(model, items, 4, lr=1e-2, epochs=10, batch_size=4, **OPT, seed=0)
    assert losses[-1] < losses[0] - 0.5


def test_attack_grid_scores_every_attack_and_restores_the_removed_weights():
    model = tiny_model("llama")
    win = _windows(6)
    sets = {r: {"test": [{"input_ids": win["input_ids"][:3], "attention_mask": win["attention_mask"][:3]}]}
            for r in ("forget", "retain")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grid = rb.attack_grid(model, sets, rb.sequence_items(win), ks=[0, 2], precisions=["rtn4"], lr=1e-2, epochs=2,
                          batch_size=2, **OPT, seed=0)
    assert set(grid) == {"k=0|full", "k=0|rtn4", "k=2|full", "k=2|rtn4"}
    assert _same_params(before, model)
    assert grid["k=0|full"]["forget"]["n"] == [11, 11, 11]
    # k=0 at full precision is the removed model itself
    assert grid["k=0|full"]["forget"]["top1"] == pytest.approx(rb.evaluate(model, sets)["forget"]["top1"])
    assert grid["k=2|full"]["forget"] != grid["k=0|full"]["forget"]


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        rb.run(methods=["GA", "pruning"], out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="relearn_ks.*include 0"):
        rb.run(relearn_ks=[8, 32], out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="n_train_seqs"):
        rb.run(relearn_ks=[0, 64], n_train_seqs=32, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="target"):
        rb.run(target=1.5, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="precision"):
        rb.run(precisions=["nf3"], out=str(tmp_path / "x"))
    with pytest.raises(TypeError, match="parameter 'relearn_ks' must be a list of int"):
        rb.run(relearn_ks="0,8", out=str(tmp_path / "x"))  # lists are YAML lists, never comma strings
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the smoke pipeline
@pytest.mark.notebook
def test_forgetting_robustness_smoke(smoke):
    from forgetlab.repro import profile
    p = profile.load_params("smoke", ROOT)["forgetting_robustness_run"]
    m = read_metrics(smoke, "forgetting_robustness")
    res = rb.load_results(smoke / "checkpoints" / "forgetting_robustness" / "run")
    # the tuning's validation windows and the scored test windows come from disjoint documents
    ids = res["ids"]["forget"]
    assert len(ids["val"]) == p["n_val_seqs"] and len(ids["test"]) == p["n_eval_seqs"]
    assert not {i.split("/")[0] for i in ids["val"]} & {i.split("/")[0] for i in ids["test"]}
    assert m["val_test_disjoint"] and m["n_test_windows"] == p["n_eval_seqs"]
    small = [rb.small_step_name(x, p["small_lr"]) for x in p["small_step_methods"]]
    methods = p["methods"] + small
    assert set(m["recovery"]) == set(methods) | {"random_pruning"}
    ks, quant, qks = p["relearn_ks"], p["precisions"], p["quantized_ks"]
    attacks = ({f"k={k}|full" for k in ks} | {f"k={k}|{q}" for k in qks for q in quant}) - {"k=0|full"}
    acc0 = m["original"]["forget_top1"]
    assert acc0 == as_written(float, res["base"]["forget"]["top1"])
    for meth in methods + ["random_pruning"]:
        info = res["methods"][meth]
        assert m["removal"][meth]["knob_value"] == info["knob_value"]  # the attacked model's knob, not a bound
        if meth in ("selective_pruning", "concept_pruning", "random_pruning"):
            assert isinstance(info["knob_value"], int) and info["knob_name"].endswith(("neurons", "(random)"))
        assert set(m["recovery"][meth]) == attacks
        removed = res["attacks"][meth]["k=0|full"]["forget"]
        acc_rem = sum(removed["hits"]) / sum(removed["n"])
        assert m["removal"][meth]["forget_drop"] == as_written(lambda o, r: o - r, acc0, acc_rem)
        for a, v in m["recovery"][meth].items():
            att = res["attacks"][meth][a]["forget"]
            assert v["forget_top1"] == as_written(float, sum(att["hits"]) / sum(att["n"]))
            if not math.isnan(v["share_full_gap"]):  # the shared definition (NaN where the gap is unresolved)
                assert v["share_full_gap"] == as_written(metrics.recovery_share, v["forget_top1"], acc_rem, acc0)
        for q in quant:
            assert m["quantization"][q]["methods"][meth]["verdict"] in (
                "comes back", "uniform damage", "removal deepens", "undefined")
    assert small[0] in m["small_step"] and res["methods"][small[0]]["lr"] == pytest.approx(p["small_lr"])
    # the original model is not changed by k = 0 at full precision, and is a control
    assert acc0 == as_written(float, res["attacks"]["original"]["k=0|full"]["forget"]["top1"])
    assert {"original", "random_pruning"} <= set(m["controls"])
    for name in ("fig1_recovery_curves", "fig2_recovery_table", "fig3_tuning", "fig4_quantization_views"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "forgetting_robustness" / f"{name}.{fmt}").stat().st_size > 5000, name


def test_notebook_06s_stated_rules():
    from forgetlab.papers.forgetting_robustness import analysis as fr
    """The verdicts read the 95% interval only: above 0, below 0, covering 0, or undefined (NaN)."""
    nan = float("nan")
    assert fr.quantization_verdict([0.01, 0.2]) == "comes back"
    assert fr.quantization_verdict([-0.3, -0.01]) == "removal deepens"
    assert fr.quantization_verdict([-0.1, 0.1]) == "uniform damage"
    assert fr.quantization_verdict([nan, nan]) == "undefined"
    assert [fr.comparison_verdict(ci) for ci in ([0.1, 0.2], [-0.2, -0.1], [-0.1, 0.1], [nan, nan])] == [
        "closes more", "closes less", "not told apart", "undefined"]
    rec = {"a": {"x": {"share_full_gap": 0.8, "share_full_gap_ci": [0.6, 0.9]}},
           "b": {"x": {"share_full_gap": nan, "share_full_gap_ci": [nan, nan]}},
           "c": {"x": {"share_full_gap": 0.1, "share_full_gap_ci": [0.0, 0.3]}}}
    assert fr.share_ranking(rec, ["a", "b", "c"], "x") == (["c", "a", "b"], ["c", "a"], True)
    rec["c"]["x"]["share_full_gap_ci"] = [0.0, 0.7]  # the ends' intervals now overlap
    assert fr.share_ranking(rec, ["a", "b", "c"], "x")[2] is False
    assert fr.share_ranking(rec, ["b"], "x") == (["b"], [], False)
    assert fr.mean_share(rec, ["a", "b", "c"], "x") == pytest.approx(0.45)  # b's gap is unresolved
    assert np.isnan(fr.mean_share(rec, ["b"], "x"))


def test_every_removal_method_is_registered_with_hyperparameters_the_run_step_passes_by_name():
    """One class per removal method, dispatched by name; each class's fields are flags of the `run` step (the
    gradient methods' `method` is their registered name), and every tuning flag has a user."""
    import dataclasses
    import inspect
    flags = set(inspect.signature(rb.run).parameters)
    used = set()
    assert set(rb.REGISTRY) == set(rb.METHODS) | {"random_pruning"}
    for name, cls in rb.REGISTRY.items():
        own = {f.name for f in dataclasses.fields(cls)} - {"method"}
        assert own <= flags, f"{name}: {own - flags} are not flags of robustness.run"
        remover = rb.make_remover(name, {f: 1 for f in flags})
        assert isinstance(remover, cls) and getattr(remover, "method", name) == name
        used |= own
    assert {"prune_step", "eps_ff", "max_prune_steps", "concept_max_frac", "random_max_frac", "max_evals", "lr",
            "max_unlearn_steps", "eval_every", "unlearn_batch_size", "beta", "retain_weight", "weight_decay",
            "warmup_steps", "grad_clip", "sure_percentile"} == used
    with pytest.raises(ValueError, match="unknown method 'erase'"):
        rb.make_remover("erase", {})
