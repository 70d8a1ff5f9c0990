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
        if args.action == "run":
            subprocess.run(cmd, shell=True, check=True)


if __name__ == "__main__":
    main()
