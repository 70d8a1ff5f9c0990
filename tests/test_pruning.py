"""Selective pruning: importance functions, global top-k, iteration, bad input."""
import pytest
import torch

from forgetlab.core import neurons
from forgetlab.core.models import tiny_model
from forgetlab.methods import pruning


def stats_from(x: torch.Tensor) -> neurons.NeuronStats:
    """NeuronStats of one layer from token activations x: [tokens, neurons]."""
    st = neurons.NeuronStats(1, x.shape[1])
    st.update(0, x)
    return st


X = torch.tensor([[1.0, -3.0, 0.0], [3.0, 1.0, 0.0], [-2.0, 2.0, 4.0], [2.0, 0.0, 0.0]])


def test_importance_functions_against_hand_computation():
    st = stats_from(X)
    # column 0: values 1, 3, -2, 2
    assert pruning.importance(st, "freq")[0, 0].item() == pytest.approx(3 / 4)
    assert pruning.importance(st, "abs")[0, 0].item() == pytest.approx((1 + 3 + 2 + 2) / 4)
    assert pruning.importance(st, "rms")[0, 0].item() == pytest.approx(((1 + 9 + 4 + 4) / 4) ** 0.5)
    mean = 1.0
    var = ((1 - mean) ** 2 + (3 - mean) ** 2 + (-2 - mean) ** 2 + (2 - mean) ** 2) / 4
    assert pruning.importance(st, "std")[0, 0].item() == pytest.approx(var ** 0.5)  # a std, not the variance
    assert pruning.importance(st, "std")[0, 0].item() != pytest.approx(var)
    # column 2: one non-zero value 4 out of 4 tokens
    assert pruning.importance(st, "freq")[0, 2].item() == pytest.approx(0.25)
    assert pruning.importance(st, "std")[0, 2].item() == pytest.approx(3 ** 0.5)


def test_score_is_forget_over_retain_plus_eps():
    f, r = stats_from(X), stats_from(X.abs() * 2)
    s = pruning.forget_scores(f, r, "abs", eps=1e-3)
    expected = X.abs().mean(0) / (2 * X.abs().mean(0) + 1e-3)
    torch.testing.assert_close(s[0].float(), expected)


def test_top_k_is_global_not_per_layer():
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0], [1.0, 2.0, 3.0, 0.5]])
    pick = pruning.select_global_top(scores, 0.25, torch.zeros(2, 4, dtype=torch.bool))
    assert pick.tolist() == [[True, True, False, False], [False, False, False, False]]


def test_already_pruned_neurons_are_never_picked_again():
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0], [1.0, 2.0, 3.0, 0.5]])
    pruned = torch.tensor([[True, True, False, False], [False] * 4])
    pick = pruning.select_global_top(scores, 0.25, pruned)
    assert pick.tolist() == [[False, False, True, True], [False] * 4]


def test_random_baseline_takes_a_fraction_of_every_layer():
    pruned = torch.zeros(3, 100, dtype=torch.bool)
    pick = pruning.select_random(pruned, 0.1, torch.Generator().manual_seed(0))
    assert pick.sum(1).tolist() == [10, 10, 10]
    pick2 = pruning.select_random(pruned | pick, 0.1, torch.Generator().manual_seed(1))
    assert not (pick & pick2).any()


def batches_for(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 97, (2, 6), generator=g), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
            for _ in range(n)]


@pytest.mark.parametrize("scoring", ["abs", "freq", "rms", "std", "random"])
def test_pruned_neurons_stay_pruned_across_iterations(scoring):
    model = tiny_model("llama")
    cfg = pruning.PruneConfig(ff_frac=0.1, attn_frac=0.1, scoring=scoring)
    seen = []
    history, pruner = pruning.iterative_prune(model, batches_for(0), batches_for(1), cfg, 3,
                                              lambda m: {"n": len(seen)}, desc=None)
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    ff_total = 2 * 48
    assert history[-1]["ff_pruned"] == pytest.approx(3 * round(0.1 * ff_total) / ff_total)
    # the masked activations really are zero during a forward pass
    got = []
    h = neurons.neuron_modules(model, "ff")[0].register_forward_hook(lambda m, a, o: got.append(a[0]))
    model(input_ids=batches_for(2)[0]["input_ids"])
    h.remove()
    assert torch.all(got[0][..., pruner.pruned["ff"][0]] == 0)
    pruner.remove()


def test_pruning_prefers_forget_specific_neurons():
    """Plant a neuron that fires only on forget-only tokens: it must be the one pruned."""
    model = tiny_model("llama")
    forget, retain = batches_for(0), batches_for(1)
    forget_ids = torch.cat([b["input_ids"] for b in forget]).unique()
    retain_ids = torch.cat([b["input_ids"] for b in retain]).unique()
    only_forget = forget_ids[~torch.isin(forget_ids, retain_ids)]
    current = {}
    # collect_stats calls model.base_model(input_ids=...): remember the ids of the batch being run
    h0 = model.base_model.register_forward_pre_hook(
        lambda m, a, k: current.__setitem__("ids", k["input_ids"]), with_kwargs=True)

    def plant(module, args):
        x = args[0].clone()
        x[..., 7] = 50.0 * torch.isin(current["ids"], only_forget)
        return (x,)
    h1 = neurons.neuron_modules(model, "ff")[1].register_forward_pre_hook(plant)
    pruner = pruning.Pruner(model, ["ff"])
    new = pruner.step(forget, retain, pruning.PruneConfig(ff_frac=1 / 96, scoring="abs"))
    assert new["ff"].nonzero().tolist() == [[1, 7]]
    for h in (h0, h1):
        h.remove()
    pruner.remove()


@pytest.mark.parametrize("kwargs, message", [
    ({"scoring": "entropy"}, "unknown scoring 'entropy'; allowed: freq, abs, rms, std, random"),
    ({"ff_frac": 1.5}, "'ff_frac' must be a fraction in \\[0, 1\\]"),
    ({"attn_frac": -0.1}, "'attn_frac' must be a fraction in \\[0, 1\\]"),
    ({"ff_frac": 0.0, "attn_frac": 0.0}, "both 0"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pruning.PruneConfig(**kwargs)


def test_wrong_type_is_a_clear_error():
    with pytest.raises(TypeError, match="'ff_frac' must be int or float, got str"):
        pruning.PruneConfig(ff_frac="0.1")


def _counts(top1, nll, n=10):
    """Per-sequence counts of forgetlab.core.eval for sequences of n tokens (top-k and skip counts = top-1's)."""
    t = torch.tensor(top1, dtype=torch.float64)
    return {"n": torch.full_like(t, n), "top1": t, "topk": t, "top1_skip": t, "topk_skip": t,
            "n_skip": torch.full_like(t, n), "nll": torch.tensor(nll, dtype=torch.float64)}


def _evaluation(**corpora):
    from forgetlab.core import eval as ev
    return {c: {"counts": k, "summary": ev.summarize_counts(k)} for c, k in corpora.items()}


def test_notebook_01s_numbers_by_hand():
    """sp.costs_vs_random and sp.curve_metrics on hand-made counts: selective pruning gets 3 of 20 retain tokens
    right where random pruning gets 10, with twice the loss; the curve drops forget top-1 from 0.8 to 0.1."""
    import math

    from forgetlab.papers.selective_pruning import experiment as sp
    base = _evaluation(code=_counts([8, 8], [10, 10]), text=_counts([6, 6], [10, 10]))
    sel = _evaluation(code=_counts([1, 1], [30, 30]), text=_counts([1, 2], [20, 20]))
    rnd = _evaluation(code=_counts([7, 7], [12, 12]), text=_counts([5, 5], [10, 10]))
    costs = sp.costs_vs_random(base, sel, rnd, "code", "text", n_boot=200, seed=0)
    retain = costs["retain"]
    assert retain["top1"]["selective"] == pytest.approx(0.15) and retain["top1"]["random"] == pytest.approx(0.5)
    assert retain["top1"]["extra_cost"] == pytest.approx(0.35)  # accuracy lost beyond random's
    assert retain["perplexity"]["extra_cost"] == pytest.approx(math.exp(2) - math.exp(1))  # perplexity gained
    assert retain["top1"]["base"] == pytest.approx(0.6) and set(retain) == set(sp.COST_STATS)
    lo, hi = retain["top1"]["extra_cost_ci"]
    assert lo <= 0.35 <= hi
    run = {"history": [{"ff_pruned": 0.0, "eval": base}, {"ff_pruned": 0.1, "eval": sel}]}
    m = sp.curve_metrics(run, "code", "text", "ff", n_boot=200, seed=0)
    assert m["forget_top1_drop"] == pytest.approx(0.7) and m["retain_top1_drop"] == pytest.approx(0.45)
    assert m["gap_top1"] == pytest.approx(0.25) and m["pruned"] == 0.1
    assert m["area_between_top1"] == pytest.approx(0.5 * 0.1 * 0.25)  # a triangle: width 0.1, final gap 0.25
    assert m["curve"] == {"pruned": [0.0, 0.1], "forget_top1_drop": [0.0, pytest.approx(0.7)],
                          "retain_top1_drop": [0.0, pytest.approx(0.45)]}
