"""Training under `accelerate launch` (issue 9: the checkpoint stages of the paper-scale profile run on several
GPUs). One real checkpoint step's CLI, `python -m forgetlab.papers.neuroplasticity.experiment fine-tune`, on a tiny
local GPT-2 and a tiny NER dataset saved to disk: launched by `accelerate launch` with one CPU process it writes a
checkpoint that loads back and equals the plain `python -m` run's; with two CPU processes (gloo) it equals the plain run
with twice the batch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, bpe_tokenizer, stage_env, step_argv
from forgetlab.papers.neuroplasticity import experiment as npl

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
COMMON = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
# one CPU process (accelerate's simple launcher)
ONE = [ACCELERATE, "launch", "--cpu", "--num_processes", "1", *COMMON]
# two processes on CPU: `--cpu --num_processes 2` would still start ONE process (accelerate 1.x sends every --cpu
# launch to its simple launcher, which spreads over processes only with --mpirun_hostfile); --multi_gpu starts them
# with torchrun, and with no GPU the Accelerator of train.py joins them with the gloo backend (MULTI_CPU)
TWO = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", *COMMON]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A tiny GPT-2 (save_pretrained) and a tiny conll-format NER DatasetDict (save_to_disk)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    d = tmp_path_factory.mktemp("accelerate")
    tok = bpe_tokenizer()
    torch.manual_seed(0)
    # no dropout: the masks would differ between one process with batch 8 and two processes with batch 4
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_inner=32, n_layer=2, n_head=2,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, classifier_dropout=0.0,
                                    pad_token_id=tok.pad_token_id))
    lm.save_pretrained(d / "gpt2")
    tok.save_pretrained(d / "gpt2")
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # every sentence has 4 words (4 labelled tokens), so the mean loss of two batches of 4 sentences equals that
    # of one batch of 8: two processes with batch 4 must then give the one-process result with batch 8
    rows = [{"tokens": ["the", "cat", "in", "Paris"], "ner_tags": ["O", "O", "O", "B-LOC"]},
            {"tokens": ["New", "York", "is", "big"], "ner_tags": ["B-LOC", "I-LOC", "O", "O"]},
            {"tokens": ["the", "cat", "is", "big"], "ner_tags": ["B-PER", "I-PER", "O", "O"]},
            {"tokens": ["Paris", "is", "very", "big"], "ner_tags": ["B-LOC", "O", "O", "O"]}] * 4
    npl.to_dataset_dict({s: rows for s in ("train", "validation", "test")}, names).save_to_disk(str(d / "ner"))
    return d


def _fine_tune(inputs: Path, out: str, launcher: list[str], batch_size: int = 4) -> dict:
    """Run the fine-tune step on the 16 training sentences for 2 epochs; return its metadata."""
    cmd = launcher + step_argv("neuroplasticity_base", model=str(inputs / "gpt2"), data=str(inputs / "ner"),
                               out=str(inputs / out), epochs=2, batch_size=batch_size, max_len=16, lr=0.001, seed=0)
    env = dict(stage_env(), OMP_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes, also on a machine with a GPU
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return json.loads((inputs / out / npl.META_FILE).read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _, _, _ = npl.load_checkpoint(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_checkpoint(inputs: Path, name: str, ref: str) -> None:
    """The checkpoint `name` loads back and equals `ref` to float tolerance; the step really trained."""
    w, w_ref = _weights(inputs / name), _weights(inputs / ref)
    assert set(w) == set(w_ref)
    from transformers import GPT2Model
    init = GPT2Model.from_pretrained(inputs / "gpt2").state_dict()
    moved = [k for k in init if not torch.equal(init[k], w[f"transformer.{k}"])]
    assert len(moved) > len(init) // 2, f"only {len(moved)} of {len(init)} body tensors changed: no training?"
    for k in w_ref:
        torch.testing.assert_close(w[k], w_ref[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name} vs {ref}, {k}: {m}")
    # nothing else was written next to the checkpoints (no temporary folder of atomic_path left behind)
    assert [p.name for p in inputs.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def plain(inputs) -> dict:
    """The step run with plain `python -m`, batch 4 (8 optimizer steps)."""
    return _fine_tune(inputs, "plain", [sys.executable])


def test_fine_tune_under_accelerate_launch_one_process_equals_plain_python(inputs, plain):
    meta = _fine_tune(inputs, "accelerate1", ONE)
    assert meta["train_steps"] == plain["train_steps"] == 8
    _assert_same_checkpoint(inputs, "accelerate1", "plain")
    assert meta["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    assert meta["test"] == pytest.approx(plain["test"], rel=1e-6)


def test_fine_tune_on_two_processes_equals_one_process_with_the_combined_batch(inputs):
    """Two gloo processes with batch 4 each (gradients averaged by DDP) take the steps of one process with batch 8:
    same checkpoint, half the steps of batch 4 on one process."""
    ref = _fine_tune(inputs, "plain8", [sys.executable], batch_size=8)
    meta = _fine_tune(inputs, "accelerate2", TWO + ["--main_process_port", str(_free_port())])
    assert ref["train_steps"] == meta["train_steps"] == 4  # each rank saw half the batches
    _assert_same_checkpoint(inputs, "accelerate2", "plain8")
    assert meta["test"] == pytest.approx(ref["test"], rel=1e-6)
