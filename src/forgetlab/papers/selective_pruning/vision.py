"""Selective pruning of a vision transformer against machine-unlearning baselines: forget one image class
(the rebuttal experiment of Pochinkov & Schoots, arXiv 2403.01267, their Table 4).

A ViT (HF `ViTForImageClassification`) is trained on CIFAR-10 images (or a hub ViT is used as is), then each
method starts from a copy of it and tries to remove one class while keeping the others:

* prune:     selective pruning in one shot, FF + attention neurons scored by mean |x| on forget vs retain images
             (`forgetlab.methods.pruning`, hooks of `forgetlab.core.neurons`);
* retrain:   train from scratch on the retain set only (the gold standard, and the most expensive);
* finetune:  fine-tune on the retain set (catastrophic forgetting does the rest);
* ga:        gradient ascent on the forget set (maximize its cross-entropy);
* amnesiac:  Graves et al. 2021 (AAAI), "Amnesiac machine learning": relabel the forget images with random
             other classes and train on them together with (a subset of) the retain set;
* unsir:     Tarun et al. 2023 (IEEE TNNLS), "Fast yet effective machine unlearning": learn error-maximizing noise
             for the forget class, train on noise + retain subset (impair), then on the retain subset (repair);
* ssd:       Foster et al. 2023 (AAAI 2024), "Selective synaptic dampening": diagonal Fisher importances on the
             forget set and on the full training set; every parameter whose forget importance exceeds alpha times
             its training importance is multiplied by min(lambda * I_D / I_f, 1) ("ssd": the paper's alpha = 10;
             "ssd_tuned": a smaller alpha, ssd_alpha_tuned);
* teacher:   Chundawat et al. 2023 (AAAI), "Can bad teaching induce forgetting?": distil the competent teacher
             (the trained model) on retain images and an incompetent teacher (a random-init model) on forget
             images into the student (KL at temperature T).

Metrics: accuracy on the retain and forget test images, compute (forward-pass equivalents: a training example
counts 3, a forward-only example 1) and wall time, and a membership-inference attack: a cross-validated logistic
regression on per-example losses that tells the forget class's training images (members) from its test images
(non-members); AUC 0.5 means the model no longer treats its training images differently.

Steps (`python -m forgetlab.papers.selective_pruning.vision <step> ...`):
    train    -> checkpoints/selective_pruning_vision/vit      (model, split.json, train.json)
    unlearn  -> checkpoints/selective_pruning_vision/unlearn  (results.json: per-method per-example losses)
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from forgetlab.core import neurons
from forgetlab.core.models import resolve_device
from forgetlab.core.neurons import NeuronStats
from forgetlab.core.train import TrainConfig, train
from forgetlab.core.utils import (atomic_path, check_choice, check_fraction, check_list, check_positive_int, device_of,
                                  seed_everything, write_json)
from forgetlab.methods import pruning

SPLIT_FILE, TRAIN_FILE, RESULTS_FILE = "split.json", "train.json", "results.json"
EVAL_SETS = ("test_retain", "test_forget", "train_forget")
# compute units: a training example = forward + backward = 3 forward-pass equivalents
TRAIN_COST, FORWARD_COST = 3, 1

# ================================================================ model
def vit_config(num_labels: int, *, image_size: int = 32, patch_size: int = 8, hidden: int = 128, layers: int = 4,
               heads: int = 4, ff: int = 256, class_names: Sequence[str] | None = None):
    """A small ViT for 32x32 images (ViT-Tiny-like, scaled to a CPU)."""
    from transformers import ViTConfig
    if image_size % patch_size:
        raise ValueError(f"parameter 'patch_size' ({patch_size}) must divide 'image_size' ({image_size})")
    if hidden % heads:
        raise ValueError(f"parameter 'heads' ({heads}) must divide 'hidden' ({hidden})")
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_labels)]
    return ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden,
                     num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff,
                     num_labels=num_labels, id2label=dict(enumerate(names)),
                     label2id={n: i for i, n in enumerate(names)})


def new_vit(config, seed: int = 0):
    """A random-init ViTForImageClassification (seeded), in eval mode, with the ViT layout registered."""
    from transformers import ViTForImageClassification
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    model.eval()
    return model


def load_vit(name_or_path: str, data_dir: str = "data", device: str = "cpu"):
    """A trained ViT classifier on `device`: a checkpoint folder (e.g. the `train` step's output) or a hub id."""
    from transformers import ViTForImageClassification
    from forgetlab.core.models import resolve_model
    model = ViTForImageClassification.from_pretrained(resolve_model(name_or_path, data_dir)).to(device)
    model.eval()
    return model


# ================================================================ data
def load_images(source: str = "cifar10", data_dir: str = "data", n: int | None = None, *,
                image_column: str = "img", label_column: str = "label", split: str = "test"
                ) -> tuple[np.ndarray, list[int], list[str]]:
    """(uint8 images [N, H, W, 3], labels, class names).

    "cifar10": the 10,000 CIFAR-10 test images of BIG-bench (offline default). "hf:<name or folder>": a Hugging
    Face image-classification dataset (paper scale, e.g. hf:uoft-cs/cifar100 with label_column "fine_label"),
    a folder written by `Dataset.save_to_disk` or a hub id; images must share one size.
    """
    if source == "cifar10":
        from forgetlab.data import load_cifar10
        return load_cifar10(data_dir, n)
    if not source.startswith("hf:"):
        raise ValueError(f"unknown image source {source!r}; allowed: cifar10, hf:<dataset id or saved folder>")
    from forgetlab.data import hub
    name = source[3:]
    ds = hub.load_dataset(name, split=split)
    for col in (image_column, label_column):
        if col not in ds.column_names:
            raise ValueError(f"dataset {name!r} has no column {col!r} (columns: {', '.join(ds.column_names)})")
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    images = np.stack([np.asarray(im.convert("RGB")) for im in ds[image_column]])
    feature = ds.features[label_column]
    names = list(feature.names) if hasattr(feature, "names") else [str(i) for i in sorted(set(ds[label_column]))]
    return images, list(ds[label_column]), names


def to_pixels(images: np.ndarray, image_size: int | None = None) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, S, S] in [-1, 1] (ViT's mean 0.5 / std 0.5), resized to image_size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    if image_size is not None and x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5


def stratified_split(labels: Sequence[int], test_fraction: float, seed: int, n: int | None = None
                     ) -> tuple[list[int], list[int]]:
    """(train, test) indices with the same class proportions (scikit-learn), each sorted, over a stratified
    subsample of n images (all if None; the BIG-bench CIFAR-10 file is sorted by class, so never take the first n)."""
    from sklearn.model_selection import train_test_split
    idx, y = np.arange(len(labels)), np.asarray(labels)
    if n is not None and n < len(idx):
        idx, _ = train_test_split(idx, train_size=n, stratify=y, random_state=seed)
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=y[idx], random_state=seed)
    return sorted(tr.tolist()), sorted(te.tolist())


def items(pixels: torch.Tensor, labels: Sequence[int]) -> list[dict]:
    """Examples for `train.train`."""
    return [{"pixel_values": p, "labels": torch.tensor(int(y))} for p, y in zip(pixels, labels)]


def flip_loss(flip: bool) -> Callable:
    """Cross-entropy, with random horizontal flips of half the images when `flip` (torch's global RNG, seeded by
    the step)."""
    def loss_fn(model, batch):
        x = batch["pixel_values"]
        if flip and model.training:
            mask = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return model(pixel_values=x, labels=batch["labels"]).loss
    return loss_fn


@torch.inference_mode()
def evaluate_images(model, pixels: torch.Tensor, labels: Sequence[int], batch_size: int = 256,
                    desc: str | None = None) -> dict[str, np.ndarray]:
    """Per example: cross-entropy loss and whether the top-1 prediction is right."""
    y = torch.as_tensor(list(labels))
    device = device_of(model)
    losses, correct = [], []
    for i in tqdm(range(0, len(y), batch_size), desc=desc, disable=desc is None, leave=False):
        logits = model(pixel_values=pixels[i:i + batch_size].to(device)).logits.float().cpu()
        losses.append(F.cross_entropy(logits, y[i:i + batch_size], reduction="none"))
        correct.append(logits.argmax(-1) == y[i:i + batch_size])
    return {"loss": torch.cat(losses).numpy(), "correct": torch.cat(correct).numpy().astype(float)}


# ================================================================ the train step
def train_vit(*, model: str, data_dir: str, source: str, n_images: int, test_fraction: float, image_size: int,
              patch_size: int, hidden: int, layers: int, heads: int, ff: int, epochs: int, lr: float, batch_size: int,
              weight_decay: float, warmup_steps: int, grad_clip: float, hflip: bool, label_column: str,
              image_column: str, seed: int, out: str, device: str) -> None:
    """Train the ViT on the training split (model "scratch": a new small ViT; else a hub id or folder, fine-tuned
    for `epochs`, 0 = used as is) and save it with the split and its test accuracy. n_images: a stratified
    subsample of the dataset, split into train and test (test_fraction). device: where it trains and is scored
    (models.resolve_device)."""
    device = resolve_device(device)
    seed_everything(seed)
    check_fraction("test_fraction", test_fraction, allow_zero=False)
    check_positive_int("epochs", epochs, allow_zero=True)
    check_positive_int("n_images", n_images)
    images, labels, names = load_images(source, data_dir, image_column=image_column, label_column=label_column)
    tr, te = stratified_split(labels, test_fraction, seed, n_images)
    if model == "scratch":
        vit = new_vit(vit_config(len(names), image_size=image_size, patch_size=patch_size, hidden=hidden,
                                 layers=layers, heads=heads, ff=ff, class_names=names), seed).to(device)
    else:
        vit = load_vit(model, data_dir, device)
        if vit.config.num_labels != len(names):
            raise ValueError(f"model {model!r} has {vit.config.num_labels} labels, dataset {source!r} "
                             f"{len(names)}")
    pixels = to_pixels(images, vit.config.image_size)
    cfg = TrainConfig(lr=lr, epochs=max(epochs, 1), batch_size=batch_size, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed)
    t0 = time.perf_counter()
    losses = train(vit, items(pixels[tr], [labels[i] for i in tr]), cfg, loss_fn=flip_loss(hflip),
                   desc="train ViT") if epochs else []
    seconds = time.perf_counter() - t0
    ev = evaluate_images(vit, pixels[te], [labels[i] for i in te], desc="test accuracy")
    with atomic_path(out) as tmp:
        vit.save_pretrained(tmp)
        write_json(tmp / SPLIT_FILE, {"source": source, "data_dir": data_dir, "n_images": n_images,
                                      "image_column": image_column, "label_column": label_column,
                                      "class_names": names, "train": tr, "test": te, "seed": seed})
        write_json(tmp / TRAIN_FILE, {"model": model, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                                      "weight_decay": weight_decay, "hflip": hflip,
                                      "losses": losses[::max(1, len(losses) // 200)],
                                      "n_train": len(tr), "test_accuracy": float(ev["correct"].mean()),
                                      "train_examples": len(tr) * epochs, "seconds": seconds})
    print(f"ViT test accuracy {ev['correct'].mean():.3f} on {len(te)} images ({seconds:.0f} s of training)")


@dataclass
class Data:
    """Pixels and labels of the training and test split, and the class names (from a `train` checkpoint)."""
    pixels: torch.Tensor
    labels: list[int]
    train: list[int]
    test: list[int]
    class_names: list[str]

    def subset(self, part: str, forget: int, which: str) -> tuple[torch.Tensor, list[int]]:
        """Pixels and labels of part (train / test), which = forget (the class) or retain (the others)."""
        idx = [i for i in getattr(self, part) if (self.labels[i] == forget) == (which == "forget")]
        return self.pixels[idx], [self.labels[i] for i in idx]


def load_data(checkpoint: str | Path) -> Data:
    split = json.loads((Path(checkpoint) / SPLIT_FILE).read_text())
    cfg = json.loads((Path(checkpoint) / "config.json").read_text())
    images, labels, names = load_images(split["source"], split["data_dir"], image_column=split["image_column"],
                                        label_column=split["label_column"])
    return Data(to_pixels(images, cfg["image_size"]), labels, split["train"], split["test"], names)


# ================================================================ unlearning methods
@torch.inference_mode()
def image_stats(model, pixels: torch.Tensor, kinds: Sequence[str], batch_size: int = 256) -> dict[str, NeuronStats]:
    """NeuronStats of `kinds` over every token (CLS and patches) of every image."""
    device = device_of(model)
    with neurons.record_stats(model, kinds) as rec:
        for i in range(0, len(pixels), batch_size):
            model.base_model(pixel_values=pixels[i:i + batch_size].to(device))
    return rec.stats


def prune_vit(model, forget_pixels: torch.Tensor, retain_pixels: torch.Tensor, cfg: pruning.PruneConfig,
              batch_size: int = 256, seed: int = 0, stats: tuple[dict, dict] | None = None) -> pruning.Pruner:
    """Selective pruning in one shot: the global top cfg.ff_frac / cfg.attn_frac of neurons by
    I(forget) / (I(retain) + eps). `stats` = (forget, retain) NeuronStats already collected on the unpruned model
    (to try several fractions) skips the collection. The returned Pruner keeps the masks on the model."""
    pruner = pruning.Pruner(model, list(cfg.fracs()))
    kinds = list(cfg.fracs())
    if cfg.scoring == "random":
        gen = torch.Generator().manual_seed(seed)
        for kind, frac in cfg.fracs().items():
            pruner.pruned[kind] = pruning.select_random(pruner.pruned[kind], frac, gen)
    else:
        f, r = stats or (image_stats(model, forget_pixels, kinds, batch_size),
                         image_stats(model, retain_pixels, kinds, batch_size))
        for kind, frac in cfg.fracs().items():
            scores = pruning.forget_scores(f[kind], r[kind], cfg.scoring, cfg.eps(kind))
            pruner.pruned[kind] = pruning.select_global_top(scores, frac, pruner.pruned[kind])
    pruner.refresh()
    return pruner


def neg_ce_loss(model, batch) -> torch.Tensor:
    """Gradient ascent: minus the cross-entropy."""
    return -model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss


def random_other_labels(labels: Sequence[int], num_labels: int, generator: torch.Generator) -> list[int]:
    """Amnesiac relabelling: each label replaced by a uniformly random DIFFERENT class."""
    y = torch.as_tensor(list(labels))
    shift = torch.randint(1, num_labels, y.shape, generator=generator)
    return ((y + shift) % num_labels).tolist()


def error_maximizing_noise(model, forget_class: int, n: int, shape: Sequence[int], *, steps: int, lr: float,
                           reg: float, seed: int) -> torch.Tensor:
    """UNSIR's noise: inputs N that MAXIMIZE the model's loss on the forget label, with an L2 penalty,
    minimizing  -CE(model(N), forget_class) + reg * mean_i ||N_i||^2  (Tarun et al. 2023, their code's form)."""
    gen = torch.Generator().manual_seed(seed)
    device = device_of(model)
    noise = torch.randn(n, *shape, generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.Adam([noise], lr=lr)
    target = torch.full((n,), forget_class, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = -F.cross_entropy(model(pixel_values=noise).logits, target) \
                + reg * noise.square().flatten(1).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return noise.detach().cpu()


def fisher_importance(model, pixels: torch.Tensor, labels: Sequence[int], batch_size: int = 64
                      ) -> dict[str, torch.Tensor]:
    """SSD's importances: per parameter element, the mean over batches of the squared gradient of the batch's
    mean cross-entropy (a diagonal Fisher estimate, as in the authors' code)."""
    y = torch.as_tensor(list(labels))
    device = device_of(model)
    imp = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    n_batches = 0
    for i in range(0, len(y), batch_size):
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixels[i:i + batch_size].to(device), labels=y[i:i + batch_size].to(device)).loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                imp[n] += p.grad.detach().square()
        n_batches += 1
    model.zero_grad(set_to_none=True)
    return {n: v / max(n_batches, 1) for n, v in imp.items()}


@torch.no_grad()
def ssd_dampen_(model, forget_imp: dict[str, torch.Tensor], full_imp: dict[str, torch.Tensor], *,
                alpha: float = 10.0, lam: float = 1.0) -> int:
    """Selective synaptic dampening in place: where I_f > alpha * I_D, theta *= min(lam * I_D / I_f, 1).
    Returns the number of dampened parameter elements."""
    n = 0
    for name, p in model.named_parameters():
        f, d = forget_imp[name], full_imp[name]
        sel = f > alpha * d
        factor = (lam * d / f.clamp(min=1e-30)).clamp(max=1.0)
        p[sel] = p[sel] * factor[sel]
        n += int(sel.sum())
    return n


def teacher_loss(competent, incompetent, temperature: float = 1.0) -> Callable:
    """Bad teaching: KL(teacher || student) at temperature T, the teacher being the incompetent (random) model on
    forget examples (batch["forget"] = 1) and the competent (trained) model on the others."""
    def loss_fn(model, batch):
        x, is_forget = batch["pixel_values"], batch["forget"].bool()
        with torch.no_grad():
            competent.to(x.device), incompetent.to(x.device)
            t = torch.where(is_forget[:, None], incompetent(pixel_values=x).logits, competent(pixel_values=x).logits)
        s = model(pixel_values=x).logits
        return F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="batchmean")
    return loss_fn


# ================================================================ the methods: one class each, registered by name
@dataclass
class Context:
    """What every method starts from: the base model, the data, the forget class and what is drawn from them once
    per method run (the forget and retain training images, a seeded retain subset, and the generator that drew it,
    which amnesiac relabelling goes on drawing from), plus the settings all methods share."""
    base: nn.Module
    data: Data
    forget: int
    seed: int
    batch_size: int
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    hflip: bool
    retain_fraction: float

    def __post_init__(self):
        self.f_pix, self.f_lab = self.data.subset("train", self.forget, "forget")
        self.r_pix, self.r_lab = self.data.subset("train", self.forget, "retain")
        self.gen = torch.Generator().manual_seed(self.seed)
        self.n_sub = max(1, round(self.retain_fraction * len(self.r_lab)))
        sub = sorted(torch.randperm(len(self.r_lab), generator=self.gen)[:self.n_sub].tolist())
        self.s_pix, self.s_lab = self.r_pix[sub], [self.r_lab[i] for i in sub]
        self.device = device_of(self.base)

    def train_config(self, epochs: int, lr: float) -> TrainConfig:
        return TrainConfig(lr=lr, epochs=epochs, batch_size=self.batch_size, weight_decay=self.weight_decay,
                           warmup_steps=self.warmup_steps, grad_clip=self.grad_clip, seed=self.seed)


class Method:
    """A class-removal method: a dataclass of its own hyperparameters, named as in params.yaml (section
    selective_pruning_vit_unlearn; no defaults here: they come from there, through the `unlearn` step's flags),
    and `run(model, context)`, which removes the forget class from `model` (a copy of the base) and returns
    (model, compute units, details). Add one with @register("name") and its flags on `unlearn`."""
    name: ClassVar[str]

    def run(self, model, c: Context) -> tuple[nn.Module, int, dict]:
        raise NotImplementedError

    @classmethod
    def from_params(cls, params: dict) -> "Method":
        return cls(**{f.name: params[f.name] for f in fields(cls)})


REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    def add(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return add


@register("prune")
@dataclass
class Prune(Method):
    """Selective pruning in one shot (forgetlab.methods.pruning), FF and attention neurons."""
    ff_frac: float
    attn_frac: float
    scoring: str
    eps_ff: float
    eps_attn: float

    def run(self, model, c):
        pc = pruning.PruneConfig(ff_frac=self.ff_frac, attn_frac=self.attn_frac, scoring=self.scoring,
                                 eps_ff=self.eps_ff, eps_attn=self.eps_attn)
        pruner = prune_vit(model, c.f_pix, c.r_pix, pc, seed=c.seed)
        return model, FORWARD_COST * (len(c.f_lab) + len(c.r_lab)), {k: pruner.fraction(k) for k in pruner.pruned}


@register("retrain")
@dataclass
class Retrain(Method):
    """A new model trained on the retain images only."""
    retrain_epochs: int
    retrain_lr: float

    def run(self, model, c):
        model = new_vit(c.base.config, c.seed).to(c.device)  # a new model where the base is: train() runs it there
        losses = train(model, items(c.r_pix, c.r_lab), c.train_config(self.retrain_epochs, self.retrain_lr),
                       loss_fn=flip_loss(c.hflip), desc="retrain")
        return model, TRAIN_COST * len(c.r_lab) * self.retrain_epochs, {"final_loss": losses[-1]}


@register("finetune")
@dataclass
class Finetune(Method):
    """Fine-tuning on the retain images."""
    ft_epochs: int
    ft_lr: float

    def run(self, model, c):
        train(model, items(c.r_pix, c.r_lab), c.train_config(self.ft_epochs, self.ft_lr),
              loss_fn=flip_loss(c.hflip), desc="finetune")
        return model, TRAIN_COST * len(c.r_lab) * self.ft_epochs, {}


@register("ga")
@dataclass
class GradientAscent(Method):
    """Gradient ascent on the forget images."""
    ga_epochs: int
    ga_lr: float

    def run(self, model, c):
        train(model, items(c.f_pix, c.f_lab), c.train_config(self.ga_epochs, self.ga_lr), loss_fn=neg_ce_loss,
              desc="ga")
        return model, TRAIN_COST * len(c.f_lab) * self.ga_epochs, {}


@register("amnesiac")
@dataclass
class Amnesiac(Method):
    """The forget images relabelled with random other classes, trained together with the retain subset."""
    amnesiac_epochs: int
    amnesiac_lr: float

    def run(self, model, c):
        relabelled = random_other_labels(c.f_lab, c.base.config.num_labels, c.gen)
        train(model, items(c.f_pix, relabelled) + items(c.s_pix, c.s_lab),
              c.train_config(self.amnesiac_epochs, self.amnesiac_lr), loss_fn=flip_loss(c.hflip),
              desc="amnesiac")
        return model, TRAIN_COST * (len(c.f_lab) + c.n_sub) * self.amnesiac_epochs, {}


@register("unsir")
@dataclass
class Unsir(Method):
    """Error-maximizing noise for the forget class, then impair (noise + retain subset) and repair (retain subset)."""
    unsir_noise: int
    unsir_noise_steps: int
    unsir_noise_lr: float
    unsir_noise_reg: float
    unsir_lr: float

    def run(self, model, c):
        n_noise = self.unsir_noise
        noise = error_maximizing_noise(model, c.forget, n_noise, tuple(c.f_pix.shape[1:]),
                                       steps=self.unsir_noise_steps, lr=self.unsir_noise_lr,
                                       reg=self.unsir_noise_reg, seed=c.seed)
        train(model, items(noise, [c.forget] * n_noise) + items(c.s_pix, c.s_lab), c.train_config(1, self.unsir_lr),
              loss_fn=flip_loss(False), desc="unsir impair")  # never flipped: the noise is optimized as it is
        train(model, items(c.s_pix, c.s_lab), c.train_config(1, self.unsir_lr), loss_fn=flip_loss(c.hflip),
              desc="unsir repair")
        return model, TRAIN_COST * (n_noise * self.unsir_noise_steps + n_noise + 2 * c.n_sub), {}


@register("ssd")
@dataclass
class SSD(Method):
    """Selective synaptic dampening at the paper's alpha."""
    ssd_alpha: float
    ssd_lambda: float

    @property
    def alpha(self) -> float:
        return self.ssd_alpha

    def run(self, model, c):
        all_pix, all_lab = c.data.pixels[c.data.train], [c.data.labels[i] for i in c.data.train]
        f_imp = fisher_importance(model, c.f_pix, c.f_lab, c.batch_size)
        d_imp = fisher_importance(model, all_pix, all_lab, c.batch_size)
        n = ssd_dampen_(model, f_imp, d_imp, alpha=self.alpha, lam=self.ssd_lambda)
        details = {"alpha": self.alpha, "dampened": n,
                   "dampened_fraction": n / sum(p.numel() for p in model.parameters())}
        return model, TRAIN_COST * (len(c.f_lab) + len(all_lab)), details


@register("ssd_tuned")
@dataclass
class SSDTuned(SSD):
    """Selective synaptic dampening at a smaller alpha."""
    ssd_alpha_tuned: float

    @property
    def alpha(self) -> float:
        return self.ssd_alpha_tuned


@register("teacher")
@dataclass
class BadTeacher(Method):
    """Distillation from the base (retain images) and a random-init model (forget images)."""
    teacher_epochs: int
    teacher_lr: float
    teacher_temperature: float

    def run(self, model, c):
        incompetent = new_vit(c.base.config, c.seed + 1).to(c.device)
        ex = [{**e, "forget": torch.tensor(1)} for e in items(c.f_pix, c.f_lab)] + \
             [{**e, "forget": torch.tensor(0)} for e in items(c.s_pix, c.s_lab)]
        train(model, ex, c.train_config(self.teacher_epochs, self.teacher_lr),
              loss_fn=teacher_loss(c.base, incompetent, self.teacher_temperature), desc="bad teacher")
        # student forward + backward, plus two teacher forwards
        return model, (TRAIN_COST + 2 * FORWARD_COST) * len(ex) * self.teacher_epochs, {}


METHODS = tuple(REGISTRY)


def make_method(name: str, params: dict) -> Method:
    """The registered method `name` with its hyperparameters taken from `params` (flat, as in params.yaml)."""
    check_choice("method", name, METHODS)
    return REGISTRY[name].from_params(params)


def run_method(method: Method, base, data: Data, forget: int, *, batch_size: int, weight_decay: float,
               warmup_steps: int, grad_clip: float, hflip: bool, retain_fraction: float, seed: int = 0) -> tuple:
    """Unlearn class `forget` from a copy of `base` with one method; returns (model, compute units, details)."""
    seed_everything(seed)
    model = copy.deepcopy(base)
    c = Context(base, data, forget, seed, batch_size=batch_size, weight_decay=weight_decay, warmup_steps=warmup_steps,
                grad_clip=grad_clip, hflip=hflip, retain_fraction=retain_fraction)
    model, compute, details = method.run(model, c)
    model.eval()
    return model, compute, details


def evaluate_sets(model, data: Data, forget: int, batch_size: int = 256) -> dict:
    out = {}
    for name in EVAL_SETS:
        part, which = name.split("_")
        pix, lab = data.subset(part, forget, which)
        out[name] = {k: v.tolist() for k, v in evaluate_images(model, pix, lab, batch_size).items()}
    return out


def unlearn(*, base: str, forget_class: str, methods: list[str], ff_frac: float, attn_frac: float, scoring: str,
            eps_ff: float, eps_attn: float, retrain_epochs: int, retrain_lr: float, ft_epochs: int, ft_lr: float,
            ga_epochs: int, ga_lr: float, amnesiac_epochs: int, amnesiac_lr: float, unsir_noise: int,
            unsir_noise_steps: int, unsir_noise_lr: float, unsir_noise_reg: float, unsir_lr: float, ssd_alpha: float,
            ssd_lambda: float, ssd_alpha_tuned: float, teacher_epochs: int, teacher_lr: float,
            teacher_temperature: float, hflip: bool, retain_fraction: float, batch_size: int, weight_decay: float,
            warmup_steps: int, grad_clip: float, seed: int, out: str, device: str) -> None:
    """Run every method on a copy of the base ViT; save per-example losses and hits on the retain / forget test
    images and the forget training images, compute units and wall times (results.json). device: where the
    methods run (models.resolve_device). Each method's hyperparameters are the arguments its class names
    (make_method); batch_size, retain_fraction, hflip (random horizontal flips of the training images) and the
    optimizer settings (weight_decay, warmup_steps, grad_clip: the base ViT's) are shared by all."""
    params = dict(locals())  # the flat hyperparameters, named as in params.yaml
    device = resolve_device(device)
    names = check_list("methods", methods, str)
    for m in names:
        check_choice("methods", m, METHODS)
    check_fraction("retain_fraction", retain_fraction, allow_zero=False)
    shared = dict(batch_size=batch_size, weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
                  hflip=hflip, retain_fraction=retain_fraction)
    config = {**shared, **{k: v for m in METHODS for k, v in asdict(make_method(m, params)).items()}}
    model = load_vit(base, device=device)
    data = load_data(base)
    check_choice("forget_class", forget_class, data.class_names)
    forget = data.class_names.index(forget_class)
    results = {"forget_class": forget_class, "forget_index": forget, "class_names": data.class_names,
               "config": config, "methods": {}}
    results["methods"]["original"] = {"compute": 0, "seconds": 0.0, "details": {},
                                      "eval": evaluate_sets(model, data, forget)}
    for m in tqdm(names, desc="methods"):
        t0 = time.perf_counter()
        unlearned, compute, details = run_method(make_method(m, params), model, data, forget, seed=seed, **shared)
        seconds = time.perf_counter() - t0
        ev = evaluate_sets(unlearned, data, forget)
        results["methods"][m] = {"compute": compute, "seconds": seconds, "details": details, "eval": ev}
        print(f"{m:>9}: retain {np.mean(ev['test_retain']['correct']):.3f}  forget "
              f"{np.mean(ev['test_forget']['correct']):.3f}  ({seconds:.1f} s)", flush=True)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / RESULTS_FILE, results)


def load_results(path: str | Path) -> dict:
    return json.loads((Path(path) / RESULTS_FILE).read_text())


# ================================================================ membership inference
def loss_attack_auc(member_losses, nonmember_losses, *, folds: int = 5, seed: int = 0) -> float:
    """Membership-inference AUC of a trained loss attack (not MUSE's threshold-free Min-K% AUC, muse.mink_auc): a
    logistic regression on the loss (scikit-learn), cross-validated (stratified
    `folds`), telling members from non-members; the larger group is subsampled (seeded) to the smaller's size.
    0.5 = no leak; 1 = members perfectly recognised."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    a, b = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    n = min(len(a), len(b))
    if n < folds:
        raise ValueError(f"membership inference needs at least folds={folds} members and non-members, got "
                         f"{len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    a, b = rng.choice(a, n, replace=False), rng.choice(b, n, replace=False)
    x = np.log1p(np.concatenate([a, b]).clip(min=0))[:, None]
    y = np.r_[np.ones(n), np.zeros(n)]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(LogisticRegression(), x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def auc_chance_band(n_members: int, n_nonmembers: int, z: float = 1.96) -> tuple[float, float]:
    """0.5 -/+ z standard errors of an AUC when members and non-members are exchangeable (Mann-Whitney:
    sqrt((n1 + n2 + 1) / (12 n1 n2))): an attack AUC inside this band is indistinguishable from chance."""
    se = float(np.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers)))
    return 0.5 - z * se, 0.5 + z * se


# the checkpoint steps of dvc.yaml: `python -m forgetlab.papers.selective_pruning.vision <step> --flag value ...`
STEPS = (train_vit, unlearn)

if __name__ == "__main__":
    from forgetlab.repro.cli import run
    run(list(STEPS), description=__doc__)
