"""Estimated peak GPU memory, host RAM and disk of every stage of a profile (issue 26), from the parameter counts
of its models and the profile's settings. Nothing is downloaded: a model is built on the meta device from its
config (CONFIGS holds the config fields of the paper profile's hub models; local models read their own
config.json), so the counts are exact and the rest is arithmetic, stated in `estimate`.

    python -m forgetlab.repro.memory table --profile paper      # the table, as markdown
    python -m forgetlab.repro.memory readme --profile paper     # the same table into README.md, between its markers
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

GIB = 1024 ** 3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# optimizer state bytes per trainable parameter: AdamW's two fp32 moments; bitsandbytes' 8-bit AdamW keeps two
# 1-byte moments (plus block scales, under 1%); the paged one can spill them to host memory (not counted)
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "paged_adamw8bit": 2, "sgd": 0}
CUDA_OVERHEAD_GIB = 1.5  # CUDA context, cuBLAS workspaces and allocator fragmentation, per process
HOST_OVERHEAD_GIB = 4.0  # the Python process: torch, transformers, datasets, tokenizers
# GiB: one 80 GB GPU (an H100 reports 81,559 MiB), the paper machine's 128 GiB of host RAM and 64 GiB of free disk
LIMITS = {"gpu": 81559 / 1024, "ram": 128, "disk": 64}

# The config fields that fix the parameter count of the paper profile's models (their config.json on the hub; the
# local all-MiniLM-L6-v2 too, so the table needs no data/). A hub model missing here is an error that names it.
CONFIGS = {
    "facebook/opt-1.3b": dict(model_type="opt", hidden_size=2048, num_hidden_layers=24, ffn_dim=8192,
                              num_attention_heads=32, vocab_size=50272, max_position_embeddings=2048,
                              word_embed_proj_dim=2048),
    "EleutherAI/pythia-1.4b": dict(model_type="gpt_neox", hidden_size=2048, num_hidden_layers=24,
                                   num_attention_heads=16, intermediate_size=8192, vocab_size=50304,
                                   rotary_pct=0.25, tie_word_embeddings=False),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                                                num_hidden_layers=24, num_attention_heads=32,
                                                num_key_value_heads=32, vocab_size=49152,
                                                tie_word_embeddings=True),
    "meta-llama/Llama-2-7b-hf": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                     vocab_size=32000, tie_word_embeddings=False),
    "distilbert-base-cased": dict(model_type="distilbert", dim=768, hidden_dim=3072, n_layers=6, n_heads=12,
                                  vocab_size=28996),
    "bert-base-uncased": dict(model_type="bert", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, vocab_size=30522),
    "nickypro/vit-cifar100": dict(model_type="vit", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                  num_attention_heads=12, image_size=224, patch_size=16, num_labels=100),
}
CONFIGS["minilm-l6"] = dict(model_type="bert", hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                            num_attention_heads=12, vocab_size=30522)
CONFIGS["muse-bench/MUSE-news_target"] = CONFIGS["muse-bench/MUSE-news_retrain"] = \
    CONFIGS["meta-llama/Llama-2-7b-hf"]  # MUSE-News' target and retrain models are Llama-2-7B fine-tunes


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model: exact parameter count, and the sizes of its activations."""
    params: int
    layers: int
    hidden: int
    heads: int
    vocab: int
    ff: int  # MLP width (MEND's editor networks are sized by it)


def _auto_class(kind: str):
    import transformers as tf
    return {"causal": tf.AutoModelForCausalLM, "masked": tf.AutoModelForMaskedLM,
            "token_classifier": tf.AutoModelForTokenClassification,
            "sequence_classifier": tf.AutoModelForSequenceClassification,
            "image_classifier": tf.AutoModelForImageClassification, "encoder": tf.AutoModel}[kind]


@cache
def shape(name: str, kind: str = "causal", data_dir: str = "data") -> Shape:
    """The model's Shape, from a meta-device build of its config (CONFIGS for hub ids, else the local
    config.json through forgetlab.core.models)."""
    import torch
    from transformers import AutoConfig
    if name in CONFIGS:
        fields = dict(CONFIGS[name])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif "/" in name and not Path(name).is_dir():
        raise ValueError(f"model {name!r}: no config in forgetlab.repro.memory.CONFIGS (add its config.json's "
                         f"size fields); known: {', '.join(sorted(CONFIGS))}")
    else:
        from forgetlab.core.models import model_config
        config = model_config(name, data_dir)
    with torch.device("meta"):
        model = _auto_class(kind).from_config(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    get = lambda *keys: next(getattr(text, k) for k in keys if getattr(text, k, None) is not None)  # noqa: E731
    return Shape(params=sum(p.numel() for p in model.parameters()),
                 layers=get("num_hidden_layers", "n_layers"), hidden=get("hidden_size", "dim"),
                 heads=get("num_attention_heads", "n_heads"), vocab=getattr(text, "vocab_size", 0) or 0,
                 ff=get("intermediate_size", "ffn_dim", "hidden_dim"))


@dataclass(frozen=True)
class Use:
    """One model as a stage holds it at the stage's peak, with its settings resolved."""
    shape: Shape
    dtype: str = "fp32"  # weights
    trained: bool = False
    optimizer: str = "adamw"
    mixed_precision: str = "no"  # "bf16": activations in bf16 under autocast
    grad_checkpointing: bool = False
    batch: int = 1  # sequences in one forward (a micro-batch)
    seq: int = 512
    full_logits: bool = True  # batch x seq x vocab fp32 logits (a causal LM's loss or scores)
    kv_tokens: int = 0  # generation: tokens of KV cache per sequence (prompt + new)
    trainable_share: float = 1.0  # of the parameters with gradients and optimizer states
    copies: int = 0  # more copies of its weights on the device (state-dict snapshots)
    extra_trained: int = 0  # parameters trained beside it (MEND's editor networks), fp32 AdamW
    weights: bool = True  # False: the weights are counted by another Use of the phase (the same model)


def activation_bytes(u: Use) -> float:
    """Activations kept for backward (training) or live in one layer (inference), in bytes. Per layer and
    micro-batch a transformer keeps s*b*h*(34 + 5*a*s/h) bytes in 16-bit (Korthikanti et al. 2022, eq. 2;
    the 5as/h term, attention scores, is an upper bound: SDPA kernels do not keep them); fp32 doubles it.
    Gradient checkpointing keeps each layer's input and recomputes one layer at a time."""
    s, b, h, a = u.seq, u.batch, u.shape.hidden, u.shape.heads
    width = 2 if (u.mixed_precision == "bf16" or u.dtype != "fp32") else 4
    per_layer = s * b * h * (34 + 5 * a * s / h) * width / 2
    if not u.trained:
        return per_layer
    if u.grad_checkpointing:
        return u.shape.layers * s * b * h * width + per_layer
    return u.shape.layers * per_layer


def gpu_bytes(u: Use) -> float:
    """Weights (and copies), gradients, optimizer states, activations, logits (and their gradient when trained),
    KV cache."""
    p, w = u.shape.params, DTYPE_BYTES[u.dtype]
    total = p * w * (u.weights + u.copies) + activation_bytes(u)
    if u.trained:
        n = p * u.trainable_share
        total += n * w + n * OPTIMIZER_BYTES[u.optimizer]
    total += u.extra_trained * (4 + 4 + OPTIMIZER_BYTES["adamw"])
    if u.full_logits:
        total += u.batch * u.seq * u.shape.vocab * 4 * (2 if u.trained else 1)
    return total + 2 * u.shape.layers * u.batch * u.kv_tokens * u.shape.hidden * w


@dataclass(frozen=True)
class Model:
    """A model in a stage's plan; str fields that name a parameter ("section.key") are read from the profile."""
    name: str  # the parameter holding the model's name (or a literal name)
    kind: str = "causal"
    trained: bool = False
    batch: str | int = 1
    seq: str | int | tuple = 512  # a tuple is summed (prompt + answer tokens)
    full_logits: bool = True
    new_tokens: str | int = 0  # generation: the KV cache holds seq + new_tokens
    dtype: str = "fp32"
    # the training settings that trade time for memory: the params section holding them (grad_checkpointing,
    # optimizer, mixed_precision), or the settings themselves (MEMORY_PLAN); None: optimizer, fp32, no checkpointing
    plan: str | dict | None = None
    trainable_share: float = 1.0
    optimizer: str = "adamw"
    copies: int = 0
    editors: int = 0  # MEND editors of salem_editors.rank trained beside it
    hub: bool = True  # downloaded by this stage (False: read from an earlier stage's checkpoint)
    weights: bool = True  # False: the same model as another of the phase (its activations only)


@dataclass(frozen=True)
class Stage:
    """A stage's plan: the models it holds at once in each phase (the peak is the largest phase), checkpoints it
    saves (of its largest model; a parameter-dependent count is a function of the params), host-RAM snapshots of
    the largest model's weights, and data it keeps in host RAM (GiB)."""
    phases: tuple
    saved: int | object = 0
    host_copies: int = 0
    data_gib: float = 0.0


def _get(params: dict, value):
    if isinstance(value, tuple):
        return sum(_get(params, v) for v in value)
    if isinstance(value, str) and "." in value and value.split(".")[0] in params:
        section, key = value.split(".", 1)
        if key not in params[section]:
            raise KeyError(f"parameter {value!r} is not in the profile")
        return params[section][key]
    return value


def resolve(m: Model, params: dict, data_dir: str = "data") -> Use:
    plan = params[m.plan] if isinstance(m.plan, str) else m.plan or {
        "optimizer": m.optimizer, "grad_checkpointing": False, "mixed_precision": "no"}
    shp = shape(str(_get(params, m.name)), m.kind, data_dir)
    seq = int(_get(params, m.seq))
    # MEND's editors: for each of the MLP's two matrix shapes, A and B of rank salem_editors.rank over [u; delta]
    editors = m.editors * 2 * 2 * (shp.hidden + shp.ff) * int(params["salem_editors"]["rank"]) if m.editors else 0
    return Use(shape=shp, dtype=m.dtype, trained=m.trained, optimizer=plan["optimizer"],
               mixed_precision=plan["mixed_precision"], grad_checkpointing=bool(plan["grad_checkpointing"]),
               batch=int(_get(params, m.batch)), seq=seq, full_logits=m.full_logits,
               kv_tokens=seq + int(_get(params, m.new_tokens)) if m.new_tokens else 0,
               trainable_share=m.trainable_share, copies=m.copies, extra_trained=editors, weights=m.weights)


@dataclass
class Estimate:
    gpu: float  # GiB
    ram: float
    hub: dict  # GiB of 16-bit weights of each hub model the stage downloads
    checkpoints: float  # GiB of checkpoints it saves
    models: list = field(default_factory=list)  # names

    @property
    def disk(self) -> float:
        return sum(self.hub.values()) + self.checkpoints


def estimate(stage: Stage, params: dict, data_dir: str = "data") -> Estimate:
    """A stage's peak: the largest phase with all its models on the GPU plus CUDA_OVERHEAD_GIB (0 without a
    model); host RAM: the largest model's weights as from_pretrained loads them before they move to the GPU,
    stage.host_copies more of them, the stage's data and HOST_OVERHEAD_GIB; disk: the hub cache (16-bit weights
    of the models it downloads) and its saved checkpoints (the largest model in its dtype)."""
    phases = [[(m, resolve(m, params, data_dir)) for m in ph] for ph in stage.phases]
    gpu = max((sum(gpu_bytes(u) for _, u in ph) / GIB + CUDA_OVERHEAD_GIB for ph in phases if ph), default=0.0)
    uses = [u for ph in phases for _, u in ph]
    big = max((u.shape.params * DTYPE_BYTES[u.dtype] for u in uses), default=0) / GIB
    saved = stage.saved(params) if callable(stage.saved) else stage.saved
    return Estimate(gpu=gpu, ram=big * (1 + stage.host_copies) + stage.data_gib + HOST_OVERHEAD_GIB,
                    hub={str(_get(params, m.name)): u.shape.params * 2 / GIB for ph in phases for m, u in ph if m.hub},
                    checkpoints=saved * big, models=sorted({str(_get(params, m.name)) for ph in phases for m, _ in ph}))


def fits(e: Estimate) -> list[str]:
    """The limits (LIMITS) the estimate exceeds."""
    return [k for k, v in (("gpu", e.gpu), ("ram", e.ram), ("disk", e.disk)) if v > LIMITS[k]]


# ---------------------------------------------------------------- the stages (issue 26's inventory, per stage)
_RF = "randomized_forgetting_finetune"
_RF_SEQ = (f"{_RF}.max_prompt_tokens", f"{_RF}.max_choice_tokens")
# scoring: the prompts' KV cache repeated for both answers (so seq + seq tokens per prompt)
_RF_MEMORY = "randomized_forgetting_memory"  # the scoring batch and the memory plan of both training stages
_RF_EVAL = Model(f"{_RF}.model", batch=f"{_RF_MEMORY}.eval_batch_size", seq=_RF_SEQ, new_tokens=_RF_SEQ,
                 full_logits=False, hub=False)
_QR_SEQ = "quantization_recovery_target.seq_len"
_QR_REF = Model("quantization_recovery_target.model", batch="quantization_recovery_schedule.batch_size", seq=_QR_SEQ,
                hub=False)  # the reference of KL / NPO (full logits)
_QR_UNLEARN = Model("quantization_recovery_target.model", trained=True, seq=_QR_SEQ, hub=False,
                    batch="quantization_recovery_schedule.batch_size")  # fp32 AdamW
_NP = Model("neuroplasticity_base.model", "token_classifier", trained=True, batch="neuroplasticity_base.batch_size",
            seq="neuroplasticity_base.max_len", full_logits=False, hub=False)
_VIT_SEQ = 197  # ViT-B/16 at 224 px: 196 patches + CLS
_VIT_DATA = 12.0  # GiB: 10,000 images at 224 px in fp32 (6 GiB) and the splits' copies
_TOX = "selective_pruning_vision_toxicity"
_OPT_TOX = Model(f"{_TOX}.lm", batch=f"{_TOX}.batch_size", seq=f"{_TOX}.seq_len")
_OPT_GEN = Model(f"{_TOX}.lm", batch=f"{_TOX}.gen_batch_size", seq=64, new_tokens=f"{_TOX}.max_new_tokens",
                 full_logits=False, hub=False)  # sampling: prompts of up to 64 tokens


def _n_kept(params: dict) -> int:
    un = params["quantization_recovery_unlearn"]
    return len(un["lrs"]) if un["keep"] else 0  # the kept method's selected model at every lr


STAGES = {
    "selective_pruning": Stage(((Model("selective_pruning.model", batch="selective_pruning.batch_size",
                                       seq="selective_pruning.seq_len"),),), data_gib=2.0),
    "neuroplasticity_data": Stage(((),), data_gib=0.5),
    "neuroplasticity_base": Stage(((Model("neuroplasticity_base.model", "token_classifier", trained=True,
                                          batch="neuroplasticity_base.batch_size", seq="neuroplasticity_base.max_len",
                                          full_logits=False),),), saved=1),
    **{name: Stage(((_NP,),), saved=lambda p: p["neuroplasticity_prune"]["n_stages"] + 1, data_gib=2.0)
       for name in ("neuroplasticity_concept", "neuroplasticity_random", "neuroplasticity_concept_std")},
    "neuroplasticity": Stage(((Model("neuroplasticity_base.model", "token_classifier",
                                     batch="neuroplasticity_base.batch_size", seq="neuroplasticity_base.max_len",
                                     full_logits=False, hub=False), ),
                              (Model("neuroplasticity.embedding_model", "encoder", batch=64, seq=128,
                                     full_logits=False, hub=False),)), data_gib=3.0),
    "salem_base": Stage(((Model("salem_base.model", "sequence_classifier", trained=True,
                                batch="salem_base.batch_size", seq="salem_base.max_len", full_logits=False),),),
                        saved=1, data_gib=1.0),
    "salem_edits": Stage(((Model("salem_base.model", "sequence_classifier", batch=32, seq="salem_base.max_len",
                                 full_logits=False, hub=False),
                           Model("salem_edits.gen_model", batch=16, seq="salem_edits.max_new_tokens",
                                 full_logits=False, new_tokens="salem_edits.max_new_tokens")),)),
    # MEND: the model is frozen (no optimizer state), its activations and the edited matrices' gradients flow
    # to the editors; every trained editor (5) is kept, one in training with Adam
    "salem_editors": Stage(((Model("salem_base.model", "sequence_classifier", trained=True,
                                   batch="salem_editors.loc_batch", seq="salem_base.max_len", full_logits=False,
                                   optimizer="sgd", trainable_share=0.5, editors=5, hub=False),),)),
    "salem_qa_edits": Stage(((Model("salem_qa_edits.model", batch=16, seq="salem_qa_edits.max_len"),),)),
    "salem_qa_editors": Stage(((Model("salem_qa_edits.model", trained=True, batch="salem_qa_editors.edit_batch",
                                      seq="salem_qa_edits.max_len", optimizer="sgd", trainable_share=0.6, editors=5,
                                      hub=False),),)),
    # the fine-tuning baseline clones the whole LM and takes Adam steps on the clone, beside the LM itself
    "salem": Stage(((Model("salem_qa_edits.model", trained=True, batch="salem_qa_editors.edit_batch",
                           seq="salem_qa_edits.max_len", copies=1, hub=False),),)),
    _RF: Stage(((Model(f"{_RF}.model", trained=True, batch=f"{_RF}.batch_size", seq=_RF_SEQ, full_logits=False,
                       plan=_RF_MEMORY),), (_RF_EVAL,)), saved=1),
    "randomized_forgetting_forget": Stage(((Model(f"{_RF}.model", trained=True,
                                                  batch="randomized_forgetting_forget.batch_size", seq=_RF_SEQ,
                                                  full_logits=False, plan=_RF_MEMORY, hub=False),
                                            # the forget set is scored inside training (after optimizer steps)
                                            replace(_RF_EVAL, weights=False)),),
                                          host_copies=1),  # the fine-tuned weights, restored before every run
    "randomized_forgetting": Stage(((),), data_gib=4.0),
    "quantization_recovery_target": Stage(((Model("quantization_recovery_target.model", seq=1,
                                                  full_logits=False),),), saved=1),
    "quantization_recovery_retrain": Stage(((Model("quantization_recovery_target.retrain_model", seq=1,
                                                   full_logits=False),),), saved=1),
    # host RAM: the selected epoch's snapshot, and the reference's codes of three precisions (int8 per weight)
    **{name: Stage(((_QR_REF, _QR_UNLEARN),), saved=saved, host_copies=1, data_gib=20.0)
       for name, saved in (("quantization_recovery_unlearn", _n_kept), ("quantization_recovery_sure", 0),
                           ("quantization_recovery_arms", 0))},
    # target, retrain, base and the headline unlearned model at once, evaluated with full logits
    "quantization_recovery": Stage(((Model("quantization_recovery_target.model", batch=16, seq=_QR_SEQ, copies=3),),),
                                   host_copies=3),
    "selective_pruning_vit": Stage(((Model("selective_pruning_vit.model", "image_classifier", batch=256, seq=_VIT_SEQ,
                                           full_logits=False),),), saved=1, data_gib=_VIT_DATA),
    # teacher: base, incompetent teacher and student at once; UNSIR's noise batch is the largest backward
    "selective_pruning_vit_unlearn": Stage(((Model("selective_pruning_vit.model", "image_classifier", trained=True,
                                                   batch="selective_pruning_vit_unlearn.unsir_noise", seq=_VIT_SEQ,
                                                   full_logits=False, copies=2, hub=False),),), data_gib=_VIT_DATA),
    "selective_pruning_vision_toxicity": Stage(((Model("selective_pruning_vit.model", "image_classifier", batch=256,
                                                       seq=_VIT_SEQ, full_logits=False, hub=False),),
                                                (_OPT_TOX, replace(_OPT_GEN, weights=False),
                                                 Model("bert-base-uncased", "sequence_classifier", batch=64, seq=256,
                                                       full_logits=False))), data_gib=_VIT_DATA + 2.0),
    # one model modified in turn; the previous evaluation's and the attack grid's snapshots on the device, the
    # original on the host; _GDR methods run two graphs (forget and retain batches)
    "forgetting_robustness_run": Stage(((Model("forgetting_robustness_run.model", trained=True, copies=2,
                                               batch=("forgetting_robustness_run.unlearn_batch_size",
                                                      "forgetting_robustness_run.unlearn_batch_size"),
                                               seq="forgetting_robustness_run.seq_len"),),), host_copies=1,
                                       data_gib=2.0),
    "forgetting_robustness": Stage(((),)),
    "headline": Stage(((),)),
    "curves": Stage(((),)),
}


MEMORY_PLAN = {"optimizer": "paged_adamw8bit", "grad_checkpointing": True, "mixed_precision": "bf16"}


def with_memory_plan(stage: Stage) -> Stage:
    """The stage with the memory plan on every trained model: micro-batches of 1 (gradient accumulation keeps the
    step's batch), recomputed activations, bf16 autocast and paged 8-bit AdamW (forgetlab.core.train.TrainConfig)."""
    def planned(m: Model) -> bool:  # frozen models whose activations carry gradients (optimizer "sgd") are left
        return m.trained and m.optimizer != "sgd"

    def plan(m: Model, phase: tuple) -> Model:
        if planned(m):
            return replace(m, batch=1, plan=MEMORY_PLAN)
        # a reference model scored on the same micro-batches
        return replace(m, batch=1) if any(planned(o) for o in phase) and m.weights else m
    return replace(stage, phases=tuple(tuple(plan(m, ph) for m in ph) for ph in stage.phases))


def table(profile: str = "paper", root: str | Path = ".", data_dir: str = "data") -> str:
    """The markdown table of every stage's estimate under `profile` (forgetlab.repro.profile.load_params)."""
    from forgetlab.repro.profile import load_params
    params = load_params(profile, root)
    rows = ["| Stage | Models | GPU GiB | GPU GiB, memory plan | Host RAM GiB | Disk GiB | Fits the limits |",
            "|---|---|---:|---:|---:|---:|---|"]
    for name, stage in STAGES.items():
        e = estimate(stage, params, data_dir)
        planned = estimate(with_memory_plan(stage), params, data_dir).gpu
        over = fits(e)
        verdict = "no model" if not e.models else "yes" if not over else (
            "with the memory plan" if planned <= LIMITS["gpu"] and over == ["gpu"] else "no: " + ", ".join(over))
        rows.append(f"| {name} | {', '.join(e.models) or '-'} | {e.gpu:.0f} | {planned:.0f} | {e.ram:.0f} | "
                    f"{e.disk:.0f} | {verdict} |")
    disk = pipeline_disk(params, data_dir)
    rows.append(f"| whole pipeline (disk) | every hub model once, every checkpoint kept | | | | {disk:.0f} | "
                f"{'yes' if disk <= LIMITS['disk'] else 'no: disk'} |")
    return "\n".join(rows) + "\n"


def pipeline_disk(params: dict, data_dir: str = "data") -> float:
    """GiB of disk the whole pipeline keeps: every hub model's 16-bit weights once and every stage's checkpoints
    (DVC links its cache to the workspace, cache.type reflink/hardlink, so outputs are not stored twice)."""
    ests = [estimate(stage, params, data_dir) for stage in STAGES.values()]
    return sum({k: v for e in ests for k, v in e.hub.items()}.values()) + sum(e.checkpoints for e in ests)


BEGIN = "<!-- memory:begin (generated by `python -m forgetlab.repro.memory readme`; do not edit) -->"
END = "<!-- memory:end -->"


def readme_block(profile: str = "paper", root: str | Path = ".") -> str:
    return f"{BEGIN}\n{table(profile, root)}{END}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m forgetlab.repro.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("table", "readme"))
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--root", default=".")
    a = ap.parse_args(argv)
    if a.command == "table":
        print(table(a.profile, a.root), end="")
        return
    from forgetlab.core.utils import atomic_path
    from forgetlab.repro.headline import replace_block
    readme = Path(a.root) / "README.md"
    text = replace_block(readme.read_text(), readme_block(a.profile, a.root), BEGIN, END)
    with atomic_path(readme) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
