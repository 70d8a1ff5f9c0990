"""forgetlab.data: readers on the real data/ (built by `make data`), the HF path on tiny local datasets, and the
builder's error handling on cheap fakes (no real download)."""
import json
import subprocess
from pathlib import Path

import pytest

from forgetlab.data import (CODE_LANGUAGES, CORPORA, build, check_data, list_mc_tasks, load_cifar10,
                            load_code_documents, load_corpus, load_hf_text, load_mc_task, load_squad,
                            load_text_documents, split_documents)

# (articles, paragraphs, questions) of each squad_shifts file
SQUAD_COUNTS = {"new_wiki": (48, 1581, 7936), "nyt": (797, 2017, 10056), "reddit": (1, 2035, 9767),
                "amazon": (413, 2050, 9877), "squad": (48, 2067, 10565)}


# --- readers on the real data ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", SQUAD_COUNTS)
def test_squad_shifts_counts(data_dir, source):
    articles = load_squad(source, data_dir)
    paragraphs = [p for a in articles for p in a["paragraphs"]]
    qas = [q for p in paragraphs for q in p["qas"]]
    assert (len(articles), len(paragraphs), len(qas)) == SQUAD_COUNTS[source]
    assert all(q["question"] and q["answers"] and all(isinstance(x, str) for x in q["answers"]) for q in qas)


def test_text_documents(data_dir):
    docs = load_corpus("text", data_dir)
    assert len(docs) == 48 + 797 and [d["source"] for d in docs[:48]] == ["new_wiki"] * 48
    assert len({d["id"] for d in docs}) == len(docs) and all(d["text"] and d["title"] for d in docs)
    nyt = load_squad("nyt", data_dir)[0]
    assert load_corpus("nyt", data_dir)[0]["text"] == "\n\n".join(p["context"].strip() for p in nyt["paragraphs"])
    assert len(load_corpus("reddit", data_dir)) == 2035  # one document per comment
    assert load_text_documents(("nyt",), data_dir) == load_corpus("nyt", data_dir)


def test_code_documents(data_dir):
    index = [json.loads(line) for line in (data_dir / "code" / "index.jsonl").read_text().splitlines()]
    assert [r["path"] for r in index] == sorted(r["path"] for r in index)
    docs = load_corpus("code", data_dir)
    assert [d["id"] for d in docs] == [r["path"] for r in index]
    assert [len(d["text"]) for d in docs] == [r["n_chars"] for r in index]
    chars = {lang: sum(len(d["text"]) for d in docs if d["language"] == lang) for lang in CODE_LANGUAGES}
    assert len(chars) >= 3 and all(n > 1_000_000 for n in chars.values()), chars
    python = load_code_documents(["python"], data_dir)
    assert python == load_corpus("python", data_dir) and {Path(d["id"]).suffix for d in python} <= {".py", ".pyi"}
    assert {Path(d["id"]).suffix for d in load_corpus("c", data_dir)} == {".c", ".h"}
    assert len({d["package"] for d in docs}) >= 9


def test_every_listed_mc_task_loads(data_dir):
    listed = build.read_task_list()
    assert list_mc_tasks(data_dir) == sorted(listed)
    for name in ("vitaminc_fact_verification", "fact_checker/fever", "cifar10_classification/base64", "strategyqa",
                 "social_iqa", "presuppositions_as_nli", "multiemo/hotels_text_en", "hyperbaton"):
        assert name in listed
    assert not [t for t in listed if t.startswith("multiemo/") and not t.endswith("_en")]
    for name, n in listed.items():
        task = load_mc_task(name, data_dir)
        assert task.name == name and len(task.examples) == n >= 300
        for e in task.examples:
            assert isinstance(e["input"], str) and e["choices"] and 0 <= e["target"] < len(e["choices"])
            assert e["target"] == e["targets"][0]
    task = load_mc_task("vitaminc_fact_verification", data_dir)
    assert task.prefixes["task_prefix"] and task.prefixes["append_choices_to_input"] is False
    assert load_mc_task("reasoning_about_colored_objects", data_dir).n_multi_target == 816


def test_cifar10(data_dir):
    images, labels, classes = load_cifar10(data_dir)
    assert images.shape == (10000, 32, 32, 3) and str(images.dtype) == "uint8"
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    assert [labels.count(i) for i in range(10)] == [1000] * 10
    assert 20 < images.mean() < 235
    assert load_cifar10(data_dir, n=5)[0].shape == (5, 32, 32, 3)


def test_real_data_matches_manifest(data_dir):
    assert check_data(data_dir) == []


# --- split_documents and argument checks ------------------------------------------------------------------------------

def test_split_documents_disjoint_and_deterministic():
    docs = [{"id": str(i), "text": f"doc {i}"} for i in range(100)]
    train, test = split_documents(docs, 0.3, seed=1)
    assert len(test) == 30 and len(train) == 70
    assert {d["id"] for d in train}.isdisjoint(d["id"] for d in test)
    assert sorted(d["id"] for d in train + test) == sorted(d["id"] for d in docs)
    assert split_documents(docs, 0.3, seed=1) == (train, test)
    assert split_documents(docs, 0.3, seed=2) != (train, test)
    for bad in (0, 1, -0.1, 1.5, "0.2"):
        with pytest.raises(ValueError, match="test_fraction"):
            split_documents(docs, bad, 0)


@pytest.mark.parametrize("call, allowed", [
    (lambda d: load_corpus("nope", d), "text, wiki, nyt"),
    (lambda d: load_text_documents(["nope"], d), "new_wiki, nyt, reddit"),
    (lambda d: load_code_documents(["rust"], d), "python, c, cpp"),
    (lambda d: load_squad("nope", d), "new_wiki, nyt"),
    (lambda d: load_mc_task("nope", d), "social_iqa"),
])
def test_unknown_names_raise_value_error_listing_allowed_values(data_dir, call, allowed):
    with pytest.raises(ValueError, match=f"allowed values: .*{allowed}"):
        call(data_dir)


@pytest.mark.parametrize("call", [
    lambda d: load_corpus("text", d), lambda d: load_corpus("code", d), lambda d: load_squad("nyt", d),
    lambda d: list_mc_tasks(d), lambda d: load_mc_task("social_iqa", d), lambda d: load_cifar10(d),
    lambda d: check_data(d),
])
def test_missing_data_raises_file_not_found_with_make_data(tmp_path, call):
    with pytest.raises(FileNotFoundError, match="make data"):
        call(tmp_path / "data")


def test_corpora_names_cover_languages():
    assert {"text", "wiki", "nyt", "reddit", "amazon", "code", *CODE_LANGUAGES} <= set(CORPORA)


# --- the Hugging Face path on tiny local datasets ---------------------------------------------------------------------

ROWS = {"text": ["alpha text", "beta code", "", "gamma text", "delta text"],
        "meta": [{"pile_set_name": s} for s in ("Wikipedia", "Github", "Wikipedia", "Pile-CC", "Wikipedia")]}


def test_hf_text_from_save_to_disk(tmp_path):
    import datasets
    datasets.Dataset.from_dict(ROWS).save_to_disk(str(tmp_path / "ds"))
    docs = load_hf_text(str(tmp_path / "ds"), exclude={"meta.pile_set_name": "Github"})
    assert [d["text"] for d in docs] == ["alpha text", "gamma text", "delta text"]  # empty text skipped too
    assert docs[0] == {"id": f"{tmp_path / 'ds'}/0", "source": str(tmp_path / "ds"), "title": "", "text": "alpha text"}
    assert len(load_hf_text(str(tmp_path / "ds"), n_docs=2)) == 2
    docs = load_hf_text(str(tmp_path / "ds"), filter_fn=lambda row: row["text"].startswith("g"))
    assert [d["text"] for d in docs] == ["gamma text"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_hf_text(str(tmp_path / "dd"), split="train")) == 4
    with pytest.raises(ValueError, match="split"):
        load_hf_text(str(tmp_path / "dd"), split="test")
    with pytest.raises(ValueError, match="text_column.*allowed values: text, meta"):
        load_hf_text(str(tmp_path / "ds"), text_column="code")


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_text_from_json_files_like_a_hub_name(tmp_path, streaming):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"code": t, "meta": m}) + "\n" for t, m in zip(ROWS["text"], ROWS["meta"])))
    docs = load_hf_text("json", text_column="code", data_files=str(path), streaming=streaming,
                        exclude={"meta.pile_set_name": ["Github", "Pile-CC"]}, cache_dir=str(tmp_path / "cache"))
    assert [d["text"] for d in docs] == ["alpha text", "delta text"] and docs[1]["id"] == "json/4"


# --- build error handling on cheap fakes ------------------------------------------------------------------------------

FAKE = {"name": "fake-pkg", "version": "1.0", "filename": "fake_pkg-1.0.tar.gz", "use": "code", "language": "python",
        "sha256": "0" * 64}


def fake_pip(content: bytes | None):
    """A stand-in for `pip download` that writes `content` as the artifact (or fails when None)."""
    def run(cmd, **kw):
        if content is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for fake-pkg==1.0")
        Path(cmd[cmd.index("-d") + 1], FAKE["filename"]).write_bytes(content)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_fetch_sha_mismatch_names_the_artifact_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(build.subprocess, "run", fake_pip(b"not what was pinned"))
    with pytest.raises(RuntimeError, match=r"fake-pkg==1\.0: sha256 mismatch"):
        build.fetch(FAKE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_download_failure_names_the_artifact(tmp_path, monkeypatch):
    monkeypatch.setattr(build.subprocess, "run", fake_pip(None))
    with pytest.raises(RuntimeError, match=r"(?s)fake-pkg==1\.0.*No matching distribution"):
        build.fetch(FAKE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_uses_a_verified_cached_file_without_pip(tmp_path, monkeypatch):
    import hashlib
    (tmp_path / FAKE["filename"]).write_bytes(b"pinned")
    art = dict(FAKE, sha256=hashlib.sha256(b"pinned").hexdigest())
    monkeypatch.setattr(build.subprocess, "run", lambda *a, **k: pytest.fail("pip should not run"))
    assert build.fetch(art, tmp_path) == tmp_path / FAKE["filename"]


def test_fetch_replaces_a_corrupt_cached_file(tmp_path, monkeypatch):
    import hashlib
    (tmp_path / FAKE["filename"]).write_bytes(b"corrupt")
    art = dict(FAKE, sha256=hashlib.sha256(b"pinned").hexdigest())
    monkeypatch.setattr(build.subprocess, "run", fake_pip(b"pinned"))
    assert build.fetch(art, tmp_path).read_bytes() == b"pinned"


def fake_build(monkeypatch, fail: bool = False, value: str = "x"):
    """Make build() cheap: fake artifacts, and steps that write one small file each (the first fails if asked)."""
    monkeypatch.setattr(build, "load_artifacts", lambda: [dict(FAKE, name=u, use=u) for u in ("smollm2", "minilm",
                                                                                              "bigbench")])
    monkeypatch.setattr(build, "read_task_list", lambda: {})
    monkeypatch.setattr(build, "fetch", lambda art: Path("/nonexistent"))

    def step(name):
        def run(src, out, *args):
            out.mkdir(parents=True)
            (out / f"{name}.txt").write_text(value)
            if fail:
                raise RuntimeError(f"{name} failed")
        return run
    for name in ("build_smollm2", "build_minilm", "build_bigbench", "build_code"):
        monkeypatch.setattr(build, name, step(name))


def test_build_refuses_an_existing_out_without_force(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        build.build(tmp_path / "data")


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    fake_build(monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="build_smollm2 failed"):
        build.build(tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_force_rebuild_replaces_out_and_check_data_spots_changes(tmp_path, monkeypatch):
    out = tmp_path / "data"
    fake_build(monkeypatch, value="first")
    build.build(out)
    fake_build(monkeypatch, value="second")
    build.build(out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert (out / "models" / "minilm-l6" / "build_minilm.txt").read_text() == "second"
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert [f["path"] for f in manifest["files"]] == sorted(f["path"] for f in manifest["files"])
    assert check_data(out) == []
    (out / "code" / "build_code.txt").write_text("edited")
    (out / "code" / "extra.txt").write_text("new")
    assert check_data(out) == ["not in manifest: code/extra.txt", "changed: code/build_code.txt"]


# --- selection rules -------------------------------------------------------------------------------------------------

def test_task_language_rule():
    assert build.is_english("multiemo/hotels_text_en", ["low-resource language", "non-English"])
    assert not build.is_english("multiemo/hotels_text_de", ["low-resource language", "non-English"])
    assert not build.is_english("kannada", ["low-resource language", "non-English"])
    assert not build.is_english("parsinlu_qa", ["multiple choice"])
    assert build.is_english("hyperbaton", ["multiple choice"]) and build.is_english("cifar10_classification/hex", [])


def test_code_file_rules():
    assert build.code_language("x/a.h", "cpp") == "cpp" and build.code_language("x/a.h", "c") == "c"
    assert build.code_language("a.py", "c") == "python" and build.code_language("a.cc", "c") == "cpp"
    assert build.code_language("README.md", "python") is None
    assert build.GENERATED.search(b"// Generated by the protocol buffer compiler.  DO NOT EDIT!")
    assert not build.GENERATED.search(b'"""AST nodes generated by the parser."""')
    assert build.is_table("0x01, 0x02, 0x03,") and not build.is_table("int x = 1;")


def test_nested_corpora_split_together(data_dir):
    from forgetlab.data import load_split
    code_train, code_test = load_split("code", 0.3, 0, data_dir)
    py_train, py_test = load_split("python", 0.3, 0, data_dir)
    assert {d["id"] for d in py_test} <= {d["id"] for d in code_test}
    assert not {d["id"] for d in py_train} & {d["id"] for d in code_test}
    assert py_train and py_test and all(d["language"] == "python" for d in py_train + py_test)
    wiki_train, _ = load_split("wiki", 0.3, 0, data_dir)
    text_train, _ = load_split("text", 0.3, 0, data_dir)
    assert {d["id"] for d in wiki_train} <= {d["id"] for d in text_train}


def test_hf_corpus_names_go_through_load_hf_text(tmp_path, monkeypatch):
    import datasets
    from forgetlab.data import corpora
    datasets.Dataset.from_dict({"code": [f"def f{i}(): return {i}" for i in range(10)]}).save_to_disk(tmp_path / "gh")
    monkeypatch.setitem(corpora.HF_CORPORA, "hf:github-code",
                        dict(dataset_name_or_path=str(tmp_path / "gh"), text_column="code"))
    train, test = corpora.load_split("hf:github-code", 0.2, 0, max_docs=5)
    assert len(train) + len(test) == 5 and len(test) == 1
    assert all(d["text"].startswith("def f") for d in train)
