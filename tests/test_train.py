"""The shared training loop and the stage command lines."""
import pytest
import torch

from forgetlab.core.models import tiny_model
from forgetlab.core.train import TrainConfig, train
from forgetlab.repro import cli


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


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_grad_accum_of_two_half_batches_is_one_full_batch():
    """Micro-batches of 4 accumulated twice step like batches of 8 (the same shuffled items, mean of equal-size
    means); the losses returned are per optimizer step; the last step of an epoch may take fewer micro-batches."""
    full, accum = tiny_model("llama", seed=0), tiny_model("llama", seed=0)
    l_full = train(full, lm_dataset(), TrainConfig(lr=3e-3, epochs=2, batch_size=8, grad_clip=None), desc=None)
    l_acc = train(accum, lm_dataset(), TrainConfig(lr=3e-3, epochs=2, batch_size=4, grad_accum=2, grad_clip=None),
                  desc=None)
    assert len(l_acc) == len(l_full) == 4
    # Adam divides by sqrt(v): float-rounding differences of the summed gradients show at ~1e-5 of a 1e-2 move
    assert l_acc == pytest.approx(l_full, rel=1e-5) and torch.allclose(weights(accum), weights(full), atol=1e-4)
    assert not torch.allclose(weights(full), weights(tiny_model("llama", seed=0)))
    odd = train(tiny_model("llama"), lm_dataset(n=12), TrainConfig(batch_size=4, grad_accum=2), desc=None)
    assert len(odd) == 2  # 3 micro-batches: a step of 2, then one of 1 at the end of the epoch
    assert len(train(tiny_model("llama"), lm_dataset(), TrainConfig(batch_size=2, grad_accum=2, max_steps=3),
                     desc=None)) == 3


def test_gradient_checkpointing_gives_the_same_training_and_is_switched_off_after():
    plain, ckpt = tiny_model("llama", seed=0), tiny_model("llama", seed=0)
    cfg = dict(lr=3e-3, epochs=1, batch_size=4)
    l_plain = train(plain, lm_dataset(), TrainConfig(**cfg), desc=None)
    l_ckpt = train(ckpt, lm_dataset(), TrainConfig(**cfg, grad_checkpointing=True), desc=None)
    assert l_ckpt == pytest.approx(l_plain, rel=1e-5) and torch.allclose(weights(ckpt), weights(plain), atol=1e-4)
    assert not ckpt.is_gradient_checkpointing
    with pytest.raises(ValueError, match="'grad_checkpointing'"):
        train(torch.nn.Linear(2, 2), [{"x": torch.ones(2)}], TrainConfig(grad_checkpointing=True), desc=None)


@pytest.mark.parametrize("optimizer,mixed_precision", [("adamw8bit", "no"), ("adamw", "bf16")])
def test_memory_saving_optimizer_and_bf16_autocast_still_learn(optimizer, mixed_precision):
    model = tiny_model("llama", seed=0)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = set()

    def loss_fn(m, batch):
        out = m(**batch)
        seen.add(out.logits.dtype)
        return out.loss
    losses = train(model, lm_dataset(), TrainConfig(lr=3e-3, epochs=4, batch_size=4, optimizer=optimizer,
                                                    mixed_precision=mixed_precision), loss_fn=loss_fn, desc=None)
    assert seen == {torch.bfloat16 if mixed_precision == "bf16" else torch.float32}
    assert sum(losses[-4:]) < sum(losses[:4])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(p, w0[n]) for n, p in model.named_parameters())


def test_bad_optimizer_settings_name_the_parameter():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; allowed: adamw, adamw8bit"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="unknown mixed_precision 'fp16'; allowed: no, bf16"):
        TrainConfig(mixed_precision="fp16")
    with pytest.raises(ValueError, match="'grad_accum'"):
        TrainConfig(grad_accum=0)


def test_cli_builds_flags_from_the_signature():
    def fit(model: str, epochs: int, lr: float = 1e-3, masked: bool = False):
        """Fit something."""
        return model, epochs, lr, masked
    # a boolean as DVC unpacks it under .dvc/config's parsing.bool = boolean_optional: --key / --no-key
    assert cli.run([fit], ["fit", "--model", "m", "--epochs", "3", "--masked"]) == ("m", 3, 1e-3, True)
    assert cli.run([fit], ["fit", "--model", "m", "--epochs", "3", "--no-masked"]) == ("m", 3, 1e-3, False)
    with pytest.raises(SystemExit):
        cli.run([fit], ["fit", "--model", "m"])  # --epochs is required
    with pytest.raises(SystemExit):
        cli.run([fit], ["fit", "--model", "m", "--epochs", "3", "--masked", "true"])  # no value after a boolean

    def step(n_steps: int, sure_percentile: float | None = None):
        return n_steps, sure_percentile
    # snake_case flags too (DVC's dict unpacking writes them so); `X | None` parses as X
    assert cli.run([step], ["step", "--n_steps", "2", "--sure-percentile", "90"]) == (2, 90.0)
    assert cli.run([step], ["step", "--n-steps", "2"]) == (2, None)

    def pick(names: list[str], ks: list[int], out: str):
        return names, ks, out
    # a YAML list arrives as --key a b (DVC's dict unpacking); an empty one DVC leaves out
    assert cli.run([pick], ["pick", "--names", "least", "random", "--ks", "0", "8", "--out", "o"]) == (
        ["least", "random"], [0, 8], "o")
    assert cli.run([pick], ["pick", "--out", "o", "--ks"]) == ([], [], "o")
    with pytest.raises(SystemExit):
        cli.run([pick], ["pick", "--ks", "a", "--out", "o"])
