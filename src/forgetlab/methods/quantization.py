"""Weight quantization of causal LMs: bitsandbytes (LLM.int8, fp4, nf4) and round-to-nearest (RTN).

Used by the quantization-recovery notebook (Zhang et al., arXiv 2410.16454): quantizing an unlearned model can
bring the forgotten knowledge back, because small unlearning updates round to the same codes as the target's.

Two ways to get a bitsandbytes model:

* `load_bnb(path, precision)`: `from_pretrained` with transformers' `BitsAndBytesConfig`, as the paper's code
  does (the real bnb layers; on this CPU a forward of these layers is 10-50x slower than fp32, and a load costs
  10-35 s);
* `quantized(model, precision)`: in memory, in place and undone on exit. For fp4 / nf4 the weights are replaced
  by bitsandbytes' own `quantize_4bit` -> `dequantize_4bit` (block size 64, the BitsAndBytesConfig default), i.e.
  exactly the values a `load_bnb` model holds (a test checks this), with the matmul in fp32. For int8 the weights
  are replaced by LLM.int8's row-wise absmax int8 codes (`int8_vectorwise_quant`); LLM.int8 also quantizes the
  activations row-wise and keeps outlier feature columns (|x| > 6) in fp16, which the in-memory version does not
  do (weight-only int8).

Every `nn.Linear` is quantized except the output head (`lm_head`, tied to the input embeddings in SmolLM2), as
bitsandbytes does (transformers keeps the output head in full precision); embeddings and norms are not Linear
layers and stay in full precision too.

RTN is symmetric with Delta = max|w| / (2^(N-1) - 1) over the tensor, the output channel (row) or a group of
`group_size` consecutive weights in a row: codes are the integers -(2^(N-1)-1) .. 2^(N-1)-1, so the largest
weight is exactly representable. (The paper writes Delta = max|w| / 2^(N-1); then the largest weight rounds
to the code 2^(N-1), which is outside the signed N-bit range and has to be clipped, so max|w| itself is not
representable. We use the symmetric range that maps it onto the last code.)
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from forgetlab.core.utils import check_choice, check_positive_int

BNB_PRECISIONS = ("int8", "fp4", "nf4")
RTN_GRANULARITIES = ("tensor", "channel", "group")
BNB_BLOCKSIZE = 64  # BitsAndBytesConfig's default 4-bit block size


def parse_precision(precision: str) -> dict:
    """"full", "int8", "fp4", "nf4" (bitsandbytes) or "rtn<bits>[-tensor|-channel|-g<group size>]"
    (e.g. rtn4, rtn8-channel, rtn4-g128; plain rtnN means per channel)."""
    if precision == "full" or precision in BNB_PRECISIONS:
        return {"kind": precision}
    if isinstance(precision, str) and precision.startswith("rtn"):
        bits, _, gran = precision[3:].partition("-")
        if bits.isdigit() and 2 <= int(bits) <= 16:
            gran = gran or "channel"
            if gran in ("tensor", "channel"):
                return {"kind": "rtn", "bits": int(bits), "granularity": gran, "group_size": None}
            if gran.startswith("g") and gran[1:].isdigit() and int(gran[1:]) > 0:
                return {"kind": "rtn", "bits": int(bits), "granularity": "group", "group_size": int(gran[1:])}
    raise ValueError(f"unknown precision {precision!r}; allowed: full, int8, fp4, nf4, rtn<bits> with optional "
                     "-tensor, -channel or -g<group size> (e.g. rtn4, rtn4-g128, rtn8-tensor)")


# ---------------------------------------------------------------- RTN
def _grouped(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """w [out, in] viewed as [out, n_groups, g] (a last, shorter group is zero-padded: zeros change no max)."""
    if granularity == "tensor":
        return w.reshape(1, 1, -1)
    if granularity == "channel":
        return w.reshape(w.shape[0], 1, -1)
    check_positive_int("group_size", group_size)
    pad = (-w.shape[-1]) % group_size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(w.shape[0], -1, group_size)


def rtn_codes(w: torch.Tensor, bits: int, granularity: str = "channel", group_size: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer codes [out, n_groups, g], step Delta [out, n_groups, 1]) of symmetric round-to-nearest
    quantization with Delta = max|w| / (2^(bits-1) - 1) over the tensor, each row, or each group of a row."""
    check_choice("granularity", granularity, RTN_GRANULARITIES)
    qmax = 2 ** (bits - 1) - 1
    x = _grouped(w.float(), granularity, group_size)
    delta = x.abs().amax(dim=-1, keepdim=True).div_(qmax)
    # |w| / Delta <= qmax up to one ulp, which rounds to qmax: no clamp needed
    codes = x.div(delta.clamp_min(torch.finfo(torch.float32).tiny)).round_()
    return codes, delta


def rtn(w: torch.Tensor, bits: int, granularity: str = "channel", group_size: int | None = None) -> torch.Tensor:
    """Fake-quantize w [out, in]: Delta * round(w / Delta), same shape and dtype as w."""
    codes, delta = rtn_codes(w, bits, granularity, group_size)
    return codes.mul_(delta).reshape(w.shape[0], -1)[:, : w.shape[-1]].reshape(w.shape).to(w.dtype)


# ---------------------------------------------------------------- bitsandbytes codes, in memory
@lru_cache(maxsize=None)
def fourbit_table(precision: str) -> torch.Tensor:
    """bitsandbytes' 16 normalized 4-bit values (nf4 or fp4), sorted."""
    import bitsandbytes.functional as F
    check_choice("precision", precision, ("fp4", "nf4"))
    return F.get_4bit_type(precision, device="cpu").float().sort().values


_LUT_BINS = 8192


@lru_cache(maxsize=None)
def _bucket_lut(precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded bounds [-inf, midpoints..., +inf], number of midpoints below each of _LUT_BINS bin edges on
    [-1, 1])."""
    table = fourbit_table(precision)
    bounds = (table[1:] + table[:-1]) / 2
    edges = -1 + 2 * torch.arange(_LUT_BINS, dtype=torch.float32) / _LUT_BINS
    padded = torch.cat([torch.tensor([-math.inf]), bounds, torch.tensor([math.inf])])
    return padded, torch.searchsorted(bounds, edges).to(torch.int32)


def _nearest_index(scaled: torch.Tensor, precision: str) -> torch.Tensor:
    """torch.bucketize(scaled, midpoints of the table), i.e. the number of midpoints strictly below each value,
    via a lookup table on a fine uniform grid and a one-step correction on each side (exact: a grid bin is far
    narrower than the gap between two midpoints, so a value is at most one midpoint away from its bin's count);
    bucketize itself is ~20x slower on this CPU."""
    padded, lut = (t.to(scaled.device) for t in _bucket_lut(precision))  # cached on the CPU, used where w lives
    x = scaled.reshape(-1)
    b = ((x + 1) * (_LUT_BINS / 2)).to(torch.int32).clamp_(0, _LUT_BINS - 1)
    c = lut.index_select(0, b)  # index_select with int32 indices: far faster than tensor[idx] on CPU
    c += (x > padded.index_select(0, c + 1)).to(torch.int32)
    c -= (x <= padded.index_select(0, c)).to(torch.int32)
    return c.reshape(scaled.shape)


def fourbit(w: torch.Tensor, precision: str, blocksize: int = BNB_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized w, code index per weight) of bitsandbytes' blockwise 4-bit quantization, in torch: blocks of
    `blocksize` consecutive weights of the flattened tensor, absmax scaling, nearest value of the nf4/fp4 table.
    Matches bitsandbytes.functional.quantize_4bit + dequantize_4bit exactly (tested) and is ~20x faster on CPU."""
    table = fourbit_table(precision).to(w.device)
    x = w.float().reshape(-1)
    pad = (-x.numel()) % blocksize
    x = torch.nn.functional.pad(x, (0, pad)).view(-1, blocksize)
    absmax = x.abs().amax(dim=1, keepdim=True)
    scaled = (x * (1.0 / absmax.clamp(min=1e-38))).clamp_(-1, 1)  # bitsandbytes' exact arithmetic
    idx = _nearest_index(scaled, precision)
    deq = (table.index_select(0, idx.reshape(-1)).view(idx.shape) * absmax).reshape(-1)[: w.numel()]
    return deq.reshape(w.shape).to(w.dtype), idx.reshape(-1)[: w.numel()]


def bnb_dequantized(w: torch.Tensor, precision: str, blocksize: int = BNB_BLOCKSIZE) -> torch.Tensor:
    """The weight a bitsandbytes layer of `precision` holds, dequantized to w's dtype (int8: LLM.int8's
    row-wise absmax codes; fp4 / nf4: blockwise 4-bit, see `fourbit`)."""
    check_choice("precision", precision, BNB_PRECISIONS)
    if precision == "int8":
        x = w.float()
        scale = x.abs().amax(dim=1, keepdim=True)
        codes = torch.round(x * (127 / scale.clamp_min(torch.finfo(torch.float32).tiny)))
        return (codes * scale / 127).to(w.dtype)
    return fourbit(w, precision, blocksize)[0]


def bnb_reference(w: torch.Tensor, precision: str, blocksize: int = BNB_BLOCKSIZE) -> torch.Tensor:
    """The same as bnb_dequantized, computed by bitsandbytes' own functions (slow on CPU; for tests)."""
    import bitsandbytes.functional as F
    check_choice("precision", precision, BNB_PRECISIONS)
    if precision == "int8":
        codes, scale, _ = F.int8_vectorwise_quant(w.float().contiguous(), threshold=0.0)
        return (codes.float() * scale.float()[:, None] / 127).to(w.dtype)
    packed, state = F.quantize_4bit(w.float().contiguous(), blocksize=blocksize, quant_type=precision)
    return F.dequantize_4bit(packed, state).to(w.dtype)


# ---------------------------------------------------------------- models
def quantizable_linears(model) -> dict[str, nn.Linear]:
    """The Linear layers a bitsandbytes load would convert: all but the output head (and any Linear whose
    weight is the input embedding matrix)."""
    emb = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head and m.weight is not emb}


def quantize_weight(w: torch.Tensor, precision: str) -> torch.Tensor:
    spec = parse_precision(precision)
    if spec["kind"] == "full":
        return w
    if spec["kind"] == "rtn":
        return rtn(w, spec["bits"], spec["granularity"], spec["group_size"])
    return bnb_dequantized(w, precision)


@contextmanager
def one_thread():
    """Run elementwise tensor work on one thread. Quantization is memory-bound and exact in any thread count;
    on a CPU shared by several jobs, two OpenMP threads that wait for each other at every op were 5-50x slower
    (RTN of SmolLM2: 0.4 s on one thread, 2-20 s on two threads under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextmanager
@torch.no_grad()
def quantized(model, precision: str):
    """Quantize `model`'s linear weights in place for the duration of the block, then restore them exactly."""
    parse_precision(precision)
    saved = {}
    try:
        if precision != "full":
            with one_thread():
                for name, lin in quantizable_linears(model).items():
                    saved[name] = lin.weight.data
                    lin.weight.data = quantize_weight(lin.weight.data, precision)
        yield model
    finally:
        lins = quantizable_linears(model)
        for name, w in saved.items():
            lins[name].weight.data = w


def quant_codes(w: torch.Tensor, precision: str) -> torch.Tensor:
    """The integer code of every weight under `precision` (flattened; the scales are not included)."""
    spec = parse_precision(precision)
    if spec["kind"] == "full":
        raise ValueError("precision 'full' has no codes")
    if spec["kind"] == "rtn":
        codes = rtn_codes(w, spec["bits"], spec["granularity"], spec["group_size"])[0]
        return codes.reshape(w.shape[0], -1)[:, : w.shape[-1]].reshape(-1)
    if precision == "int8":
        x = w.float()
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return torch.round(x * (127 / scale)).reshape(-1)
    return fourbit(w, precision)[1]


@torch.no_grad()
def model_codes(model, precision: str) -> dict[str, torch.Tensor]:
    """quant_codes of every quantizable weight matrix, as int8 (kept to compare several models with one)."""
    with one_thread():
        return {n: quant_codes(lin.weight.data, precision).to(torch.int8)
                for n, lin in quantizable_linears(model).items()}


@torch.no_grad()
def code_change_share(model_a, model_b, precision: str = "nf4", codes_a: dict | None = None) -> float:
    """Share of quantized weights whose integer code differs between two models under `precision` (the paper's
    mechanism: an unlearning update that stays inside a quantization bucket vanishes). codes_a: model_codes of
    model_a, when already computed."""
    la, lb = quantizable_linears(model_a), quantizable_linears(model_b)
    changed = total = 0
    with one_thread():
        for name, lin in la.items():
            ca = codes_a[name] if codes_a is not None else quant_codes(lin.weight.data, precision).to(torch.int8)
            cb = quant_codes(lb[name].weight.data, precision).to(torch.int8)
            changed += int((ca != cb.to(ca.device)).sum())  # the models (or the kept codes) may sit on two devices
            total += ca.numel()
    return changed / max(total, 1)


@torch.no_grad()
def weight_change_share(model_a, model_b) -> float:
    """Share of the quantizable weights that differ at all between two models (full precision)."""
    la, lb = quantizable_linears(model_a), quantizable_linears(model_b)
    changed = sum(int((lin.weight != lb[n].weight.to(lin.weight.device)).sum()) for n, lin in la.items())
    return changed / max(sum(lin.weight.numel() for lin in la.values()), 1)


def bnb_config(precision: str, compute_dtype=torch.float32):
    """transformers' BitsAndBytesConfig for int8 (LLM.int8, threshold 6), fp4 or nf4 (block size 64)."""
    from transformers import BitsAndBytesConfig
    check_choice("precision", precision, BNB_PRECISIONS)
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=precision, bnb_4bit_compute_dtype=compute_dtype)


def load_bnb(path: str | Path, precision: str, data_dir: str = "data"):
    """Load a causal LM with real bitsandbytes layers (the paper's code path): (model, tokenizer)."""
    from forgetlab.core.models import load_causal_lm
    return load_causal_lm(str(path), data_dir=data_dir, quantization_config=bnb_config(precision))


@torch.no_grad()
def bnb_dequantized_weights(bnb_model) -> dict[str, torch.Tensor]:
    """The dequantized weights of a model loaded by load_bnb, by module name (4-bit and int8 layers)."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    out = {}
    for name, mod in bnb_model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            out[name] = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
        elif isinstance(mod, bnb.nn.Linear8bitLt):
            scb = mod.weight.SCB if getattr(mod.weight, "SCB", None) is not None else mod.state.SCB
            out[name] = mod.weight.data.float() * scb.float()[:, None] / 127
    return out


def bnb_check(path: str | Path, model, precision: str = "nf4", data_dir: str = "data") -> dict:
    """Load the checkpoint at `path` with real bitsandbytes `precision` layers (the paper's code path) and compare
    their dequantized weights with our in-memory codes of the same checkpoint loaded as `model`: {"layers",
    "layers_expected", "max_abs_diff"} (0.0 when our codes are bitsandbytes' own)."""
    real, _ = load_bnb(path, precision, data_dir)
    real_w = bnb_dequantized_weights(real)
    lins = quantizable_linears(model)
    return {"layers": len(real_w), "layers_expected": len(lins),
            "max_abs_diff": max(float((real_w[n].to(lins[n].weight.device)
                                       - bnb_dequantized(lins[n].weight.data, precision)).abs().max())
                                for n in real_w)}


def time_rtn(model, precision: str = "rtn4", repeats: int = 3) -> float:
    """Best-of-`repeats` seconds to fake-quantize (and restore) all quantizable weights of `model`."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        with quantized(model, precision):
            pass
        best = min(best, time.perf_counter() - t)
    return best
