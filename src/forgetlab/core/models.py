"""Model loading: local default models in data/, HF hub names for the paper-scale profile.

Both go through the same `from_pretrained` path; the only difference is where the name resolves to.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                          AutoModelForTokenClassification,
                          AutoTokenizer, PreTrainedModel)

# Default models built by `make data` (see src/forgetlab/data/build.py).
LOCAL_MODELS = {
    "smollm2-135m": "models/smollm2-135m",  # SmolLM2-135M-Instruct, Llama architecture, causal LM
    "minilm-l6": "models/minilm-l6",  # all-MiniLM-L6-v2, 6-layer BERT encoder (no MLM head)
}
# Hub names the papers used that have no "org/" prefix.
LEGACY_HUB_NAMES = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", "bert-base-uncased",
                    "bert-base-cased", "distilbert-base-cased", "distilbert-base-uncased", "roberta-base",
                    "roberta-large"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(name_or_path: str, data_dir: str | Path = "data") -> str:
    """Map a model name to what `from_pretrained` takes: a local folder or a hub id.

    Local default names ("smollm2-135m", "minilm-l6") resolve into `data_dir`; an existing folder is used as is;
    "org/name" and the classic unprefixed names (gpt2, distilgpt2, ...) are hub ids (paper-scale profile), read from
    the folder of $FORGETLAB_HUB_MIRROR instead of the network when it is set (forgetlab.data.hub).
    """
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"parameter 'model' must be a string, got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if name in LOCAL_MODELS:
        path = Path(data_dir) / LOCAL_MODELS[name]
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"default model {name!r} not found at {path}: run `make data`")
        return str(path)
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise FileNotFoundError(f"model folder {name} has no config.json (save it with save_pretrained)")
        return name
    if _HUB_ID.match(name) or name in LEGACY_HUB_NAMES:
        from forgetlab.data.hub import mirrored
        found = mirrored("models", name)  # $FORGETLAB_HUB_MIRROR's copy, when a mirror is set
        return name if found is None else str(found)
    raise ValueError(f"unknown model {name!r}: use one of {sorted(LOCAL_MODELS)}, a folder saved with "
                     "save_pretrained, or a Hugging Face hub id such as 'EleutherAI/pythia-1.4b'")


DEVICES = ("auto", "cpu", "cuda", "cuda:<index>")


def resolve_device(device: str = "auto") -> str:
    """The one device decision of a stage, from its `device` parameter: "auto" is the GPU when torch sees one (under
    `accelerate launch`, this process's GPU, LOCAL_RANK) and the CPU otherwise; "cpu", "cuda" and "cuda:<index>"
    are taken as they are (a GPU asked for where there is none is an error, not a silent fall back to the CPU)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"parameter 'device' is {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{int(os.environ['LOCAL_RANK'])}" if "LOCAL_RANK" in os.environ else "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"parameter 'device' is {device!r}, but torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return device


def _gated(e: BaseException) -> bool:
    """The hub refused a gated model (meta-llama/Llama-2-7b-hf): huggingface_hub's GatedRepoError, which
    transformers re-raises as an OSError ("You are trying to access a gated repo")."""
    from huggingface_hub.errors import GatedRepoError
    while e is not None:
        if isinstance(e, GatedRepoError) or "gated repo" in str(e):
            return True
        e = e.__cause__
    return False


def _load(auto_cls, name_or_path, data_dir, dtype, device, **kwargs):
    path = resolve_model(name_or_path, data_dir)
    try:
        model = auto_cls.from_pretrained(path, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        if _gated(e):
            raise OSError(f"model {name_or_path!r} is gated on the Hugging Face hub: accept its licence at "
                          f"https://huggingface.co/{path} with your account, then set HF_TOKEN to an access token "
                          f"of that account (or run `hf auth login`) and rerun") from e
        raise OSError(f"could not load model {name_or_path!r} from {path!r} (hub ids need network access "
                      f"or a local copy in the HF cache): {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if "quantization_config" not in kwargs:
        model.to(device)
    model.eval()
    return model, tokenizer


def load_causal_lm(name_or_path: str = "smollm2-135m", *, data_dir="data", dtype=torch.float32, device="cpu",
                   **kwargs) -> tuple[PreTrainedModel, object]:
    """Load a causal LM and its tokenizer (pad token set, eval mode). kwargs go to from_pretrained."""
    return _load(AutoModelForCausalLM, name_or_path, data_dir, dtype, device, **kwargs)


ENCODER_TYPES = ("bert", "roberta", "distilbert", "xlm-roberta", "electra")


def is_encoder(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return config.model_type in ENCODER_TYPES


def load_lm(name_or_path: str = "smollm2-135m", *, data_dir="data", dtype=torch.float32, device="cpu",
            **kwargs) -> tuple[PreTrainedModel, object]:
    """A language model of either kind: a masked LM for encoder families (BERT, RoBERTa, ...), a causal LM
    otherwise. (The default MiniLM encoder has no MLM head, so it is not a useful masked LM.)"""
    auto = AutoModelForMaskedLM if is_encoder(model_config(name_or_path, data_dir)) else AutoModelForCausalLM
    return _load(auto, name_or_path, data_dir, dtype, device, **kwargs)


def load_encoder(name_or_path: str = "minilm-l6", *, data_dir="data", dtype=torch.float32, device="cpu",
                 **kwargs) -> tuple[PreTrainedModel, object]:
    """Load a bare encoder (AutoModel) and its tokenizer."""
    return _load(AutoModel, name_or_path, data_dir, dtype, device, **kwargs)


def sentence_embeddings(texts: Sequence[str], model: str = "minilm-l6", data_dir: str = "data",
                        batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """Mean-pooled, L2-normalized sentence embeddings (all-MiniLM-L6-v2 is a sentence-transformers model),
    computed on `device` and returned on the CPU."""
    enc_model, tok = load_encoder(model, data_dir=data_dir, device=device)
    vecs = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=128).to(device)
            h = enc_model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            vecs.append(F.normalize((h * m).sum(1) / m.sum(1), dim=-1).cpu())
    return torch.cat(vecs) if vecs else torch.zeros(0)


def load_token_classifier(name_or_path: str = "minilm-l6", labels: list[str] = ("O",), *, data_dir="data",
                          dtype=torch.float32, device="cpu", **kwargs) -> tuple[PreTrainedModel, object]:
    """Load a token classifier with a (new, if needed) head for `labels`."""
    labels = list(labels)
    id2label = dict(enumerate(labels))
    return _load(AutoModelForTokenClassification, name_or_path, data_dir, dtype, device,
                 num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
                 **kwargs)


def load_sequence_classifier(name_or_path: str = "minilm-l6", labels: list[str] = ("0", "1"), *, data_dir="data",
                             dtype=torch.float32, device="cpu", **kwargs) -> tuple[PreTrainedModel, object]:
    """Load a sequence (pair) classifier with a (new, if needed) head for `labels`."""
    from transformers import AutoModelForSequenceClassification
    labels = list(labels)
    id2label = dict(enumerate(labels))
    return _load(AutoModelForSequenceClassification, name_or_path, data_dir, dtype, device,
                 num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
                 **kwargs)


def model_config(name_or_path: str, data_dir="data"):
    return AutoConfig.from_pretrained(resolve_model(name_or_path, data_dir))


# ---------------------------------------------------------------- tiny random-init models for tests
TINY_FAMILIES = ("llama", "gpt2", "gpt_neox", "opt", "bert")


def tiny_model(family: str, *, vocab_size: int = 97, hidden: int = 32, ff: int = 48, layers: int = 2,
               heads: int = 4, seed: int = 0) -> PreTrainedModel:
    """A small random-init model of a supported family, built in-process (no files, no network)."""
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig,
                              GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM)
    specials = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    builders = {
        "llama": lambda: LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), **specials)),
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab_size, n_embd=hidden, n_inner=ff, n_layer=layers, n_head=heads, **specials)),
        "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
            num_attention_heads=heads, **specials)),
        "opt": lambda: OPTForCausalLM(OPTConfig(
            vocab_size=vocab_size, hidden_size=hidden, ffn_dim=ff, num_hidden_layers=layers,
            num_attention_heads=heads, word_embed_proj_dim=hidden, **specials)),
        "bert": lambda: BertForMaskedLM(BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ff, num_hidden_layers=layers,
            num_attention_heads=heads, pad_token_id=0)),
    }
    if family not in builders:
        raise ValueError(f"unknown tiny model family {family!r}; allowed: {', '.join(builders)}")
    torch.manual_seed(seed)
    model = builders[family]()
    model.eval()
    return model
