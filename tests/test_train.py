"""The shared training loop and the stage command lines."""
import pytest
import torch

from forgetlab import cli
from forgetlab.models import tiny_model
from forgetlab.train import TrainConfig, train


def lm_dataset(n=16, seq=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (n, seq), generator=g)
    return [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": i} for i in ids]


def test_training_lowers_the_loss_and_is_deterministic():
    runs = []
    for _ in range(2):
        model = tiny_model("llama")
        runs.append(train(model, lm_dataset(), TrainConfig(lr=3e-3, epochs=4, batch_size=4), desc=None))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 16 and sum(runs[0][-4:]) < sum(runs[0][:4])


def test_grad_hook_runs_before_the_optimizer_step():
    model = tiny_model("llama")
    frozen = model.model.layers[0].mlp.down_proj.weight
    before = frozen.detach().clone()

    def hook(m):
        m.model.layers[0].mlp.down_proj.weight.grad.zero_()
    # weight decay 0 and a zero gradient: AdamW leaves the weight exactly unchanged
    train(model, lm_dataset(), TrainConfig(lr=1e-2, max_steps=3, batch_size=4), grad_hook=hook, desc=None)
    assert torch.equal(frozen.detach(), before)
    assert not torch.equal(model.model.layers[1].mlp.down_proj.weight, tiny_model("llama").model.layers[1].mlp.down_proj.weight)


def test_max_steps_and_bad_config():
    steps = train(tiny_model("gpt2"), lm_dataset(), TrainConfig(max_steps=2, batch_size=2), desc=None)
    assert len(steps) == 2
    with pytest.raises(ValueError, match="'lr' must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(TypeError, match="'epochs' must be int"):
        TrainConfig(epochs=1.5)


def test_cli_builds_flags_from_the_signature():
    def fit(model: str, epochs: int, lr: float = 1e-3, masked: bool = False):
        """Fit something."""
        return model, epochs, lr, masked
    assert cli.run([fit], ["fit", "--model", "m", "--epochs", "3", "--masked", "true"]) == ("m", 3, 1e-3, True)
    with pytest.raises(SystemExit):
        cli.run([fit], ["fit", "--model", "m"])  # --epochs is required
