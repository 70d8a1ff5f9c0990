"""Every notebook, run through Papermill with the commands of dvc.yaml and the smoke profile, on the real
default models and data; the tests assert on the values each notebook records in its metrics file."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgetlab import pipeline, profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_pipeline(work: Path, params: dict) -> None:
    for name, cmd in pipeline.stage_commands(params, ROOT):
        proc = subprocess.run(cmd, shell=True, cwd=work, env=_env(), capture_output=True, text=True)
        assert proc.returncode == 0, f"stage {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def make_workdir(path: Path, data_dir: Path) -> Path:
    for name in ("notebooks", "profiles"):
        shutil.copytree(ROOT / name, path / name)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, path / name)
    (path / "data").symlink_to(data_dir)
    return path


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, data_dir) -> Path:
    """The whole pipeline, smoke profile, in a temporary folder (never the tracked figures/ or metrics/)."""
    work = make_workdir(tmp_path_factory.mktemp("smoke"), data_dir)
    run_pipeline(work, profile.load_params("smoke", ROOT))
    return work


def read_metrics(work: Path, name: str) -> dict:
    return json.loads((work / "metrics" / f"{name}.json").read_text())


def test_selective_pruning_smoke(smoke):
    m = read_metrics(smoke, "selective_pruning")
    smoke_params = profile.load_params("smoke", ROOT)["selective_pruning"]
    assert m["model"] == "smollm2-135m" and m["forget"] == "code" and m["retain"] == "text"
    # one step prunes ff_frac of all 30 x 1536 FF neurons
    assert m["ff_pruned"] == pytest.approx(smoke_params["ff_frac"] * smoke_params["n_steps"], abs=1e-4)
    # the real SmolLM2 predicts real text and code far above chance
    assert 0.2 < m["base_retain_top1"] < 0.9 and 0.2 < m["base_forget_top1"] < 0.95
    assert m["forget_drop_ci"][0] <= m["forget_drop"] <= m["forget_drop_ci"][1]
    assert len(m["curves"]) == 2 * (smoke_params["n_steps"] + 1)
    for fmt in ("png", "pdf"):
        assert (smoke / "figures" / "selective_pruning" / f"drop_vs_pruned.{fmt}").stat().st_size > 5000
    executed = json.loads((smoke / "reports" / "01_selective_pruning.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["n_steps"] == smoke_params["n_steps"]


def test_a_parameter_of_the_wrong_type_fails_with_a_clear_message(tmp_path, data_dir):
    work = make_workdir(tmp_path, data_dir)
    cmd = ("papermill notebooks/01_selective_pruning.ipynb out.ipynb -p n_steps many "
           "-p figures_dir figs -p metrics_path m.json")
    proc = subprocess.run(cmd, shell=True, cwd=work, env=_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "parameter 'n_steps' must be int, got str 'many'" in proc.stdout + proc.stderr
    assert not (work / "m.json").exists() and not (work / "figs").exists()
