"""The one training loop every paper uses (fine-tuning, retraining, unlearning, editing baselines).

It runs under `accelerate`, so `accelerate launch -m forgetlab.papers.<paper>.experiment ...` spreads the paper-scale
profile over several GPUs with no change; on a CPU it is a plain loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from forgetlab.core.utils import check_choice, check_positive_int, check_type, device_of


def _bnb_optimizer(name: str):
    def make(params, **kw):
        import bitsandbytes as bnb
        return getattr(bnb.optim, name)(params, **kw)
    return make


# The optimizers train() can use (the memory plan of the paper profile: 8-bit AdamW keeps 2 bytes of moments per
# parameter instead of 8; the paged one also spills them to host memory under GPU memory pressure, CUDA only).
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adamw8bit": _bnb_optimizer("AdamW8bit"),
              "paged_adamw8bit": _bnb_optimizer("PagedAdamW8bit")}
MIXED_PRECISION = ("no", "bf16")


@dataclass
class TrainConfig:
    """batch_size is the micro-batch of one forward; an optimizer step sees batch_size * grad_accum examples.
    grad_checkpointing recomputes activations in backward (HF models); mixed_precision "bf16" runs forward and
    backward under bf16 autocast with fp32 master weights."""
    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 8
    max_steps: int | None = None  # stop early after this many optimizer steps
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup, then constant
    grad_clip: float | None = 1.0
    seed: int = 0
    grad_accum: int = 1
    grad_checkpointing: bool = False
    optimizer: str = "adamw"
    mixed_precision: str = "no"

    def __post_init__(self):
        check_type("lr", self.lr, (int, float))
        if self.lr <= 0:
            raise ValueError(f"parameter 'lr' must be > 0, got {self.lr}")
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("grad_accum", self.grad_accum)
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)


def default_loss(model, batch: dict) -> torch.Tensor:
    """The model's own loss (batch carries `labels`)."""
    return model(**batch).loss


def stack_collate(items: list[dict]) -> dict:
    """Stack every field of the items; 1-D fields of unequal length (passages shorter than the sequence length, as
    MUSE-News has) are right-padded to the batch's longest: "labels" with -100 (ignored by the loss), every other
    field with 0 (token ids hidden by their attention mask, masks 0). Equal lengths are stacked as they are."""
    out = {}
    for k in items[0]:
        xs = [torch.as_tensor(it[k]) for it in items]
        if xs[0].dim() == 1 and len({len(x) for x in xs}) > 1:
            xs = [F.pad(x, (0, max(map(len, xs)) - len(x)), value=-100 if k == "labels" else 0) for x in xs]
        out[k] = torch.stack(xs)
    return out


def train(model, dataset: Sequence[dict], cfg: TrainConfig, *, loss_fn: Callable = default_loss,
          collate: Callable = stack_collate, grad_hook: Callable | None = None,
          on_step: Callable | None = None, on_epoch: Callable | None = None,
          desc: str | None = "train") -> list[float]:
    """Train `model` on `dataset` (a sequence of example dicts) with cfg.optimizer; returns the loss of every
    optimizer step (the mean over its cfg.grad_accum micro-batches).

    One optimizer and one schedule run across all epochs (AdamW's moments are never reset).
    grad_hook(model) runs after backward and before the optimizer step (e.g. SURE's gradient mask);
    on_step(step, loss) runs after each step; on_epoch(epoch) after each epoch (1, 2, ...; the model in eval
    mode meanwhile), and a true return value stops training there. Shuffling is seeded by cfg.seed.
    Training runs where the model is (its stage's `device`): a model on the CPU stays there even when there is a GPU.
    """
    on_gpu = device_of(model).type == "cuda"
    accelerator = Accelerator(cpu=not on_gpu, gradient_accumulation_steps=cfg.grad_accum)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(list(dataset), batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=collate)
    if cfg.grad_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"parameter 'grad_checkpointing': {type(model).__name__} does not support it")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    model, opt, loader = accelerator.prepare(model, opt, loader)
    per_epoch = -(-len(loader) // cfg.grad_accum)  # optimizer steps (the last one may take fewer micro-batches)
    total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
    losses: list[float] = []
    micro: list[float] = []  # losses of the micro-batches of the current optimizer step
    model.train()
    with tqdm(total=total, desc=desc, disable=desc is None or not accelerator.is_main_process) as bar:
        for epoch in range(1, cfg.epochs + 1):
            for batch in loader:
                with accelerator.accumulate(model):
                    # autocast per call (accelerate's mixed_precision is fixed for the whole process)
                    with torch.autocast(accelerator.device.type, dtype=torch.bfloat16,
                                        enabled=cfg.mixed_precision == "bf16"):
                        loss = loss_fn(model, batch)
                    accelerator.backward(loss)
                    micro.append(loss.item())
                    if accelerator.sync_gradients:
                        if grad_hook is not None:
                            grad_hook(accelerator.unwrap_model(model))
                        if cfg.grad_clip:
                            accelerator.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()  # accelerate's wrapper steps only when the gradients are synced
                    opt.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                sched.step()
                losses.append(sum(micro) / len(micro))
                micro = []
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if on_step is not None:
                    on_step(len(losses), losses[-1])
                if len(losses) >= total:
                    break
            if on_epoch is not None:
                model.eval()
                stop = on_epoch(epoch)
                model.train()
                if stop:
                    break
            if len(losses) >= total:
                break
    if cfg.grad_checkpointing:
        accelerator.unwrap_model(model).gradient_checkpointing_disable()
    model.eval()
    return losses
