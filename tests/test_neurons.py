"""Neuron tables, hooks, statistics and masks on tiny random-init models of every supported family."""
import pytest
import torch

from forgetlab.core import neurons
from forgetlab.core.models import TINY_FAMILIES, tiny_model

FAMILIES = list(TINY_FAMILIES)


def inputs(seed=0, batch=3, seq=7, vocab=97):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    att = torch.ones(batch, seq, dtype=torch.long)
    att[1, 5:] = 0  # one padded sequence
    return ids, att


def run(model, ids, att):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=att).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_tables_find_the_right_modules(family):
    model = tiny_model(family)
    expected = {"llama": ("down_proj", "o_proj"), "gpt2": ("c_proj", "c_proj"),
                "gpt_neox": ("dense_4h_to_h", "dense"), "opt": ("fc2", "out_proj"),
                "bert": ("output.dense", "attention.output.dense")}[family]
    names = {id(m): n for n, m in model.named_modules()}
    for kind, suffix in zip(("ff", "attn"), expected):
        mods = neurons.neuron_modules(model, kind)
        assert len(mods) == 2
        for layer, m in enumerate(mods):
            name = names[id(m)]
            assert name.endswith(suffix) and f".{layer}." in name, name
        # the FF neurons are the wide hidden layer, the attention ones the model width (heads x head_dim)
    assert neurons.n_neurons(model, "ff") == (2, 48)
    assert neurons.n_neurons(model, "attn") == (2, 32)
    assert neurons.n_neurons(model, "resid") == (2, 32)


def test_unknown_family_and_kind_are_clear():
    model = tiny_model("llama")
    model.config.model_type = "mamba"
    with pytest.raises(ValueError, match="unsupported model type 'mamba'.*llama"):
        neurons.neuron_modules(model, "ff")
    with pytest.raises(ValueError, match="unknown neuron kind 'mlp'"):
        neurons.neuron_modules(tiny_model("gpt2"), "mlp")


@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_mask_changes_nothing(family):
    model = tiny_model(family)
    ids, att = inputs()
    ref = run(model, ids, att)
    masks = {k: neurons.full_mask(model, k) for k in neurons.KINDS}
    with neurons.apply_masks(model, masks):
        out = run(model, ids, att)
    assert torch.equal(ref, out)
    assert torch.equal(run(model, ids, att), ref)  # hooks removed on exit


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["ff", "attn"])
def test_zero_mask_equals_zeroing_the_weight_column(family, kind):
    model = tiny_model(family)
    ids, att = inputs(1)
    layer, idx = 1, torch.tensor([0, 5, 17])
    mask = neurons.full_mask(model, kind)
    mask[layer, idx] = 0
    with neurons.apply_masks(model, {kind: mask}):
        masked = run(model, ids, att)
    neurons.zero_input_neurons_(neurons.neuron_modules(model, kind)[layer], idx)
    pruned = run(model, ids, att)
    torch.testing.assert_close(masked, pruned, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(masked, run(tiny_model(family), ids, att))  # and it did change something


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_all_ff_neurons_leaves_only_the_down_projection_bias(family):
    model = tiny_model(family)
    for p in model.parameters():  # give every bias a visible value
        if p.dim() == 1:
            torch.nn.init.normal_(p, std=0.5)
    ids, att = inputs(2)
    down = neurons.neuron_modules(model, "ff")[0]
    seen = {}
    h = down.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out.detach().clone()))
    mask = neurons.full_mask(model, "ff")
    mask[0] = 0
    with neurons.apply_masks(model, {"ff": mask}):
        run(model, ids, att)
    h.remove()
    bias = down.bias if down.bias is not None else torch.zeros(seen["out"].shape[-1])
    torch.testing.assert_close(seen["out"], bias.expand_as(seen["out"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_offset_replaces_masked_neurons(family):
    model = tiny_model(family)
    ids, att = inputs(3)
    mask = neurons.full_mask(model, "ff")
    mask[1, :4] = 0
    offset = torch.full(mask.shape, 0.25)
    got = {}
    h = neurons.neuron_modules(model, "ff")[1].register_forward_hook(  # sees the input after the mask
        lambda m, a, out: got.__setitem__("x", a[0].detach().clone()))
    with neurons.apply_masks(model, {"ff": mask}, {"ff": offset}):
        run(model, ids, att)
    h.remove()
    assert torch.all(got["x"][..., :4] == 0.25)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", neurons.KINDS)
def test_stats_equal_a_direct_computation(family, kind):
    model = tiny_model(family)
    ids, att = inputs(4)
    captured = []
    mods = neurons.neuron_modules(model, kind)
    if kind == "resid":
        h = mods[1].register_forward_hook(lambda m, a, out: captured.append(neurons._first(out).detach().clone()))
    else:
        h = mods[1].register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().clone()))
    batches = [{"input_ids": ids[:2], "attention_mask": att[:2]}, {"input_ids": ids[2:], "attention_mask": att[2:]}]
    stats = neurons.collect_stats(model, batches, [kind], desc=None)[kind]
    h.remove()
    # direct: real tokens only, without each sequence's first position
    x = torch.cat([c.reshape(-1, c.shape[-1])[neurons.token_mask(b["attention_mask"]).reshape(-1)]
                   for c, b in zip(captured, batches)]).double()
    n_real = int(att.sum()) - att.shape[0]
    assert x.shape[0] == n_real and stats.count[1].item() == n_real
    torch.testing.assert_close(stats.mean[1], x.mean(0))
    torch.testing.assert_close(stats.mean_abs[1], x.abs().mean(0))
    torch.testing.assert_close(stats.mean_sq[1], x.square().mean(0))
    torch.testing.assert_close(stats.rms[1], x.square().mean(0).sqrt())
    torch.testing.assert_close(stats.freq[1], (x > 0).double().mean(0))
    torch.testing.assert_close(stats.var[1], x.var(0, unbiased=False), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats.std[1], x.std(0, unbiased=False), rtol=1e-5, atol=1e-7)


def test_welford_merge_is_exact_on_known_values():
    st = neurons.NeuronStats(1, 2)
    data = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 2.0], [-1.0, 4.0]])
    st.update(0, data[:1])
    st.update(0, data[1:3])
    st.update(0, data[3:])
    assert st.mean[0].tolist() == [2.0, 1.0]
    assert st.var[0].tolist() == pytest.approx([5.0, 5.0])  # population variance
    assert st.std[0].tolist() == pytest.approx([5 ** 0.5, 5 ** 0.5])
    assert st.freq[0].tolist() == [0.75, 0.5]
    assert st.mean_abs[0].tolist() == [2.5, 2.0]


def test_token_mask_drops_padding_and_first_real_position():
    att = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert neurons.token_mask(att).tolist() == [[False, True, True, False], [False, False, True, True]]
    assert neurons.token_mask(att, skip_first=False).tolist() == att.bool().tolist()


def test_mask_shape_is_checked():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="expected \\(2, 48\\)"):
        neurons.apply_masks(model, {"ff": torch.ones(2, 47)})


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", neurons.KINDS)
def test_record_activations_sees_the_masked_values_and_removes_its_hooks(family, kind):
    model = tiny_model(family)
    ids, att = inputs(5)
    mask = neurons.full_mask(model, kind)
    mask[0, :3] = 0
    with neurons.apply_masks(model, {kind: mask}), neurons.record_activations(model, kind) as acts:
        run(model, ids, att)
    assert sorted(acts) == [0, 1]
    assert acts[0].shape[-1] == neurons.n_neurons(model, kind)[1]
    assert torch.all(acts[0][..., :3] == 0) and acts[1].abs().sum() > 0
    assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in neurons.neuron_modules(model, kind))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mlp_weights_name_every_mlp_matrix_of_every_block(family):
    from forgetlab.core.neurons import arch_map, mlp_weights
    model = tiny_model(family)
    layers = mlp_weights(model)
    params = dict(model.named_parameters())
    assert len(layers) == 2 and all(len(layer) == len(arch_map(model).mlp) >= 2 for layer in layers)
    for i, layer in enumerate(layers):
        assert all(n in params and f".{i}." in n for n in layer)
        # the FF down projection (whose input carries the "ff" neurons) is one of them
        assert any(n.endswith(arch_map(model).ff_out + ".weight") for n in layer)


def test_top_k_and_random_masks():
    scores = torch.arange(12.).view(3, 4)
    assert neurons.top_k_mask(scores, 3).nonzero().tolist() == [[2, 1], [2, 2], [2, 3]]
    with pytest.raises(ValueError, match="'k'"):
        neurons.top_k_mask(scores, 13)
    m = neurons.random_mask((3, 4), 5, seed=1)
    assert m.sum() == 5 and torch.equal(m, neurons.random_mask((3, 4), 5, seed=1))


def test_probeless_sums_the_distances_of_a_concept_mean_to_every_other():
    means = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0, 5.0]), "c": torch.tensor([3.0, 2.0])}
    assert neurons.probeless(means, "a").tolist() == [1 + 2, 3 + 0]
    assert neurons.probeless(means, "b").tolist() == [1 + 3, 3 + 3]
    with pytest.raises(ValueError, match="'d'"):
        neurons.probeless(means, "d")
