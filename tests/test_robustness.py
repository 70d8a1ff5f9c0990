"""Forgetting robustness (notebook 06): the recovery share, the tuning rules, the attacks, the smoke run."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_metrics
from forgetlab import neurons, robustness as rb
from forgetlab.models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _windows(n, seq_len=12, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _same_params(a: dict, model) -> bool:
    return all(torch.equal(a[n], p) for n, p in model.named_parameters())


# ---------------------------------------------------------------- the measure
def test_recovery_share_on_hand_values():
    assert rb.recovery_share(0.40, 0.40, 0.55) == 0.0  # nothing comes back
    assert rb.recovery_share(0.55, 0.40, 0.55) == pytest.approx(1.0)  # all of it
    assert rb.recovery_share(0.43, 0.40, 0.55) == pytest.approx(0.2)
    assert rb.recovery_share(0.37, 0.40, 0.55) == pytest.approx(-0.2)  # the attack removes even more
    assert math.isnan(rb.recovery_share(0.5, 0.55, 0.55))  # nothing was removed


def test_bootstrap_recovery_share_is_exact_when_every_sequence_agrees():
    n = np.full(20, 10.0)
    orig, removed = np.full(20, 6.0), np.full(20, 4.0)
    assert rb.bootstrap_recovery_share(orig, removed, removed, n, n_boot=200) == pytest.approx((0.0, 0.0))
    assert rb.bootstrap_recovery_share(orig, removed, orig, n, n_boot=200) == pytest.approx((1.0, 1.0))
    half = np.full(20, 5.0)
    assert rb.bootstrap_recovery_share(orig, removed, half, n, n_boot=200) == pytest.approx((0.5, 0.5))
    # noisy per-sequence hits: the interval brackets the point estimate
    rng = np.random.default_rng(0)
    att = removed + rng.integers(0, 3, 20)
    lo, hi = rb.bootstrap_recovery_share(orig, removed, att, n, n_boot=500)
    point = rb.recovery_share(att.sum() / n.sum(), removed.sum() / n.sum(), orig.sum() / n.sum())
    assert lo < point < hi


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
    """forget_top1 is replaced by a function of the weights: the drop is the distance the parameters moved, so
    the stopping rule and the bisection between the two last iterates can be checked exactly."""
    model = tiny_model("llama", layers=1)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    w0 = start["model.layers.0.mlp.down_proj.weight"]

    modes = []

    def moved(m, sets):
        modes.append(m.training)
        w = dict(m.named_parameters())["model.layers.0.mlp.down_proj.weight"]
        return 1.0 - float((w - w0).abs().max()) * 10  # acc falls by 0.1 per 0.01 of movement

    monkeypatch.setattr(rb, "forget_top1", moved)
    items = [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in _windows(8)["input_ids"]]
    for it in items:
        it["retain_input_ids"], it["retain_attention_mask"] = it["input_ids"], it["attention_mask"]
    info = rb.remove_gradient(model, {}, items, method="GA", acc_original=1.0, target=0.15, tolerance=0.02,
                              lr=0.004, batch_size=4, max_steps=20, beta=0.1, sure_percentile=90,
                              max_bisect=10, seed=0)
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

    monkeypatch.setattr(rb, "forget_top1", moved)
    items = [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in _windows(4)["input_ids"]]
    info = rb.remove_gradient(model, {}, items, method="random_labels", acc_original=1.0, target=0.15,
                              tolerance=0.02, lr=0.01, batch_size=4, max_steps=5, beta=0.1, sure_percentile=90,
                              max_bisect=12, seed=0)
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


def test_random_pruning_zeroes_exactly_n_columns_seeded():
    model = tiny_model("llama")
    p1 = rb.random_pruning_(model, 10, seed=3)
    assert int(p1.sum()) == 10 and torch.equal(p1, rb.random_pruning_(tiny_model("llama"), 10, seed=3))
    zero_cols = sum(int((m.weight == 0).all(0).sum()) for m in neurons.neuron_modules(model, "ff"))
    assert zero_cols == 10


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
    assert rb.relearn(model, items, 0, lr=1e-2, epochs=3, batch_size=4, seed=0) == []
    assert _same_params(before, model)
    losses = rb.relearn(model, items, 4, lr=1e-2, epochs=3, batch_size=4, seed=0)
    assert len(losses) == 3 and not _same_params(before, model)  # k > 0 does train
    with pytest.raises(ValueError, match="k = 9"):
        rb.relearn(model, items, 9, lr=1e-2, epochs=1, batch_size=4, seed=0)


def test_relearning_lowers_the_loss_on_the_relearned_windows():
    model = tiny_model("llama")
    items = rb.sequence_items(_windows(4))
    losses = rb.relearn(model, items, 4, lr=1e-2, epochs=10, batch_size=4, seed=0)
    assert losses[-1] < losses[0] - 0.5


def test_attack_grid_scores_every_attack_and_restores_the_removed_weights():
    model = tiny_model("llama")
    win = _windows(6)
    sets = {r: {"test": [{"input_ids": win["input_ids"][:3], "attention_mask": win["attention_mask"][:3]}]}
            for r in ("forget", "retain")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grid = rb.attack_grid(model, sets, rb.sequence_items(win), ks=[0, 2], precisions=["rtn4"], lr=1e-2, epochs=2,
                          batch_size=2, seed=0)
    assert set(grid) == {"k=0|full", "k=0|rtn4", "k=2|full", "k=2|rtn4"}
    assert _same_params(before, model)
    assert grid["k=0|full"]["forget"]["n"] == [11, 11, 11]
    # k=0 at full precision is the removed model itself
    assert grid["k=0|full"]["forget"]["top1"] == pytest.approx(rb.forget_top1(model, sets))
    assert grid["k=2|full"]["forget"] != grid["k=0|full"]["forget"]


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        rb.run(methods="GA,pruning", out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="relearn_ks.*include 0"):
        rb.run(relearn_ks="8,32", out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="n_train_seqs"):
        rb.run(relearn_ks="0,64", n_train_seqs=32, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="target"):
        rb.run(target=1.5, out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="precision"):
        rb.run(precisions="nf3", out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the smoke pipeline
@pytest.mark.notebook
def test_forgetting_robustness_smoke(smoke):
    from forgetlab import profile
    p = profile.load_params("smoke", ROOT)["forgetting_robustness_run"]
    m = read_metrics(smoke, "forgetting_robustness")
    res = rb.load_results(smoke / "checkpoints" / "forgetting_robustness" / "run")
    methods = p["methods"].split(",")
    assert set(m["recovery"]) == set(methods)
    ks = [int(k) for k in str(p["relearn_ks"]).split(",")]
    attacks = {f"k={k}|{q}" for k in ks for q in ["full", *p["precisions"].split(",")]} - {"k=0|full"}
    acc0 = m["original"]["forget_top1"]
    assert acc0 == pytest.approx(res["base"]["forget"]["top1"])
    for meth in methods:
        assert set(m["recovery"][meth]) == attacks
        removed = res["attacks"][meth]["k=0|full"]["forget"]
        acc_rem = sum(removed["hits"]) / sum(removed["n"])
        assert m["removal"][meth]["forget_drop"] == pytest.approx(acc0 - acc_rem, abs=1e-6)
        for a, v in m["recovery"][meth].items():
            att = res["attacks"][meth][a]["forget"]
            assert v["forget_top1"] == pytest.approx(sum(att["hits"]) / sum(att["n"]), abs=1e-6)
            if acc0 > acc_rem:
                assert v["share"] == pytest.approx(rb.recovery_share(v["forget_top1"], acc_rem, acc0), abs=1e-5)
    # the original model is not changed by k = 0 at full precision, and is a control
    assert res["attacks"]["original"]["k=0|full"]["forget"]["top1"] == pytest.approx(acc0)
    assert "original" in m["controls"]
    for name in ("fig1_recovery_curves", "fig2_recovery_table", "fig3_tuning"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "forgetting_robustness" / f"{name}.{fmt}").stat().st_size > 5000, name
