"""Small shared helpers: seeding, parameter checks, atomic writes."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

# numpy and torch are imported where they are used: the file helpers here serve `forgetlab.repro.pipeline`, which starts
# the stages and must stay small (a forked stage's peak memory counts its parent's pages until it execs).


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    import numpy as np
    import torch
    check_type("seed", seed, int)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


# ---------------------------------------------------------------- parameter checks
def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    """Raise a TypeError naming the parameter when `value` is not of `types` (bool is not an int)."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        allowed = " or ".join(t.__name__ for t in types)
        raise TypeError(f"parameter {name!r} must be {allowed}, got {type(value).__name__} {value!r}")
    return value


def check_fraction(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """A fraction in [0, 1] (or (0, 1] with allow_zero=False)."""
    check_type(name, value, (int, float))
    lo_ok = value >= 0 if allow_zero else value > 0
    if not (lo_ok and value <= 1):
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"parameter {name!r} must be a fraction in {rng}, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    check_type(name, value, int)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"parameter {name!r} must be an integer {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def check_list(name: str, value: Any, item_type: type = str) -> list:
    """A list parameter (a YAML list in params.yaml, `--key a b` on a step's command line): a list or tuple whose
    items are `item_type` (a float list takes ints too); anything else, a comma string included, is refused by
    name."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"parameter {name!r} must be a list of {item_type.__name__} (a YAML list, e.g. [a, b]), got "
                        f"{type(value).__name__} {value!r}")
    return [check_type(f"{name}[{i}]", v, item_type if item_type is not float else (int, float))
            for i, v in enumerate(value)]


class NotebookParams:
    """Base of a notebook's typed parameters. A subclass is a frozen dataclass whose fields are the notebook's
    parameters that need checking, named as in its `parameters` cell and without defaults (the values are the
    notebook's, which dvc.yaml fills from params.yaml); its __post_init__ checks them all, so a bad value fails
    before any model loads, naming the parameter and what is allowed. The notebook's set-up cell builds it with
    `from_namespace(globals())`. Checks against what an earlier stage recorded stay in the notebook, after loading."""

    @classmethod
    def from_namespace(cls, namespace: dict):
        return cls(**{f.name: namespace[f.name] for f in fields(cls)})

    def check_all(self, check, *names: str, **options) -> None:
        """check(name, value, **options) on each named field (e.g. check_positive_int on every count)."""
        for name in names:
            check(name, getattr(self, name), **options)


def device_of(model):
    """The device a model's weights are on (its first parameter's: a model is on one device in this repository),
    where every tensor fed to it is built."""
    return next(model.parameters()).device


# ---------------------------------------------------------------- atomic outputs
@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success rename it into place, on error remove it.

    Works for files and directories, so a killed or failed step never leaves a half-written output. In a
    multi-process run only the main process renames its result into place (the others' copies are discarded;
    transformers' save_pretrained writes weights on rank 0 only, so a rank-1 folder would lack them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent)) / path.name
    try:
        yield tmp
        if is_main_process():  # under `accelerate launch`, every rank runs the step; one writes the output
            remove_path(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def is_main_process() -> bool:
    """False on the non-zero ranks of a multi-process launch (`accelerate launch`, torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, a symlink or a whole folder; nothing if it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


JSON_DIGITS = 7  # significant digits of every float a JSON file of this project holds: stable bytes, 1e-5 survives
# metrics/*.json: floats at 4 significant digits, enough for every interval and verdict, and few enough that a rerun on
# another CPU type (AVX2 vs AVX-512 sums differ in the 6th-7th digit) writes the same bytes in the common case
METRIC_DIGITS = 4


def write_json(path: str | os.PathLike, obj: Any, digits: int = JSON_DIGITS) -> None:
    """Write JSON atomically, with sorted keys and floats at `digits` significant digits, so the same results give
    the same bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_builtin(obj, digits), indent=2, sort_keys=True) + "\n")


def write_metrics(path: str | os.PathLike, obj: Any) -> None:
    """A metrics file (metrics/<paper>.json): write_json at METRIC_DIGITS significant digits."""
    write_json(path, obj, METRIC_DIGITS)


def to_builtin(obj: Any, digits: int = JSON_DIGITS) -> Any:
    """Convert numpy/torch scalars and arrays to plain Python for JSON, floats rounded to `digits` significant
    digits (NaN and infinities kept)."""
    import numpy as np
    import torch
    if isinstance(obj, dict):
        return {str(k): to_builtin(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v, digits) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return to_builtin(obj.tolist(), digits)
    if isinstance(obj, np.generic):
        return to_builtin(obj.item(), digits)
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    return obj


def chdir_to_repo_root() -> Path:
    """Notebooks opened in JupyterLab start in notebooks/; Papermill runs them from the repo root. Move to the
    root (the folder with dvc.yaml) so relative paths such as data/ mean the same thing in both."""
    here = Path.cwd()
    for cand in (here, *here.parents):
        if (cand / "dvc.yaml").exists():
            os.chdir(cand)
            return cand
    return here
