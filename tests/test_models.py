"""Model loaders: real default models from data/, a saved tiny model through the hub-name path, errors."""
import pytest
import torch

from forgetlab.core import models


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'smollm-999'.*minilm-l6.*smollm2-135m"):
        models.resolve_model("smollm-999")


def test_missing_data_says_run_make_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make data`"):
        models.resolve_model("smollm2-135m", data_dir=tmp_path)


def test_hub_ids_resolve_to_themselves():
    assert models.resolve_model("facebook/opt-1.3b") == "facebook/opt-1.3b"
    assert models.resolve_model("gpt2") == "gpt2"


def test_default_causal_lm_is_the_real_smollm2(smollm):
    model, tok = smollm
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576 and model.config.intermediate_size == 1536
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_default_encoder_is_minilm(data_dir):
    enc, tok = models.load_encoder("minilm-l6", data_dir=data_dir)
    assert enc.config.model_type == "bert" and enc.config.num_hidden_layers == 6
    assert tok.tokenize("Paris") == ["paris"]  # uncased
    clf, _ = models.load_token_classifier("minilm-l6", ["O", "B-LOC", "I-LOC"], data_dir=data_dir)
    assert clf.config.id2label == {0: "O", 1: "B-LOC", 2: "I-LOC"} and clf.classifier.out_features == 3


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_saved_tiny_model_loads_through_the_same_path(tmp_path, data_dir, family):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    model = models.tiny_model(family, vocab_size=len(tok))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = models.load_causal_lm(str(tmp_path))
    ids = tok2("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_a_gated_hub_model_says_how_to_get_access(monkeypatch):
    """Llama-2-7B (paper profile) is gated: the error names the licence page and HF_TOKEN; other load errors keep
    the general message. transformers' own wording of the gated case is what the hub path raises."""
    from transformers import AutoModelForCausalLM

    def refuse(message):
        def from_pretrained(*args, **kwargs):
            raise OSError(message)
        return from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse(
        "You are trying to access a gated repo.\nMake sure to have access to it at "
        "https://huggingface.co/meta-llama/Llama-2-7b-hf.\n401 Client Error."))
    with pytest.raises(OSError, match=r"gated on the Hugging Face hub.*huggingface.co/meta-llama/Llama-2-7b-hf.*"
                                      r"HF_TOKEN"):
        models.load_causal_lm("meta-llama/Llama-2-7b-hf")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse("connection refused"))
    with pytest.raises(OSError, match="hub ids need network access") as err:
        models.load_causal_lm("meta-llama/Llama-2-7b-hf")
    assert "HF_TOKEN" not in str(err.value)
