"""Read dvc.yaml the way DVC does for our simple templates: `${section.key}` filled from a params dict, and
`${section}` unpacked into `--key value` flags (tests/test_repo.py compares every command with DVC's own).

Used by the notebook smoke tests (to run exactly the commands of dvc.yaml with the smoke profile), by `make bench`
and by `python -m forgetlab.repro.pipeline run --profile smoke --jobs 2 --workdir /tmp/smoke` for a quick run outside
DVC in a scratch copy (`--jobs 2` runs independent stages side by side, which `dvc repro` does not).
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path
from typing import Callable

import yaml

from forgetlab.core.utils import check_positive_int
from forgetlab.repro.profile import PROFILES, load_params

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
    """A params.yaml scalar as DVC writes it into a command: YAML booleans become `true`/`false` (a string to the
    reader: a boolean argument reaches a step or a notebook as --key / --no-key, only inside a whole section)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unpack(section: dict) -> str:
    """A params.yaml section as DVC's dict unpacking writes it into a command (`${section}`, with this repository's
    .dvc/config `parsing.bool = boolean_optional`): `--key value` per key in order, strings shell-quoted, true as
    `--key`, false as `--no-key`, a list as `--key a b` (an empty list left out)."""
    out = []
    for key, value in section.items():
        if isinstance(value, dict):
            raise TypeError(f"params.yaml section value {key!r} is a dict; sections here are flat")
        if isinstance(value, bool):
            out += [f"--{key}" if value else f"--no-{key}"]
        elif isinstance(value, str):
            out += [f"--{key}", shlex.quote(value)]
        elif isinstance(value, list):
            out += [f"--{key}"] * bool(value) + [shlex.quote(v) if isinstance(v, str) else str(v) for v in value]
        else:
            out += [f"--{key}", str(value)]
    return " ".join(out)


def render(cmd: str, params: dict) -> str:
    """Fill ${a.b} references exactly as DVC does: a scalar unquoted (a value the shell would split or act on is
    an error here, where under DVC it would become a pipe or a redirection), a whole section by dict unpacking."""
    def fill(m):
        try:
            value = lookup(params, m.group(1))
        except KeyError:
            raise KeyError(f"dvc.yaml refers to ${{{m.group(1)}}}, which params.yaml does not define") from None
        if isinstance(value, dict):
            return unpack(value)
        if isinstance(value, list):
            raise TypeError(f"${{{m.group(1)}}} is a list, which DVC passes only inside a whole section, "
                            f"${{{m.group(1).rsplit('.', 1)[0]}}}")
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


NOTEBOOK_RUN = ["python", "-m", "forgetlab.repro.notebooks", "run"]


def is_notebook_stage(cmd: str) -> bool:
    return shlex.split(cmd)[:4] == NOTEBOOK_RUN


def notebook_parameters(cmd: str, root: str | Path = ".") -> tuple[str, dict]:
    """The notebook a rendered notebook-stage command runs and the parameters it gives the notebook (typed as
    forgetlab.repro.notebooks.run_stage reads them)."""
    from forgetlab.repro.notebooks import parse_parameters
    argv = shlex.split(cmd)
    if argv[:4] != NOTEBOOK_RUN:
        raise ValueError(f"not a notebook stage: {cmd[:60]}")
    return argv[4], parse_parameters(Path(root) / argv[4], argv[5:])


def step_commands(cmd: str) -> list[list[str]]:
    """The argv of each checkpoint step in a rendered stage command: `python -m forgetlab.<module> <step> ...` where
    the module lists its steps in STEPS (forgetlab.repro.cli)."""
    import importlib
    parts = [shlex.split(part) for part in cmd.split("&&")]
    return [a for a in parts if a[:2] == ["python", "-m"] and a[2].startswith("forgetlab.")
            and hasattr(importlib.import_module(a[2]), "STEPS")]


def step_arguments(stage: str, params: dict, root: str | Path = ".", index: int = 0) -> tuple[Callable, dict]:
    """The function that the index-th checkpoint step of a stage runs, and the keyword arguments its command line
    passes under `params` (a test or a user calls it from Python with exactly the pipeline's values; every argument
    comes from the command, none from a default)."""
    import importlib
    from forgetlab.repro.cli import parse
    steps = step_commands(dict(stage_commands(params, root))[stage])
    if not 0 <= index < len(steps):
        raise ValueError(f"stage {stage!r} runs {len(steps)} checkpoint step(s); no index {index}")
    argv = steps[index]
    return parse(list(importlib.import_module(argv[2]).STEPS), argv[3:])


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
    from forgetlab.core.utils import remove_path
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


def upstream(root: str | Path = ".") -> dict[str, set[str]]:
    """For every stage, the stages whose outputs it reads: a dep equal to, inside or around one of their outs
    (DVC's own graph; a test compares the two)."""
    st = stages(root)
    outs = {name: [o.rstrip("/") for o in outs_of(s)] for name, s in st.items()}

    def overlap(a: str, b: str) -> bool:
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")
    return {name: {other for other, os_ in outs.items() if other != name
                   and any(overlap(d.rstrip("/"), o) for d in s.get("deps", []) for o in os_)}
            for name, s in st.items()}


def expected_costs(profile: str, root: str | Path = ".") -> dict[str, float]:
    """Each stage's wall time in the last `make bench` of this profile (benchmarks/results.json), or {}."""
    import json
    path = Path(root) / "benchmarks" / "results.json"
    if not path.exists():
        return {}
    runs = json.loads(path.read_text()).get("pipeline", {})
    return {name: s["wall_s"] for name, s in runs.get(profile, {}).get("stages", {}).items()}


def schedule_order(names: list[str], needs: dict[str, set[str]], costs: dict[str, float]) -> dict[str, float]:
    """Priority of each stage for a parallel run: the longest chain of expected seconds from it to the end of the
    pipeline (the critical path goes first); stages without a recorded cost count 1 s."""
    below = {n: {m for m in names if n in needs[m]} for n in names}
    memo: dict[str, float] = {}

    def chain(n: str) -> float:
        if n not in memo:
            memo[n] = costs.get(n, 1.0) + max((chain(m) for m in below[n]), default=0.0)
        return memo[n]
    return {n: chain(n) for n in names}


def run_stages(workdir: str | Path, params: dict, root: str | Path = ".", only: list[str] | None = None,
               env: dict | None = None, jobs: int = 1, costs: dict[str, float] | None = None,
               capture: bool = True, log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Run the rendered dvc.yaml commands in `workdir` (all stages, or `only`), stopping at the first failure.
    Returns {stage: run_command's result} in dvc.yaml order.

    jobs=1 runs them one after the other, as `dvc repro` does. jobs>1 runs independent stages side by side
    (a stage starts once every stage whose outputs it reads has finished, the longest chain of `costs` first),
    each with cpu_count // jobs torch threads; a stage's numbers can depend on its thread count, so compare runs
    made with the same `jobs`. After a failure no stage starts; those running finish, then the error is raised.
    """
    import os
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    check_positive_int("jobs", jobs)
    cmds = dict(stage_commands(params, root))
    unknown = sorted(set(only or ()) - cmds.keys())
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {sorted(cmds)}")
    cmds = {name: cmd for name, cmd in cmds.items() if not only or name in only}
    needs = {name: deps & cmds.keys() for name, deps in upstream(root).items() if name in cmds}
    if jobs == 1:  # dvc.yaml order
        rank = {name: i for i, name in enumerate(cmds)}
    else:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env = dict(env if env is not None else os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        rank = {name: -chain for name, chain in schedule_order(list(cmds), needs, costs or {}).items()}
    log = log or (lambda line: None)

    def start(name: str) -> dict:
        log(f"[{name}] {cmds[name]}")
        remove_outs(name, workdir, root)
        import os
        stage_env = dict(env if env is not None else os.environ, DVC_STAGE=name)  # as `dvc repro` sets it
        res = run_command(cmds[name], workdir, stage_env, capture=capture)
        log(f"[{name}] exit {res['returncode']}, {res['wall_s']} s, peak {res['peak_rss_gb']} GB")
        return res

    done: dict[str, dict] = {}
    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
        while True:
            if not failed:
                ready = [n for n in cmds if n not in done and n not in running.values() and needs[n] <= done.keys()]
                for name in sorted(ready, key=rank.get)[:jobs - len(running)]:
                    running[pool.submit(start, name)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = res = fut.result()
                if res["returncode"] != 0:
                    failed.append(name)
    if failed:
        name, res = failed[0], done[failed[0]]
        raise StageFailed(name, res["returncode"],
                          f"stage {name} failed:\n{res['stdout'][-3000:]}\n{res['stderr'][-6000:]}")
    return {name: done[name] for name in cmds}


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, message: str):
        super().__init__(message)
        self.stage, self.returncode = stage, returncode


def main(argv=None) -> None:
    import json
    import sys
    import time
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=("show", "run"))
    ap.add_argument("--profile", default="default", choices=PROFILES)
    ap.add_argument("--stage", action="append", help="only these stages (default: all)")
    ap.add_argument("--workdir", default=".",
                    help="run there, not in the repository: a folder made by make_workdir, or a new path, which is "
                         "made so (the stages' outputs never touch the tracked figures/ and metrics/)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="independent stages run side by side, each with cpu_count // jobs threads (default 1: "
                         "one after the other in dvc.yaml order, as `dvc repro`)")
    ap.add_argument("--record", help="write each stage's wall time and peak memory, and the elapsed time, to this "
                                     "JSON file")
    args = ap.parse_args(argv)
    root = Path(args.workdir)  # the repository, or a copy of its dvc.yaml, params and profiles
    if args.action == "run" and args.profile != "default" and root.resolve() == Path(".").resolve():
        ap.error(f"--profile {args.profile} would write its outputs over the tracked figures/ and metrics/ (which "
                 "dvc.lock records for the default profile); pass --workdir NEW_FOLDER to run it in a scratch copy")
    if args.action == "run" and not root.exists():
        make_workdir(root, ".", "data")
    params = load_params(args.profile, root)
    if args.action == "show":
        for name, cmd in stage_commands(params, root):
            if not args.stage or name in args.stage:
                print(f"[{name}] {cmd}")
        return
    t0 = time.perf_counter()
    try:
        done = run_stages(args.workdir, params, root, only=args.stage, env=venv_env(), jobs=args.jobs,
                          costs=expected_costs(args.profile), capture=args.jobs > 1,
                          log=lambda line: print(line, flush=True))
    except StageFailed as err:
        print(err, file=sys.stderr)
        sys.exit(err.returncode)
    if args.record:
        Path(args.record).write_text(json.dumps({
            "jobs": args.jobs, "elapsed_s": round(time.perf_counter() - t0, 1),
            "stages": {name: {"wall_s": r["wall_s"], "peak_rss_gb": r["peak_rss_gb"]} for name, r in done.items()}},
            indent=2))


if __name__ == "__main__":
    main()
