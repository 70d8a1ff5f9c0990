"""Read dvc.yaml the way DVC does for our simple templates: `${section.key}` filled from a params dict.

Used by the notebook smoke tests (to run exactly the commands of dvc.yaml with the smoke profile) and by
`python -m forgetlab.pipeline run --profile smoke` for a quick run outside DVC.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from .profile import PROFILES, load_params

_REF = re.compile(r"\$\{([\w.]+)\}")


def lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"dvc.yaml refers to ${{{dotted}}}, which params.yaml does not define")
        value = value[part]
    return value


def render(cmd: str, params: dict) -> str:
    """Fill ${a.b} references; values are shell-quoted."""
    def fill(m):
        value = lookup(params, m.group(1))
        if isinstance(value, (dict, list)):
            raise TypeError(f"${{{m.group(1)}}} is a {type(value).__name__}; use a comma-separated string")
        return shlex.quote(str(value))
    return _REF.sub(fill, cmd)


def stages(root: str | Path = ".") -> dict[str, dict]:
    return yaml.safe_load((Path(root) / "dvc.yaml").read_text())["stages"]


def stage_commands(params: dict, root: str | Path = ".") -> list[tuple[str, str]]:
    """(stage name, rendered command) in dvc.yaml order (which lists producers before consumers)."""
    return [(name, render(" ".join(s["cmd"].split()), params)) for name, s in stages(root).items()]


def papermill_parameters(cmd: str) -> tuple[str, dict[str, str]]:
    """The notebook and the `-p key value` pairs of a rendered papermill command."""
    argv = shlex.split(cmd)
    if argv[0] != "papermill":
        raise ValueError(f"not a papermill command: {cmd[:60]}")
    params = {argv[i + 1]: argv[i + 2] for i in range(len(argv)) if argv[i] == "-p"}
    return argv[1], params


def make_workdir(path: str | Path, root: str | Path, data_dir: str | Path) -> Path:
    """A scratch copy of what the stages read (notebooks, dvc.yaml, params, profiles) with data/ linked in, so a
    test run never writes into the tracked figures/ or metrics/."""
    import shutil
    path, root = Path(path), Path(root)
    for name in ("notebooks", "profiles"):
        shutil.copytree(root / name, path / name)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / name, path / name)
    (path / "data").symlink_to(Path(data_dir).resolve())
    (path / "reports").mkdir()  # papermill does not create the output folder (in git: reports/.gitignore)
    return path


def outs_of(stage: dict) -> list[str]:
    """Every path a stage declares as an output (outs, metrics, plots)."""
    return [next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]


def remove_outs(name: str, workdir: str | Path, root: str | Path = ".") -> None:
    """Delete a stage's outputs before running it, as `dvc repro` does. Outputs checked out from the DVC cache may be
    hardlinks into it: writing into them in place (Papermill does) would corrupt the cache."""
    from .utils import remove_path
    for rel in outs_of(stages(root)[name]):
        remove_path(Path(workdir) / rel)


def run_stages(workdir: str | Path, params: dict, root: str | Path = ".", only: list[str] | None = None,
               env: dict | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Run the rendered dvc.yaml commands in `workdir` (all stages, or `only`), stopping at the first failure."""
    done = {}
    for name, cmd in stage_commands(params, root):
        if only and name not in only:
            continue
        remove_outs(name, workdir, root)
        done[name] = proc = subprocess.run(cmd, shell=True, cwd=workdir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"stage {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=("show", "run"))
    ap.add_argument("--profile", default="default", choices=PROFILES)
    ap.add_argument("--stage", action="append", help="only these stages (default: all)")
    args = ap.parse_args(argv)
    params = load_params(args.profile)
    for name, cmd in stage_commands(params):
        if args.stage and name not in args.stage:
            continue
        print(f"[{name}] {cmd}")
        if args.action == "run":  # with this interpreter's bin/ (the venv) first on PATH, as DVC would
            import os
            import sys
            env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            remove_outs(name, ".")
            subprocess.run(cmd, shell=True, check=True, env=env)


if __name__ == "__main__":
    main()
