"""Headline numbers over several seeds: rerun a stage (and the stages it needs) with every `seed` parameter of those
stages set to another value, in scratch folders made from dvc.yaml's own commands, and summarize chosen metrics.

    python -m forgetlab.repro.seeds --stages selective_pruning --seeds 1 2 \
        --metric selective_pruning:curves.code_vs_text/ff/abs.gap_top1 --out benchmarks/seeds/selective_pruning.json

Seed 0 is read from the committed metrics/; the other seeds never touch the tracked outputs. A metric is
`<metrics file stem>:<dotted path>` (path parts may hold any character but a dot).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path


def seeded_params(params: dict, stage_defs: dict, names: list[str], seed: int) -> dict:
    """A copy of params with `seed` = seed wherever one of the named stages depends on a seed: sections it lists
    whole under `params:`, and `section.seed` entries (a stage listing other single keys of a section does not
    read that section's seed)."""
    out = copy.deepcopy(params)
    for name in names:
        for entry in stage_defs[name].get("params", []):
            section, _, key = (next(iter(entry)) if isinstance(entry, dict) else entry).partition(".")
            if key in ("", "seed") and isinstance(out.get(section), dict) and "seed" in out[section]:
                out[section]["seed"] = seed
    return out


def read_metric(metrics_dir: Path, metric: str) -> float:
    stem, _, path = metric.partition(":")
    if not path:
        raise ValueError(f"metric {metric!r} must look like <metrics file stem>:<dotted path>")
    from forgetlab.repro.pipeline import lookup
    return float(lookup(json.loads((metrics_dir / f"{stem}.json").read_text()), path))


def summarize_seeds(values: dict[int, float]) -> dict:
    """Mean, sample standard deviation, min and max over seeds."""
    v = list(values.values())
    return {"per_seed": {str(s): x for s, x in values.items()}, "mean": statistics.fmean(v),
            "sd": statistics.stdev(v) if len(v) > 1 else float("nan"), "min": min(v), "max": max(v), "n": len(v)}


def run_seeds(stages: list[str], seeds: list[int], metrics: list[str], root: str | Path = ".",
              data_dir: str | Path = "data", profile: str = "default") -> dict:
    from forgetlab.repro.pipeline import make_workdir, run_stages, stages as stage_defs, venv_env
    from forgetlab.repro.profile import load_params
    root = Path(root)
    defs, params = stage_defs(root), load_params(profile, root)
    for name in stages:
        if name not in defs:
            raise ValueError(f"unknown stage {name!r}; dvc.yaml has: {', '.join(defs)}")
    values = {m: {0: read_metric(root / "metrics", m)} for m in metrics} if profile == "default" else \
        {m: {} for m in metrics}
    runs = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix=f"seed{seed}-") as tmp:
            work = make_workdir(Path(tmp) / "work", root, data_dir)
            res = run_stages(work, seeded_params(params, defs, stages, seed), root, only=stages, env=venv_env())
            runs[str(seed)] = {n: {"wall_s": r["wall_s"], "peak_rss_gb": r["peak_rss_gb"]} for n, r in res.items()}
            for m in metrics:
                values[m][seed] = read_metric(work / "metrics", m)
    return {"stages": stages, "profile": profile, "metrics": {m: summarize_seeds(v) for m, v in values.items()},
            "runs": runs}


def main(argv=None) -> None:
    from forgetlab.core.utils import write_json
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", required=True, help="stages, in dvc.yaml order")
    ap.add_argument("--seeds", nargs="+", type=int, required=True, help="seeds besides the committed seed 0")
    ap.add_argument("--metric", action="append", required=True, help="<metrics stem>:<dotted path>, repeatable")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = run_seeds(a.stages, a.seeds, a.metric, profile=a.profile)
    write_json(a.out, out)
    for m, s in out["metrics"].items():
        print(f"{m}: mean {s['mean']:.4f} sd {s['sd']:.4f} over {s['n']} seeds {s['per_seed']}")


if __name__ == "__main__":
    main()
