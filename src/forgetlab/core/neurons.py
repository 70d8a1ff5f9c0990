"""Where the neurons live, and hooks to measure and mask them. Shared by every paper.

Three kinds of neuron per transformer block:
  * "ff":    FF hidden neurons, the INPUT of the MLP down projection (after the activation; act(gate)*up for
             gated MLPs such as Llama's SwiGLU).
  * "attn":  attention pre-out neurons, the INPUT of the attention output projection (heads x head_dim).
  * "resid": the block's output hidden units (the residual stream after the block).

One small table per model family names the modules (the idea of taker's model_maps). To support a new
family, add one ArchMap entry.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from forgetlab.core.utils import check_positive_int, device_of


@dataclass(frozen=True)
class ArchMap:
    layers: str  # path from `model.base_model` to the list of blocks
    ff_out: str  # path inside a block to the FF down projection (its input = "ff" neurons)
    attn_out: str  # path inside a block to the attention output projection (its input = "attn" neurons)
    n_heads: str  # config attribute with the number of attention heads
    mlp: tuple[str, ...]  # paths inside a block to every MLP weight matrix (what a layer editor may change)


ARCH_MAPS: dict[str, ArchMap] = {
    "llama": ArchMap("layers", "mlp.down_proj", "self_attn.o_proj", "num_attention_heads",
                     ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
    "gpt2": ArchMap("h", "mlp.c_proj", "attn.c_proj", "n_head", ("mlp.c_fc", "mlp.c_proj")),
    "gpt_neox": ArchMap("layers", "mlp.dense_4h_to_h", "attention.dense", "num_attention_heads",
                        ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
    "opt": ArchMap("decoder.layers", "fc2", "self_attn.out_proj", "num_attention_heads", ("fc1", "fc2")),
    "bert": ArchMap("encoder.layer", "output.dense", "attention.output.dense", "num_attention_heads",
                    ("intermediate.dense", "output.dense")),
    "distilbert": ArchMap("transformer.layer", "ffn.lin2", "attention.out_lin", "n_heads", ("ffn.lin1", "ffn.lin2")),
    # transformers >= 5 layout (4.x used BERT's names: encoder.layer, attention.output.dense, intermediate/output)
    "vit": ArchMap("layers", "mlp.fc2", "attention.o_proj", "num_attention_heads", ("mlp.fc1", "mlp.fc2")),
}
# config.model_type values that share a table with another family.
ALIASES = {"mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama", "roberta": "bert",
           "xlm-roberta": "bert", "electra": "bert"}
KINDS = ("ff", "attn", "resid")


def arch_map(model: nn.Module) -> ArchMap:
    """The architecture table entry for a model, by its config.model_type."""
    model_type = model.config.model_type
    family = ALIASES.get(model_type, model_type)
    if family not in ARCH_MAPS:
        raise ValueError(f"unsupported model type {model_type!r}; supported: {', '.join(sorted(ARCH_MAPS))} "
                         f"(add an ArchMap entry in forgetlab/core/neurons.py)")
    return ARCH_MAPS[family]


def blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.base_model.get_submodule(arch_map(model).layers))


def mlp_weights(model: nn.Module) -> list[list[str]]:
    """Per block, the full parameter names of its MLP weight matrices (as model.named_parameters() spells them)."""
    names = {id(p): n for n, p in model.named_parameters()}
    paths = arch_map(model).mlp
    return [[names[id(b.get_submodule(path).weight)] for path in paths] for b in blocks(model)]


def neuron_modules(model: nn.Module, kind: str) -> list[nn.Module]:
    """Per layer, the module whose input ("ff", "attn") or output ("resid") carries the neurons of `kind`."""
    _check_kind(kind)
    amap = arch_map(model)
    if kind == "resid":
        return blocks(model)
    path = amap.ff_out if kind == "ff" else amap.attn_out
    return [b.get_submodule(path) for b in blocks(model)]


def in_features(module: nn.Module) -> int:
    """Input width of a Linear or a GPT-2 style Conv1D (weight stored as [in, out])."""
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.weight.shape[0]  # transformers.pytorch_utils.Conv1D


def n_neurons(model: nn.Module, kind: str) -> tuple[int, int]:
    """(layers, neurons per layer) for a kind."""
    mods = neuron_modules(model, kind)
    width = model.config.hidden_size if kind == "resid" else in_features(mods[0])
    return len(mods), width


def n_heads(model: nn.Module) -> int:
    return getattr(model.config, arch_map(model).n_heads)


def zero_input_neurons_(module: nn.Module, idx: torch.Tensor) -> None:
    """Permanently prune input neurons `idx` of a projection by zeroing their weight columns."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight[:, idx] = 0
        else:  # Conv1D: [in, out]
            module.weight[idx, :] = 0


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown neuron kind {kind!r}; allowed: {', '.join(KINDS)}")


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(out, new):
    return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new


def _register(model: nn.Module, kind: str, fn) -> list:
    """Register fn(layer, x) -> x_or_None on every layer's neurons of `kind`."""
    handles = []
    for layer, mod in enumerate(neuron_modules(model, kind)):
        if kind == "resid":
            def hook(module, args, out, layer=layer):
                new = fn(layer, _first(out))
                return None if new is None else _replace_first(out, new)
            handles.append(mod.register_forward_hook(hook))
        else:
            def pre_hook(module, args, layer=layer):
                new = fn(layer, args[0])
                return None if new is None else (new,) + tuple(args[1:])
            handles.append(mod.register_forward_pre_hook(pre_hook))
    return handles


@contextmanager
def record_activations(model: nn.Module, kind: str) -> Iterator[dict[int, torch.Tensor]]:
    """Context manager: after every forward pass, `acts[layer]` holds that layer's activations of `kind`
    (detached; after any masks already on the model)."""
    acts: dict[int, torch.Tensor] = {}

    def fn(layer, x):
        acts[layer] = x.detach()
    handles = _register(model, kind, fn)
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- statistics
class NeuronStats:
    """Streaming per-neuron statistics over tokens, for an [layers, neurons] grid.

    Accumulates count, mean, mean |x|, frequency of x > 0 and the Welford/Chan sum of squared deviations
    (M2), in float64. mean x^2 and the (population) variance follow from mean and M2.
    """

    def __init__(self, n_layers: int, width: int):
        z = lambda: torch.zeros(n_layers, width, dtype=torch.float64)  # noqa: E731
        self.count = torch.zeros(n_layers, 1, dtype=torch.float64)
        self.mean, self.sum_abs, self.sum_pos, self.m2 = z(), z(), z(), z()

    def update(self, layer: int, x: torch.Tensor) -> None:
        """Add a batch of token activations x: [tokens, neurons]."""
        n = x.shape[0]
        if n == 0:
            return
        x = x.detach().float()
        b_mean = x.mean(0)
        # the batch's per-neuron sums are made where x is (a GPU), and accumulated on the CPU in float64
        b_mean, b_m2, b_abs, b_pos = (t.double().cpu() for t in (
            b_mean, (x - b_mean).square().sum(0), x.abs().sum(0), (x > 0).sum(0)))
        c = self.count[layer]
        tot = c + n
        delta = b_mean - self.mean[layer]
        self.mean[layer] += delta * (n / tot)
        self.m2[layer] += b_m2 + delta.square() * (c * n / tot)
        self.sum_abs[layer] += b_abs
        self.sum_pos[layer] += b_pos
        self.count[layer] = tot

    def _per_token(self, s):
        return s / self.count.clamp(min=1)

    @property
    def mean_abs(self) -> torch.Tensor:
        return self._per_token(self.sum_abs)

    @property
    def freq(self) -> torch.Tensor:
        return self._per_token(self.sum_pos)

    @property
    def var(self) -> torch.Tensor:
        return self._per_token(self.m2)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    @property
    def mean_sq(self) -> torch.Tensor:
        return self.var + self.mean.square()

    @property
    def rms(self) -> torch.Tensor:
        return self.mean_sq.sqrt()


def token_mask(attention_mask: torch.Tensor, skip_first: bool = True) -> torch.Tensor:
    """Real tokens of a batch: attention_mask, minus each sequence's first real position if skip_first
    (its activations are attention-sink outliers)."""
    mask = attention_mask.bool()
    if skip_first:
        mask = mask & (mask.long().cumsum(1) > 1)
    return mask


@contextmanager
def record_stats(model: nn.Module, kinds: Iterable[str] = ("ff",)) -> Iterator["StatsRecorder"]:
    """Context manager: accumulate NeuronStats of `kinds` on every forward pass.

    Set `recorder.mask` ([batch, seq] bool) before each forward to choose which token positions count.
    """
    rec = StatsRecorder(model, kinds)
    try:
        yield rec
    finally:
        rec.remove()


class StatsRecorder:
    def __init__(self, model: nn.Module, kinds: Iterable[str]):
        self.mask: torch.Tensor | None = None
        self.stats = {k: NeuronStats(*n_neurons(model, k)) for k in kinds}
        self.handles = []
        for kind, st in self.stats.items():
            def fn(layer, x, st=st):
                sel = x.reshape(-1, x.shape[-1])  # some models (OPT) flatten [batch, seq] before the MLP
                if self.mask is not None:
                    sel = sel[self.mask.reshape(-1)]
                st.update(layer, sel)
            self.handles += _register(model, kind, fn)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@torch.inference_mode()
def collect_stats(model: nn.Module, batches: Iterable[dict], kinds: Iterable[str] = ("ff",), *,
                  skip_first: bool = True, desc: str | None = "activation stats") -> dict[str, NeuronStats]:
    """Run the model over `batches` (dicts with input_ids, attention_mask) and return NeuronStats per kind,
    over real tokens only (padding and, if skip_first, each sequence's first position excluded)."""
    batches = list(batches)
    device = device_of(model)
    with record_stats(model, kinds) as rec:
        for batch in tqdm(batches, desc=desc, disable=desc is None, leave=False):
            ids, att = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            rec.mask = token_mask(att, skip_first)
            # The base model is enough: no neuron lives in the LM head, and skipping it saves ~20% here.
            extra = {"use_cache": False} if hasattr(model.config, "use_cache") else {}
            model.base_model(input_ids=ids, attention_mask=att, **extra)
    return rec.stats


# ---------------------------------------------------------------- masks
class MaskHandle:
    """Live neuron masks on a model; remove() (or leaving the `with` block) takes them off."""

    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor],
                offsets: dict[str, torch.Tensor] | None = None) -> MaskHandle:
    """Mask neurons: x -> x * m + offset * (1 - m), per kind, with m an [layers, neurons] 0/1 (or bool) tensor.

    Zero ablation by default; pass offsets (e.g. NeuronStats.mean) for mean ablation. Hooks act on the
    activations, so a masked neuron stays exactly at its offset during training too. Use as a context manager
    or keep the handle (e.g. while retraining) and call remove().
    """
    handles = []
    for kind, m in masks.items():
        shape = n_neurons(model, kind)
        if tuple(m.shape) != shape:
            raise ValueError(f"mask for {kind!r} has shape {tuple(m.shape)}, expected {shape}")
        off = None if offsets is None else offsets.get(kind)

        def fn(layer, x, m=m, off=off):  # masks follow the activations' device (train() may move the model later)
            keep = m[layer].to(x.device, x.dtype)
            if off is None:
                return x * keep
            return x * keep + off[layer].to(x.device, x.dtype) * (1 - keep)
        handles += _register(model, kind, fn)
    return MaskHandle(handles)


def full_mask(model: nn.Module, kind: str) -> torch.Tensor:
    """An all-ones (keep everything) mask for a kind."""
    return torch.ones(n_neurons(model, kind))


def probeless(means: dict[str, torch.Tensor], concept: str) -> torch.Tensor:
    """Probeless concept score (Antverg & Belinkov 2022) of every neuron, r(c) = sum_{z != c} |q(c) - q(z)|, from
    q(z) = the neuron's mean activation on inputs of concept z (`means`, one tensor per concept, same shape)."""
    if concept not in means or len(means) < 2:
        raise ValueError(f"concept {concept!r} needs its mean and at least one other concept's; got {sorted(means)}")
    return sum((means[concept] - means[z]).abs() for z in means if z != concept)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k highest scores over the whole [layers, hidden] grid (ties by index)."""
    check_positive_int("k", k, allow_zero=True)
    if k > scores.numel():
        raise ValueError(f"parameter 'k' = {k} is larger than the number of neurons ({scores.numel()})")
    flat = scores.flatten()
    pick = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    pick[torch.argsort(-flat.double(), stable=True)[:k]] = True
    return pick.view_as(scores)


def random_mask(shape: tuple[int, int], k: int, seed: int) -> torch.Tensor:
    """Bool mask of k neurons sampled uniformly without replacement from ALL layers x hidden units."""
    check_positive_int("k", k, allow_zero=True)
    n = shape[0] * shape[1]
    if k > n:
        raise ValueError(f"parameter 'k' = {k} is larger than the number of neurons ({n})")
    pick = torch.zeros(n, dtype=torch.bool)
    pick[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]] = True
    return pick.view(shape)
