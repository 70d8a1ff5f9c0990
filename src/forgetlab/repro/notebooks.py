"""Notebook hygiene and execution: notebooks live in git without outputs; Papermill runs them.

    python -m forgetlab.repro.notebooks strip notebooks/*.ipynb   # remove outputs and execution counts
    python -m forgetlab.repro.notebooks check notebooks/*.ipynb   # fail if any has outputs or no parameters cell
    python -m forgetlab.repro.notebooks export reports/01_selective_pruning.ipynb  # executed copy -> .html beside it
                                                    # and the tutorial git tracks: tutorials/01_selective_pruning.ipynb
    python -m forgetlab.repro.notebooks run notebooks/01_selective_pruning.ipynb --seed 0 ...  # what a stage runs

A notebook stage passes its params.yaml section by DVC's dict unpacking (`${section}`: `--key value` per key, a list
as `--key a b`, a boolean as `--key` or `--no-key`); `run` reads those flags with the types of the notebook's
`parameters` cell, runs the notebook with Papermill into reports/ and exports it (HTML and the tracked tutorial).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def problems(path: str | Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            out.append(f"{path}: cell {i} has outputs or an execution count (run `make strip-notebooks`)")
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        out.append(f"{path}: no cell tagged 'parameters' (Papermill cannot inject parameters)")
    return out


def strip(path: str | Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, path)


def parameters_of(path: str | Path) -> dict:
    """Names and default values of a notebook's `parameters` cell (evaluated as Python literals)."""
    import ast
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def number(text: str) -> int | float:
    """A number as YAML wrote it: `5` stays an int, `0.5` and `1e-05` are floats."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def parameter_parser(notebook: str | Path) -> argparse.ArgumentParser:
    """Flags for a notebook's parameters, typed by the defaults of its `parameters` cell (which equal params.yaml's
    values, tests/test_repo.py): a bool is `--key`/`--no-key`, a list `--key a b` (its items of the type of the
    default's items; left out, as DVC leaves out an empty list, it is []), a number keeps the type its text has,
    anything else is a string. Every other parameter is required: a stage passes all of them, so no default of the
    notebook competes with params.yaml."""
    from forgetlab.repro.cli import add_flag
    ap = argparse.ArgumentParser(prog=f"forgetlab.repro.notebooks run {Path(notebook).name}", allow_abbrev=False)
    for name, default in parameters_of(notebook).items():
        if isinstance(default, bool):
            typ = bool
        elif isinstance(default, list):
            typ = list[type(default[0]) if default else str]
        elif isinstance(default, (int, float)):
            typ = number
        else:
            typ = str
        add_flag(ap, f"--{name}", typ=typ, required=True)
    return ap


def parse_parameters(notebook: str | Path, argv: list[str]) -> dict:
    """The parameters a notebook stage's flags give the notebook (an unknown or missing flag is an error)."""
    return vars(parameter_parser(notebook).parse_args(argv))


def run(notebook: str | Path, output: str | Path, parameters: dict, cwd: str | Path = ".",
        progress_bar: bool = False) -> None:
    """Execute a notebook with Papermill."""
    import papermill as pm
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd), progress_bar=progress_bar,
                        kernel_name="python3")


REPORTS = Path("reports")


def run_stage(notebook: str | Path, argv: list[str]) -> Path:
    """What a notebook stage runs: the notebook with the parameters its flags give, executed into reports/, then
    exported to HTML beside it and to the tutorial git tracks. A failing cell stops the stage before the export
    (Papermill leaves the executed copy in reports/ with its traceback, for reading)."""
    parameters = parse_parameters(notebook, argv)
    REPORTS.mkdir(exist_ok=True)
    out = REPORTS / Path(notebook).name
    run(notebook, out, parameters, progress_bar=True)
    print(to_html(out))
    print(tutorial_copy(out))
    return out


def to_html(path: str | Path) -> Path:
    """Export an executed notebook to HTML beside it (same name, .html), written atomically, so a reader sees
    every tutorial with its outputs without running it."""
    from nbconvert import HTMLExporter

    from forgetlab.core.utils import atomic_path
    path = Path(path)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    out = path.with_suffix(".html")
    with atomic_path(out) as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return out


def producer(path: str | Path, root: str | Path = ".") -> str | None:
    """The dvc.yaml stage whose output is `path` (or a folder holding it)."""
    from forgetlab.repro.pipeline import outs_of, stages
    path = Path(path).as_posix().rstrip("/")
    for name, stage in stages(root).items():
        for out in outs_of(stage):
            out = out.rstrip("/")
            if path == out or path.startswith(out + "/"):
                return name
    return None


def require_inputs(*paths: str | Path, root: str | Path = ".") -> None:
    """Fail early, and say which `dvc repro` makes them, when a notebook's input checkpoints are missing
    (a notebook opened in JupyterLab before its upstream stages have run)."""
    missing = [Path(p) for p in paths if not Path(p).exists()]
    if missing:
        lines = [f"{p} is missing: run `dvc repro {producer(p, root) or '<the stage that writes it>'}` first"
                 for p in missing]
        raise FileNotFoundError("\n".join(lines))


TUTORIALS = Path("tutorials")
MAX_TUTORIAL_BYTES = 3_000_000  # GitHub renders notebooks up to a few MB


def tutorial_copy(path: str | Path, out_dir: str | Path = TUTORIALS) -> Path:
    """The executed notebook as git tracks it (tutorials/<name>.ipynb), readable on GitHub or in JupyterLab without
    running anything: outputs kept, but no stderr stream (progress bars, warnings), no widget views (progress bars
    in Jupyter) and no execution timestamps. Raises ValueError when the result is over MAX_TUTORIAL_BYTES."""
    from forgetlab.core.utils import atomic_path
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.get("papermill", {}).clear()
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
                            and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    for key in ("widgets", "papermill"):
        nb.metadata.pop(key, None)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    if len(text.encode()) > MAX_TUTORIAL_BYTES:
        raise ValueError(f"{path}: the executed tutorial is {len(text.encode()) / 1e6:.1f} MB (limit "
                         f"{MAX_TUTORIAL_BYTES / 1e6:.0f} MB): make its figures smaller")
    out = Path(out_dir) / Path(path).name
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # run NOTEBOOK --key value ...: the flags belong to the notebook
        if len(argv) < 2:
            raise SystemExit("usage: python -m forgetlab.repro.notebooks run NOTEBOOK [--key value ...]")
        run_stage(argv[1], argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("strip", "check", "html", "export"))
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    if args.action == "strip":
        for p in args.paths:
            strip(p)
        return
    if args.action in ("html", "export"):
        for p in args.paths:
            print(to_html(p))
            if args.action == "export":
                print(tutorial_copy(p))
        return
    found = [msg for p in args.paths for msg in problems(p)]
    print("\n".join(found) or "notebooks are clean")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
