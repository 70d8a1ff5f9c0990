"""forgetlab.repro.memory: exact parameter counts from configs, the estimate's arithmetic by hand, and the README table
generated from the paper profile."""
import pytest
import yaml
from conftest import ROOT

from forgetlab.core.models import tiny_model
from forgetlab.repro import memory, profile


@pytest.mark.parametrize("name,kind,count", [  # the published parameter counts of the paper profile's models
    ("meta-llama/Llama-2-7b-hf", "causal", 6_738_415_616), ("facebook/opt-1.3b", "causal", 1_315_758_080),
    ("EleutherAI/pythia-1.4b", "causal", 1_414_647_808), ("bert-base-uncased", "encoder", 109_482_240),
    ("distilbert-base-cased", "encoder", 65_190_912), ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "causal", 1_711_376_384),
    ("minilm-l6", "encoder", 22_713_216)])
def test_parameter_counts_from_configs_match_the_published_ones(name, kind, count):
    assert memory.shape(name, kind).params == count


def test_a_saved_model_is_counted_from_its_own_config(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    s = memory.shape(str(tmp_path / "m"))
    assert s.params == sum(p.numel() for p in model.parameters())
    assert (s.layers, s.hidden, s.vocab) == (model.config.num_hidden_layers, model.config.hidden_size,
                                             model.config.vocab_size)
    with pytest.raises(ValueError, match="no config in forgetlab.repro.memory.CONFIGS"):
        memory.shape("some-org/unknown-model")


def test_gpu_bytes_by_hand():
    s = memory.Shape(params=1000, layers=2, hidden=8, heads=2, vocab=10, ff=16)
    per_layer = 4 * 1 * 8 * (34 + 5 * 2 * 4 / 8) * 4 / 2  # s*b*h*(34 + 5as/h), fp32 = twice the 16-bit bytes
    assert memory.gpu_bytes(memory.Use(s, batch=1, seq=4, full_logits=False)) == 4000 + per_layer
    train = memory.Use(s, trained=True, batch=1, seq=4, full_logits=False)
    assert memory.gpu_bytes(train) == 4000 + 4000 + 8000 + 2 * per_layer  # weights, grads, AdamW, 2 layers
    assert memory.gpu_bytes(memory.Use(s, trained=True, batch=1, seq=4)) == 16000 + 2 * per_layer + 2 * 4 * 10 * 4
    eight_bit = memory.Use(s, trained=True, optimizer="paged_adamw8bit", batch=1, seq=4, full_logits=False)
    assert memory.gpu_bytes(train) - memory.gpu_bytes(eight_bit) == 6000
    ckpt = memory.Use(s, trained=True, grad_checkpointing=True, mixed_precision="bf16", batch=1, seq=4,
                      full_logits=False)
    assert memory.gpu_bytes(ckpt) == 16000 + 2 * 4 * 8 * 2 + per_layer / 2  # layer inputs in bf16 + one layer
    gen = memory.Use(s, batch=3, seq=4, full_logits=False, kv_tokens=6)
    assert memory.gpu_bytes(gen) - memory.gpu_bytes(memory.Use(s, batch=3, seq=4, full_logits=False)) == \
        2 * 2 * 3 * 6 * 8 * 4  # K and V, per layer, sequence, token and hidden unit
    assert memory.gpu_bytes(memory.Use(s, batch=1, seq=4, full_logits=False, copies=2, weights=False)) == \
        2 * 4000 + per_layer


def test_every_stage_has_a_plan_and_the_memory_plan_never_costs_more():
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert set(memory.STAGES) == stages
    params = profile.load_params("paper", ROOT)
    for name, stage in memory.STAGES.items():
        e = memory.estimate(stage, params)
        planned = memory.estimate(memory.with_memory_plan(stage), params)
        assert planned.gpu <= e.gpu and planned.ram == e.ram and planned.disk == e.disk, name
        assert e.ram > memory.HOST_OVERHEAD_GIB or not e.models, name
    # the MUSE unlearning stages keep three checkpoints per kept method (one per learning rate)
    un = memory.estimate(memory.STAGES["quantization_recovery_unlearn"], params)
    big = memory.shape("muse-bench/MUSE-news_target").params * 4 / memory.GIB
    assert un.checkpoints == pytest.approx(3 * big)
    with pytest.raises(KeyError, match="'salem_base.no_such_key' is not in the profile"):
        memory.resolve(memory.Model("salem_base.model", batch="salem_base.no_such_key"), params)


def test_the_readme_table_is_generated_from_the_paper_profile():
    text = (ROOT / "README.md").read_text()
    assert memory.readme_block("paper", ROOT) in text, "run `python -m forgetlab.repro.memory readme`"
