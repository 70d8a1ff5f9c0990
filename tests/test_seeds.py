"""Several seeds of a headline number (forgetlab.repro.seeds): which parameters change, and the summary."""
import json
import math

import pytest

from forgetlab.repro import pipeline, profile, seeds


def test_seeded_params_change_the_seed_of_exactly_the_named_stages_sections(root):
    params, defs = profile.load_params("default", root), pipeline.stages(root)
    out = seeds.seeded_params(params, defs, ["forgetting_robustness_run", "forgetting_robustness"], 7)
    assert out["forgetting_robustness_run"]["seed"] == 7 and out["forgetting_robustness"]["seed"] == 7
    assert out["selective_pruning"]["seed"] == params["selective_pruning"]["seed"] == 0  # untouched
    assert params["forgetting_robustness_run"]["seed"] == 0  # the input is not modified
    # a stage listing single keys of a section (not its seed) does not read that seed; one listing section.seed does
    out = seeds.seeded_params(params, defs, ["quantization_recovery"], 3)
    assert out["quantization_recovery"]["seed"] == 3 and out["quantization_recovery_schedule"]["seed"] == 0
    assert seeds.seeded_params(params, defs, ["quantization_recovery_sure"], 3)["quantization_recovery_schedule"][
        "seed"] == 3
    # every other value is unchanged
    out["forgetting_robustness_run"]["seed"] = out["forgetting_robustness"]["seed"] = 0
    out["quantization_recovery"]["seed"] = 0
    assert out == params


def test_summary_and_metric_paths(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"curves": {"code_vs_text/ff/abs": {"gap_top1": 0.35}},
                                                 "recovery": {"GA": {"k=8|full": {"share": 0.3}}}}))
    assert seeds.read_metric(tmp_path, "x:curves.code_vs_text/ff/abs.gap_top1") == 0.35
    assert seeds.read_metric(tmp_path, "x:recovery.GA.k=8|full.share") == 0.3
    with pytest.raises(KeyError, match="'GB'"):
        seeds.read_metric(tmp_path, "x:recovery.GB.share")
    with pytest.raises(ValueError, match="stem"):
        seeds.read_metric(tmp_path, "recovery.GA")
    s = seeds.summarize_seeds({0: 1.0, 1: 2.0, 2: 4.0})
    assert s["mean"] == pytest.approx(7 / 3) and s["sd"] == pytest.approx(1.5275252, rel=1e-6)
    assert (s["min"], s["max"], s["n"]) == (1.0, 4.0, 3)
    assert math.isnan(seeds.summarize_seeds({0: 1.0})["sd"])


def test_unknown_stage_fails_clearly(root):
    with pytest.raises(ValueError, match="unknown stage 'pruning'"):
        seeds.run_seeds(["pruning"], [1], ["selective_pruning:base.code.top1"], root=root)
