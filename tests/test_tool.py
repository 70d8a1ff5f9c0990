"""The `forgetlab` command (forgetlab.tool) end to end on tiny random models and tiny text files, and the text
loader every corpus parameter now accepts (forgetlab.data.texts)."""
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, bpe_tokenizer
from forgetlab import tool
from forgetlab.core.models import tiny_model
from forgetlab.core.train import TrainConfig, train
from forgetlab.data import load_split
from forgetlab.data.texts import load_texts
from forgetlab.papers.forgetting_robustness import experiment as robustness

FORGET_DOCS = [f"the cat sat in Paris {i} times and the cat sat again in Paris" for i in range(20)]
RETAIN_DOCS = [f"New York is big and {i} people say New York is big" for i in range(20)]
WINDOWS = ["--seq-len", "8", "--n-train-seqs", "6", "--n-val-seqs", "4", "--n-eval-seqs", "8",
           "--max-per-doc", "2",
           "--test-fraction", "0.4", "--batch-size", "4"]


def save(model, tok, path: Path) -> str:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    (d / "forget.txt").write_text("\n\n".join(FORGET_DOCS) + "\n")
    (d / "retain.jsonl").write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(RETAIN_DOCS)))
    return d


@pytest.fixture(scope="module")
def pair(tmp_path_factory, texts):
    """original: a tiny Llama trained on the forget and retain texts; unlearned: the untrained model."""
    d = tmp_path_factory.mktemp("models")
    tok = bpe_tokenizer()
    base = tiny_model("llama", vocab_size=len(tok), seed=0)
    unlearned = save(base, tok, d / "unlearned")
    seqs = [torch.tensor(tok(t)["input_ids"][:8]) for t in FORGET_DOCS + RETAIN_DOCS]
    items = [{"input_ids": s, "attention_mask": torch.ones_like(s)} for s in seqs if len(s) == 8]
    loss = lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],  # noqa: E731
                          labels=b["input_ids"]).loss
    train(base, items, TrainConfig(lr=3e-3, epochs=15, batch_size=8, seed=0, weight_decay=0.0), loss_fn=loss,
          desc=None)
    return save(base, tok, d / "original"), unlearned


# ---------------------------------------------------------------- texts
def test_texts_in_every_form_and_load_split_takes_them(tmp_path, texts):
    docs = load_texts(str(texts / "forget.txt"))
    assert [d["text"] for d in docs] == FORGET_DOCS and docs[3]["id"].endswith("forget.txt/3")
    rows = load_texts(str(texts / "retain.jsonl"))
    assert [d["text"] for d in rows] == RETAIN_DOCS and rows[2]["n"] == 2
    both = load_texts(str(texts))  # the folder: forget.txt then retain.jsonl (sorted paths)
    assert [d["text"] for d in both] == FORGET_DOCS + RETAIN_DOCS
    import datasets
    datasets.Dataset.from_dict({"text": RETAIN_DOCS[:5]}).save_to_disk(str(tmp_path / "hfdocs"))
    assert [d["text"] for d in load_texts(f"hf:{tmp_path / 'hfdocs'}")] == RETAIN_DOCS[:5]
    train_docs, test_docs = load_split(str(texts / "forget.txt"), 0.4, 0)
    assert len(train_docs) == 12 and len(test_docs) == 8 and not {d["id"] for d in train_docs} & {d["id"] for d in test_docs}
    assert load_split(str(texts / "forget.txt"), 0.4, 0) == (train_docs, test_docs)


def test_bad_texts_are_named(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "bad.jsonl").write_text('{"title": "no text"}\n')
    (tmp_path / "notes.md").write_text("x")
    for spec, msg in ((tmp_path / "empty.txt", "no non-empty document"), (tmp_path / "bad.jsonl", "line 1: each line"),
                      (tmp_path / "notes.md", "unknown file type '.md'"), (tmp_path / "gone.txt", "no such file")):
        with pytest.raises(ValueError, match=msg):
            load_texts(str(spec))
    with pytest.raises(ValueError, match=r"unknown corpus name 'poetry'.*\.txt file"):
        load_split("poetry", 0.3, 0)


# ---------------------------------------------------------------- attack
def test_attack_of_a_model_against_itself_reports_a_zero_gap_and_undefined_shares(pair, texts, tmp_path, capsys):
    original, _ = pair
    tool.main(["attack", "--original", original, "--unlearned", original, "--forget", str(texts / "forget.txt"),
               "--retain", str(texts / "retain.jsonl"), *WINDOWS, "--relearn-k", "0", "2",
               "--precisions", "full", "rtn4",
               "--relearn-epochs", "1", "--n-boot", "50", "--out", str(tmp_path / "self")])
    res = json.loads((tmp_path / "self" / "attack.json").read_text())
    assert res["removed_gap"] == {"forget": 0.0, "retain": 0.0}
    for key in ("k=0|full", "k=0|rtn4", "k=2|full", "k=2|rtn4"):
        row = res["attacks"][key]
        assert math.isnan(row["share"]) and math.isnan(row["gap_closure"])  # written as NaN, as every metrics file
    assert (tmp_path / "self" / "attack.png").is_file() and (tmp_path / "self" / "attack.pdf").is_file()
    assert "undefined" in capsys.readouterr().out


def test_attack_reproduces_notebook_06s_functions_and_its_shares_by_hand(pair, texts):
    """The command's numbers are those of robustness.load_sets / evaluate / attack_grid (notebook 06's stage) on
    the same pair, and its shares follow from the accuracies by the stated formulas."""
    original, unlearned = pair
    kw = dict(seq_len=8, n_train_seqs=6, n_val_seqs=4, n_eval_seqs=8, max_per_doc=2, test_fraction=0.4,
              batch_size=4,
              relearn_lr=3e-3, relearn_epochs=2, relearn_batch_size=2, seed=0, n_boot=200)
    res = tool.attack(original, unlearned, str(texts / "forget.txt"), str(texts / "retain.jsonl"),
                      relearn_k=[0, 4], precisions=["rtn4"], **kw)
    assert set(res["attacks"]) == {"k=0|full", "k=0|rtn4", "k=4|full", "k=4|rtn4"}

    from forgetlab.core.models import load_causal_lm
    from forgetlab.core.utils import seed_everything
    from forgetlab.methods import quantization
    lm, tok = load_causal_lm(original)
    sets = robustness.load_sets(tok, forget=str(texts / "forget.txt"), retain=str(texts / "retain.jsonl"),
                                data_dir="data", seq_len=8, n_train_seqs=6, n_val_seqs=4, n_eval_seqs=8, max_per_doc=2,
                                test_fraction=0.4, max_docs=20000, batch_size=4, seed=0)
    o = robustness.evaluate(lm, sets)
    with quantization.quantized(lm, "rtn4"):
        o_q = robustness.evaluate(lm, sets)
    u_model, _ = load_causal_lm(unlearned)
    seed_everything(0)
    grid = robustness.attack_grid(u_model, sets, robustness.sequence_items(sets["forget"]["train"]), ks=[0, 4],
                                  precisions=["rtn4"], lr=3e-3, epochs=2, batch_size=2, weight_decay=0.0,
                                  warmup_steps=0, grad_clip=1.0, seed=0)
    gap = o["forget"]["top1"] - grid["k=0|full"]["forget"]["top1"]
    assert gap > 0.2 and res["removed_gap"]["forget"] == pytest.approx(gap, abs=1e-12)
    for key, g in grid.items():
        row = res["attacks"][key]
        assert row["forget"] == g["forget"]["top1"] and row["retain"] == g["retain"]["top1"]
        orig_p = o_q if key.endswith("rtn4") else o
        assert row["original_forget"] == orig_p["forget"]["top1"]
        share = (g["forget"]["top1"] - grid["k=0|full"]["forget"]["top1"]) / gap
        closure = 1 - (orig_p["forget"]["top1"] - g["forget"]["top1"]) / gap
        assert row["share"] == pytest.approx(share) and row["gap_closure"] == pytest.approx(closure)
        assert row["share_ci"][0] <= row["share"] + 1e-9 and row["share"] <= row["share_ci"][1] + 1e-9
    assert res["attacks"]["k=0|full"]["share"] == 0.0 and res["attacks"]["k=0|full"]["gap_closure"] == 0.0
    assert res["attacks"]["k=4|full"]["share"] > 0  # relearning 4 forget windows brings some accuracy back


def test_attack_uses_the_shared_recovery_views():
    """tool.attack's share and gap closure are forgetlab.core.metrics' (the views notebooks 04 and 06 use)."""
    from forgetlab.core import metrics
    # two windows of 2 tokens: original 1.0, removed 0.0, original@P 0.5, removed@P 0.5 in both -> closure 1 - 0
    r = metrics.bootstrap_recovery("gap_closure", [1, 1], [0, 0], [2, 2], [1, 1], [2, 2], n_boot=20, seed=0)
    assert r["value"] == 1.0 and r["ci"] == [1.0, 1.0]
    r = metrics.bootstrap_recovery("gap_closure", [0, 1], [0, 0], [2, 2], [1, 1], [2, 2], n_boot=200, seed=0)
    assert r["ci"][0] == pytest.approx(0.5) and r["ci"][1] == pytest.approx(1.0)  # 0.75 overall


# ---------------------------------------------------------------- prune
def known_neuron_model(tok, forget_chars: str, retain_chars: str, known: list[int]):
    """A tiny Llama whose block-0 FF neurons `known` fire only on the forget characters: forget tokens embed along
    e0, retain tokens along e1; the known neurons read e0, every other neuron reads e0 + e1 (the same on both)."""
    model = tiny_model("llama", vocab_size=len(tok), seed=0)
    hidden = model.config.hidden_size
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.normal_(0, 0.01)
        for chars, dim in ((forget_chars, 0), (retain_chars, 1)):
            for c in chars:
                (tid,) = tok(c, add_special_tokens=False)["input_ids"]
                emb[tid, dim] = 1.0
        both = torch.zeros(hidden)
        both[:2] = 1.0
        for block in model.model.layers:
            block.mlp.gate_proj.weight.copy_(both.expand_as(block.mlp.gate_proj.weight))
            block.mlp.up_proj.weight.copy_(both.expand_as(block.mlp.up_proj.weight))
        only = torch.zeros(hidden)
        only[0] = 3.0
        for j in known:
            model.model.layers[0].mlp.gate_proj.weight[j] = only
            model.model.layers[0].mlp.up_proj.weight[j] = only
    return model


def test_prune_finds_the_neurons_only_the_forget_texts_activate_and_saves_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM
    tok = bpe_tokenizer()
    model = known_neuron_model(tok, "xzq", "jmu", known=[5, 11])
    path = save(model, tok, tmp_path / "model")
    (tmp_path / "forget.txt").write_text("\n\n".join("xzq" * (4 + i % 3) for i in range(30)))
    (tmp_path / "retain.txt").write_text("\n\n".join("jmu" * (4 + i % 3) for i in range(30)))
    n_ff = model.config.intermediate_size * model.config.num_hidden_layers
    res = tool.prune(path, str(tmp_path / "forget.txt"), str(tmp_path / "retain.txt"), ff_frac=2 / n_ff,
                     out=str(tmp_path / "pruned"), seq_len=8, n_train_seqs=8, n_val_seqs=2, n_eval_seqs=4, max_per_doc=1,
                     test_fraction=0.3, batch_size=4)
    assert res["pruned"] == {"ff": {"0": [5, 11]}} and res["n_pruned"] == {"ff": 2}
    assert len(res["history"]) == 2 and res["history"][1]["ff_pruned"] == pytest.approx(2 / n_ff)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    down = reloaded.model.layers[0].mlp.down_proj.weight
    assert down[:, [5, 11]].abs().sum() == 0 and down[:, 0].abs().sum() > 0
    # the masked model of the last step and the saved model with zeroed weights score the same
    assert res["zeroed_weights"]["forget_top1"] == pytest.approx(res["history"][-1]["forget_top1"])
    assert (tmp_path / "pruned" / "prune.json").is_file() and (tmp_path / "pruned" / "prune.png").is_file()
    with pytest.raises(FileExistsError, match="exists"):
        tool.prune(path, str(tmp_path / "forget.txt"), str(tmp_path / "retain.txt"), ff_frac=0.1,
                   out=str(tmp_path / "pruned"))


# ---------------------------------------------------------------- saliency
def test_saliency_ranks_layers_and_a_block_without_an_mlp_comes_last(tmp_path, capsys):
    tok = bpe_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), layers=3, seed=1)
    with torch.no_grad():
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(model.model.layers[1].mlp, name).weight.zero_()
    path = save(model, tok, tmp_path / "model")
    edits = tmp_path / "edits.jsonl"
    edits.write_text("".join(json.dumps({"prompt": p, "target": t}) + "\n" for p, t in
                             (("The cat sat in", "Paris"), ("New York is", "big"), ("the cat", "sat"))))
    tool.main(["saliency", "--model", path, "--edits", str(edits), "--batch-size", "2",
               "--json", str(tmp_path / "s.json")])
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["ranked_layers"][-1] == 1 and res["saliency"][1] == 0.0 and max(res["saliency"]) == 1.0
    assert sorted(res["ranked_layers"]) == [0, 1, 2] and sum(res["per_edit_counts"].values()) == 3
    assert 1 not in res["per_edit_salient_layer"]
    out = capsys.readouterr().out
    assert "3 edits" in out and "block   1" in out


# ---------------------------------------------------------------- bad input, before any model is loaded
def run_main(argv) -> str:
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    return str(e.value)


def test_bad_input_is_refused_by_name_before_loading_a_model(tmp_path, texts, pair, monkeypatch):
    from transformers import MambaConfig
    original, _ = pair
    MambaConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1).save_pretrained(tmp_path / "mamba")
    tok = bpe_tokenizer()
    gpt2 = save(tiny_model("gpt2", vocab_size=len(tok)), tok, tmp_path / "gpt2")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "edits.jsonl").write_text('{"prompt": "x"}\n')
    monkeypatch.setattr(tool, "load_model", lambda *a, **k: pytest.fail("no model should be loaded"))
    f, r = str(texts / "forget.txt"), str(texts / "retain.jsonl")
    msg = run_main(["attack", "--original", str(tmp_path / "mamba"), "--unlearned", original, "--forget", f,
                    "--retain", r])
    assert "architecture 'mamba' is not supported" in msg and "llama" in msg and "ArchMap entry" in msg
    msg = run_main(["attack", "--original", original, "--unlearned", gpt2, "--forget", f, "--retain", r])
    assert "not the same architecture" in msg
    msg = run_main(["attack", "--original", original, "--unlearned", original, "--forget", str(tmp_path / "empty.txt"),
                    "--retain", r])
    assert "no non-empty document" in msg
    msg = run_main(["prune", "--model", original, "--forget", "poetry", "--retain", r, "--ff-frac", "0.1",
                    "--out", str(tmp_path / "p")])
    assert "--forget 'poetry'" in msg
    msg = run_main(["prune", "--model", original, "--forget", f, "--retain", r, "--ff-frac", "0", "--out",
                    str(tmp_path / "p")])
    assert "ff_frac" in msg and not (tmp_path / "p").exists()
    msg = run_main(["saliency", "--model", original, "--edits", str(tmp_path / "edits.jsonl")])
    assert "line 1: each line must be a JSON object with 'prompt' and 'target' strings" in msg
    msg = run_main(["attack", "--original", original, "--unlearned", original, "--forget", f, "--retain", r,
                    "--relearn-k", "0", "-8"])
    assert "relearn-k" in msg and ">= 0" in msg


def test_too_short_texts_and_a_tokenizer_without_padding_are_named(tmp_path, pair, texts):
    original, _ = pair
    (tmp_path / "short.txt").write_text("a\n\nb\n\nc")
    msg = run_main(["attack", "--original", original, "--unlearned", original, "--forget", str(tmp_path / "short.txt"),
                    "--retain", str(texts / "retain.jsonl")])
    assert "short.txt" in msg and ("windows" in msg or "no sequences" in msg)
    tok = bpe_tokenizer()
    tok.pad_token = None
    path = save(tiny_model("llama", vocab_size=len(tok)), tok, tmp_path / "nopad")
    msg = run_main(["saliency", "--model", path, "--edits", str(tmp_path / "short.txt")])  # edits checked first
    assert "--edits" in msg
    (tmp_path / "e.jsonl").write_text('{"prompt": "the cat", "target": "sat"}\n')
    msg = run_main(["saliency", "--model", path, "--edits", str(tmp_path / "e.jsonl")])
    assert "no padding token" in msg


def test_defaults_are_notebook_06s_and_the_console_script_runs():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["forgetting_robustness_run"]
    for key in ("seq_len", "n_train_seqs", "n_val_seqs", "n_eval_seqs", "max_per_doc", "test_fraction", "batch_size",
                "relearn_ks", "relearn_lr", "relearn_epochs", "relearn_batch_size", "precisions", "eps_ff", "seed"):
        value = tool.NB06[key]
        assert (list(value) if isinstance(value, tuple) else value) == params[key], key
    # the scored windows are notebook 06's test windows: both commands skip the validation windows it tunes on
    for command in (tool.attack, tool.prune):
        assert inspect.signature(command).parameters["n_val_seqs"].default == params["n_val_seqs"] > 0
    out = subprocess.run([sys.executable, "-m", "forgetlab", "attack", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--unlearned" in out.stdout and "--relearn-k" in out.stdout
    scripts = Path(sys.executable).parent / "forgetlab"
    assert scripts.exists(), "pyproject's [project.scripts] entry is not installed (make install)"
