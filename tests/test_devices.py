"""Issue 26, device placement without a GPU: under torch's FakeTensorMode a tensor can sit on a fake `cuda` device,
and an op mixing it with a CPU tensor raises FakeTensorDeviceMismatchError, as it would on a real GPU. Each test
puts the model side on the fake GPU and leaves what the code used to build on the CPU (masks, statistics, a
reference model, kept codes) where it was; each failed on the code before this fix. A full forward of a transformers
model cannot be faked on a CPU-only build (its rotary embedding asks for CUDA), so the checks call the pieces."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import (DataDependentOutputException, FakeTensorDeviceMismatchError,
                                           FakeTensorMode)
from torch.func import functional_call

from forgetlab.core import neurons
from forgetlab.core.models import tiny_model
from forgetlab.methods import quantization, unlearning

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_device_parameter_resolves_once_and_refuses_what_it_cannot_give(monkeypatch):
    from forgetlab.core.models import resolve_device
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="parameter 'device' is 'cuda', but torch sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"  # a GPU is there, and the stage was told not to use it
    monkeypatch.setenv("LOCAL_RANK", "3")  # accelerate launch: each process its own GPU
    assert resolve_device("auto") == "cuda:3"
    for bad in ("gpu", "CUDA", "cuda:x", "", None, 0):
        with pytest.raises(ValueError, match=r"parameter 'device' is .*; allowed: auto, cpu, cuda, cuda:<index>"):
            resolve_device(bad)


class _MovedToGpu(Exception):
    pass


def _stage_steps(params):
    """(stage, module, argv) of every `python -m forgetlab.<module> <step> ...` in dvc.yaml, one per (module, step)."""
    import shlex

    from forgetlab.repro import pipeline
    seen = set()
    for stage, cmd in pipeline.stage_commands(params, ROOT):
        for part in cmd.split("&&"):
            argv = shlex.split(part)
            if argv[:2] == ["python", "-m"] and argv[2] not in ("forgetlab.repro.notebooks", "forgetlab.repro.headline",
                                                                 "forgetlab.repro.curves"):
                key = (argv[2], argv[3])
                if key not in seen:
                    seen.add(key)
                    yield stage, argv[2], argv[3:]


def test_every_checkpoint_stage_puts_its_models_on_the_device_parameter(smoke, monkeypatch):
    """dvc.yaml passes ${device} to every checkpoint stage, and each step loads its models there: with device = cuda
    and torch told that a GPU exists, every step of the smoke profile (run in process as `python -m` runs it, in the
    smoke run's folder, which holds the checkpoints it reads) stops at its first move of a model to the GPU. Steps
    that build no model (the NER data) must not get there. Before the device parameter, the neuroplasticity, SaLEM
    and robustness steps loaded their models on the host CPU (and the rest had no way to be told otherwise)."""
    import runpy
    import sys

    from forgetlab.repro import profile
    params = profile.load_params("smoke", ROOT)
    params["device"] = "cuda"
    to = nn.Module.to

    def on_gpu(self, *args, **kwargs):
        device = kwargs.get("device", args[0] if args else None)
        if isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda":
            raise _MovedToGpu(str(device))
        return to(self, *args, **kwargs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(nn.Module, "to", on_gpu)
    monkeypatch.chdir(smoke)
    steps = list(_stage_steps(params))
    assert len(steps) >= 13, steps
    for stage, module, argv in steps:
        if argv[0] == "build-data":
            assert "--device" not in argv
            continue
        assert argv[argv.index("--device") + 1] == "cuda", f"{stage}: dvc.yaml passes no --device ${{device}}"
        monkeypatch.setattr(sys, "argv", [module, *argv])
        with pytest.raises(_MovedToGpu, match="^cuda$"):
            runpy.run_module(module, run_name="__main__", alter_sys=False)


NOTEBOOK_LOADERS = ("load_lm", "load_causal_lm", "load_checkpoint", "load_setting", "load_vit", "sentence_embeddings")


def test_every_notebook_that_loads_a_model_passes_its_device_parameter():
    """The notebooks' one device decision (`DEVICE = resolve_device(device)`) reaches every model they load."""
    import ast
    import json
    from forgetlab.repro import notebooks
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
        calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call)
                 and getattr(c.func, "attr", getattr(c.func, "id", None)) in NOTEBOOK_LOADERS]
        if not calls:
            continue
        assert notebooks.parameters_of(nb).get("device") == "auto", f"{nb.name}: no `device` parameter"
        assert "DEVICE = resolve_device(device)" in code, nb.name
        for c in calls:
            kw = {k.arg: k.value for k in c.keywords}
            assert getattr(kw.get("device"), "id", None) == "DEVICE", \
                f"{nb.name} line {c.lineno}: {ast.unparse(c)} does not pass device=DEVICE"


def test_edit_losses_take_gpu_logits_and_the_batches_cpu_labels():
    """SaLEM's batches are built on the CPU (editing.collate) and its models may sit on the GPU: the losses, the
    accuracy and the locality KL move the labels and masks to the logits (they met on two devices before). (The
    causal LM's loss and accuracy shift the logits by slicing, which a fake GPU tensor cannot do on a CPU-only
    build; they take the same `labels.to(logits.device)`.)"""
    from forgetlab.papers.salem import experiment as editing
    batch = editing.collate([{"input_ids": [3, 4, 5], "labels": [-100, 4, 5]},
                             {"input_ids": [6, 7], "labels": [-100, 7]}])
    classes = editing.collate([{"input_ids": [3, 4], "labels": 1}, {"input_ids": [5], "labels": 2}])
    with fake_gpu() as mode:
        # CPU tensors as the fake mode sees them (a real CPU tensor cannot move to the fake GPU; a fake one can)
        batch, classes = ({k: mode.from_tensor(v) for k, v in b.items()} for b in (batch, classes))
        lm_logits = torch.empty(2, 3, 11, device="cuda")
        cls_logits = torch.empty(2, 3, device="cuda")
        assert editing.edit_loss(cls_logits, classes["labels"]).device.type == "cuda"
        assert editing.correct(cls_logits, classes["labels"]).device.type == "cuda"
        assert editing.locality_kl(lm_logits, lm_logits, batch["attention_mask"]).device.type == "cuda"
        inputs = editing.model_inputs(batch, lm_logits.device)  # where the model is
        assert "labels" not in inputs and {v.device.type for v in inputs.values()} == {"cuda"}
