"""The papers' main curves as data, for `dvc plots show` and `dvc plots diff` between experiments.

The PNG figures under plots: in dvc.yaml show a run; these CSV files (plots/<name>.csv, one row per point, one column
per series) let DVC draw and compare the curves themselves across commits and `dvc exp` runs. Each is computed from a
paper's metrics file only, by one function per curve (`CURVES`), so the `curves` stage reruns in a second when an
experiment changes a metrics file and never retrains.

    python -m forgetlab.repro.curves --metrics-dir metrics --out plots
"""
from __future__ import annotations

import argparse
import csv
from functools import partial
from pathlib import Path
from typing import Callable


def sp_drop_vs_pruned(m: dict, selective: bool) -> list[dict]:
    """Selective pruning, FF neurons of the main pair (the pair of costs_vs_random: code_vs_text/ff by default):
    forget and retain top-1 drops against the share pruned, by the run's scoring (selective) or random pruning of
    the same numbers of neurons."""
    run = f"{m['costs_vs_random']['pair']}/{m['scoring'] if selective else 'random'}"
    c = m["curves"][run]["curve"]
    return [{"pruned": p, "forget_top1_drop": c["forget_top1_drop"][i], "retain_top1_drop": c["retain_top1_drop"][i]}
            for i, p in enumerate(c["pruned"])]


def np_f1_retraining(m: dict) -> list[dict]:
    """Neuroplasticity: the concept's F1 (and the other types') over retraining steps, per pruned run."""
    concept = m["concept"]
    rows = []
    for i, step in enumerate(m["steps"]):
        row = {"step": step, f"concept_{concept}": m["concept_f1"][i], f"random_{concept}": m["random_f1"][i],
               f"concept_std_{concept}": m["concept_std_f1"][i]}
        for t, runs in m["other_f1"].items():
            row.update({f"{run}_{t}": runs[run][i] for run in ("concept", "random", "concept_std")})
        rows.append(row)
    return rows


def rf_forget_ratio(m: dict) -> list[dict]:
    """Randomized forgetting: per kept task, accuracies before/after and the test forget ratio."""
    return [{"task": t, "pretrained_acc": m["tasks"][t]["pretrained_acc"], "finetuned_acc": m["tasks"][t]["finetuned_acc"],
             "forgotten_acc": m["tasks"][t]["forget_acc"], "forget_ratio": m["tasks"][t]["forget_ratio"]}
            for t in m["kept"]]


# output name -> (metrics file stem, function)
CURVES: dict[str, tuple[str, Callable[[dict], list[dict]]]] = {
    "selective_pruning_ff_selective": ("selective_pruning", partial(sp_drop_vs_pruned, selective=True)),
    "selective_pruning_ff_random": ("selective_pruning", partial(sp_drop_vs_pruned, selective=False)),
    "neuroplasticity_f1_retraining": ("neuroplasticity", np_f1_retraining),
    "randomized_forgetting_per_task": ("randomized_forgetting", rf_forget_ratio),
}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows to CSV (floats at 4 significant digits, None as empty), written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: (f"{v:.4g}" if isinstance(v, float) else "" if v is None else v) for k, v in r.items()}
                    for r in rows)
    tmp.replace(path)


def main(argv=None) -> None:
    import json
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--out", default="plots")
    a = ap.parse_args(argv)
    for name, (stem, fn) in CURVES.items():
        write_csv(Path(a.out) / f"{name}.csv", fn(json.loads((Path(a.metrics_dir) / f"{stem}.json").read_text())))


if __name__ == "__main__":
    main()
