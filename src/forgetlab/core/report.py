"""Headline numbers and the sentences written about them: one number with its interval and unit, the
formatting every paper's findings use, where a findings placeholder reads its value (metrics, seed runs,
params.yaml), and the filling of a findings template. Each paper's headline function, its findings templates and the
sentences they ask for by name are in `forgetlab.papers.<paper>.headline` (HEADLINES, FINDINGS, TEXT).

A findings template is markdown whose numbers are placeholders filled from the metrics, so prose never drifts from
them:

    {{ selective_pruning | headline | gap_top1 ; 100 ; .1f }}     metrics/selective_pruning.json, x 100, 1 decimal
    {{ seeds/selective_pruning | metrics | <key> | sd ; 100 ; .1f }}   benchmarks/seeds/selective_pruning.json
    {{ params | selective_pruning | n_eval_seqs }}                  params.yaml
    {{ text: sp_retain_costs }}                                     a sentence of the paper's headline module (TEXT)
A list (an interval) is written as [lo, hi]; a dict (per_seed) as "a, b, c" in key order. Text between
{% readme %} and {% endreadme %} (seed runs, params.yaml values) is left out where a notebook shows its own run.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path
from typing import Callable

import yaml


def number(value, ci=None, unit: str = "", what: str = "") -> dict:
    """One headline number. ci is a (lo, hi) pair or None; NaN values stay NaN (written as null)."""
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    ci = None if ci is None or any(v is None or math.isnan(v) for v in ci) else [float(ci[0]), float(ci[1])]
    return {"value": value, "ci": ci, "unit": unit, "what": what}


def difference(a: float, a_ci, b: float, b_ci, unit: str, what: str) -> dict:
    """a - b with a conservative interval from the two intervals' extremes (for numbers from different runs that
    were not resampled together; wider than a paired interval)."""
    return number(a - b, [a_ci[0] - b_ci[1], a_ci[1] - b_ci[0]], unit, what + " (interval: extremes of the two)")


class Sources:
    """Where placeholders read: metrics/<stem>.json (or another metrics folder, e.g. a notebook's scratch output),
    benchmarks/seeds/<name>.json and params.yaml of the repository."""

    def __init__(self, root: str | Path = ".", metrics_dir: str | Path | None = None):
        self.root = Path(root)
        self.metrics_dir = Path(metrics_dir) if metrics_dir is not None else self.root / "metrics"

    def metrics(self, stem: str) -> dict:
        return json.loads((self.metrics_dir / f"{stem}.json").read_text())

    def seeds(self, name: str) -> dict:
        return json.loads((self.root / "benchmarks" / "seeds" / f"{name}.json").read_text())

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def lookup(self, source: str, keys: list[str]):
        """A value by keys (a digit key indexes a list) from params, seeds/<name> or a metrics stem."""
        value = (self.params() if source == "params" else self.seeds(source[6:]) if source.startswith("seeds/")
                 else self.metrics(source))
        for k in keys:
            value = value[int(k)] if isinstance(value, list) else value[k]
        return value


def fmt_value(x: float | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    """A number as the findings write it; an undefined one (null in the metrics, e.g. a ratio over too few items)
    reads n/a."""
    return "n/a" if x is None else format(x * scale if scale != 1 else x, fmt)


def fmt_ci(v, ci, fmt: str = ".2f", scale: float = 1.0) -> str:
    if v is None or math.isnan(v):
        return "undefined"
    return f"{v * scale:{fmt}} [{ci[0] * scale:{fmt}}, {ci[1] * scale:{fmt}}]"


def fmt_span(values, fmt: str = ".2f", scale: float = 1.0) -> str:
    if not values:
        return "n/a"
    lo, hi = format(min(values) * scale, fmt), format(max(values) * scale, fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def fmt_interval(x: float, ci, fmt: str = ".2f") -> str:
    interval = f" [{fmt_value(ci[0], fmt)}, {fmt_value(ci[1], fmt)}]" if ci and ci[0] is not None else ""
    return fmt_value(x, fmt) + interval


def seed_interval(summary: dict, alpha: float = 0.05) -> tuple[float, float]:
    """Student-t interval of the mean over seeds (the seeds are the independent unit; n >= 2)."""
    from scipy import stats
    half = stats.t.ppf(1 - alpha / 2, summary["n"] - 1) * summary["sd"] / math.sqrt(summary["n"])
    return summary["mean"] - half, summary["mean"] + half


# ================================================================ findings templates
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_README_ONLY = re.compile(r"\{% readme %\}(.*?)\{% endreadme %\}", re.S)


def fill(template: str, texts: dict[str, Callable[[Sources], str]], root: str | Path = ".",
         metrics_dir: str | Path | None = None) -> str:
    """Replace every {{ source | key | ... ; scale ; format }} and {{ text: name }} (a sentence of `texts`) of a
    template; a placeholder that does not resolve is an error naming it."""
    sources = Sources(root, metrics_dir)

    def one(m):
        spec = m.group(1).strip()
        try:
            if spec.startswith("text:"):
                return texts[spec[5:].strip()](sources)
            parts = [p.strip() for p in spec.split(";")]
            source, *keys = [k.strip() for k in parts[0].split("|")]
            scale = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
            fmt = parts[2] if len(parts) > 2 else ""
            value = sources.lookup(source, keys)

            def num(v):
                return fmt_value(v, fmt, scale)
            if isinstance(value, list):
                return "[" + ", ".join(num(v) for v in value) + "]"
            if isinstance(value, dict):  # e.g. per_seed: the values in key order, "a, b, c"
                return ", ".join(num(v) for _, v in sorted(value.items()))
            if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
                return num(value)
            return str(value)
        except (KeyError, IndexError, ValueError, FileNotFoundError, TypeError) as e:
            raise ValueError(f"placeholder {{{{{spec}}}}}: {type(e).__name__}: {e}") from None
    return _PLACEHOLDER.sub(one, template)


def wrap(text: str, width: int = 118) -> str:
    """Re-flow each paragraph (blank-line separated) of filled text to `width` columns; list items (- ...) are
    wrapped one by one, lines starting with ! or | are kept as they are."""
    out = []
    for para in text.strip("\n").split("\n\n"):
        if para.lstrip().startswith(("!", "|")):
            out.append(para)
        elif para.lstrip().startswith("- "):
            items = re.split(r"\n(?=- )", para)
            out.append("\n".join(textwrap.fill(" ".join(i.split()), width, subsequent_indent="  ",
                                                break_on_hyphens=False) for i in items))
        else:
            out.append(textwrap.fill(" ".join(para.split()), width, break_on_hyphens=False))
    return "\n\n".join(out)


def finding(template: str | Path, texts: dict[str, Callable[[Sources], str]], root: str | Path = ".",
            metrics_dir: str | Path | None = None, readme: bool = True) -> str:
    """A findings template (a paper's `FINDINGS[stem]`), filled with `texts` (its `TEXT`) and re-flowed. A notebook
    shows its own from the metrics it just wrote, with readme=False: the {% readme %}...{% endreadme %} parts (the
    committed seed runs and params.yaml values of the default profile, which another profile's run does not share)
    go."""
    body = _README_ONLY.sub(lambda m: m.group(1) if readme else "", Path(template).read_text())
    return wrap(fill(body, texts, root, metrics_dir))
