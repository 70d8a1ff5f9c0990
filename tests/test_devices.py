"""Issue 26, device placement without a GPU: under torch's FakeTensorMode a tensor can sit on a fake `cuda` device,
and an op mixing it with a CPU tensor raises FakeTensorDeviceMismatchError, as it would on a real GPU. Each test
puts the model side on the fake GPU and leaves what the code used to build on the CPU (masks, statistics, a
reference model, kept codes) where it was; each failed on the code before this fix. A full forward of a transformers
model cannot be faked on a CPU-only build (its rotary embedding asks for CUDA), so the checks call the pieces."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import (DataDependentOutputException, FakeTensorDeviceMismatchError,
                                              FakeTensorMode)
from torch.func import functional_call

from forgetlab import neurons, quantization, unlearning
from forgetlab.models import tiny_model


def fake_gpu():
    return FakeTensorMode(allow_non_fake_inputs=True)  # real CPU tensors may enter, as they would on a GPU run


@pytest.mark.parametrize("kind", ["ff", "attn"])
@pytest.mark.parametrize("mean_ablation", [False, True])
def test_neuron_masks_follow_the_activations_device(kind, mean_ablation):
    model = tiny_model("llama")
    shape = neurons.n_neurons(model, kind)
    masks = {kind: torch.ones(shape)}
    offsets = {kind: torch.zeros(shape)} if mean_ablation else None
    mod = neurons.neuron_modules(model, kind)[0]
    with neurons.apply_masks(model, masks, offsets), fake_gpu():
        w = torch.empty(mod.weight.shape, device="cuda")
        y = functional_call(mod, {"weight": w}, (torch.empty(3, mod.weight.shape[1], device="cuda"),))
        assert y.device.type == "cuda"


def test_neuron_statistics_take_gpu_activations():
    stats = neurons.NeuronStats(2, 48)
    with fake_gpu():
        stats.update(1, torch.empty(5, 48, device="cuda"))
    assert stats.mean.device.type == "cpu"  # accumulated on the CPU in float64


def test_the_reference_model_runs_where_it_is_and_its_logits_come_back_to_the_batch():
    class Ref(nn.Module):  # a reference LM left on the CPU
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 7)

        def forward(self, input_ids, attention_mask, use_cache):
            return SimpleNamespace(logits=self.emb(input_ids))
    ref = Ref()
    with fake_gpu():
        ids = torch.zeros(2, 5, dtype=torch.long, device="cuda")
        logits = unlearning.reference_logits(ref, ids, torch.ones(2, 5, dtype=torch.long, device="cuda"))
        assert logits.device.type == "cuda" and logits.dtype == torch.float32


def test_weight_comparisons_across_devices():
    a, b = tiny_model("llama"), tiny_model("llama")
    lins = quantization.quantizable_linears(b)
    with fake_gpu():
        codes = {n: torch.empty(lin.weight.numel(), dtype=torch.int8, device="cuda") for n, lin in lins.items()}
        for model, device in ((a, "cpu"), (b, "cuda")):  # fake tensors on both sides (a real one cannot move)
            for lin in quantization.quantizable_linears(model).values():
                shape = lin.weight.shape
                del lin.weight  # a plain tensor in its place (a Parameter cannot hold a fake tensor that moves)
                lin.weight = torch.empty(shape, device=device)
        # the counts are Python ints, which a fake tensor cannot give (a data-dependent value; on the fake GPU, "not
        # linked with support for cuda"): reaching them means every comparison before met tensors on one device
        for share in (lambda: quantization.weight_change_share(b, a),  # a GPU model against a CPU one
                      lambda: quantization.code_change_share(a, a, "rtn4", codes_a=codes)):  # kept GPU codes
            with pytest.raises((DataDependentOutputException, RuntimeError)) as err:
                share()
            assert not isinstance(err.value, FakeTensorDeviceMismatchError), err.value
            assert isinstance(err.value, DataDependentOutputException) or "not linked with support for cuda" in str(
                err.value), err.value


def test_stages_that_train_load_their_models_on_the_gpu_when_there_is_one(monkeypatch):
    """Randomized forgetting scores a 7B model before training: on the GPU when there is one (it loaded on the host
    CPU before, where that scoring takes hours); train() then finds the model where it wants it."""
    from forgetlab import forgetting, models
    seen = {}
    monkeypatch.setattr(models, "load_causal_lm", lambda name, **kw: seen.update(kw))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_device() == "cuda"
    forgetting._load_model("smollm2-135m", "data")
    assert seen["device"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    forgetting._load_model("smollm2-135m", "data")
    assert seen["device"] == "cpu"


def test_the_muse_unlearning_stage_loads_its_models_on_the_gpu_when_there_is_one(monkeypatch):
    """Reference, retrain model and every unlearned copy (a 7B forward per step on the host CPU takes minutes)."""
    from forgetlab import models
    seen = {}
    monkeypatch.setattr(models, "load_causal_lm", lambda name, **kw: seen.update(kw))
    for available, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        unlearning.load_on_device("checkpoints/quantization_recovery/target")
        assert seen["device"] == device
