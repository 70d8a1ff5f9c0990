"""Headline numbers and the sentences written about them: one number with its interval and unit, the
formatting every paper's findings use, and where a findings placeholder reads its value (metrics, seed runs,
params.yaml). Each paper's headline function is `forgetlab.papers.<paper>.headline`."""
from __future__ import annotations

import json
import math
from pathlib import Path

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
