"""The pipeline as a whole: a killed stage leaves nothing DVC would accept, and the same params give the same bytes."""
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_smoke, stage_env


def _start(cmd: str, cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start a command; a thread collects its stderr (progress bars) so the test can wait for a phase."""
    proc = subprocess.Popen(cmd, shell=True, cwd=cwd, env=stage_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    seen: list[str] = []

    def read():  # os.read returns whatever is there (progress bars end lines with \r, not \n)
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
            seen.append(chunk.decode(errors="replace"))
    threading.Thread(target=read, daemon=True).start()
    return proc, seen


def _wait_for(seen: list[str], text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while text not in "".join(seen):
        assert proc.poll() is None, f"process ended before {text!r}:\n{''.join(seen)[-3000:]}"
        assert time.time() - t0 < timeout, f"{text!r} never appeared"
        time.sleep(0.2)


def test_atomic_path_writes_on_the_main_process_only(tmp_path, monkeypatch):
    """Under a multi-process launch every rank runs the step; only rank 0's output is renamed into place."""
    from forgetlab.core.utils import atomic_path
    for rank, text in (("1", "rank 1"), ("0", "rank 0"), ("1", "rank 1 again")):
        monkeypatch.setenv("RANK", rank)
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text(text)
        assert [p.name for p in tmp_path.iterdir()] == (["out.txt"] if rank == "0" or text.endswith("again") else [])
    assert (tmp_path / "out.txt").read_text() == "rank 0"


def test_sigterm_inside_atomic_write_leaves_nothing(tmp_path):
    """A checkpoint step killed while it writes its output leaves neither the output nor a temporary folder."""
    code = textwrap.dedent(f"""
        import sys, time
        from forgetlab.core.utils import atomic_path
        from forgetlab.repro.cli import run

        def save(out: str):
            with atomic_path(out) as tmp:
                tmp.mkdir()
                (tmp / "weights.bin").write_bytes(b"x" * 1000)
                print("writing", file=sys.stderr, flush=True)
                time.sleep(60)

        run([save], ["save", "--out", {str(tmp_path / "ckpt")!r}])
    """)
    proc, seen = _start(f"exec {sys.executable} -c {shlex.quote(code)}", tmp_path)
    _wait_for(seen, "writing", proc, timeout=60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [], "a killed step left files behind"


@pytest.mark.notebook
def test_stage_killed_during_training_leaves_no_output_and_reruns(smoke):
    """SIGTERM during the fine-tuning of a checkpoint stage (the smoke command of dvc.yaml): no output folder, no
    temporary folder; the same command then completes. (DVC also keeps the old dvc.lock entry of a failed stage,
    so `dvc repro` runs it again.)"""
    from forgetlab.repro import pipeline, profile
    cmd = dict(pipeline.stage_commands(profile.load_params("smoke", ROOT), ROOT))["neuroplasticity_base"]
    out = "checkpoints/neuroplasticity/base"
    assert f"--out {out}" in cmd
    if not (smoke / out).exists():
        pytest.skip("neuroplasticity_base is not among FORGETLAB_STAGES")
    cmd = cmd.replace(f"--out {out}", "--out checkpoints/killed/base")
    killed = smoke / "checkpoints" / "killed"
    proc, seen = _start(f"exec {cmd}", smoke)
    _wait_for(seen, "fine-tune", proc)  # the training progress bar is running
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert not killed.exists() or list(killed.iterdir()) == [], "a killed stage left a partial output"
    subprocess.run(cmd, shell=True, cwd=smoke, env=stage_env(), check=True, capture_output=True)
    assert sorted(p.name for p in (killed / "base").iterdir()) == sorted(
        p.name for p in (smoke / out).iterdir())


# The second run of the determinism test leaves out the costliest chains (forgetting robustness: removals and
# attacks; quantization recovery, whose checkpoint stages only feed its notebook; the ViT / toxicity chain of
# notebook 01b; neuroplasticity, whose fine-tunes and prune-retrains go through the same train() as randomized
# forgetting's; SaLEM's QA editors and its notebook, whose edit evaluations are forward passes and seeded
# bootstraps as in the kept notebooks), whose mechanisms (train(), unlearning losses, pruning, quantization,
# bootstrap) the rerun stages exercise too, and the two summaries of the metrics (headline, curves); this keeps
# `make test` within budget. The rerun keeps selective pruning (activation statistics) and randomized forgetting
# (fine-tune, random-label forgetting), compared by their metrics files, and SaLEM's base model, edits and MEND
# editors (trained through functional_call), compared by their checkpoint files (DETERMINISM_CHECKPOINTS).
DETERMINISM_SKIP = ("forgetting_robustness_run", "forgetting_robustness", "quantization_recovery_target",
                    "quantization_recovery_retrain", "quantization_recovery_unlearn", "quantization_recovery_sure",
                    "quantization_recovery_arms", "quantization_recovery", "selective_pruning_vit",
                    "selective_pruning_vit_unlearn", "selective_pruning_vision_toxicity", "neuroplasticity_data",
                    "neuroplasticity_base", "neuroplasticity_concept", "neuroplasticity_random",
                    "neuroplasticity_concept_std", "neuroplasticity", "salem_qa_edits", "salem_qa_editors", "salem",
                    "headline", "curves")
DETERMINISM_CHECKPOINTS = ("checkpoints/salem/base", "checkpoints/salem/edits", "checkpoints/salem/editors")
TIMING_KEYS = ("train_s",)  # wall times a checkpoint records beside its results (never in metrics/)


def same_checkpoint_file(a: Path, b: Path) -> bool:
    """Byte-identical, or for a JSON file, equal once its timings (TIMING_KEYS) are left out."""
    if a.suffix != ".json":
        return a.read_bytes() == b.read_bytes()
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING_KEYS} if isinstance(d, dict) else d  # noqa: E731
    return drop(json.loads(a.read_text())) == drop(json.loads(b.read_text()))


@pytest.mark.notebook
def test_same_params_give_identical_metrics(smoke, tmp_path_factory, data_dir, pytestconfig):
    """The smoke pipeline a second time (every stage but DETERMINISM_SKIP), in a fresh scratch folder: every
    metrics file it writes comes out byte-identical (seeds everywhere, no timings in metrics), and so does every
    file of the DETERMINISM_CHECKPOINTS (trained weights included) but for its recorded timings."""
    from forgetlab.repro import pipeline
    only = [s for s in pipeline.stages(ROOT) if s not in DETERMINISM_SKIP]
    if os.environ.get("FORGETLAB_STAGES"):
        only = [s for s in only if s in os.environ["FORGETLAB_STAGES"].split(",")]
    again = run_smoke(tmp_path_factory, data_dir, "smoke_again", pytestconfig, only=only)
    second = sorted(p.relative_to(again) for p in (again / "metrics").glob("*.json"))
    assert len(second) >= 2, f"the second run wrote only {second}"  # SP, RF (DETERMINISM_SKIP)
    for rel in second:
        assert (smoke / rel).read_bytes() == (again / rel).read_bytes(), f"{rel} differs between two runs"
    files = sorted(p.relative_to(again) for d in DETERMINISM_CHECKPOINTS if (again / d).exists()
                   for p in (again / d).rglob("*") if p.is_file())
    assert any(f.name == "editor.pt" for f in files) or os.environ.get("FORGETLAB_STAGES"), files
    for rel in files:
        assert same_checkpoint_file(smoke / rel, again / rel), f"{rel} differs between two runs"


def test_a_checkpoint_file_is_compared_without_its_timings(tmp_path):
    (tmp_path / "a.json").write_text('{"lr": 0.1, "train_s": 2.0}')
    (tmp_path / "b.json").write_text('{"lr": 0.1, "train_s": 3.5}')
    (tmp_path / "c.json").write_text('{"lr": 0.2, "train_s": 2.0}')
    assert same_checkpoint_file(tmp_path / "a.json", tmp_path / "b.json")
    assert not same_checkpoint_file(tmp_path / "a.json", tmp_path / "c.json")
    (tmp_path / "a.pt").write_bytes(b"\x00\x01")
    (tmp_path / "b.pt").write_bytes(b"\x00\x02")
    assert not same_checkpoint_file(tmp_path / "a.pt", tmp_path / "b.pt")


def test_every_notebook_stage_exports_html_and_outputs_are_removed_before_a_run(tmp_path):
    from forgetlab.repro import pipeline
    ran = set()
    for name, stage in pipeline.stages(ROOT).items():
        if pipeline.is_notebook_stage(stage["cmd"]):  # notebooks.run_stage writes reports/ and exports it
            notebook = stage["cmd"].split()[4]
            ran.add(notebook)
            report = notebook.replace("notebooks/", "reports/")
            tutorial = report.replace("reports/", "tutorials/")
            assert {report, report.replace(".ipynb", ".html"), tutorial} <= set(pipeline.outs_of(stage)), name
    assert len(ran) == 7
    outs = pipeline.outs_of(pipeline.stages(ROOT)["selective_pruning"])
    fig = "figures/selective_pruning/fig1_drop_vs_pruned.png"
    assert "metrics/selective_pruning.json" in outs and fig in outs
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "01_selective_pruning.ipynb").write_text("{}")
    (tmp_path / "figures" / "selective_pruning").mkdir(parents=True)
    (tmp_path / fig).write_text("png")
    (tmp_path / "figures" / "selective_pruning" / "vision_table.png").write_text("png")  # notebook 01b's: kept
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_selective_pruning.ipynb").write_text("{}")  # an input: kept
    pipeline.remove_outs("selective_pruning", tmp_path, ROOT)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "figures", "figures/selective_pruning", "figures/selective_pruning/vision_table.png", "notebooks",
        "notebooks/01_selective_pruning.ipynb", "reports"]


def test_every_figure_and_metrics_file_the_smoke_run_writes_is_a_declared_output(smoke):
    """DVC tracks only declared outputs: a figure a notebook writes but no stage declares would go stale unseen."""
    from forgetlab.repro import pipeline
    declared = [o for s in pipeline.stages(ROOT).values() for o in pipeline.outs_of(s)]
    written = [p.relative_to(smoke).as_posix() for d in ("figures", "metrics") for p in (smoke / d).rglob("*")
               if p.is_file()]
    assert written
    undeclared = [w for w in written if not any(w == o or w.startswith(o.rstrip("/") + "/") for o in declared)]
    assert not undeclared, f"written by a stage but declared by none: {undeclared}"


def test_run_command_reports_exit_code_output_and_the_peak_memory_of_the_stage(tmp_path):
    """What `make bench` records per stage: its exit code, both output streams, and a peak of at least 0.29 GB for
    a child that holds 300 MB. A child that holds nothing shows at most this process's own peak size (a fork counts
    its parent's pages until it execs; bench.pipeline_costs starts the stages from a small process for that)."""
    from forgetlab.repro.pipeline import run_command
    big = run_command(f"{shlex.quote(sys.executable)} -c \"import sys; b = bytearray(300 * 2**20); b[::4096] = "
                      f"b'x' * len(b[::4096]); print('out'); print('err', file=sys.stderr); sys.exit(3)\"", tmp_path)
    assert big["returncode"] == 3 and big["stdout"] == "out\n" and big["stderr"] == "err\n"
    assert big["peak_rss_gb"] >= 0.29
    small = run_command("true", tmp_path)
    import resource
    own_peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the fork's pages are ours at fork time
    assert small["returncode"] == 0 and small["peak_rss_gb"] <= own_peak_gb + 0.05


def test_the_process_that_starts_the_stages_does_not_load_torch(tmp_path):
    """`pipeline run` forks every stage; a fork's peak memory counts its parent's pages, so the parent must stay
    small: neither reading dvc.yaml nor removing a stage's outputs may import torch (utils imports it lazily)."""
    code = ("import sys; from forgetlab.repro import pipeline; "
            f"pipeline.remove_outs('selective_pruning', {str(tmp_path)!r}, {str(ROOT)!r}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_make_bench_runs_the_chosen_profile_and_keeps_the_other_profiles_costs(tmp_path, monkeypatch):
    """`make bench BENCH=smoke` must time the smoke pipeline (the --pipeline flag once went unused) and must not
    erase the default profile's costs recorded by an earlier `make bench`; BENCH=none times no pipeline."""
    import json

    from forgetlab.repro import bench
    calls = []
    monkeypatch.setattr(bench, "throughput", lambda data_dir: {"eval_vs_plain_forward": 0.75})
    monkeypatch.setattr(bench, "pipeline_costs", lambda profile, data_dir, jobs: calls.append(profile) or
                        {"profile": profile, "total_wall_s": 1.0})
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"pipeline": {"default": {"profile": "default", "total_wall_s": 7000.0}}}))
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "salem.json").write_text('{"wall_s": 3.0}')
    bench.main(["--out", str(out), "--pipeline", "smoke"])
    got = json.loads(out.read_text())
    assert calls == ["smoke"]
    assert got["pipeline"] == {"default": {"profile": "default", "total_wall_s": 7000.0},
                               "smoke": {"profile": "smoke", "total_wall_s": 1.0}}
    assert got["stages"] == {"salem": {"wall_s": 3.0}} and got["throughput"] == {"eval_vs_plain_forward": 0.75}
    bench.main(["--out", str(out), "--pipeline", "none"])
    assert calls == ["smoke"] and set(json.loads(out.read_text())["pipeline"]) == {"default", "smoke"}
    bench.main(["--out", str(out), "--pipeline", "smoke", "--jobs", "2"])  # kept beside the jobs=1 run
    assert calls == ["smoke", "smoke"] and set(json.loads(out.read_text())["pipeline"]) == {
        "default", "smoke", "smoke_jobs2"}


def test_render_fills_values_as_dvc_does_and_refuses_what_the_shell_would_act_on():
    from forgetlab.repro.pipeline import render
    params = {"s": {"a": "k=8", "flag": False, "lr": 1e-4, "bad": "k=8|full", "sp": "two words"}}
    assert render("x -p a ${s.a} -p f ${s.flag} -p lr ${s.lr}", params) == "x -p a k=8 -p f false -p lr 0.0001"
    for key in ("bad", "sp"):
        with pytest.raises(ValueError, match=f"s.{key} = .*unquoted"):
            render(f"x -p v ${{s.{key}}}", params)
    with pytest.raises(KeyError, match=r"\$\{s.nope\}, which params.yaml does not define"):
        render("x ${s.nope}", params)


def test_a_list_parameter_is_a_list_never_a_comma_string():
    from forgetlab.core.utils import check_list
    assert check_list("g", [32, 64], int) == [32, 64]
    assert check_list("m", (1, 2.5), float) == [1, 2.5]  # a float list takes ints
    assert check_list("g", [], int) == []
    with pytest.raises(TypeError, match=r"parameter 'g' must be a list of int \(a YAML list"):
        check_list("g", "32,64", int)
    with pytest.raises(TypeError, match="parameter 'g' must be a list of int"):
        check_list("g", 64, int)
    with pytest.raises(TypeError, match=r"parameter 'g\[1\]' must be int, got bool True"):
        check_list("g", [1, True], int)


def test_our_stage_graph_is_dvcs_own():
    """run_stages(jobs>1) starts a stage once the stages it reads from are done: the same edges as DVC's graph."""
    from dvc.repo import Repo

    from forgetlab.repro.pipeline import upstream
    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph
        name = lambda stage: getattr(stage, "name", None)  # noqa: E731  (data.dvc's stage has none)
        dvcs = {name(s): {name(t) for t in graph.successors(s) if name(t)} for s in graph.nodes if name(s)}
    assert upstream(ROOT) == dvcs
    assert upstream(ROOT)["quantization_recovery"] >= {"quantization_recovery_unlearn", "quantization_recovery_sure",
                                                     "quantization_recovery_arms"}


def _toy_pipeline(path: Path, stages: dict) -> None:
    import yaml
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))


def test_parallel_run_waits_for_inputs_runs_independent_stages_side_by_side_and_splits_the_threads(tmp_path):
    import os

    from forgetlab.repro.pipeline import run_stages
    _toy_pipeline(tmp_path, {
        "a": {"cmd": "sleep 1 && date +%s.%N > a.txt", "outs": ["a.txt"]},
        "b": {"cmd": "date +%s.%N > b.txt && cat a.txt >> b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
        "c": {"cmd": "sleep 1 && echo $OMP_NUM_THREADS > c.txt", "outs": ["c.txt"]}})
    t0 = time.perf_counter()
    done = run_stages(tmp_path, {}, tmp_path, jobs=2)
    elapsed = time.perf_counter() - t0
    assert list(done) == ["a", "b", "c"] and all(r["returncode"] == 0 for r in done.values())
    b_start, a_end = map(float, (tmp_path / "b.txt").read_text().split())
    assert b_start >= a_end, "b started before a, whose output it reads, had finished"
    assert elapsed < 1.8, f"a and c (1 s each) did not run side by side: {elapsed:.1f} s"
    assert (tmp_path / "c.txt").read_text().strip() == str(max(1, (os.cpu_count() or 1) // 2))
    t0 = time.perf_counter()
    run_stages(tmp_path, {}, tmp_path)  # jobs=1: one after the other, as dvc repro
    assert time.perf_counter() - t0 >= 2.0


def test_parallel_run_stops_starting_stages_after_a_failure_and_names_it(tmp_path):
    from forgetlab.repro.pipeline import StageFailed, run_stages, schedule_order
    _toy_pipeline(tmp_path, {
        "slow": {"cmd": "sleep 1 && touch slow.txt", "outs": ["slow.txt"]},
        "bad": {"cmd": "echo broken >&2 && exit 3", "outs": ["bad.txt"]},
        "after_bad": {"cmd": "touch after.txt", "deps": ["bad.txt"], "outs": ["after.txt"]},
        "after_slow": {"cmd": "touch after_slow.txt", "deps": ["slow.txt"], "outs": ["after_slow.txt"]}})
    with pytest.raises(StageFailed, match="stage bad failed:(.|\n)*broken") as err:
        run_stages(tmp_path, {}, tmp_path, jobs=2)
    assert err.value.stage == "bad" and err.value.returncode == 3
    assert (tmp_path / "slow.txt").exists(), "a stage running when another failed was not left to finish"
    assert not (tmp_path / "after.txt").exists() and not (tmp_path / "after_slow.txt").exists()
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['nope'\]; dvc.yaml has \['after_bad'"):
        run_stages(tmp_path, {}, tmp_path, only=["nope"])
    with pytest.raises(ValueError, match="parameter .jobs. must be an integer > 0, got 0"):
        run_stages(tmp_path, {}, tmp_path, jobs=0)
    # the critical path first: a chain's priority is the expected seconds from it to the end of the pipeline
    needs = {"a": set(), "b": {"a"}, "c": set()}
    assert schedule_order(["a", "b", "c"], needs, {"a": 1.0, "b": 10.0, "c": 5.0}) == {"a": 11.0, "b": 10.0, "c": 5.0}
    assert schedule_order(["a", "b", "c"], needs, {}) == {"a": 2.0, "b": 1.0, "c": 1.0}


def test_pipeline_run_refuses_a_profile_in_place_and_makes_a_new_workdir(tmp_path, monkeypatch, capsys):
    """`pipeline run --profile smoke` in the repository would overwrite the tracked figures/ and metrics/ with
    numbers dvc.lock does not record: refused, by name. A --workdir that does not exist yet becomes a scratch copy."""
    from forgetlab.repro import pipeline
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        pipeline.main(["run", "--profile", "smoke"])
    assert exit_.value.code == 2
    assert "--profile smoke would write its outputs over the tracked" in capsys.readouterr().err
    calls = []
    monkeypatch.setattr(pipeline, "run_stages", lambda workdir, params, root, **kw: calls.append(
        (Path(workdir), params["profile"], kw["only"], kw["jobs"])) or {})
    work = tmp_path / "new"
    pipeline.main(["run", "--profile", "smoke", "--workdir", str(work), "--jobs", "2", "--stage", "salem_base"])
    assert calls == [(work, "smoke", ["salem_base"], 2)]
    assert (work / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text() and (work / "data").is_symlink()


@pytest.mark.notebook
def test_executed_notebooks_show_every_saved_figure_and_the_tracked_tutorials_are_clean(smoke):
    """Every cell that saves figures shows each of them (one image/png per save_figure call) and no stray return
    value; the tutorials/ copies git tracks are valid notebooks with their outputs, without stderr or widget noise,
    under the size limit."""
    import re

    import nbformat

    from forgetlab.repro.notebooks import MAX_TUTORIAL_BYTES
    reports = sorted((smoke / "reports").glob("*.ipynb"))
    assert len(reports) == 7
    for report in reports:
        nb = nbformat.read(report, as_version=4)
        n_saved = n_shown = 0
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            calls = len(re.findall(r"^\s*(?:plots\.)?save_figure\(", cell.source, flags=re.M))
            images = sum("image/png" in o.get("data", {}) for o in cell.outputs)
            assert images == calls or not calls, f"{report.name} code cell {i}: {calls} figures saved, {images} shown"
            assert not any("PosixPath" in str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs), \
                f"{report.name} code cell {i} shows a return value"
            n_saved, n_shown = n_saved + calls, n_shown + images
        assert n_saved and n_shown >= n_saved, report.name
        tutorial = smoke / "tutorials" / report.name
        assert tutorial.stat().st_size <= MAX_TUTORIAL_BYTES
        tut = nbformat.read(tutorial, as_version=4)
        nbformat.validate(tut)
        outputs = [o for c in tut.cells if c.cell_type == "code" for o in c.outputs]
        assert sum("image/png" in o.get("data", {}) for o in outputs) == n_shown
        assert not [o for o in outputs if o.get("name") == "stderr" or
                    "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


@pytest.mark.notebook
def test_a_dvc_experiment_with_the_smoke_profile_runs_and_exp_show_lists_its_headline_metrics(tmp_path, data_dir):
    """`dvc exp run --temp` with the smoke profile's -S flags (params.yaml untouched) and one more parameter, on
    one cheap stage, in a clone. The temporary workspace checks data/ out of the DVC cache (as `make data` leaves
    it): here the clone tracks the part of the tests' data that stage reads, `dvc add`-ed into a scratch cache."""
    import shutil

    from forgetlab.repro import profile
    clone = tmp_path / "repo"
    env = stage_env()
    run = lambda cmd, **kw: subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True,  # noqa: E731
                                           **kw)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert run(f"dvc cache dir --local {tmp_path / 'cache'}").returncode == 0
    shutil.copytree(data_dir / "bigbench" / "squad_shifts", clone / "data" / "bigbench" / "squad_shifts")
    assert run("dvc add --quiet data").returncode == 0
    assert run("git -c user.name=t -c user.email=t@t commit --quiet -m 'test data' data.dvc").returncode == 0
    sets = " ".join(profile.exp_sets("smoke", ROOT))
    proc = run(f"dvc exp run --temp {sets} -S neuroplasticity_data.max_sentences=200 neuroplasticity_data",
               timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert subprocess.run(["git", "diff", "--quiet", "params.yaml", "dvc.lock"], cwd=clone).returncode == 0
    shown = json.loads(run("dvc exp show --json --no-pager").stdout)
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    assert exps, shown
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["neuroplasticity_data"]["max_sentences"] == 200
    assert "sp_gap" in data["metrics"]["metrics/headline.json"]["data"]


def test_dict_unpacking_is_dvcs_own():
    """pipeline.unpack writes a section into a command as DVC's `${section}` does under this repository's parsing
    settings (.dvc/config: a false boolean as --no-key, which the notebook stages read)."""
    from dvc.parsing.interpolate import to_str

    from forgetlab.repro import pipeline
    section = {"model": "smollm2-135m", "n_steps": 3, "lr": 1e-05, "keep": "", "methods": "GA,NPO_GDR",
               "odd": "a b;c", "flag": True, "off": False, "ks": [0, 2], "names": ["x y", "z"]}
    assert pipeline.unpack(section) == to_str(section, {"bool": "boolean_optional"})
    assert pipeline.unpack({"empty": [], "n": 1}) == to_str({"empty": [], "n": 1}) == "--n 1"
    assert "bool = boolean_optional" in (ROOT / ".dvc" / "config").read_text()
