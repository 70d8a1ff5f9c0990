"""The paper profile's code paths on every commit (issue 26): one hub reader (forgetlab.data.hub) with a local
mirror, a mirror of tiny copies of every hub model and dataset the paper profile names (forgetlab.repro.tinyhub),
and the whole pipeline run with the paper-tiny profile on it."""
import json

import pytest
import yaml

from conftest import ROOT, read_metrics, run_smoke
from forgetlab.core.models import resolve_model
from forgetlab.data import hub
from forgetlab.repro import profile


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory, data_dir):
    from forgetlab.repro import tinyhub
    return tinyhub.build(tmp_path_factory.mktemp("hub") / "mirror", data_dir)


# ---------------------------------------------------------------------------------------------------------------- hub
def _saved(path, splits, config=None):
    from datasets import Dataset, DatasetDict
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(path / (config or "")))


def test_hub_reads_a_saved_folder_its_config_subfolder_and_streams_it(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.MIRROR, raising=False)
    _saved(tmp_path / "plain", {"train": [{"text": "a"}, {"text": "b"}]})
    _saved(tmp_path / "multi", {"test": [{"text": "c"}]}, config="cfg")
    assert hub.load_dataset(str(tmp_path / "plain"), split="train")["text"] == ["a", "b"]
    assert list(hub.load_dataset(str(tmp_path / "plain"))) == ["train"]
    assert hub.load_dataset(str(tmp_path / "multi"), "cfg", split="test")["text"] == ["c"]
    streamed = hub.load_dataset(str(tmp_path / "plain"), split="train", streaming=True)
    assert [r["text"] for r in streamed.take(1)] == ["a"]
    with pytest.raises(ValueError, match="unknown split 'validation'; allowed: train"):
        hub.load_dataset(str(tmp_path / "plain"), split="validation")
    with pytest.raises(FileNotFoundError, match="holds no dataset saved with save_to_disk"):
        hub.load_dataset(str(tmp_path))


def test_a_mirror_stands_for_the_hub_and_a_missing_copy_is_an_error_not_a_download(tmp_path, monkeypatch):
    _saved(tmp_path / "datasets" / "org" / "data", {"train": [{"text": "mirrored"}]}, config="all")
    (tmp_path / "models" / "org" / "model").mkdir(parents=True)
    (tmp_path / "models" / "org" / "model" / "config.json").write_text("{}")
    monkeypatch.setenv(hub.MIRROR, str(tmp_path))
    assert hub.load_dataset("org/data", "all", split="train")["text"] == ["mirrored"]
    assert resolve_model("org/model") == str(tmp_path / "models" / "org" / "model")
    with pytest.raises(FileNotFoundError, match=r"'org/other' is not in the hub mirror .*datasets/org/other"):
        hub.load_dataset("org/other", split="train")
    with pytest.raises(FileNotFoundError, match=r"'gpt2' is not in the hub mirror .*models/gpt2"):
        resolve_model("gpt2")
    assert hub.saved_folder("json") is None  # a packaged builder (data_files=...) is never looked up in the mirror
    monkeypatch.delenv(hub.MIRROR)
    assert resolve_model("org/model") == "org/model"  # no mirror: the hub id goes to from_pretrained


def test_paper_tiny_is_the_paper_profile_at_smoke_sizes():
    """paper-tiny extends paper and changes sizes only: every hub model and dataset of the paper profile stays
    (tasks may be a subset), so the tests run the paper's loaders and architectures."""
    own = yaml.safe_load((ROOT / "profiles" / "paper-tiny.yaml").read_text())
    paper, tiny = profile.load_params("paper", ROOT), profile.load_params("paper-tiny", ROOT)
    assert own.pop("extends") == "paper" and tiny["profile"] == "paper-tiny"
    hub_keys = {"model", "lm", "gen_model", "retrain_model", "source", "tox_source", "ppl_source", "mmlu_source",
                "forget", "retain", "pairs", "main_pairs", "qa_source", "embedding_model"}
    for section, values in own.items():
        if isinstance(values, dict):
            assert not hub_keys & set(values), f"paper-tiny replaces {hub_keys & set(values)} of {section}"
    for section, values in paper.items():
        if isinstance(values, dict):
            for key in hub_keys & set(values):
                assert tiny[section][key] == values[key], f"{section}.{key}"
    assert set(tiny["randomized_forgetting_finetune"]["tasks"]) <= set(paper["randomized_forgetting_finetune"]["tasks"])
    # the overlay DVC gets (`dvc exp run -S`) is the merged one
    sets = " ".join(profile.exp_sets("paper-tiny", ROOT))
    assert "selective_pruning.model=facebook/opt-1.3b" in sets and "selective_pruning.seq_len=32" in sets


def test_the_tiny_mirror_holds_every_hub_model_of_the_paper_profile(tiny_hub, monkeypatch):
    from forgetlab.core.models import model_config
    monkeypatch.setenv(hub.MIRROR, str(tiny_hub))
    paper = profile.load_params("paper", ROOT)
    ids = {v for section in paper.values() if isinstance(section, dict)
           for k, v in section.items() if k in ("model", "lm", "gen_model", "retrain_model") and "/" in str(v)
           or v in ("bert-base-uncased", "distilbert-base-cased")}
    assert len(ids) >= 8, ids
    families = {model_config(i).model_type for i in ids}
    assert families == {"opt", "distilbert", "bert", "gpt_neox", "llama", "vit"}


# ---------------------------------------------------------------------------------------------------- the pipeline
@pytest.mark.notebook
def test_the_whole_pipeline_runs_with_the_paper_profile_on_the_tiny_mirror(tmp_path_factory, data_dir, tiny_hub,
                                                                           pytestconfig):
    """Every stage of dvc.yaml with the paper-tiny profile: the paper's hub ids, resolved in the mirror (the
    stages run offline: a hub id the mirror lacks fails, it is never downloaded)."""
    work = run_smoke(tmp_path_factory, data_dir, "paper_tiny", pytestconfig, profile_name="paper-tiny",
                     env={hub.MIRROR: str(tiny_hub), "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    sp = read_metrics(work, "selective_pruning")
    assert sp["model"] == "facebook/opt-1.3b" and set(sp["base"]) == {"hf:github-code", "hf:pile"}
    assert read_metrics(work, "randomized_forgetting")["kept"] == ["hf:piqa", "hf:boolq"]
    for name in ("neuroplasticity", "salem", "quantization_recovery", "selective_pruning_vision_toxicity",
                 "forgetting_robustness", "headline"):
        assert read_metrics(work, name), name
    assert json.loads((work / "checkpoints" / "salem" / "qa_edits" / "edits.json").read_text())["model"] == \
        "EleutherAI/pythia-1.4b"


def test_a_dataset_with_a_loading_script_is_read_from_the_hubs_parquet_conversion(monkeypatch, capsys):
    """datasets >= 4 refuses repositories that ship a loading script; the hub keeps a parquet conversion of them
    on refs/convert/parquet. A pinned revision is not second-guessed; a failed fallback names both attempts."""
    import datasets
    calls = []

    def fake(name, config=None, split=None, revision=None, streaming=False, **kw):
        calls.append(revision)
        if revision is None or revision == "v1":
            raise RuntimeError(f"Dataset scripts are no longer supported, but found {name.split('/')[-1]}.py")
        if name == "org/gone":
            raise FileNotFoundError("no such revision")
        return ["parquet rows"]
    monkeypatch.delenv(hub.MIRROR, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert hub.load_dataset("ybisk/piqa", split="train") == ["parquet rows"]
    assert calls == [None, "refs/convert/parquet"]
    assert "ybisk/piqa ships a loading script" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="no longer supported"):
        hub.load_dataset("ybisk/piqa", split="train", revision="v1")
    with pytest.raises(RuntimeError, match=r"org/gone ships a loading script .* did not load either .*"
                                           r"FileNotFoundError: no such revision.*convert_to_parquet"):
        hub.load_dataset("org/gone", split="train")
