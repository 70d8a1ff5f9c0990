"""SaLEM: salient-layer editing with a MEND editor (Amazon, EACL 2024), plus the baselines it is compared with.

    * data:      a fact-verification classifier (claim + evidence -> True / False / Neither) and question-answering
                 edits for a causal LM; both become "items" (token ids + labels) that every function below shares.
    * saliency:  per layer (a transformer block's MLP matrices), the mean |grad| of the edit loss, averaged over
                 mini-batches of samples; the most salient layer is the one SaLEM edits.
    * MEND:      an identity-initialized low-rank MLP on the normalized [input; output-gradient] of each edited
                 linear layer (Mitchell et al. 2022), shared across layers of the same shape, with per-layer scale
                 and shift and a learned edit learning rate; edit W <- W - lr * sum_rows delta~ u~^T. No `higher`:
                 the edited weights are a dict passed to torch.func.functional_call, so training the editor
                 backpropagates through the edit.
    * baselines: fine-tuning on the fail samples, no edit.
    * metrics:   edit accuracy (fail, adapt samples), drawdown (pass samples, held-out set, text perplexity).

Checkpoint stages (dvc.yaml): `python -m forgetlab.papers.salem.experiment train-classifier | build-edits |
build-qa-edits | train-editors ...`.
"""
from __future__ import annotations

import json
import math
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from forgetlab.core import tokens
from forgetlab.core.text import SENTENCE_RULES, generate
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_list, check_positive_int, check_type,
                                  device_of, seed_everything, write_json)

LABELS = ("True", "False", "Neither")  # supported, refuted, not enough info (BIG-bench vitaminc choices)
HF_LABELS = {"SUPPORTS": 0, "REFUTES": 1, "NOT ENOUGH INFO": 2}  # tals/vitaminc and FEVER-style NLI data
KINDS = ("classify", "qa")


# ============================================================================ data: fact verification
def split_claim(text: str) -> tuple[str, str]:
    """BIG-bench vitaminc input "Title: evidence ...\\nClaim: claim" -> (evidence, claim)."""
    if "\nClaim: " not in text:
        raise ValueError(f"not a vitaminc input (no '\\nClaim: '): {text[:80]!r}")
    evidence, claim = text.rsplit("\nClaim: ", 1)
    return evidence.strip(), claim.strip()


def load_fact_pairs(source: str = "vitaminc_fact_verification", data_dir: str | Path = "data", split: str = "train",
                    n: int | None = None) -> list[dict]:
    """Claim/evidence pairs {"id", "claim", "evidence", "label" (index into LABELS), "group"}.

    source: a BIG-bench task name (default, offline), or "hf:<dataset>" for FEVER-style NLI data with columns
    claim, evidence, label ("SUPPORTS"/"REFUTES"/"NOT ENOUGH INFO" or 0/1/2), e.g. "hf:tals/vitaminc", or
    "hf:<folder>" written by `datasets.save_to_disk`. "group" (the evidence's page) keeps near-duplicate pairs
    on one side of a split.
    """
    if source.startswith("hf:"):
        from forgetlab.data import hub
        name = source[3:]
        ds = hub.load_dataset(name, split=split)
        missing = {"claim", "evidence", "label"} - set(ds.column_names)
        if missing:
            raise ValueError(f"dataset {name!r} lacks columns {sorted(missing)}; has {ds.column_names}")
        out = []
        for i, row in enumerate(ds):
            if n is not None and len(out) >= n:
                break
            label = row["label"]
            label = HF_LABELS[label] if isinstance(label, str) else int(label)
            page = row.get("page") or row.get("title") or row["evidence"].split(":", 1)[0][:60]
            out.append({"id": f"{name}/{i}", "claim": row["claim"], "evidence": row["evidence"], "label": label,
                        "group": str(page)})
        return out
    from forgetlab.data import load_mc_task
    task = load_mc_task(source, data_dir)
    if list(task.examples[0]["choices"]) != list(LABELS):
        raise ValueError(f"task {source!r} has choices {task.examples[0]['choices']}, expected {list(LABELS)}")
    out = []
    for e in task.examples[:n]:
        evidence, claim = split_claim(e["input"])
        out.append({"id": f"{source}/{e['idx']}", "claim": claim, "evidence": evidence, "label": e["target"],
                    "group": evidence.split(":", 1)[0]})
    return out


def split_by_group(examples: Sequence[dict], fraction: float, seed: int) -> tuple[list, list]:
    """(rest, held_out): a seeded random `fraction` of the groups goes to held_out; input order kept."""
    groups = sorted({e["group"] for e in examples})
    random.Random(seed).shuffle(groups)
    held = set(groups[:max(1, round(fraction * len(groups)))])
    return [e for e in examples if e["group"] not in held], [e for e in examples if e["group"] in held]


# ============================================================================ items: token ids + labels
def encode(tokenizer, example: dict, max_len: int = 128) -> dict:
    """One example -> an item {"input_ids", ("token_type_ids"), "labels"}.

    Fact pairs (claim, evidence, label) -> classifier input "[CLS] claim [SEP] evidence [SEP]", labels = int.
    QA examples (context, question, answer) -> causal-LM prompt + " answer", labels = -100 on the prompt.
    """
    if "claim" in example:
        enc = tokenizer(example["claim"], example["evidence"], truncation="only_second", max_length=max_len)
        item = {"input_ids": enc["input_ids"], "labels": int(example["label"])}
        if "token_type_ids" in enc:
            item["token_type_ids"] = enc["token_type_ids"]
        return item
    if "question" in example:
        prompt = tokenizer(qa_prompt(example), add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + example["answer"].strip(), add_special_tokens=False)["input_ids"]
        prompt = prompt[-(max_len - len(answer)):]
        return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}
    raise ValueError(f"cannot encode example with keys {sorted(example)}: need claim/evidence or question/answer")


def collate(items: Sequence[dict], pad_id: int = 0) -> dict:
    """Right-pad a list of items into a batch (attention_mask; LM labels padded with -100)."""
    ids, mask = tokens.pad([it["input_ids"] for it in items], pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in items[0]:
        batch["token_type_ids"] = tokens.pad([it["token_type_ids"] for it in items], 0)[0]
    if isinstance(items[0]["labels"], int):
        batch["labels"] = torch.tensor([it["labels"] for it in items])
    else:
        batch["labels"] = tokens.pad([it["labels"] for it in items], -100)[0]
    return batch


def batches(items: Sequence[dict], batch_size: int, pad_id: int = 0) -> list[dict]:
    return [collate(items[i:i + batch_size], pad_id) for i in range(0, len(items), batch_size)]


def model_inputs(batch: dict, device: torch.device | str = "cpu") -> dict:
    """The batch without its labels, on `device` (batches are built on the CPU; the model may be on a GPU)."""
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


# ============================================================================ losses and accuracy
def edit_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the target: class logits [B, C] vs labels [B], or LM logits [B, T, V] vs labels [B, T]
    (next-token, -100 ignored)."""
    labels = labels.to(logits.device)
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample: the argmax class is the label, or (LM) every target token is the argmax (teacher forcing)."""
    labels = labels.to(logits.device)
    if labels.dim() == 1:
        return logits.argmax(-1) == labels
    pred, tgt = logits[:, :-1].argmax(-1), labels[:, 1:]
    return ((pred == tgt) | (tgt == -100)).all(-1)


def locality_kl(logits_pre: torch.Tensor, logits_post: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(pre || post) of the output distributions, averaged over samples (and over unmasked tokens for an LM).
    Zero when the edit changes nothing."""
    pre, post = logits_pre.float().log_softmax(-1), logits_post.float().log_softmax(-1)
    kl = (pre.exp() * (pre - post)).sum(-1)
    if kl.dim() == 1 or mask is None:
        return kl.mean()
    mask = mask.to(kl)
    return (kl * mask).sum() / mask.sum()


def forward(model, batch: dict, params: dict | None = None) -> torch.Tensor:
    """Logits of `model` on `batch` (moved to the model's device), with some parameters replaced by `params`
    (torch.func.functional_call)."""
    inputs = model_inputs(batch, device_of(model))
    if params:
        return functional_call(model, params, args=(), kwargs=inputs, strict=False).logits
    return model(**inputs).logits


@torch.no_grad()
def accuracy(model, items: Sequence[dict], params: dict | None = None, batch_size: int = 32, pad_id: int = 0) -> float:
    """Share of items the (edited) model gets right."""
    if not items:
        return float("nan")
    return predictions(model, items, batch_size, pad_id, params=params).float().mean().item()


@torch.no_grad()
def predictions(model, items: Sequence[dict], batch_size: int = 32, pad_id: int = 0,
                desc: str | None = None, params: dict | None = None) -> torch.Tensor:
    """Per item: the (edited, with `params`) model gets it right or not (bool tensor, on the CPU)."""
    out = [correct(forward(model, b, params), b["labels"]).cpu()
           for b in tqdm(batches(items, batch_size, pad_id), desc=desc, disable=desc is None)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def perplexity(model, text_batches: Sequence[dict], params: dict | None = None) -> float:
    """Token perplexity of a causal LM on batches with input_ids / attention_mask."""
    nll, n = 0.0, 0
    for b in text_batches:
        logits = forward(model, b, params)
        labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100).to(logits.device)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                               reduction="sum")
        nll += loss.item()
        n += int((labels[:, 1:] != -100).sum())
    return math.exp(nll / max(n, 1))


# ============================================================================ layers and saliency
def mlp_layers(model) -> list[list[str]]:
    """Per transformer block, the names of its MLP weight matrices: the editor's candidate layers (the
    classifier head and attention are not candidates). Where they live comes from the architecture tables."""
    from forgetlab.core.neurons import mlp_weights
    return mlp_weights(model)


def layer_saliency(model, items: Sequence[dict], layers: Sequence[Sequence[str]], batch_size: int = 10,
                   pad_id: int = 0, desc: str | None = "saliency") -> torch.Tensor:
    """Per mini-batch of `batch_size` samples and per layer, the mean |grad| of the edit loss (to each sample's
    target) over the layer's parameters. Returns [n_batches, n_layers]; average over dim 0 for the saliency."""
    params = dict(model.named_parameters())
    names = [n for layer in layers for n in layer]
    for n in names:
        params[n].requires_grad_(True)
    rows = []
    for b in tqdm(batches(items, batch_size, pad_id), desc=desc, disable=desc is None):
        loss = edit_loss(forward(model, b), b["labels"])
        grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
        rows.append(torch.stack([torch.cat([grads[n].abs().flatten() for n in layer]).mean() for layer in layers]))
    return torch.stack(rows).cpu()


def pick_layers(saliency: torch.Tensor, k: int = 1) -> list[int]:
    """Indices of the k most salient layers (saliency [n_batches, n_layers] or [n_layers]), most salient first."""
    s = saliency.mean(0) if saliency.dim() == 2 else saliency
    return torch.argsort(s, descending=True, stable=True)[:k].tolist()


CONTROLS = ("least", "random", "last")  # single-layer controls, each trained like SaLEM's editor


def choose_layers(saliency: torch.Tensor, top_k: int, controls: Sequence[str] = CONTROLS, seed: int = 0
                  ) -> dict[str, list[int]]:
    """The blocks each editor edits: "salem" the most salient one; "mend_top" the last `top_k` (MEND's heuristic);
    the single-block controls "least" (the least salient block), "random" (a seeded block other than the most
    salient) and "last" (the last block). Two names may get the same block (e.g. least = last)."""
    s = saliency.mean(0) if saliency.dim() == 2 else saliency
    n = len(s)
    salient = pick_layers(s, 1)[0]
    out = {"salem": [salient], "mend_top": list(range(n - top_k, n))}
    for c in controls:
        check_choice("controls", c, CONTROLS)
        out[c] = ([int(torch.argsort(s, stable=True)[0])] if c == "least" else [n - 1] if c == "last" else
                  [random.Random(seed).choice([i for i in range(n) if i != salient] or [salient])])
    return out


def permuted_targets(examples: Sequence[dict], seed: int = 0) -> list[dict]:
    """The same raw examples with wrong targets, for a saliency that should move with the target: a fact pair
    gets another label (seeded), a question the answer of another question (a seeded cycle, so none keeps its
    own)."""
    rng = random.Random(seed)
    if examples and "claim" in examples[0]:
        return [{**e, "label": (int(e["label"]) + rng.randrange(1, len(LABELS))) % len(LABELS)} for e in examples]
    if len(examples) < 2:
        raise ValueError("permuting answers needs at least 2 examples")
    order = list(range(len(examples)))
    rng.shuffle(order)
    donor = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    return [{**e, "answer": examples[donor[i]]["answer"]} for i, e in enumerate(examples)]


def saliency_shift(gold: torch.Tensor, permuted: torch.Tensor) -> dict:
    """How per-edit saliency profiles ([n_edits, n_layers]) change from the gold targets to permuted ones: the
    argmax block's count per block under each, the share of edits whose argmax block moves, and the L1 distance
    between each edit's two profiles normalized to sum 1 (0 = unchanged, 2 = disjoint), mean and minimum."""
    n = gold.shape[1]
    a_gold, a_perm = gold.argmax(1), permuted.argmax(1)
    dist = (gold / gold.sum(1, keepdim=True) - permuted / permuted.sum(1, keepdim=True)).abs().sum(1)
    return {"argmax_gold": torch.bincount(a_gold, minlength=n).tolist(),
            "argmax_permuted": torch.bincount(a_perm, minlength=n).tolist(),
            "share_argmax_moved": (a_gold != a_perm).float().mean().item(),
            "profile_l1_mean": dist.mean().item(), "profile_l1_min": dist.min().item(), "n_edits": len(gold)}


# ============================================================================ MEND
class LowRankIDMLP(nn.Module):
    """x + (B relu(A x + a) + b) * scale[mode] + shift[mode]; B = 0, b = 0, shift = 0 at init, so it is the identity."""

    def __init__(self, dim: int, rank: int, n_modes: int):
        super().__init__()
        self.A = nn.Linear(dim, rank)
        self.B = nn.Linear(rank, dim)
        nn.init.xavier_uniform_(self.A.weight)
        nn.init.zeros_(self.A.bias)
        nn.init.zeros_(self.B.weight)
        nn.init.zeros_(self.B.bias)
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        return x + self.B(torch.relu(self.A(x))) * self.scale[mode] + self.shift[mode]


class GradientTransform(nn.Module):
    """MEND's gradient network for all edited matrices of one shape: normalize u and delta (running mean / std
    over every row seen in training), run [u; delta] through a LowRankIDMLP, split back into (u~, delta~)."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_modes: int, norm: bool = True):
        super().__init__()
        self.d_in, self.d_out, self.norm = d_in, d_out, norm
        self.mlp = LowRankIDMLP(d_in + d_out, rank, n_modes)
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(d_in + d_out))
        self.register_buffer("m2", torch.zeros(d_in + d_out))

    @torch.no_grad()
    def update_stats(self, x: torch.Tensor) -> None:
        """Chan et al.'s parallel update of the running mean and sum of squared deviations."""
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta ** 2 * self.count * n_b / n
        self.count.fill_(n)

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([u, delta], -1).float()
        if self.norm:
            if self.training:
                self.update_stats(x)
            if self.count < 2:
                raise RuntimeError("MEND normalization needs statistics from training (>= 2 rows seen)")
            std = (self.m2 / (self.count - 1)).sqrt()
            x = (x - self.mean) / (std + 1e-7)
        y = self.mlp(x, mode)
        return y[:, :self.d_in], y[:, self.d_in:]


class MEND(nn.Module):
    """A MEND editor for the named nn.Linear weights of `model` (the model is not a submodule: the editor
    holds only its own parameters)."""

    def __init__(self, model, names: Sequence[str], rank: int = 64, edit_lr: float = 1e-4, norm: bool = True):
        super().__init__()
        check_positive_int("rank", rank)
        self.names = list(names)
        self.rank, self.norm = rank, norm
        shapes, self.modes = {}, {}
        for n in self.names:
            module = model.get_submodule(n.rsplit(".", 1)[0])
            if not isinstance(module, nn.Linear) or not n.endswith(".weight"):
                raise ValueError(f"MEND edits nn.Linear weights; {n} is not one")
            key = f"{module.in_features}x{module.out_features}"
            self.modes[n] = shapes.setdefault(key, []).__len__()
            shapes[key].append(n)
        self.keys = {n: f"{model.get_submodule(n.rsplit('.', 1)[0]).in_features}x"
                        f"{model.get_submodule(n.rsplit('.', 1)[0]).out_features}" for n in self.names}
        self.nets = nn.ModuleDict({k: GradientTransform(*map(int, k.split("x")), rank, len(v), norm)
                                   for k, v in shapes.items()})
        if not edit_lr > 0:
            raise ValueError(f"parameter 'edit_lr' must be > 0, got {edit_lr}")
        # the learned edit step sizes live in log space, so that they stay positive whatever `lr_lr` does
        self.log_edit_lrs = nn.Parameter(torch.full((len(self.names),), math.log(edit_lr)))
        self.to(device_of(model))  # where the gradients it transforms are

    @property
    def edit_lrs(self) -> torch.Tensor:
        """The learned edit step size of each edited matrix (exp of the trained log step size)."""
        return self.log_edit_lrs.exp()

    def config(self) -> dict:
        return {"names": self.names, "rank": self.rank, "norm": self.norm}

    def factors(self, model, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per edited matrix, the rows of its input u and of the edit loss's gradient w.r.t. its output delta
        (detached; rows where either is all zero, e.g. padding, dropped). sum_rows delta u^T is the gradient."""
        modules = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n in self.names}
        inputs, outputs, handles = {}, {}, []
        for n, m in modules.items():
            def hook(mod, args, out, n=n):
                inputs[n], outputs[n] = args[0], out
            handles.append(m.register_forward_hook(hook))
        # weights that require grad make every layer output differentiable; the grads themselves are not used
        params = {n: model.get_parameter(n).detach().requires_grad_(True) for n in self.names}
        try:
            with torch.enable_grad():
                loss = edit_loss(forward(model, batch, params), batch["labels"])
                grads = torch.autograd.grad(loss, [outputs[n] for n in self.names])
        finally:
            for h in handles:
                h.remove()
        out = {}
        for n, g in zip(self.names, grads):
            u = inputs[n].detach().reshape(-1, inputs[n].shape[-1])
            d = g.detach().reshape(-1, g.shape[-1])
            keep = (u != 0).any(-1) & (d != 0).any(-1)
            out[n] = (u[keep], d[keep])
        return out

    def deltas(self, model, batch: dict, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Per edited matrix, the parameter change -scale * lr * sum_rows delta~ u~^T (differentiable w.r.t. the
        editor). `scale` (1 in training) strengthens or weakens an edit, for comparisons at equal edit success."""
        out = {}
        lrs = self.edit_lrs
        for i, (n, (u, d)) in enumerate(self.factors(model, batch).items()):
            u_t, d_t = self.nets[self.keys[n]](u, d, self.modes[n])
            out[n] = -scale * lrs[i] * (d_t.T @ u_t)
        return out

    def edit(self, model, batch: dict, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The edited weights {name: W + scale * change} for functional_call; every other parameter is untouched."""
        return {n: model.get_parameter(n).detach() + dw for n, dw in self.deltas(model, batch, scale).items()}


def save_editor(editor: MEND, path: str | Path, extra: dict | None = None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(editor.state_dict(), path / "editor.pt")
    (path / "editor.json").write_text(json.dumps({**editor.config(), **(extra or {})}, indent=2, sort_keys=True))


def load_editor(model, path: str | Path) -> MEND:
    cfg = json.loads((Path(path) / "editor.json").read_text())
    editor = MEND(model, cfg["names"], rank=cfg["rank"], norm=cfg["norm"])
    editor.load_state_dict(torch.load(Path(path) / "editor.pt", weights_only=True,
                                      map_location=device_of(model)))
    editor.eval()
    return editor


def editor_objective(model, editor: MEND, chunk: Sequence[dict], loc: dict, pre: torch.Tensor, *, pad_id: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(edit loss, locality KL) of one edit: the editor edits on the fail samples of `chunk`; the edit loss is the
    edited model's loss on those fail samples and their adapt samples, the KL is on the batch `loc` (whose
    unedited logits are `pre`)."""
    edit_b = collate([e["fail"] for e in chunk], pad_id)
    outer = collate([e["fail"] for e in chunk] + [a for e in chunk for a in e["adapt"]], pad_id)
    new = editor.edit(model, edit_b)
    l_edit = edit_loss(forward(model, outer, new), outer["labels"])
    return l_edit, locality_kl(pre, forward(model, loc, new), loc["attention_mask"])


def train_mend(model, editor: MEND, edits: Sequence[dict], loc_items: Sequence[dict], *, steps: int = 100,
               edit_batch: int = 1, loc_batch: int = 8, lr: float = 1e-4, lr_lr: float = 1e-2,
               c_edit: float = 0.1, c_loc: float = 1.0, val_edits: Sequence[dict] = (),
               val_loc: Sequence[dict] = (), eval_every: int = 10, patience: int = 3, pad_id: int = 0,
               seed: int = 0, desc: str | None = "MEND") -> dict:
    """Train the editor: per step, edit on `edit_batch` fail samples, then loss = c_edit * edit loss of the edited
    model on those samples and their adapt samples + c_loc * KL(pre || post) on `loc_batch` pass samples.
    edits: [{"fail": item, "adapt": [items]}]. `lr_lr` is the Adam learning rate of the log edit step sizes.

    Early stopping, as MEND trains: every `eval_every` steps the same loss on the held-out `val_edits` (in batches
    of `edit_batch`, locality on the `val_loc` items, no training); after `patience` evaluations without a new
    best, training stops and the editor goes back to its best evaluation. Without val_edits it runs `steps`.
    Returns {"steps": per-step log, "val": per-evaluation log (with the edit step sizes), "best_step",
    "n_steps", "stopped_early"}."""
    check_positive_int("steps", steps)
    check_positive_int("eval_every", eval_every)
    check_positive_int("patience", patience)
    rng = random.Random(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([{"params": [p for n, p in editor.named_parameters() if n != "log_edit_lrs"], "lr": lr},
                            {"params": [editor.log_edit_lrs], "lr": lr_lr}])
    if val_edits:
        v_loc = collate(list(val_loc) or list(loc_items)[:loc_batch], pad_id)
        with torch.no_grad():
            v_pre = forward(model, v_loc)

    def validate(step: int) -> dict:
        editor.eval()
        with torch.no_grad():
            parts = [editor_objective(model, editor, val_edits[i:i + edit_batch], v_loc, v_pre, pad_id=pad_id)
                     for i in range(0, len(val_edits), edit_batch)]
        e, kl = float(np.mean([a.item() for a, _ in parts])), float(np.mean([b.item() for _, b in parts]))
        lrs = editor.edit_lrs.detach()
        return {"step": step, "val_edit_loss": e, "val_loc_kl": kl, "val_loss": c_edit * e + c_loc * kl,
                "edit_lr_min": lrs.min().item(), "edit_lr_max": lrs.max().item()}

    log, val, best, best_state, since = [], [], float("inf"), None, 0
    for step in tqdm(range(1, steps + 1), desc=desc, disable=desc is None):
        editor.train()
        chosen = rng.sample(list(edits), min(edit_batch, len(edits)))
        loc = collate(rng.sample(list(loc_items), min(loc_batch, len(loc_items))), pad_id)
        with torch.no_grad():
            pre = forward(model, loc)
        l_edit, l_loc = editor_objective(model, editor, chosen, loc, pre, pad_id=pad_id)
        loss = c_edit * l_edit + c_loc * l_loc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append({"step": step, "edit_loss": l_edit.item(), "loc_kl": l_loc.item()})
        if val_edits and step % eval_every == 0:
            val.append(validate(step))
            if val[-1]["val_loss"] < best:
                best, since = val[-1]["val_loss"], 0
                best_state = {k: v.detach().clone() for k, v in editor.state_dict().items()}
            else:
                since += 1
                if since >= patience:
                    break
    if best_state is not None:
        editor.load_state_dict(best_state)
    editor.eval()
    best_step = min(val, key=lambda r: r["val_loss"])["step"] if val else len(log)
    return {"steps": log, "val": val, "best_step": best_step, "n_steps": len(log),
            "stopped_early": len(log) < steps}


# ============================================================================ fine-tuning baseline
def fine_tune_edit(model, batch: dict, names: Sequence[str] | None = None, *, steps: int = 10, lr: float = 1e-4
                   ) -> dict[str, torch.Tensor]:
    """Plain fine-tuning on the fail samples: `steps` Adam steps on the edit loss, over `names` (default: every
    parameter). Returns the new values of those parameters; the model itself is not changed."""
    names = list(names) if names is not None else [n for n, _ in model.named_parameters()]
    params = {n: model.get_parameter(n).detach().clone().requires_grad_(True) for n in names}
    opt = torch.optim.Adam(params.values(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = edit_loss(forward(model, batch, params), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {n: p.detach() for n, p in params.items()}


# ============================================================================ evaluation of an editing method
def evaluate_edits(model, method: EditMethod, edits: Sequence[dict], pass_items: Sequence[dict],
                   heldout_items: Sequence[dict], *, edit_batch: int = 10, text_batches: Sequence[dict] = (),
                   pad_id: int = 0, eval_batch: int = 32, with_adapt: bool = True, desc: str | None = None
                   ) -> list[dict]:
    """Apply `method` (fail batch -> edited parameter dict) to successive batches of `edit_batch` edits, each on a
    fresh copy of the base weights; per batch, post-edit accuracy on the fail and adapt samples, on the pass
    samples and the held-out set, perplexity on text (if given), time per edit and edited parameter count; the
    per-item hits on the fail and pass samples (`fail_hits`, `pass_hits`) feed `edit_intervals`. Empty held-out
    items and text, and with_adapt=False, skip those measures (NaN), for the cheaper scale sweep."""
    rows, unedited = [], {}
    for i in tqdm(range(0, len(edits), edit_batch), desc=desc, disable=desc is None):
        chunk = edits[i:i + edit_batch]
        fail = [e["fail"] for e in chunk]
        adapt = [a for e in chunk for a in e["adapt"]] if with_adapt else []
        t0 = time.perf_counter()
        new = method(collate(fail, pad_id))
        seconds = time.perf_counter() - t0
        if new or not unedited:  # the measures on fixed items; an empty edit (no edit) gives the same every time
            fixed = {"pass_hits": predictions(model, pass_items, eval_batch, pad_id, params=new).int().tolist(),
                     "heldout_acc": accuracy(model, heldout_items, new, eval_batch, pad_id)}
            if text_batches:
                fixed["ppl"] = perplexity(model, text_batches, new)
            if not new:
                unedited.update(fixed)
        row = {"batch": i // edit_batch, "n_edits": len(chunk), "n_adapt": len(adapt),
               "time_per_edit_s": seconds / len(chunk),
               "edited_params": int(sum(v.numel() for v in new.values())),
               "fail_hits": predictions(model, fail, eval_batch, pad_id, params=new).int().tolist(),
               "adapt_acc": accuracy(model, adapt, new, eval_batch, pad_id), **(fixed if new else unedited)}
        row["fail_acc"] = float(np.mean(row["fail_hits"]))
        row["pass_acc"] = float(np.mean(row["pass_hits"])) if pass_items else float("nan")
        rows.append(row)
    return rows


def summarize_edits(rows: Sequence[dict], base: dict) -> dict:
    """Mean over edit batches (adapt accuracy weighted by its samples) and drawdowns against the unedited model
    (base: {"pass_acc", "heldout_acc", ("ppl")})."""
    n_adapt = sum(r["n_adapt"] for r in rows)
    out = {"fail_acc": float(np.average([r["fail_acc"] for r in rows], weights=[r["n_edits"] for r in rows])),
           "adapt_acc": float(sum(r["adapt_acc"] * r["n_adapt"] for r in rows if r["n_adapt"]) / n_adapt)
           if n_adapt else float("nan"),
           "pass_acc": float(np.mean([r["pass_acc"] for r in rows])),
           "heldout_acc": float(np.mean([r["heldout_acc"] for r in rows])),
           "time_per_edit_s": float(np.mean([r["time_per_edit_s"] for r in rows])),
           "edited_params": int(rows[0]["edited_params"]), "n_edits": int(sum(r["n_edits"] for r in rows)),
           "n_adapt": int(n_adapt)}
    out["pass_drawdown"] = base["pass_acc"] - out["pass_acc"]
    out["heldout_drawdown"] = base["heldout_acc"] - out["heldout_acc"]
    if "ppl" in rows[0]:
        out["ppl"] = float(np.mean([r["ppl"] for r in rows]))
        out["ppl_change"] = out["ppl"] - base["ppl"]
    return out


METHODS = ("salem", "mend_top", *CONTROLS, "fine_tune", "no_edit")


class EditMethod:
    """An editing method: called on a collated batch of fail samples, it returns the edited parameters ({name: new
    value}; {} leaves the model as it is), which evaluate_edits applies through functional_call without changing
    the model. A new method is one more subclass, and its entry in compare_methods and METHODS."""

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass(eq=False)
class MendEdit(EditMethod):
    """A trained editor (SaLEM's, MEND on the top layers, a single-layer control), its edit scaled by `scale` (the
    matched-strength sweep)."""
    model: nn.Module
    editor: MEND
    scale: float = 1.0

    def __call__(self, batch):
        with torch.no_grad():
            return self.editor.edit(self.model, batch, self.scale)


@dataclass(eq=False)
class FineTuneEdit(EditMethod):
    """Plain fine-tuning on the fail samples (fine_tune_edit): `steps` Adam steps at `lr` over `names`."""
    model: nn.Module
    names: Sequence[str] | None
    steps: int
    lr: float

    def __call__(self, batch):
        return fine_tune_edit(self.model, batch, self.names, steps=self.steps, lr=self.lr)


class NoEdit(EditMethod):
    """The unedited model (the reference for drawdown)."""

    def __call__(self, batch):
        return {}


def compare_methods(model, sets: dict, editors: dict[str, MEND], *, edit_batch: int = 10, max_edits: int = 50,
                    ft_steps: int = 10, ft_lr: float = 1e-4, ft_names: Sequence[str] | None = None,
                    text: Sequence[dict] = (), scales: Sequence[float] = (), sweep: Sequence[str] = (),
                    pad_id: int = 0, desc: bool = True) -> dict:
    """Every trained editor (SaLEM, MEND on the top layers, the single-layer controls), fine-tuning on the fail
    samples and no edit, on the first `max_edits` test edits in batches of `edit_batch`; then, for matched
    strength, the editors named in `sweep` again with their edits scaled by each of `scales` (edit success and
    pass samples only). Returns {"base": unedited accuracies, "methods": {name: summary}, "rows": {name: per-batch
    rows}, "sweep": {name: {scale: per-batch rows}}, "base_pass_hits"}."""
    check_positive_int("edit_batch", edit_batch)
    check_positive_int("max_edits", max_edits)
    for name in sweep:
        check_choice("sweep", name, list(editors))
    edits = sets["test"][:max_edits]
    if not edits:
        raise ValueError("no test edits: the edit dataset has no fail samples in its test split")
    base_pass_hits = predictions(model, sets["pass_test"], pad_id=pad_id).int().tolist()
    base = {"pass_acc": float(np.mean(base_pass_hits)) if base_pass_hits else float("nan"),
            "heldout_acc": accuracy(model, sets["heldout"], pad_id=pad_id)}
    if text:
        base["ppl"] = perplexity(model, text)
    methods = {**{name: MendEdit(model, e) for name, e in editors.items()},
               "fine_tune": FineTuneEdit(model, ft_names, ft_steps, ft_lr), "no_edit": NoEdit()}
    rows, done = {}, {}  # an editor shared by two names (the same blocks) is evaluated once
    for name, fn in methods.items():
        key = id(editors[name]) if name in editors else name
        if key not in done:
            done[key] = evaluate_edits(model, fn, edits, sets["pass_test"], sets["heldout"], edit_batch=edit_batch,
                                       text_batches=text, pad_id=pad_id, desc=name if desc else None)
        rows[name] = done[key]
    swept, done = {}, {}
    for name in sweep:
        swept[name] = {}
        for s in scales:
            key = (id(editors[name]), float(s))
            if key not in done:
                done[key] = rows[name] if s == 1 else evaluate_edits(
                    model, MendEdit(model, editors[name], s), edits, sets["pass_test"], (), edit_batch=edit_batch,
                    pad_id=pad_id, with_adapt=False, desc=f"{name} x{s:g}" if desc else None)
            swept[name][float(s)] = done[key]
    return {"base": base, "methods": {n: summarize_edits(r, base) for n, r in rows.items()}, "rows": rows,
            "sweep": swept, "base_pass_hits": base_pass_hits}


def _batch_arrays(rows: Sequence[dict], base_pass: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per edit batch: fail hits, number of edits, pass-sample drawdown (base pass accuracy minus the batch's)."""
    hits = np.array([float(np.sum(r["fail_hits"])) for r in rows])
    n = np.array([float(len(r["fail_hits"])) for r in rows])
    draw = np.array([base_pass - float(np.mean(r["pass_hits"])) for r in rows])
    return hits, n, draw


def edit_intervals(result: dict, *, n_boot: int = 1000, seed: int = 0,
                   pairs: Sequence[tuple[str, str]] = (("salem", "mend_top"),)) -> dict:
    """Clustered bootstrap intervals for a compare_methods result, resampling whole edit batches (the edits of
    one batch share one weight change, so they are not independent): per method the edit success and the
    pass-sample drawdown, and for each pair (a, b) the paired differences a - b of both (same batches, same pass
    samples). The pass samples themselves are not resampled (every batch is scored on the same ones), and there is
    one trained editor per method: the intervals are conditional on both."""
    from forgetlab.core.metrics import bootstrap_clusters

    base = float(np.mean(result["base_pass_hits"]))
    arrays = {name: _batch_arrays(rows, base) for name, rows in result["rows"].items()}
    n_b = len(next(iter(arrays.values()))[0])

    def ci(stat):
        return list(bootstrap_clusters(stat, n_b, n_boot=n_boot, seed=seed))

    def success(name, idx):
        hits, n, _ = arrays[name]
        return hits[idx].sum() / n[idx].sum()

    def drawdown(name, idx):
        return arrays[name][2][idx].mean()

    out = {"methods": {name: {"fail_acc_ci": ci(lambda i, m=name: success(m, i)),
                              "pass_drawdown_ci": ci(lambda i, m=name: drawdown(m, i))} for name in arrays},
           "n_clusters": n_b}
    every = np.arange(n_b)
    for a, b in pairs:
        if a not in arrays or b not in arrays:
            continue
        fd = lambda i: success(a, i) - success(b, i)  # noqa: E731
        dd = lambda i: drawdown(a, i) - drawdown(b, i)  # noqa: E731
        out[f"{a}_minus_{b}"] = {"fail_acc": float(fd(every)), "fail_acc_ci": ci(fd),
                                 "pass_drawdown": float(dd(every)), "pass_drawdown_ci": ci(dd)}
    return out


# ============================================================================ matched edit strength
def strength_curve(by_scale: dict[float, Sequence[dict]], base_pass: float, idx=None) -> list[tuple]:
    """(scale, edit success, pass drawdown) along a scale sweep, over the edit batches `idx` (default all); scale 0
    (no edit: the fail samples are wrong by construction, nothing is lost) anchors the curve at (0, 0)."""
    out = [(0.0, 0.0, 0.0)]
    for scale in sorted(by_scale):
        hits, n, draw = _batch_arrays(by_scale[scale], base_pass)
        idx_ = np.arange(len(hits)) if idx is None else idx
        out.append((float(scale), float(hits[idx_].sum() / n[idx_].sum()), float(draw[idx_].mean())))
    return out


def drawdown_at(curve: Sequence[tuple], level: float) -> float:
    """Pass drawdown at edit success `level`, interpolated linearly on the first segment of the curve (in order of
    scale) that reaches it; NaN if the curve never reaches it."""
    for (_, s0, d0), (_, s1, d1) in zip(curve, curve[1:]):
        if s0 <= level <= s1:
            return d0 if s1 == s0 else d0 + (level - s0) / (s1 - s0) * (d1 - d0)
    return float("nan")


def matched_strength(result: dict, a: str, b: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Drawdown of methods a and b at equal edit success: the level is the smaller of their unscaled (scale 1)
    edit successes, and each method's drawdown there is read off its scale sweep; a - b with a clustered bootstrap
    interval (whole edit batches resampled, the level recomputed in each resample)."""
    from forgetlab.core.metrics import bootstrap_clusters

    base = float(np.mean(result["base_pass_hits"]))
    sweep = result["sweep"]
    for m in (a, b):
        if 1.0 not in sweep.get(m, {}):
            raise ValueError(f"matched strength needs a scale sweep of {m!r} that includes scale 1")

    def stat(idx=None):
        ca, cb = strength_curve(sweep[a], base, idx), strength_curve(sweep[b], base, idx)
        level = min(dict((s, v) for s, v, _ in ca)[1.0], dict((s, v) for s, v, _ in cb)[1.0])
        return level, drawdown_at(ca, level), drawdown_at(cb, level)

    level, da, db = stat()
    n_b = len(sweep[a][1.0])
    lo, hi = bootstrap_clusters(lambda i: (lambda r: r[1] - r[2])(stat(i)), n_b, n_boot=n_boot, seed=seed)
    return {"level": level, f"{a}_drawdown": da, f"{b}_drawdown": db, "diff": da - db, "diff_ci": [lo, hi],
            "curves": {m: [{"scale": s, "fail_acc": v, "pass_drawdown": d} for s, v, d in strength_curve(sweep[m], base)]
                       for m in (a, b)}}


# ============================================================================ checkpoints: loading
def load_classifier(name_or_path: str, data_dir: str = "data", device: str = "cpu"):
    """The fact-verification classifier (labels LABELS) and its tokenizer, in eval mode, on `device`."""
    from forgetlab.core.models import load_sequence_classifier
    return load_sequence_classifier(name_or_path, LABELS, data_dir=data_dir, device=device)


def load_setting(edits_dir: str | Path, base: str | None = None, data_dir: str = "data", max_len: int = 128,
                 device: str = "cpu"):
    """(model on `device`, tokenizer, edits.json dict, encoded item sets) for a setting written by
    build-edits/build-qa-edits. Item sets: train / test (edits with fail + adapt items), pass_train, pass_test,
    heldout."""
    data = json.loads((Path(edits_dir) / "edits.json").read_text())
    if data["kind"] == "classify":
        model, tok = load_classifier(base or data["base"], data_dir=data_dir, device=device)
    else:
        from forgetlab.core.models import load_causal_lm
        model, tok = load_causal_lm(base or data["model"], data_dir=data_dir, device=device)
    max_len = data.get("max_len", max_len)
    enc = lambda ex: encode(tok, ex, max_len)  # noqa: E731
    sets = {s: [{"fail": enc(e["fail"]), "adapt": [enc(a) for a in e["adapt"]]} for e in data[s]]
            for s in ("train", "test")}
    for s in ("pass_train", "pass_test", "heldout"):
        sets[s] = [enc(e) for e in data[s]]
    return model, tok, data, sets


def pad_id_of(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


# ============================================================================ stage: base classifier
def train_classifier(*, model: str, out: str, data_dir: str, source: str, n_train: int, heldout_fraction: float,
                     max_len: int, epochs: int, lr: float, batch_size: int, weight_decay: float, warmup_steps: int,
                     grad_clip: float, seed: int, device: str) -> dict:
    """Fine-tune an encoder into the 3-way fact-verification classifier (AdamW with `weight_decay`, linear warmup
    over `warmup_steps`, gradients clipped to norm `grad_clip`); the pages in the held-out fraction are never
    trained on (the edit dataset comes from them). Writes a save_pretrained folder + split.json.
    device: where it trains (models.resolve_device)."""
    from forgetlab.core.models import resolve_device
    from forgetlab.core.train import TrainConfig, train
    device = resolve_device(device)
    check_positive_int("n_train", n_train)
    check_fraction("heldout_fraction", heldout_fraction, allow_zero=False)
    seed_everything(seed)
    rest, held = split_by_group(load_fact_pairs(source, data_dir), heldout_fraction, seed)
    train_ex = random.Random(seed).sample(rest, min(n_train, len(rest)))
    clf, tok = load_classifier(model, data_dir=data_dir, device=device)
    items = [encode(tok, e, max_len) for e in train_ex]
    pad = pad_id_of(tok)
    cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed)
    losses = train(clf, items, cfg, collate=lambda its: collate(its, pad), desc="fine-tune classifier")
    info = {"model": model, "source": source, "n_train": len(train_ex), "n_heldout_pool": len(held),
            "max_len": max_len, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
            "final_loss": float(np.mean(losses[-20:])), "losses": losses,
            "heldout_groups": sorted({e["group"] for e in held})}
    with atomic_path(out) as tmp:
        clf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(Path(tmp) / "train_info.json", info)
    return info


# ============================================================================ stage: classifier edit dataset
PARAPHRASE_PROMPT = ("Rewrite the following claim in different words. Keep its meaning and every name and number. "
                     "Answer with the rewritten claim only.\nClaim: {claim}")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")


def generate_paraphrases(texts: Sequence[str], model: str = "smollm2-135m", data_dir: str = "data",
                         max_new_tokens: int = 40, batch_size: int = 16, desc: str | None = "paraphrase",
                         device: str = "cpu") -> list[str]:
    """One greedy paraphrase per text from an instruct causal LM (chat template) on `device`, first line only."""
    from forgetlab.core.models import load_causal_lm
    lm, tok = load_causal_lm(model, data_dir=data_dir, device=device)
    prompts = [tok.apply_chat_template([{"role": "user", "content": PARAPHRASE_PROMPT.format(claim=t)}],
                                       tokenize=False, add_generation_prompt=True) for t in texts]
    out = []
    for text in generate(lm, tok, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], max_new_tokens,
                         batch_size=batch_size, desc=desc):
        text = text.strip().split("\n")[0].strip()
        text = re.sub(r"^(the )?(rewritten |new )?(claim|paraphrase|sentence)( is)?\s*:\s*", "", text, flags=re.I)
        out.append(text.strip(' "'))
    return out


def paraphrase_filter(original: str, paraphrase: str, similarity: float, *, min_similarity: float,
                      length_ratio: Sequence[float]) -> str | None:
    """Why a paraphrase is rejected (None if kept): empty, a copy, numbers changed, its length over the original's
    outside [length_ratio[0], length_ratio[1]], or its similarity below min_similarity."""
    norm = lambda s: re.sub(r"\W+", " ", s.lower()).strip()  # noqa: E731
    if not paraphrase.strip():
        return "empty"
    if norm(paraphrase) == norm(original):
        return "copy"
    if sorted(_NUM.findall(original)) != sorted(_NUM.findall(paraphrase)):
        return "numbers"
    if not length_ratio[0] <= len(paraphrase) / max(1, len(original)) <= length_ratio[1]:
        return "length"
    if similarity < min_similarity:
        return "similarity"
    return None


def build_edits(*, base: str, out: str, data_dir: str, n_scored: int, n_pass: int, n_heldout: int, test_fraction: float,
                gen_model: str, max_new_tokens: int, min_similarity: float, length_ratio: list[float], max_len: int,
                seed: int, device: str) -> dict:
    """Edit dataset for the classifier from held-out pages: fail samples (the base model is wrong; target = the
    gold label), adapt samples (paraphrased claims of the fail samples, same evidence and label; generated by
    `gen_model` and filtered), pass samples (the model is right), and a separate held-out set. Fail samples are
    split into editor-train / test by page. device: where the three models run (models.resolve_device)."""
    from forgetlab.core.models import resolve_device, sentence_embeddings
    device = resolve_device(device)
    check_positive_int("n_scored", n_scored)
    check_positive_int("n_heldout", n_heldout)
    check_fraction("test_fraction", test_fraction, allow_zero=False)
    ratio = check_list("length_ratio", length_ratio, float)
    if len(ratio) != 2 or not 0 < ratio[0] <= 1 <= ratio[1]:
        raise ValueError(f"parameter 'length_ratio' must be [low, high] with 0 < low <= 1 <= high, got "
                         f"{length_ratio!r}")
    seed_everything(seed)
    info = json.loads((Path(base) / "train_info.json").read_text())
    groups = set(info["heldout_groups"])
    pool = [e for e in load_fact_pairs(info["source"], data_dir) if e["group"] in groups]
    rng = random.Random(seed)
    rng.shuffle(pool)
    heldout, pool = pool[:n_heldout], pool[n_heldout:n_heldout + n_scored]
    clf, tok = load_classifier(base, data_dir=data_dir, device=device)
    ok = predictions(clf, [encode(tok, e, max_len) for e in pool], pad_id=pad_id_of(tok), desc="base predictions")
    fails = [e for e, c in zip(pool, ok) if not c]
    passes = [e for e, c in zip(pool, ok) if c][:n_pass]
    paraphrases = generate_paraphrases([e["claim"] for e in fails], gen_model, data_dir, max_new_tokens,
                                       device=device)
    sims = (sentence_embeddings([e["claim"] for e in fails], data_dir=data_dir, device=device)
            * sentence_embeddings(paraphrases, data_dir=data_dir, device=device)).sum(-1).tolist() if fails else []
    reasons = defaultdict(int)
    records = []
    for e, p, s in zip(fails, paraphrases, sims):
        why = paraphrase_filter(e["claim"], p, s, min_similarity=min_similarity, length_ratio=ratio)
        reasons[why or "kept"] += 1
        adapt = [] if why else [{**e, "id": e["id"] + "/para", "claim": p, "similarity": round(s, 4)}]
        records.append({"fail": e, "adapt": adapt, "paraphrase": p, "similarity": round(s, 4), "rejected": why})
    fail_groups = sorted({r["fail"]["group"] for r in records})
    random.Random(seed).shuffle(fail_groups)
    test_groups = set(fail_groups[:round(test_fraction * len(fail_groups))])
    half = round(test_fraction * len(passes))
    data = {"kind": "classify", "base": base, "source": info["source"], "max_len": max_len,
            "train": [r for r in records if r["fail"]["group"] not in test_groups],
            "test": [r for r in records if r["fail"]["group"] in test_groups],
            "pass_train": passes[half:], "pass_test": passes[:half], "heldout": heldout,
            "stats": {"n_scored": len(pool), "base_acc_scored": ok.float().mean().item(), "n_fail": len(fails),
                      "n_pass": len(passes), "paraphrases_generated": len(paraphrases),
                      "paraphrases_kept": reasons["kept"], "rejected": {k: v for k, v in reasons.items() if k != "kept"},
                      "gen_model": gen_model, "min_similarity": min_similarity}}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "edits.json", data)
    return data["stats"]


# ============================================================================ stage: QA edit dataset (causal LM)
def qa_prompt(example: dict) -> str:
    """Open-book QA prompt; template 1 is the reworded prompt used for adapt samples without a second question."""
    if example.get("template", 0) == 1:
        return f"Read this: {example['context']}\nNow answer. {example['question']}\nThe answer is:"
    return f"Context: {example['context']}\nQuestion: {example['question']}\nAnswer:"


def qa_examples(source: str, data_dir: str | Path, *, max_answer_words: int, max_context_chars: int) -> list[dict]:
    """squad_shifts questions with answers of at most max_answer_words words, the context cut to the sentence
    holding the answer (at most max_context_chars characters): {"id", "context", "question", "answer",
    "paragraph"} in file order."""
    from forgetlab.data import load_squad
    out = []
    for a_i, art in enumerate(load_squad(source, data_dir)):
        for p_i, par in enumerate(art["paragraphs"]):
            # the rule's pieces as they are (not stripped): a context's first and last sentence keep any space
            # around the paragraph, as in the committed runs
            sents = SENTENCE_RULES["punctuation"].split(par["context"])
            for q in par["qas"]:
                ans = q["answers"][0].strip()
                hold = [s for s in sents if ans in s]
                if not ans or len(ans.split()) > max_answer_words or not hold or len(hold[0]) > max_context_chars:
                    continue
                out.append({"id": q["id"], "context": hold[0], "question": q["question"].strip(), "answer": ans,
                            "paragraph": f"{source}/{a_i}/{p_i}"})
    return out


def build_qa_edits(*, model: str, out: str, data_dir: str, source: str, n_scored: int, n_heldout: int,
                   test_fraction: float, text_source: str, n_text: int, text_len: int, max_len: int,
                   max_answer_words: int, max_context_chars: int, seed: int, device: str) -> dict:
    """QA edits for a causal LM: fail samples (the model's teacher-forced answer is not the gold one; target = the
    gold answer), adapt samples (other questions with the same answer in the same paragraph where available,
    else the question under a reworded prompt), pass samples (answered right), unrelated text for perplexity.
    device: where the model answers (models.resolve_device)."""
    from forgetlab.core.models import load_causal_lm, resolve_device
    from forgetlab.data import load_corpus
    device = resolve_device(device)
    check_positive_int("n_scored", n_scored)
    check_positive_int("n_heldout", n_heldout)
    check_positive_int("max_answer_words", max_answer_words)
    check_positive_int("max_context_chars", max_context_chars)
    seed_everything(seed)
    lm, tok = load_causal_lm(model, data_dir=data_dir, device=device)
    allq = qa_examples(source, data_dir, max_answer_words=max_answer_words, max_context_chars=max_context_chars)
    order = list(range(len(allq)))
    random.Random(seed).shuffle(order)
    chosen = [allq[i] for i in order[:n_scored]]
    ok = predictions(lm, [encode(tok, e, max_len) for e in chosen], batch_size=16, pad_id=pad_id_of(tok),
                     desc="score questions")
    by_par = defaultdict(list)
    for e in allq:
        by_par[(e["paragraph"], e["answer"].lower())].append(e)
    records, n_sibling = [], 0
    for e, c in zip(chosen, ok):
        if c:
            continue
        sib = [s for s in by_par[(e["paragraph"], e["answer"].lower())] if s["id"] != e["id"]][:2]
        n_sibling += bool(sib)
        adapt = [{**s, "answer": e["answer"]} for s in sib] or [{**e, "id": e["id"] + "/t1", "template": 1}]
        records.append({"fail": e, "adapt": adapt, "adapt_kind": "same_fact" if sib else "reworded_prompt"})
    passes = [e for e, c in zip(chosen, ok) if c]
    if len(passes) < 2:  # locality (KL on pass samples) and the drawdown test need at least one on each side
        raise ValueError(f"model {model!r} answers {len(passes)} of the {len(chosen)} scored questions right; the "
                         "locality and drawdown sets need at least 2: raise 'qa_n_scored' or use a model that knows "
                         "some answers")
    pars = sorted({r["fail"]["paragraph"] for r in records})
    random.Random(seed).shuffle(pars)
    test_pars = set(pars[:round(test_fraction * len(pars))])
    half = round(test_fraction * len(passes))
    text_docs = load_corpus(text_source, data_dir)
    text = [d["text"][:2000] for d in random.Random(seed).sample(text_docs, min(n_text, len(text_docs)))]
    data = {"kind": "qa", "model": model, "source": source, "max_len": max_len, "text": text, "text_len": text_len,
            "train": [r for r in records if r["fail"]["paragraph"] not in test_pars],
            "test": [r for r in records if r["fail"]["paragraph"] in test_pars],
            "pass_train": passes[half:], "pass_test": passes[:half],
            # held-out set: other questions of the same source, never scored for the edit sets
            "heldout": [allq[i] for i in order[n_scored:n_scored + n_heldout]],
            "stats": {"n_scored": len(chosen), "base_acc_scored": ok.float().mean().item(),
                      "n_fail": len(records), "n_pass": len(passes), "adapt_same_fact": n_sibling,
                      "adapt_reworded_prompt": len(records) - n_sibling}}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "edits.json", data)
    return data["stats"]


def text_batches(tok, texts: Sequence[str], text_len: int, batch_size: int = 8) -> list[dict]:
    """Fixed-length token windows of unrelated text for perplexity."""
    seqs = [tok(t, add_special_tokens=False)["input_ids"][:text_len] for t in texts]
    seqs = [s for s in seqs if len(s) >= 8]
    pad = pad_id_of(tok)
    return [{k: v for k, v in collate([{"input_ids": s, "labels": s} for s in seqs[i:i + batch_size]], pad).items()
             if k != "labels"} for i in range(0, len(seqs), batch_size)]


# ============================================================================ stage: MEND editors
def train_editors(*, edits: str, out: str, data_dir: str, top_k: int, controls: list[str], rank: int, steps: int,
                  edit_batch: int, loc_batch: int, lr: float, lr_lr: float, edit_lr: float, c_edit: float, c_loc: float,
                  val_edits: int, eval_every: int, patience: int, saliency_batch: int, saliency_samples: int, seed: int,
                  device: str) -> dict:
    """Layer saliency on the editor-train fail samples (the first `saliency_samples`, 0 = all): per mini-batch of
    `saliency_batch` (SaLEM's choice of block) and per single edit, with the gold targets and with permuted
    (wrong) ones. Then MEND editors, each trained to early stopping on `val_edits` held-out training edits: SaLEM
    (the most salient block), MEND on the last `top_k` blocks, and the single-block `controls` (a list of
    CONTROLS). A block set two names share is trained once. Writes out/<name>/editor.{pt,json} and
    out/saliency.json (profiles, chosen blocks, training curves). device: where the model and the editors run
    (models.resolve_device)."""
    from forgetlab.core.models import resolve_device
    device = resolve_device(device)
    check_positive_int("top_k", top_k)
    check_positive_int("val_edits", val_edits)
    check_positive_int("saliency_samples", saliency_samples, allow_zero=True)
    check_type("controls", controls, list)
    seed_everything(seed)
    model, tok, data, sets = load_setting(edits, data_dir=data_dir, device=device)
    pad = pad_id_of(tok)
    layers = mlp_layers(model)
    if top_k > len(layers):
        raise ValueError(f"parameter 'top_k' must be <= the number of layers ({len(layers)}), got {top_k}")
    order = list(range(len(sets["train"])))
    random.Random(seed).shuffle(order)
    if val_edits >= len(order):
        raise ValueError(f"parameter 'val_edits' must be < the number of editor-train edits ({len(order)}), "
                         f"got {val_edits}")
    val = [sets["train"][i] for i in sorted(order[:val_edits])]
    train = [sets["train"][i] for i in sorted(order[val_edits:])]
    n_sal = saliency_samples or None
    fails = [e["fail"] for e in sets["train"]][:n_sal]
    sal = layer_saliency(model, fails, layers, saliency_batch, pad)
    permuted = [encode(tok, e, data["max_len"]) for e in permuted_targets([r["fail"] for r in data["train"]][:n_sal],
                                                                          seed)]
    per_edit = {"gold": layer_saliency(model, fails, layers, 1, pad, desc="saliency per edit"),
                "permuted": layer_saliency(model, permuted, layers, 1, pad, desc="saliency per edit, permuted")}
    chosen = choose_layers(sal, top_k, controls, seed)
    scale = sal.mean(0).max()  # saliencies are stored relative to the largest (JSON keeps 6 decimals)
    result = {"saliency_batches": (sal / scale).tolist(), "saliency": (sal.mean(0) / scale).tolist(),
              "saliency_scale_1e6": scale.item() * 1e6, "salient_layer": chosen["salem"][0],
              "argmax_batches": torch.bincount(sal.argmax(1), minlength=len(layers)).tolist(),
              "per_edit": {k: (v / v.max(1, keepdim=True).values).tolist() for k, v in per_edit.items()},
              "per_edit_shift": saliency_shift(per_edit["gold"], per_edit["permuted"]),
              "layers": chosen, "n_train_edits": len(train), "n_val_edits": len(val), "n_loc": len(sets["pass_train"])}
    logs, trained = {}, {}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, idx in chosen.items():
            key = tuple(idx)
            if key not in trained:
                seed_everything(seed)
                editor = MEND(model, [n for i in idx for n in layers[i]], rank=rank, edit_lr=edit_lr)
                t0 = time.perf_counter()
                log = train_mend(model, editor, train, sets["pass_train"], steps=steps, edit_batch=edit_batch,
                                 loc_batch=loc_batch, lr=lr, lr_lr=lr_lr, c_edit=c_edit, c_loc=c_loc,
                                 val_edits=val, val_loc=sets["pass_train"][:loc_batch], eval_every=eval_every,
                                 patience=patience, pad_id=pad, seed=seed, desc=f"MEND {name}")
                trained[key] = (name, editor, log, round(time.perf_counter() - t0, 1))
            first, editor, log, seconds = trained[key]
            logs[name] = {**log, "same_as": first if first != name else None, "edit_lr_init": edit_lr}
            save_editor(editor, tmp / name, {"layers": idx, "train_s": seconds, "edit_lrs": editor.edit_lrs.tolist(),
                                             "edit_lr_init": edit_lr, "same_as": logs[name]["same_as"]})
        write_json(tmp / "saliency.json", {**result, "train_logs": logs})
    return result


# the checkpoint steps of dvc.yaml: `python -m forgetlab.papers.salem.experiment <step> --flag value ...`
STEPS = (train_classifier, build_edits, build_qa_edits, train_editors)

if __name__ == "__main__":
    from forgetlab.repro.cli import run
    run(list(STEPS), description=__doc__)
