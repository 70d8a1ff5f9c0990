"""Repository conventions: one source of dependencies, clean notebooks, params that match dvc.yaml and the
notebooks, profiles that are complete, CI that runs the README's test command."""
import importlib
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from forgetlab.repro import notebooks, pipeline, profile

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"] and project["requires-python"].startswith(">=3.11")
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # environment.yml installs the package itself (with the same constraints as make), never its own list
    assert pip == ["-c constraints.txt", "-e .[dev]"]


def test_constraints_pin_every_dependency_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ]", dep)[0]).lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert pins["torch"] == "2.13.0" and "torch==2.13.0" in project["dependencies"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(nb):
    assert notebooks.problems(nb) == []


def notebook_stages(name: str = "default"):
    """(stage, notebook path, the parameters its command gives the notebook, the notebook's defaults) of every
    notebook stage under a profile (parsing the command fails on an unknown, missing or mistyped flag)."""
    for stage, cmd in pipeline.stage_commands(profile.load_params(name, ROOT), ROOT):
        if pipeline.is_notebook_stage(cmd):
            nb, passed = pipeline.notebook_parameters(cmd, ROOT)
            yield stage, nb, passed, notebooks.parameters_of(ROOT / nb)


def test_every_notebook_has_a_stage():
    assert {Path(nb).name for _, nb, _, _ in notebook_stages()} == {p.name for p in NOTEBOOKS}


def test_every_notebook_default_is_the_value_dvc_yaml_passes_from_params_yaml():
    """A notebook run by hand (JupyterLab) computes what the pipeline computes: each parameter's default equals the
    default profile's value, with the same type (a list a list, a float a float); outputs default to scratch/,
    never to the tracked figures/ and metrics/."""
    for _, nb, passed, defaults in notebook_stages():
        assert set(passed) == set(defaults)
        for key, value in passed.items():
            default = defaults[key]
            if key in ("figures_dir", "metrics_path"):
                assert str(default).startswith("scratch/"), f"{nb}: {key} default {default!r}"
                continue
            assert (default, type(default)) == (value, type(value)), \
                f"{nb}: parameter {key} defaults to {default!r}, params.yaml gives {value!r}"


@pytest.mark.parametrize("name", list(profile.PROFILES))
def test_every_notebook_parameter_arrives_with_the_type_of_its_default(name):
    """Every profile's values reach each notebook with the type of its default (a list of items of the type of the
    default's items; a float may be written as an int), so no notebook check rejects a profile."""
    for stage, nb, passed, defaults in notebook_stages(name):
        for key, value in passed.items():
            default = defaults[key]
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if isinstance(default, float) \
                else type(value) is type(default)
            assert ok, f"{name}/{stage}: {key}={value!r} arrives as {type(value).__name__}, default is {default!r}"
            if isinstance(default, list) and default:
                assert all(type(v) is type(default[0]) for v in value), f"{name}/{stage}: {key}={value!r}"


NOTEBOOK_PARAMS = {  # the module whose NotebookParams checks each notebook's parameters
    "01_selective_pruning": "papers.selective_pruning.experiment",
    "01b_selective_pruning_vision_toxicity": "papers.selective_pruning.vision_toxicity",
    "02_neuroplasticity": "papers.neuroplasticity.claims",
    "03_randomized_forgetting": "papers.randomized_forgetting.analysis",
    "04_quantization_recovery": "papers.quantization_recovery.analysis", "05_salem_editing": "papers.salem.analysis",
    "06_forgetting_robustness": "papers.forgetting_robustness.analysis"}


@pytest.mark.parametrize("name", list(profile.PROFILES))
def test_every_notebook_checks_its_parameters_once_in_its_typed_params(name):
    """Each notebook checks its parameters by building its paper's NotebookParams, and by no check of its own;
    every profile's values pass; under the default profile, each field given a value of no allowed type fails with
    an error naming that field (so no field goes unchecked)."""
    from dataclasses import fields
    for stage, nb, passed, defaults in notebook_stages(name):
        cls = importlib.import_module(f"forgetlab.{NOTEBOOK_PARAMS[Path(nb).stem]}").NotebookParams
        code = "\n".join(c.source for c in nbformat.read(ROOT / nb, as_version=4).cells if c.cell_type == "code")
        assert ".NotebookParams.from_namespace(globals())" in code and "check_" not in code, nb
        values = {**defaults, **passed}
        assert {f.name for f in fields(cls)} <= set(values), nb
        cls.from_namespace(values)
        if name == "default":
            for f in fields(cls):
                with pytest.raises((TypeError, ValueError), match=f.name):
                    cls.from_namespace({**values, f.name: {}})


def test_a_notebook_stage_reads_its_flags_strictly(tmp_path, capsys):
    """The notebook stage's flags (DVC's dict unpacking of its section): a bool as --key/--no-key, a list as
    --key a b, and an unknown, missing or mistyped flag is an error naming it."""
    nb = tmp_path / "n.ipynb"
    cell = nbformat.v4.new_code_cell("n = 3\nlr = 0.5\nname = 'x'\nflag = True\nks = [1, 2]\nfracs = [0.5]")
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), nb)
    argv = ["--n", "4", "--lr", "1", "--name", "7", "--no-flag", "--ks", "3", "--fracs", "1", "0.25"]
    assert notebooks.parse_parameters(nb, argv) == {"n": 4, "lr": 1, "name": "7", "flag": False, "ks": [3],
                                                    "fracs": [1.0, 0.25]}
    assert notebooks.parse_parameters(nb, argv[:6] + ["--flag"])["ks"] == []  # DVC leaves an empty list out
    for bad, msg in ((argv + ["--seed", "0"], "unrecognized arguments: --seed"),
                     (argv[2:], "the following arguments are required: --n"),
                     (["--n", "many"] + argv[2:], "argument --n: invalid number value: 'many'"),
                     (argv + ["--ks", "x"], "argument --ks: invalid int value: 'x'"),
                     (argv[:6] + argv[7:], "required: --flag/--no-flag")):
        with pytest.raises(SystemExit):
            notebooks.parse_parameters(nb, bad)
        assert msg in capsys.readouterr().err


def test_our_rendering_of_dvc_yaml_is_dvcs_own():
    """The smoke tests run pipeline.render's commands, so they must be exactly what `dvc repro` runs (a YAML
    boolean reached the notebook as the string 'true' under DVC but as True under our renderer: the full
    pipeline failed where the smoke run passed)."""
    from dvc.repo import Repo
    ours = dict(pipeline.stage_commands(profile.load_params("default", ROOT), ROOT))
    with Repo(str(ROOT)) as repo:
        dvcs = {s.addressing: " ".join(s.cmd.split()) for s in repo.index.stages if getattr(s, "cmd", None)}
    assert ours == dvcs


def forgetlab_steps(params: dict):
    """(stage, index, module, step, flags on the command line) of every `python -m forgetlab.<module> <step>`."""
    for stage, cmd in pipeline.stage_commands(params, ROOT):
        for i, argv in enumerate(pipeline.step_commands(cmd)):
            # a boolean's flag is --key or --no-key (no step has an argument whose name starts with no_)
            yield stage, i, argv[2], argv[3], {re.sub(r"^--(no-)?", "", a).replace("-", "_") for a in argv[4:]
                                               if a.startswith("--")}


@pytest.mark.parametrize("name", list(profile.PROFILES))
def test_checkpoint_steps_take_every_value_from_the_command_line(name):
    """No second default that can drift from params.yaml: every argument of a checkpoint step is on its command
    line in dvc.yaml, except one that defaults to None (unused in that configuration, e.g. SURE's mask without
    SURE); a default other than None (robustness.run's, which the `forgetlab` command shows) is the value that every
    stage passes in the default profile. Every step of a module's STEPS is run by some stage."""
    import inspect
    params = profile.load_params(name, ROOT)
    run = set()
    for stage, i, module, step, flags in forgetlab_steps(params):
        fn, kwargs = pipeline.step_arguments(stage, params, ROOT, i)
        run.add((module, fn.__name__))
        for arg, p in inspect.signature(fn).parameters.items():
            assert arg in flags or p.default is None, f"{stage}: {module} {step} does not pass --{arg}"
            if name == "default" and p.default not in (inspect.Parameter.empty, None):
                default = list(p.default) if isinstance(p.default, tuple) else p.default  # a list's default
                assert kwargs[arg] == default, \
                    f"{module}.{fn.__name__}({arg}={p.default!r}); {stage} passes {kwargs[arg]!r}"
    modules = {m for m, _ in run}
    for module in modules:
        for fn in importlib.import_module(module).STEPS:
            assert (module, fn.__name__) in run, f"{module}.{fn.__name__} is in STEPS but no stage runs it"


def test_stage_params_match_the_p_flags():
    """Every value a stage reads from params.yaml is declared under its params: (so DVC tracks it)."""
    for name, stage in pipeline.stages(ROOT).items():
        refs = set(re.findall(r"\$\{([\w.]+)\}", stage["cmd"]))
        declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        # a whole section ("salem") or the key itself ("salem.lr") may be declared
        missing = {r for r in refs if r not in declared and r.split(".")[0] not in declared}
        assert not missing, f"stage {name} reads {missing} without declaring them under params:"


@pytest.mark.parametrize("name", [p for p in profile.PROFILES if p != "default"])
def test_profiles_are_complete_and_valid(name):
    base = profile.load_params("default", ROOT)
    merged = profile.load_params(name, ROOT)
    assert merged["profile"] == name
    assert set(merged) == set(base)
    for section, values in merged.items():
        if isinstance(values, dict):
            assert set(values) == set(base[section])
            for key, value in values.items():  # same types as the default (int may stand for float)
                want = type(base[section][key])
                assert isinstance(value, want) or (want is float and isinstance(value, int)), (section, key)
    pipeline.stage_commands(merged, ROOT)  # every ${...} resolves


def test_profile_rejects_unknown_keys():
    with pytest.raises(KeyError, match="unknown parameter 'selective_pruning.n_stepz'"):
        profile.deep_merge({"selective_pruning": {"n_steps": 1}}, {"selective_pruning": {"n_stepz": 2}})
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profile.load_params("fast", ROOT)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make repro" in (ROOT / "README.md").read_text()


def test_citation_cites_the_five_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    titles = " ".join(r["title"] for r in cff["references"])
    for word in ("Selective Pruning", "Relearn", "Unforgettable", "truly unlearn", "SaLEM"):
        assert word in titles


# src modules whose changes cannot change a stage's outputs: timings written outside the outputs (bench), argument
# parsing (cli: a wrong argument fails the stage), building data/ (data/ is itself a dependency), reading dvc.yaml and
# the profiles (pipeline, profile: a notebook looks up which stage makes a missing input; DVC runs the stages itself)
NOT_OUTPUT_MODULES = {"repro.bench", "repro.cli", "data.build", "repro.pipeline", "repro.profile"}
SRC = ROOT / "src" / "forgetlab"


def _module_file(name: str) -> Path | None:
    """The file of a forgetlab module; None for a package whose __init__ is only a docstring (nothing in it can
    change an output: core, methods, papers, repro and each paper's package)."""
    import ast
    for p in (SRC / (name.replace(".", "/") + ".py"), SRC / name.replace(".", "/") / "__init__.py"):
        if name and p.exists():
            body = ast.parse(p.read_text()).body
            docstring_only = len(body) == 1 and isinstance(body[0], ast.Expr)
            return None if p.name == "__init__.py" and docstring_only else p
    return None


def _forgetlab_imports(code: str, package: str = "") -> set[str]:
    """forgetlab modules imported anywhere in `code` (also inside functions), as dotted names under forgetlab."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[:len(parts) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            elif (node.module or "").split(".")[0] == "forgetlab":
                mod = node.module.partition(".")[2]
            else:
                continue
            found |= {mod} | {f"{mod}.{a.name}".lstrip(".") for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("forgetlab.")}
    return {m for m in found if _module_file(m)}


def _closure(modules: set[str]) -> set[str]:
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_OUTPUT_MODULES:
            continue
        seen.add(m)
        f = _module_file(m)
        todo += _forgetlab_imports(f.read_text(), m if f.name == "__init__.py" else m.rpartition(".")[0])
    return seen


def test_every_stage_depends_on_the_src_modules_its_code_imports_and_no_others():
    """A change to any src module a stage runs (directly or through imports, e.g. models.py's architecture tables or
    plots.py) must rerun the stage: each such module is one of its deps (or inside a folder that is), and so is the
    findings template its notebook fills (a paper's FINDINGS). A change to a module it does not run must not: no
    src module beyond them is a dep (a stale one retrains a stage for nothing)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing, stale = {}, {}
    for name, stage in stages.items():
        code = "\n".join("".join(c["source"]) for nb in re.findall(r"notebooks/\S+\.ipynb", stage["cmd"])
                         for c in nbformat.read(ROOT / nb, as_version=4).cells if c.cell_type == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        entry = set(re.findall(r"python -m forgetlab\.([\w.]+)", stage["cmd"]))
        modules = _closure(_forgetlab_imports(code) | entry)
        files = {_module_file(m).relative_to(ROOT).as_posix() for m in modules}
        findings = {stem: path for m in modules if m.startswith("papers.") and m.endswith(".headline")
                    for stem, path in importlib.import_module(f"forgetlab.{m}").FINDINGS.items()}
        for stem in re.findall(r"headline\.FINDINGS\[\"(\w+)\"\]", code):  # a template of a module it imports
            files.add(findings[stem].relative_to(ROOT).as_posix())
        deps = [d.rstrip("/") for d in stage.get("deps", [])]
        lost = sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in deps))
        if lost:
            missing[name] = lost
        extra = sorted(d for d in deps if d.startswith("src/") and d.endswith((".py", ".md")) and d not in files)
        if extra:
            stale[name] = extra
    assert not missing, f"add these deps in dvc.yaml: {missing}"
    assert not stale, f"these deps in dvc.yaml are not run by their stage: {stale}"
    # the check itself: imports followed through modules (pruning -> neurons -> utils), relative imports inside a
    # package (data -> data.bigbench), imports inside functions, no modules beyond them, and packages only where
    # their __init__ holds code (data's does; papers.salem's is a docstring)
    assert _closure({"methods.pruning"}) == {"methods.pruning", "core.neurons", "core.utils"}
    robustness = _closure({"papers.forgetting_robustness.experiment"})
    assert {"data", "data.bigbench", "data.corpora", "core.models", "core.train"} <= robustness
    assert "repro.bench" not in _closure({"repro.bench"})
    assert "repro.cli" not in _closure({"papers.neuroplasticity.experiment"})
    assert _closure({"papers.salem.analysis"}) >= {"papers.salem.experiment"}
    assert not {"papers", "papers.salem", "core", "methods"} & (_closure({"papers.salem.analysis"}) | robustness)


def test_every_figure_is_a_dvc_plot():
    """`dvc plots show` / `dvc plots diff` see every PNG a stage declares (file outs, and the PNGs committed inside
    a declared figures folder)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = {p for p in dvc.get("plots", []) if isinstance(p, str)}  # the others are curves (test_curves.py)
    for name, stage in dvc["stages"].items():
        for out in pipeline.outs_of(stage):
            if out.startswith("figures/") and out.endswith(".png"):
                assert out in listed, f"{name}: {out} is not under plots: in dvc.yaml"
            elif out.startswith("figures/") and (ROOT / out).is_dir():
                for png in (ROOT / out).glob("*.png"):
                    assert png.relative_to(ROOT).as_posix() in listed, f"{name}: {png.name} is not under plots:"
    assert all((ROOT / p).exists() for p in listed), "plots: lists a figure that no longer exists"


@pytest.mark.parametrize("name", [p for p in profile.PROFILES if p != "default"])
def test_profile_apply_changes_only_the_overlay_values_and_keeps_every_comment(tmp_path, name):
    import shutil
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    before = (tmp_path / "params.yaml").read_text()
    profile.apply(name, tmp_path / "params.yaml", tmp_path)
    after = (tmp_path / "params.yaml").read_text()
    assert yaml.safe_load(after) == profile.load_params(name, ROOT)
    comments = lambda text: [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]  # noqa: E731
    assert comments(after) == comments(before)
    changed = sum(a != b for a, b in zip(before.splitlines(), after.splitlines()))
    assert len(before.splitlines()) == len(after.splitlines())
    assert changed <= len(profile.flatten(profile.overlay(name, ROOT)))


@pytest.mark.parametrize("name", [p for p in profile.PROFILES if p != "default"])
def test_exp_sets_give_dvc_exactly_the_profiles_values(name):
    """`dvc exp run -S key=value` reads each value with Hydra's override grammar: every value of the overlay comes
    back with its type (a list a list, the string '0.001' a string, not a float; a bare a,b would be a sweep)."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    flags = profile.exp_sets(name, ROOT)
    assert flags[::2] == ["-S"] * (len(flags) // 2)
    parsed = OverridesParser.create().parse_overrides([shlex.split(f)[0] for f in flags[1::2]])
    got = {o.key_or_group: o.value() for o in parsed}
    want = profile.flatten(profile.overlay(name, ROOT))
    assert {k: (v, type(v)) for k, v in got.items()} == {k: (v, type(v)) for k, v in want.items()}
    assert all(not o.is_sweep_override() for o in parsed)


def test_a_missing_checkpoint_names_the_dvc_repro_that_makes_it(tmp_path):
    from forgetlab.repro.notebooks import producer, require_inputs
    assert producer("checkpoints/salem/qa_editors", ROOT) == "salem_qa_editors"
    assert producer("checkpoints/salem/qa_editors/editor.pt", ROOT) == "salem_qa_editors"
    assert producer("nowhere/x", ROOT) is None
    with pytest.raises(FileNotFoundError, match=r"checkpoints/quantization_recovery/target is missing: run "
                                                r"`dvc repro quantization_recovery_target` first"):
        require_inputs(str(tmp_path), "checkpoints/quantization_recovery/target", root=ROOT)
    require_inputs(str(tmp_path), root=ROOT)  # present: nothing happens


def test_metrics_files_hold_floats_at_the_stated_precision(tmp_path):
    """metrics/*.json: floats at utils.METRIC_DIGITS significant digits (a rerun on another CPU type, whose sums
    differ in the 6th-7th digit, writes the same bytes), small values and NaN kept, ints and bools untouched."""
    import json
    import math

    import numpy as np

    from forgetlab.core.utils import METRIC_DIGITS, write_json, write_metrics
    obj = {"loss": 3.608442, "ppl": np.float32(80.49666), "tiny": 1.234567e-5, "n": 7, "ok": True,
           "nan": float("nan"), "arr": np.array([0.123456789, 2.0])}
    write_metrics(tmp_path / "m.json", obj)
    got = json.loads((tmp_path / "m.json").read_text())
    assert METRIC_DIGITS == 4
    assert got["loss"] == 3.608 and got["ppl"] == 80.5 and got["tiny"] == 1.235e-5 and got["arr"] == [0.1235, 2.0]
    assert got["n"] == 7 and got["ok"] is True and math.isnan(got["nan"])
    # the two CPU types' values of the issue give the same bytes
    write_metrics(tmp_path / "a.json", {"x": 3.608441, "y": 80.49668})
    write_metrics(tmp_path / "b.json", {"x": 3.608442, "y": 80.49666})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    write_json(tmp_path / "c.json", {"x": 3.608442})  # other JSON keeps 7 digits
    assert json.loads((tmp_path / "c.json").read_text())["x"] == 3.608442
    # every notebook writes its metrics through write_metrics
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert "write_metrics(metrics_path" in nb.read_text(), nb.name


def test_as_written_allows_exactly_the_rounding_of_a_metrics_file():
    """The smoke tests' as_written: a value recomputed from rounded inputs matches what the file holds, and a value
    off by more than the rounding can explain does not (the case of the CI run that failed: -1.055 written, -1.0544
    recomputed from the file's rounded table)."""
    from conftest import as_written

    from forgetlab.core.metrics import recovery_share
    from forgetlab.core.utils import to_builtin
    raw = (0.2776, 0.4333333, 0.5809524)  # a share of -1.05497 whose inputs the file holds at 4 digits
    written = to_builtin(recovery_share(*raw), 4)
    held = to_builtin(list(raw), 4)
    assert written == -1.055 and recovery_share(*held) != pytest.approx(written, rel=1e-5)
    assert written == as_written(recovery_share, *held)
    assert written + 0.01 != as_written(recovery_share, *held)
    ratio = as_written(lambda a, b: a / b, 5.123, 18.7)  # 0.27396
    assert 0.274 == ratio and 0.2741 == ratio and 0.2745 != ratio
    assert float("nan") == as_written(recovery_share, 0.5, 0.4, 0.4)  # no gap: NaN, as the file holds it


def test_layers_import_downwards_and_no_paper_imports_another():
    """core <- methods <- papers <- repro (data beside core): core imports neither methods nor papers nor repro,
    methods and data import no paper and no repro module, and a paper imports no other paper (only repro.cli, which
    turns its STEPS into a command line)."""
    wrong = {}
    for f in sorted(SRC.rglob("*.py")):
        name = f.relative_to(SRC).with_suffix("").as_posix().replace("/", ".")
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        layer = name.split(".")[0]
        for m in _forgetlab_imports(f.read_text(), package):
            top = m.split(".")[0]
            if ((layer == "core" and top in ("methods", "papers", "repro"))
                    or (layer in ("methods", "data") and top in ("papers", "repro"))
                    or (layer == "papers" and top == "papers" and m.split(".")[1] != name.split(".")[1])
                    or (layer == "papers" and top == "repro" and m != "repro.cli")):
                wrong.setdefault(name, []).append(m)
    assert not wrong, f"imports across layers or papers: {wrong}"


def test_every_training_config_a_paper_builds_states_its_optimizer_settings():
    """TrainConfig's weight decay, warmup and clipping change what a stage trains: every TrainConfig a paper builds
    passes them (from its parameters), or a plan that does (**settings), never relying on TrainConfig's defaults."""
    import ast
    needed = {"weight_decay", "warmup_steps", "grad_clip"}
    calls = 0
    for path in sorted((ROOT / "src" / "forgetlab" / "papers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "TrainConfig":
                calls += 1
                given = {k.arg for k in node.keywords}
                assert None in given or needed <= given, \
                    f"{path.relative_to(ROOT)}:{node.lineno}: TrainConfig without {sorted(needed - given)}"
    assert calls >= 9  # the papers' training calls were found
