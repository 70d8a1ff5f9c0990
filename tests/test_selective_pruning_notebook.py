"""Every notebook, run through Papermill with the commands of dvc.yaml and the smoke profile, on the real
default models and data; the tests assert on the values each notebook records in its metrics file.
(The `smoke` fixture in conftest.py runs the pipeline once per session.)"""
import json
import subprocess

import pytest
from conftest import ROOT, read_metrics, stage_env

from forgetlab import pipeline, profile

pytestmark = pytest.mark.notebook


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
    work = pipeline.make_workdir(tmp_path, ROOT, data_dir)
    cmd = ("papermill notebooks/01_selective_pruning.ipynb out.ipynb -p n_steps many "
           "-p figures_dir figs -p metrics_path m.json")
    proc = subprocess.run(cmd, shell=True, cwd=work, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "parameter 'n_steps' must be int, got str 'many'" in proc.stdout + proc.stderr
    assert not (work / "m.json").exists() and not (work / "figs").exists()
