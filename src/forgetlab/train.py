"""The one training loop every paper uses (fine-tuning, retraining, unlearning, editing baselines).

It runs under `accelerate`, so `accelerate launch -m forgetlab.<paper> ...` spreads the paper-scale profile
over several GPUs with no change; on a CPU it is a plain loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .utils import check_positive_int, check_type


@dataclass
class TrainConfig:
    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 8
    max_steps: int | None = None  # stop early after this many optimizer steps
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup, then constant
    grad_clip: float | None = 1.0
    seed: int = 0

    def __post_init__(self):
        check_type("lr", self.lr, (int, float))
        if self.lr <= 0:
            raise ValueError(f"parameter 'lr' must be > 0, got {self.lr}")
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)


def default_loss(model, batch: dict) -> torch.Tensor:
    """The model's own loss (batch carries `labels`)."""
    return model(**batch).loss


def stack_collate(items: list[dict]) -> dict:
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def train(model, dataset: Sequence[dict], cfg: TrainConfig, *, loss_fn: Callable = default_loss,
          collate: Callable = stack_collate, grad_hook: Callable | None = None,
          on_step: Callable | None = None, on_epoch: Callable | None = None,
          desc: str | None = "train") -> list[float]:
    """Train `model` on `dataset` (a sequence of example dicts) with AdamW; returns the loss of every step.

    One optimizer and one schedule run across all epochs (AdamW's moments are never reset).
    grad_hook(model) runs after backward and before the optimizer step (e.g. SURE's gradient mask);
    on_step(step, loss) runs after each step; on_epoch(epoch) after each epoch (1, 2, ...; the model in eval
    mode meanwhile), and a true return value stops training there. Shuffling is seeded by cfg.seed.
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(list(dataset), batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)))
    model, opt, loader = accelerator.prepare(model, opt, loader)
    total = cfg.epochs * len(loader) if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * len(loader))
    losses: list[float] = []
    model.train()
    with tqdm(total=total, desc=desc, disable=desc is None or not accelerator.is_main_process) as bar:
        for epoch in range(1, cfg.epochs + 1):
            for batch in loader:
                loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if grad_hook is not None:
                    grad_hook(accelerator.unwrap_model(model))
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
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
    model.eval()
    return losses
