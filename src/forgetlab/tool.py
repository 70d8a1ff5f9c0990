"""`forgetlab`: the repository's attacks, selective pruning and layer saliency on your own model and texts.

    forgetlab attack   --original MODEL --unlearned MODEL --forget TEXTS --retain TEXTS [--relearn-k 0 8 32]
                       [--precisions full nf4 rtn4] [--out DIR]
    forgetlab prune    --model MODEL --forget TEXTS --retain TEXTS --ff-frac F [--attn-frac F] [--scoring abs]
                       [--steps N] --out DIR
    forgetlab saliency --model MODEL --edits FILE [--json FILE]

MODEL is a hub id, a folder written by `save_pretrained`, or a default model name (smollm2-135m). TEXTS is a .txt
file (documents separated by blank lines), a .jsonl file with a "text" field, a folder of such files,
hf:<dataset>[:split][@revision], or a built-in corpus name (code, text, python, ...); its documents are split into
training documents (relearning, pruning statistics) and held-out documents (every score), as in notebook 06.

`attack` is notebook 06's attack on any pair of checkpoints, with the notebook's own functions and defaults
(forgetlab.papers.forgetting_robustness.experiment): relearning on k forget windows, 4-bit quantization (simulated
exactly), and both.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from forgetlab.core import metrics
from forgetlab.core.utils import check_fraction, check_positive_int
from forgetlab.papers.forgetting_robustness import experiment as robustness

# notebook 06's defaults are robustness.run's (tests/test_tool.py checks they equal params.yaml's)
NB06 = {k: p.default for k, p in inspect.signature(robustness.run).parameters.items()}


# ================================================================ inputs, checked before any model is loaded
def check_texts(name: str, spec: str, data_dir: str) -> None:
    """A TEXTS argument names readable documents (built-in corpora are checked by their loader later)."""
    from .data import CORPORA
    from .data.corpora import HF_CORPORA
    from .data.texts import FORMS, is_text_spec, load_texts
    if spec in CORPORA or spec in HF_CORPORA or spec.startswith("hf:"):
        return
    if not is_text_spec(spec):
        raise ValueError(f"--{name} {spec!r}: not a corpus name ({', '.join(CORPORA)}) nor {'; '.join(FORMS)}")
    load_texts(spec)  # raises a ValueError naming the spec when a file is missing, malformed or empty


def model_config(name: str, model: str, data_dir: str):
    """The config of a model argument; refuses an architecture without an ArchMap entry (before loading weights)."""
    from forgetlab.core import models, neurons
    try:
        config = models.model_config(model, data_dir)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ValueError(f"--{name} {model!r}: {e}") from None
    family = neurons.ALIASES.get(config.model_type, config.model_type)
    if family not in neurons.ARCH_MAPS:
        raise ValueError(f"--{name} {model!r}: architecture {config.model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(neurons.ARCH_MAPS))}. To add it, write one ArchMap entry (where its "
                         "blocks, FF down projection and attention output projection live) in "
                         "src/forgetlab/core/neurons.py, or an ALIASES entry if it shares a table with a family above")
    if models.is_encoder(config):
        raise ValueError(f"--{name} {model!r}: {config.model_type!r} is an encoder; this command needs a causal LM")
    return config


def load_tokenizer(model: str, data_dir: str):
    """The model's tokenizer (cheap: windows are cut before any weights load); one with neither a pad nor an
    end-of-sequence token is refused by name."""
    from transformers import AutoTokenizer

    from forgetlab.core.models import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model(model, data_dir))
    if tok.pad_token is None and tok.eos_token is None:
        raise ValueError(f"model {model!r}: its tokenizer has no padding token and no end-of-sequence token to pad "
                         "with; set tokenizer.pad_token and save it with the model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # as forgetlab.core.models does
    return tok


def load_model(model: str, data_dir: str, device: str):
    """The model on `device` (models.resolve_device: "auto" is the GPU when there is one)."""
    from forgetlab.core.models import load_causal_lm, resolve_device
    return load_causal_lm(model, data_dir=data_dir, device=resolve_device(device))[0]


def windows(tok, forget: str, retain: str, **kw) -> dict:
    """notebook 06's held-out and training windows of both text sets; too little text is an error naming them."""
    try:
        return robustness.load_sets(tok, forget=forget, retain=retain, **kw)
    except ValueError as e:
        raise ValueError(f"--forget {forget!r} / --retain {retain!r}: {e}; each set needs enough documents of at "
                         f"least --seq-len {kw['seq_len']} tokens for --n-train-seqs, --n-val-seqs and "
                         "--n-eval-seqs windows") from None


# ================================================================ attack
def attack(original: str, unlearned: str, forget: str, retain: str, *, relearn_k: list[int] = NB06["relearn_ks"],
           precisions: list[str] = ("full", *NB06["precisions"]), seq_len: int = NB06["seq_len"],
           n_train_seqs: int = NB06["n_train_seqs"], n_val_seqs: int = NB06["n_val_seqs"],
           n_eval_seqs: int = NB06["n_eval_seqs"],
           max_per_doc: int = NB06["max_per_doc"], test_fraction: float = NB06["test_fraction"],
           max_docs: int = NB06["max_docs"], batch_size: int = NB06["batch_size"],
           relearn_lr: float = NB06["relearn_lr"], relearn_epochs: int = NB06["relearn_epochs"],
           relearn_batch_size: int = NB06["relearn_batch_size"], weight_decay: float = NB06["weight_decay"],
           warmup_steps: int = NB06["warmup_steps"], grad_clip: float = NB06["grad_clip"], n_boot: int = 1000,
           seed: int = NB06["seed"],
           data_dir: str = "data", out: str | None = None, device: str = "auto") -> dict:
    """Relearning and 4-bit attacks on an unlearned model, scored against its original (notebook 06's attack).

    For every attack "k=K|P" (relearn on K forget training windows, then quantize with precision P): forget and
    retain top-1 accuracy on notebook 06's test windows (the held-out windows after the n_val_seqs it tunes on) of
    the unlearned model attacked so, the original quantized the same way (not relearned), and
      share        = (acc_attacked - acc_unlearned) / (acc_original - acc_unlearned)   metrics "share_full_gap"
      gap_closure  = 1 - (acc_original@P - acc_attacked) / (acc_original - acc_unlearned)  same precision
    on the forget set (forgetlab.core.metrics.bootstrap_recovery, notebook 06's and 04's definitions), each with a
    bootstrap interval over windows; both NaN when the removed gap's own interval reaches 0 (nothing told apart
    from noise was removed). The retain columns tell knowledge coming back from uniform damage."""
    from forgetlab.core.plots import save_figure
    from forgetlab.core.utils import seed_everything, write_json
    from forgetlab.methods import quantization
    ks = sorted({check_positive_int("relearn-k", k, allow_zero=True) for k in relearn_k} | {0})  # 0: the model itself
    precs = list(dict.fromkeys(precisions))
    for p in precs:
        try:
            quantization.parse_precision(p)
        except ValueError as e:
            raise ValueError(f"--precisions: {e}") from None
    if "full" not in precs:
        precs.insert(0, "full")
    if max(ks) > n_train_seqs:
        raise ValueError(f"--relearn-k asks for {max(ks)} windows, more than --n-train-seqs = {n_train_seqs}")
    check_fraction("test_fraction", test_fraction)
    for name, spec in (("forget", forget), ("retain", retain)):
        check_texts(name, spec, data_dir)
    configs = {name: model_config(name, m, data_dir) for name, m in (("original", original), ("unlearned", unlearned))}
    a, b = configs["original"], configs["unlearned"]
    if (a.model_type, a.vocab_size, a.hidden_size, a.num_hidden_layers) != \
            (b.model_type, b.vocab_size, b.hidden_size, b.num_hidden_layers):
        raise ValueError(f"--unlearned {unlearned!r} is not the same architecture as --original {original!r}: "
                         f"{b.model_type}/vocab {b.vocab_size}/hidden {b.hidden_size}/{b.num_hidden_layers} layers vs "
                         f"{a.model_type}/vocab {a.vocab_size}/hidden {a.hidden_size}/{a.num_hidden_layers} layers")

    seed_everything(seed)
    sets = windows(load_tokenizer(original, data_dir), forget, retain, data_dir=data_dir, seq_len=seq_len,
                   n_train_seqs=n_train_seqs, n_val_seqs=n_val_seqs, n_eval_seqs=n_eval_seqs,
                   max_per_doc=max_per_doc,
                   test_fraction=test_fraction, max_docs=max_docs, batch_size=batch_size, seed=seed)
    orig_model = load_model(original, data_dir, device)
    originals = {}
    for prec in tqdm(precs, desc="original"):
        with quantization.quantized(orig_model, prec):
            originals[prec] = robustness.evaluate(orig_model, sets)
    del orig_model
    model = load_model(unlearned, data_dir, device)
    seed_everything(seed)
    grid = robustness.attack_grid(model, sets, robustness.sequence_items(sets["forget"]["train"]), ks=ks,
                                  precisions=[p for p in precs if p != "full"], lr=relearn_lr,
                                  epochs=relearn_epochs, batch_size=relearn_batch_size, weight_decay=weight_decay,
                                  warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed, desc="attacks")
    o, u = originals["full"], grid["k=0|full"]
    n = o["forget"]["n"]
    rows = {}
    for key, res in grid.items():
        oq = originals[key.split("|")[1]]
        views = {v: metrics.bootstrap_recovery(v, res["forget"]["hits"], u["forget"]["hits"], o["forget"]["hits"],
                                               oq["forget"]["hits"], n, n_boot=n_boot, seed=seed)
                 for v in ("share_full_gap", "gap_closure")}
        rows[key] = {
            "forget": res["forget"]["top1"], "retain": res["retain"]["top1"],
            "original_forget": oq["forget"]["top1"], "original_retain": oq["retain"]["top1"],
            "share": views["share_full_gap"]["value"], "share_ci": views["share_full_gap"]["ci"],
            "gap_closure": views["gap_closure"]["value"], "gap_closure_ci": views["gap_closure"]["ci"]}
    result = {
        "original": original, "unlearned": unlearned, "forget": forget, "retain": retain,
        "removed_gap": {"forget": o["forget"]["top1"] - u["forget"]["top1"],
                        "retain": o["retain"]["top1"] - u["retain"]["top1"]},
        "n_eval_windows": len(n), "attacks": rows,
        "settings": {"relearn_k": ks, "precisions": precs, "seq_len": seq_len, "n_train_seqs": n_train_seqs,
                     "n_val_seqs": n_val_seqs, "n_eval_seqs": n_eval_seqs, "relearn_lr": relearn_lr,
                     "relearn_epochs": relearn_epochs, "relearn_batch_size": relearn_batch_size,
                     "weight_decay": weight_decay, "warmup_steps": warmup_steps, "grad_clip": grad_clip,
                     "n_boot": n_boot, "seed": seed}}
    if out is not None:
        write_json(Path(out) / "attack.json", result)
        save_figure(attack_figure(result), out, "attack")
    return result


def attack_figure(result: dict):
    """Forget top-1 of the attacked unlearned model and of the original attacked the same way, per attack."""
    import matplotlib.pyplot as plt

    from forgetlab.core.plots import set_style
    set_style()
    keys = list(result["attacks"])
    rows = [result["attacks"][k] for k in keys]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(keys) + 2), 3.6))
    ax.bar(x - 0.2, [r["original_forget"] for r in rows], 0.4, label="original (same precision)")
    ax.bar(x + 0.2, [r["forget"] for r in rows], 0.4, label="unlearned, attacked")
    for i, r in enumerate(rows):
        share = "n/a" if np.isnan(r["share"]) else f"{r['share']:+.2f}"
        ax.text(x[i] + 0.2, r["forget"], share, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylabel("forget top-1 (held-out)")
    ax.set_title("Attacks on the unlearned model (label: share of the removed gap recovered)")
    ax.legend(fontsize=8)
    return fig


def print_attack(result: dict) -> None:
    gap = result["removed_gap"]
    print(f"removed gap (original - unlearned, full precision): forget {gap['forget']:+.4f}, "
          f"retain {gap['retain']:+.4f}  ({result['n_eval_windows']} held-out windows per set)")
    print(f"{'attack':<12} {'forget':>7} {'orig@P':>7} {'retain':>7} {'orig@P':>7} "
          f"{'share [95% CI]':>24} {'gap closure [95% CI]':>24}")

    def fmt(v, ci):
        return "undefined" if np.isnan(v) else f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    for key, r in result["attacks"].items():
        print(f"{key:<12} {r['forget']:7.4f} {r['original_forget']:7.4f} {r['retain']:7.4f} "
              f"{r['original_retain']:7.4f} {fmt(r['share'], r['share_ci']):>24} "
              f"{fmt(r['gap_closure'], r['gap_closure_ci']):>24}")


# ================================================================ prune
def prune(model: str, forget: str, retain: str, *, ff_frac: float, out: str, attn_frac: float = 0.0,
          scoring: str = "abs", steps: int = 1, seq_len: int = NB06["seq_len"],
          n_train_seqs: int = NB06["n_train_seqs"], n_val_seqs: int = NB06["n_val_seqs"],
          n_eval_seqs: int = NB06["n_eval_seqs"],
          max_per_doc: int = NB06["max_per_doc"], test_fraction: float = NB06["test_fraction"],
          max_docs: int = NB06["max_docs"], batch_size: int = NB06["batch_size"], eps_ff: float = NB06["eps_ff"],
          seed: int = NB06["seed"], data_dir: str = "data", device: str = "auto") -> dict:
    """Selective pruning (Pochinkov & Schoots): `steps` steps, each pruning the top ff_frac (attn_frac) of all FF
    (attention pre-out) neurons by forget/retain importance, with statistics of the model as already pruned.
    The pruned neurons are then zeroed in the weights (input columns of the output projections), so out/ is a plain
    checkpoint that `from_pretrained` loads; out/prune.json holds the pruned neurons and the forget/retain top-1
    curve on held-out windows."""
    from forgetlab.core import neurons
    from forgetlab.core.plots import save_figure
    from forgetlab.core.tokens import iter_batches
    from forgetlab.core.utils import atomic_path, seed_everything, write_json
    from forgetlab.methods import pruning
    check_positive_int("steps", steps)
    cfg = pruning.PruneConfig(ff_frac=ff_frac, attn_frac=attn_frac, scoring=scoring, eps_ff=eps_ff)
    if Path(out).exists():
        raise FileExistsError(f"--out {out} exists: choose a new folder")
    for name, spec in (("forget", forget), ("retain", retain)):
        check_texts(name, spec, data_dir)
    model_config("model", model, data_dir)
    seed_everything(seed)
    tok = load_tokenizer(model, data_dir)
    sets = windows(tok, forget, retain, data_dir=data_dir, seq_len=seq_len, n_train_seqs=n_train_seqs,
                   n_val_seqs=n_val_seqs, n_eval_seqs=n_eval_seqs, max_per_doc=max_per_doc,
                   test_fraction=test_fraction,
                   max_docs=max_docs, batch_size=batch_size, seed=seed)
    lm = load_model(model, data_dir, device)

    def evaluate(m):
        res = robustness.evaluate(m, sets)
        return {"forget_top1": res["forget"]["top1"], "retain_top1": res["retain"]["top1"]}
    history, pruner = pruning.iterative_prune(
        lm, list(iter_batches(sets["forget"]["train"], batch_size)),
        list(iter_batches(sets["retain"]["train"], batch_size)), cfg, steps, evaluate, seed=seed)
    pruner.remove()
    for kind, mask in pruner.pruned.items():
        robustness.zero_pruned_columns_(lm, mask, kind)
    baked = evaluate(lm)
    pruned = {kind: {str(layer): mask[layer].nonzero().flatten().tolist() for layer in range(mask.shape[0])
                     if mask[layer].any()} for kind, mask in pruner.pruned.items()}
    result = {"model": model, "forget": forget, "retain": retain, "history": history, "zeroed_weights": baked,
              "pruned": pruned, "n_pruned": {k: int(m.sum()) for k, m in pruner.pruned.items()},
              "n_neurons": {k: list(neurons.n_neurons(lm, k)) for k in pruner.pruned},
              "settings": {"ff_frac": ff_frac, "attn_frac": attn_frac, "scoring": scoring, "steps": steps,
                           "seq_len": seq_len, "n_train_seqs": n_train_seqs, "n_val_seqs": n_val_seqs,
                           "n_eval_seqs": n_eval_seqs, "seed": seed}}
    with atomic_path(out) as tmp:
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "prune.json", result)
        save_figure(prune_figure(result), tmp, "prune")
    return result


def prune_figure(result: dict):
    import matplotlib.pyplot as plt

    from forgetlab.core.plots import set_style
    set_style()
    h = result["history"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label in (("forget_top1", "forget"), ("retain_top1", "retain")):
        ax.plot([r["step"] for r in h], [r[key] for r in h], marker="o", label=label)
    ax.set_xlabel("pruning step")
    ax.set_ylabel("top-1 (held-out)")
    ax.set_title("Selective pruning")
    ax.legend()
    return fig


# ================================================================ saliency
def read_edits(path: str) -> list[dict]:
    """Edits from a .jsonl file, one {"prompt": ..., "target": ...} per line."""
    from .data.texts import jsonl_rows
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--edits {path!r}: no such file (a .jsonl with one {{\"prompt\", \"target\"}} per line)")
    edits = []
    for i, row in jsonl_rows(p, ("prompt", "target"), f"--edits {path}"):
        if not (row["prompt"].strip() and row["target"].strip()):
            raise ValueError(f"--edits {path}, line {i}: need non-empty 'prompt' and 'target' strings")
        edits.append(row)
    if not edits:
        raise ValueError(f"--edits {path!r}: no edits")
    return edits


def edit_items(tok, edits: list[dict]) -> list[dict]:
    """prompt + " " + target as one sequence; the loss is on the target tokens only (labels -100 on the prompt)."""
    items = []
    for e in edits:
        prompt = tok(e["prompt"], add_special_tokens=False)["input_ids"]
        target = tok(" " + e["target"].strip(), add_special_tokens=False)["input_ids"]
        items.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return items


def saliency(model: str, edits: str, *, batch_size: int = 10, data_dir: str = "data", json_out: str | None = None,
             device: str = "auto") -> dict:
    """SaLEM's layer saliency for a set of edits: per transformer block, the mean |gradient| of the edit loss over
    the block's MLP matrices (forgetlab.papers.salem.experiment.layer_saliency), averaged over mini-batches; and the
    most salient block of each single edit, to see whether one layer serves them all."""
    from forgetlab.core.utils import write_json
    from forgetlab.papers.salem import experiment as editing
    check_positive_int("batch_size", batch_size)
    rows = read_edits(edits)
    model_config("model", model, data_dir)
    tok = load_tokenizer(model, data_dir)
    items = edit_items(tok, rows)
    lm = load_model(model, data_dir, device)
    layers = editing.mlp_layers(lm)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batched = editing.layer_saliency(lm, items, layers, batch_size, pad, desc="saliency")
    single = editing.layer_saliency(lm, items, layers, 1, pad, desc="per edit")
    mean = batched.mean(0)
    rel = (mean / mean.max()).tolist()
    argmax = single.argmax(1).tolist()
    result = {"model": model, "n_edits": len(items), "saliency": rel, "ranked_layers": editing.pick_layers(mean, len(rel)),
              "per_edit_salient_layer": argmax,
              "per_edit_counts": {str(layer): argmax.count(layer) for layer in sorted(set(argmax))}}
    if json_out is not None:
        write_json(json_out, result)
    return result


def print_saliency(result: dict) -> None:
    print(f"{result['n_edits']} edits; blocks ranked by saliency (relative to the largest):")
    for rank, layer in enumerate(result["ranked_layers"], 1):
        n = result["per_edit_counts"].get(str(layer), 0)
        print(f"{rank:3d}. block {layer:3d}  {result['saliency'][layer]:.4f}  most salient for {n} single edit(s)")


# ================================================================ command line
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="forgetlab", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default="data", help="where default model names resolve (make data)")
    common.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")

    def texts_and_windows(p):
        p.add_argument("--forget", required=True, metavar="TEXTS", help="documents to forget")
        p.add_argument("--retain", required=True, metavar="TEXTS", help="documents to keep")
        for key in ("seq_len", "n_train_seqs", "n_val_seqs", "n_eval_seqs", "max_per_doc", "test_fraction",
                    "batch_size", "seed"):
            p.add_argument("--" + key.replace("_", "-"), type=type(NB06[key]), default=NB06[key],
                           help=f"as notebook 06 (default {NB06[key]})" + (
                               ": held-out windows notebook 06 tunes on, skipped so that the scored windows are its "
                               "test windows" if key == "n_val_seqs" else ""))

    p = sub.add_parser("attack", parents=[common], help="relearning and 4-bit attacks on an unlearned model")
    p.add_argument("--original", required=True, metavar="MODEL")
    p.add_argument("--unlearned", required=True, metavar="MODEL")
    texts_and_windows(p)
    p.add_argument("--relearn-k", nargs="+", type=int, default=list(NB06["relearn_ks"]), metavar="K",
                   help="numbers of forget windows relearned (default %(default)s)")
    p.add_argument("--precisions", nargs="+", default=["full", *NB06["precisions"]], metavar="P",
                   help="full, int8, fp4, nf4, rtn4, rtn4g64, ... (default %(default)s)")
    for key in ("relearn_lr", "relearn_epochs", "relearn_batch_size", "weight_decay", "warmup_steps", "grad_clip"):
        p.add_argument("--" + key.replace("_", "-"), type=type(NB06[key]), default=NB06[key])
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--out", default="forgetlab-attack", help="folder for attack.json and attack.png/pdf")

    p = sub.add_parser("prune", parents=[common], help="selective pruning of a model, saved as a plain checkpoint")
    p.add_argument("--model", required=True, metavar="MODEL")
    texts_and_windows(p)
    p.add_argument("--ff-frac", type=float, required=True, help="share of all FF neurons pruned per step")
    p.add_argument("--attn-frac", type=float, default=0.0, help="share of attention pre-out neurons per step")
    p.add_argument("--scoring", default="abs", help="freq, abs, rms, std or random (default abs)")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--out", required=True, help="new folder for the pruned model, prune.json and prune.png/pdf")

    p = sub.add_parser("saliency", parents=[common], help="SaLEM's per-layer saliency of a set of edits")
    p.add_argument("--model", required=True, metavar="MODEL")
    p.add_argument("--edits", required=True, help=".jsonl file, one {\"prompt\", \"target\"} per line")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--json", dest="json_out", help="also write the result to this file")

    args = vars(ap.parse_args(argv))
    command = args.pop("command")
    try:
        from forgetlab.core.models import resolve_device
        resolve_device(args["device"])  # a bad --device fails before any text is read
        if command == "attack":
            res = attack(**args)
            print_attack(res)
            print(f"wrote {args['out']}/attack.json and attack.png/pdf")
        elif command == "prune":
            res = prune(**args)
            for step in res["history"]:
                print(f"step {step['step']}: forget top-1 {step['forget_top1']:.4f}, "
                      f"retain top-1 {step['retain_top1']:.4f}")
            print(f"pruned {res['n_pruned']}; saved the model with zeroed weights to {args['out']}")
        else:
            print_saliency(saliency(**args))
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        sys.exit(f"forgetlab {command}: error: {e}")


if __name__ == "__main__":
    main()
