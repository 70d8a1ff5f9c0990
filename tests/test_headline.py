"""Headline numbers and verdicts (forgetlab.repro.headline): the rule on hand values, the committed headline files and
README table against what the committed metrics give, and the headline stage inside the smoke pipeline."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, read_metrics
from forgetlab.core import report
from forgetlab.papers.quantization_recovery.headline import quantization_recovery
from forgetlab.repro import headline as h


def x(value, ci=None):
    return report.number(value, ci, "share", "")


@pytest.mark.parametrize("value,ci,direction,ok,expected", [
    (0.3, (0.1, 0.5), ">", True, "holds"),
    (0.3, (-0.1, 0.5), ">", True, "partly holds"),
    (-0.3, (-0.5, -0.1), ">", True, "does not hold"),
    (-0.3, (-0.5, 0.1), ">", True, "does not hold"),
    (0.0, (-0.1, 0.1), ">", True, "does not hold"),
    (-0.2, (-0.3, -0.1), "<", True, "holds"),
    (-0.2, (-0.3, 0.1), "<", True, "partly holds"),
    (0.3, (0.1, 0.5), ">", False, "not tested"),  # a required check failed: the run did not do the thing
    (0.3, None, ">", True, "not tested"),  # no interval
    (float("nan"), (0.1, 0.5), ">", True, "not tested"),
])
def test_verdict_rule(value, ci, direction, ok, expected):
    assert h.verdict(x(value, ci), direction, 0.0, ok) == expected


def test_verdict_against_a_nonzero_null_and_bad_direction():
    assert h.verdict(x(0.6, (0.55, 0.7)), ">", 0.5) == "holds"
    assert h.verdict(x(0.6, (0.45, 0.7)), ">", 0.5) == "partly holds"
    with pytest.raises(ValueError, match="direction"):
        h.verdict(x(0.6, (0.5, 0.7)), "=", 0.5)


def test_conservative_difference_by_hand():
    d = report.difference(0.5, (0.4, 0.6), 0.1, (0.0, 0.2), "share", "a - b")
    assert d["value"] == pytest.approx(0.4) and d["ci"] == pytest.approx([0.2, 0.6])


def _qr_metrics(verdict: str, forgot: int, closest: dict | None) -> dict:
    return {"target_quantized_verbmem_share": {"nf4": 0.9},
            "regime": {"verdict": verdict, "forgot": forgot, "hits": [], "closest": closest}}


def test_quantization_recovery_is_tested_only_by_a_per_epoch_run_that_unlearned():
    """Metrics of the earlier protocol (no per-epoch regime) and a run where no constrained epoch forgot are 'not
    tested'; otherwise the notebook's rule (recovery.recovery_regime) decides."""
    legacy = {"target_quantized_verbmem_share": {"nf4": 0.9}, "recovery": {}}
    row = next(r for r in h.claims({"quantization_recovery": quantization_recovery(legacy)})
               if r["id"] == "qr_recovery")
    assert row["verdict"] == "not tested" and "per epoch protocol run: no" in row["why"]
    close = {"name": "GA_KLR@0.0001", "epoch": 3, "precision": "nf4", "full_share": 0.2, "share": 0.8,
             "share_ci": [0.7, 0.9]}
    for verdict, forgot, closest, expected in (("not tested", 0, None, "not tested"),
                                               ("holds", 2, close, "holds"),
                                               ("partly", 2, close, "partly holds"),
                                               ("does not hold", 3, close, "does not hold")):
        heads = {"quantization_recovery": quantization_recovery(_qr_metrics(verdict, forgot, closest))}
        row = next(r for r in h.claims(heads) if r["id"] == "qr_recovery")
        assert row["verdict"] == expected, verdict
    assert quantization_recovery(_qr_metrics("holds", 2, close))["closest_quantized"]["ci"] == [0.7, 0.9]


def test_toxicity_claim_is_tested_only_with_enough_toxic_texts_for_the_statistics():
    """The toxicity claim needs MIN_TOXIC_STAT toxic texts in the neuron statistics (not merely found: the smoke
    profile finds 200 and uses 16); below, 'not tested', naming the check."""
    import copy
    from forgetlab.papers.selective_pruning import headline as sp
    m = json.loads((ROOT / "metrics" / "selective_pruning_vision_toxicity.json").read_text())
    for n, tested in ((sp.MIN_TOXIC_STAT - 1, False), (sp.MIN_TOXIC_STAT, True)):
        few = copy.deepcopy(m)
        few["toxicity"]["counts"].update(forget=200, forget_stat=n)
        row = next(r for r in h.claims({"selective_pruning_vision_toxicity": sp.selective_pruning_vision_toxicity(few)})
                   if r["id"] == "sp_toxicity")
        assert (row["verdict"] != "not tested") == tested, n
        assert ("enough toxic texts for the statistics: no" in row["why"]) != tested, row["why"]


def test_committed_headline_files_match_the_committed_metrics():
    """metrics/headline*.json are what the metrics files give (rerun `make results` after a stage changes)."""
    proc = subprocess.run([sys.executable, "-m", "forgetlab.repro.headline", "check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    compact = json.loads((ROOT / "metrics" / "headline.json").read_text())
    assert compact and all(isinstance(v, float) for v in compact.values())


@pytest.mark.notebook
def test_headline_stage_reads_the_smoke_metrics(smoke):
    heads = read_metrics(smoke, "headline_detail")
    compact = read_metrics(smoke, "headline")
    assert set(heads["verdicts"]) >= set(compact)
    for row in heads["verdicts"].values():
        assert row["verdict"] in h.VERDICTS
    sp = heads["headlines"]["selective_pruning"]["gap"]
    assert sp["value"] == pytest.approx(read_metrics(smoke, "selective_pruning")["headline"]["gap_top1"])
    assert not any(isinstance(v, float) and math.isnan(v) for v in compact.values())


def test_findings_placeholders_by_hand(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "benchmarks" / "seeds").mkdir(parents=True)
    (tmp_path / "metrics" / "p.json").write_text(json.dumps({"a": {"b": 0.12345, "ci": [0.1, 0.2], "n": 16},
                                                             "name": "x/y"}))
    (tmp_path / "benchmarks" / "seeds" / "p.json").write_text(json.dumps({"metrics": {"p:a.b": {"sd": 0.031}}}))
    (tmp_path / "params.yaml").write_text("sec:\n  k: 7\n")
    text = ("{{ p | a | b ; 100 ; .1f }} pp {{ p | a | ci ; 100 ; .0f }} n={{ p | a | n }} {{ p | name }} "
            "sd {{ seeds/p | metrics | p:a.b | sd ; 100 ; .1f }} k={{ params | sec | k }}")
    assert report.fill(text, {}, tmp_path) == "12.3 pp [10, 20] n=16 x/y sd 3.1 k=7"
    (tmp_path / "metrics" / "q.json").write_text(json.dumps({"r": None, "ci": [None, 0.5], "last": [1, 2, 3]}))
    assert report.fill("{{ q | r ; 1 ; .2f }} {{ q | ci ; 1 ; .2f }} {{ q | last | -1 }}", {}, tmp_path) == \
        "n/a [n/a, 0.50] 3"
    with pytest.raises(ValueError, match=r"placeholder \{\{p \| a \| missing\}\}: KeyError"):
        report.fill("{{ p | a | missing }}", {}, tmp_path)
    assert report.wrap("a  b\nc\n\n- item one\n- item two") == "a b c\n\n- item one\n- item two"
    # a named sentence reads the same sources; a notebook's finding (readme=False) drops the {% readme %} parts
    texts = {"twice": lambda src: f"twice {2 * src.lookup('p', ['a', 'n'])}"}
    assert report.fill("{{ text: twice }}", texts, tmp_path) == "twice 32"
    with pytest.raises(ValueError, match=r"placeholder \{\{text: thrice\}\}: KeyError"):
        report.fill("{{ text: thrice }}", texts, tmp_path)
    (tmp_path / "t.md").write_text("A {{ text: twice }}{% readme %}, k={{ params | sec | k }}{% endreadme %}.\n\nB")
    assert report.finding(tmp_path / "t.md", texts, tmp_path) == "A twice 32, k=7.\n\nB"
    assert report.finding(tmp_path / "t.md", texts, tmp_path, readme=False) == "A twice 32.\n\nB"


def test_every_findings_template_is_its_papers_and_each_notebook_fills_only_its_own():
    """Each paper's FINDINGS name a template next to its headline module, whose {{ text: }} sentences are in the
    same module's TEXT: so a notebook that shows its finding (and its stage) needs its own paper's module only."""
    import re
    for paper in h.PAPERS:
        for stem, template in paper.FINDINGS.items():
            assert template.parent == Path(paper.__file__).parent and template.is_file(), (stem, template)
            names = set(re.findall(r"\{\{\s*text:\s*(\w+)\s*\}\}", template.read_text()))
            assert names and names <= set(paper.TEXT), (stem, names - set(paper.TEXT))
    assert set(h.FINDINGS) == set(h.HEADLINES)  # one README paragraph per metrics file


def test_dvc_metrics_show_prints_only_the_headline_table_within_160_columns():
    from conftest import stage_env
    out = subprocess.run(["dvc", "metrics", "show"], cwd=ROOT, env=stage_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[1].startswith("metrics/headline.json"), out.stdout
    assert max(map(len, lines)) <= 160


def test_seed_interval_is_the_student_t_interval_by_hand():
    """Three seeds, mean 1, sd 1: 1 -+ t(0.975, 2) / sqrt(3) = 1 -+ 4.3027 / 1.7321."""
    lo, hi = report.seed_interval({"n": 3, "mean": 1.0, "sd": 1.0})
    assert lo == pytest.approx(1 - 2.48414, abs=1e-4) and hi == pytest.approx(1 + 2.48414, abs=1e-4)
