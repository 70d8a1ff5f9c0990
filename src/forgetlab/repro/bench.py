"""Benchmarks (not timed tests): `make bench` writes benchmarks/results.json.

* throughput of activation-statistics collection and of batched evaluation against a plain forward pass of
  the same model on the same batches;
* wall time and peak memory of every stage of the pipeline (`--pipeline default|smoke|paper`), run from
  dvc.yaml's own commands in a scratch folder (the tracked outputs are not touched), in dvc.yaml order;
* what the notebooks record about themselves (`record_stage`, their last call: wall time, peak memory and
  analysis timings such as the time per edit) in benchmarks/stages/<stage>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import psutil
import torch

from forgetlab.core.utils import write_json


def record_stage(stage: str, out_dir: str | Path = "benchmarks/stages", extra: dict | None = None) -> dict:
    """Record this process's wall time since start and its peak resident memory for a stage, plus any other
    timings in `extra` (timings never go into metrics/*.json, which must be identical from run to run).
    Written only inside a pipeline run (DVC, and forgetlab.repro.pipeline, set DVC_STAGE for every command): a
    notebook run by hand returns the numbers without touching the tracked benchmarks/stages/."""
    import os
    proc = psutil.Process()
    info = {"stage": stage, "wall_s": round(time.time() - proc.create_time(), 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            **(extra or {})}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the stage ran (some of) its work on a GPU
        info.update(gpu=torch.cuda.get_device_name(), peak_gpu_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2))
    if os.environ.get("DVC_STAGE"):
        write_json(Path(out_dir) / f"{stage}.json", info)
    return info


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def throughput(model_name: str = "smollm2-135m", batch_size: int = 8, seq_len: int = 128, n_batches: int = 2,
               repeats: int = 2, data_dir: str = "data") -> dict:
    """Tokens/s of a plain forward vs activation-statistics collection vs batched evaluation."""
    from forgetlab.core.eval import token_counts
    from forgetlab.core.models import load_causal_lm
    from forgetlab.core.neurons import collect_stats
    from forgetlab.core.tokens import iter_batches, make_sequences
    from forgetlab.data import load_corpus

    model, tok = load_causal_lm(model_name, data_dir=data_dir)
    seqs = make_sequences(tok, load_corpus("text", data_dir=data_dir), seq_len, batch_size * n_batches)
    batches = list(iter_batches(seqs, batch_size))
    n_tok = batch_size * n_batches * seq_len

    @torch.inference_mode()
    def plain(full: bool):
        for b in batches:
            (model if full else model.base_model)(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                  use_cache=False)

    t_base = _best_of(lambda: plain(False), repeats)
    t_full = _best_of(lambda: plain(True), repeats)
    t_stats = _best_of(lambda: collect_stats(model, batches, ("ff", "attn"), desc=None), repeats)
    t_eval = _best_of(lambda: token_counts(model, batches, desc=None), repeats)
    return {
        "model": model_name, "batch_size": batch_size, "seq_len": seq_len, "tokens": n_tok,
        "plain_base_forward_tok_s": n_tok / t_base, "plain_full_forward_tok_s": n_tok / t_full,
        "stats_ff_attn_tok_s": n_tok / t_stats, "eval_tok_s": n_tok / t_eval,
        # activation statistics run the base model (no LM head): compare with the same forward
        "stats_vs_plain_forward": t_base / t_stats,
        # evaluation needs the LM head: compare with the full forward
        "eval_vs_plain_forward": t_full / t_eval,
    }


def pipeline_costs(profile: str = "default", root: str | Path = ".", data_dir: str | Path = "data",
                   jobs: int = 1) -> dict:
    """Run every stage of a profile in a scratch folder; per stage its wall time and peak memory, and the totals
    (jobs > 1: independent stages side by side, see pipeline.run_stages). The stages are started by a separate
    small process (`pipeline run`): a forked child's peak memory counts the pages of its parent until it execs,
    so they must not be forked from this one, which holds a model."""
    import subprocess
    import sys
    import tempfile

    from forgetlab.repro import pipeline
    with tempfile.TemporaryDirectory(prefix="forgetlab-bench-") as tmp:
        work = pipeline.make_workdir(Path(tmp) / "work", root, data_dir)
        record = Path(tmp) / "costs.json"
        subprocess.run([sys.executable, "-m", "forgetlab.repro.pipeline", "run", "--profile", profile, "--workdir",
                        str(work), "--jobs", str(jobs), "--record", str(record)], check=True, cwd=root)
        run = json.loads(record.read_text())
    stages = run["stages"]
    return {"profile": profile, "jobs": jobs, "stages": stages, "elapsed_s": run["elapsed_s"],
            "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
            # jobs > 1: stages overlap, so the peak of the whole run can be up to the sum of `jobs` stage peaks
            "peak_rss_gb": max(s["peak_rss_gb"] for s in stages.values())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results.json")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--pipeline", choices=("default", "smoke", "paper", "none"), default="none",
                    help="also run this profile's whole pipeline in a scratch folder and time every stage "
                         "(default: about 2 hours on 2 CPU cores; smoke: minutes)")
    ap.add_argument("--jobs", type=int, default=1, help="run independent stages side by side (see pipeline run)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    # a run of one profile keeps the pipeline costs recorded earlier for the others (smoke does not erase default)
    runs = json.loads(out.read_text()).get("pipeline", {}) if out.exists() else {}
    if args.pipeline != "none":
        # a run with jobs > 1 is kept beside the one-after-the-other run of the same profile, not over it
        key = args.pipeline if args.jobs == 1 else f"{args.pipeline}_jobs{args.jobs}"
        runs[key] = pipeline_costs(args.pipeline, data_dir=args.data_dir, jobs=args.jobs)
    results = {"machine": {"cpus": psutil.cpu_count(), "threads": torch.get_num_threads(),
                           "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
               "throughput": throughput(data_dir=args.data_dir),
               "pipeline": runs,
               "stages": {p.stem: json.loads(p.read_text()) for p in sorted(out.parent.glob("stages/*.json"))}}
    write_json(out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
