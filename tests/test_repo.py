"""Repository conventions: one source of dependencies, clean notebooks, params that match dvc.yaml and the
notebooks, profiles that are complete, CI that runs the README's test command."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from forgetlab import notebooks, pipeline, profile

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
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ]", dep)[0]).lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert pins["torch"] == "2.13.0" and "torch==2.13.0" in project["dependencies"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(nb):
    assert notebooks.problems(nb) == []


def test_every_notebook_has_a_stage_and_the_stage_passes_only_known_parameters():
    params = profile.load_params("default", ROOT)
    used = set()
    for name, cmd in pipeline.stage_commands(params, ROOT):
        if not cmd.startswith("papermill"):
            continue
        nb, passed = pipeline.papermill_parameters(cmd)
        used.add(Path(nb).name)
        defaults = notebooks.parameters_of(ROOT / nb)
        assert set(passed) == set(defaults), f"{name}: -p flags and the parameters cell differ"
    assert used == {p.name for p in NOTEBOOKS}


def test_stage_params_match_the_p_flags():
    """Every value a stage reads from params.yaml is declared under its params: (so DVC tracks it)."""
    for name, stage in pipeline.stages(ROOT).items():
        refs = set(re.findall(r"\$\{([\w.]+)\}", stage["cmd"]))
        declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        # a whole section ("salem") or the key itself ("salem.lr") may be declared
        missing = {r for r in refs if r not in declared and r.split(".")[0] not in declared}
        assert not missing, f"stage {name} reads {missing} without declaring them under params:"


@pytest.mark.parametrize("name", ["smoke", "paper"])
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
