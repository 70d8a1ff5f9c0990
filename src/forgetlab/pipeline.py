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
_SHELL_SAFE = re.compile(r"[\w.,=+\-/:@%]+")


def lookup(obj: dict, dotted: str):
    """obj["a"]["b"] for "a.b"; a KeyError names the first missing part."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(f"{dotted!r}: no {part!r}")
        obj = obj[part]
    return obj


def to_str(value) -> str:
    """A params.yaml scalar as DVC writes it into a command: YAML booleans become `true`/`false` (which Papermill's
    -p passes on as strings; notebooks read them with utils.check_bool)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(cmd: str, params: dict) -> str:
    """Fill ${a.b} references exactly as DVC does (no quoting; a value the shell would split or act on is an
    error here, where under DVC it would become a pipe or a redirection)."""
    def fill(m):
        try:
            value = lookup(params, m.group(1))
        except KeyError:
            raise KeyError(f"dvc.yaml refers to ${{{m.group(1)}}}, which params.yaml does not define") from None
        if isinstance(value, (dict, list)):
            raise TypeError(f"${{{m.group(1)}}} is a {type(value).__name__}; use a comma-separated string")
        text = to_str(value)
        if not _SHELL_SAFE.fullmatch(text):
            raise ValueError(f"params.yaml: {m.group(1)} = {text!r}; DVC pastes values into the command unquoted, "
                             "so a value may hold only letters, digits and . , = + - _ / : @ %")
        return text
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


def run_command(cmd: str, cwd: str | Path = ".", env: dict | None = None, capture: bool = True) -> dict:
    """Run one stage command; return its exit code, output, wall time and the peak resident memory of its
    largest process (os.wait4 gives the rusage of that child and of the descendants it waited for)."""
    import os
    import tempfile
    import time
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, shell=True, cwd=cwd, env=env, stdout=out if capture else None,
                                stderr=err if capture else None)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: stop the stage too, never leave it running
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {"returncode": proc.returncode, "stdout": out.read(), "stderr": err.read(), "wall_s": round(wall, 1),
                "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2)}


def venv_env(extra: dict | None = None) -> dict:
    """The environment stages run in: this interpreter's bin/ (the venv, with papermill and dvc) first on PATH,
    as DVC would have it, and hash seeds fixed."""
    import os
    import sys
    env = dict(os.environ, PYTHONHASHSEED="0", **(extra or {}))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_stages(workdir: str | Path, params: dict, root: str | Path = ".", only: list[str] | None = None,
               env: dict | None = None) -> dict[str, dict]:
    """Run the rendered dvc.yaml commands in `workdir` (all stages, or `only`), stopping at the first failure.
    Returns {stage: run_command's result}."""
    done = {}
    for name, cmd in stage_commands(params, root):
        if only and name not in only:
            continue
        remove_outs(name, workdir, root)
        done[name] = res = run_command(cmd, workdir, env)
        if res["returncode"] != 0:
            raise RuntimeError(f"stage {name} failed:\n{res['stdout'][-3000:]}\n{res['stderr'][-6000:]}")
    return done


def main(argv=None) -> None:
    import json
    import os
    import sys
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=("show", "run"))
    ap.add_argument("--profile", default="default", choices=PROFILES)
    ap.add_argument("--stage", action="append", help="only these stages (default: all)")
    ap.add_argument("--workdir", default=".", help="run there (a folder made by make_workdir), not in the repository")
    ap.add_argument("--record", help="write each stage's wall time and peak memory to this JSON file")
    args = ap.parse_args(argv)
    root = Path(args.workdir)  # the repository, or a copy of its dvc.yaml, params and profiles
    params = load_params(args.profile, root)
    env = venv_env()
    costs = {}
    for name, cmd in stage_commands(params, root):
        if args.stage and name not in args.stage:
            continue
        print(f"[{name}] {cmd}", flush=True)
        if args.action == "run":
            remove_outs(name, args.workdir, root)
            res = run_command(cmd, args.workdir, env, capture=False)
            print(f"[{name}] exit {res['returncode']}, {res['wall_s']} s, peak {res['peak_rss_gb']} GB", flush=True)
            if res["returncode"] != 0:
                sys.exit(res["returncode"])
            costs[name] = {"wall_s": res["wall_s"], "peak_rss_gb": res["peak_rss_gb"]}
            if args.record:
                Path(args.record).write_text(json.dumps(costs, indent=2))


if __name__ == "__main__":
    main()
