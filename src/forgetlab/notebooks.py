"""Notebook hygiene and execution: notebooks live in git without outputs; Papermill runs them.

    python -m forgetlab.notebooks strip notebooks/*.ipynb   # remove outputs and execution counts
    python -m forgetlab.notebooks check notebooks/*.ipynb   # fail if any has outputs or no parameters cell
    python -m forgetlab.notebooks export reports/01_selective_pruning.ipynb  # executed copy -> .html beside it
                                                    # and the tutorial git tracks: tutorials/01_selective_pruning.ipynb
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


def run(notebook: str | Path, output: str | Path, parameters: dict, cwd: str | Path = ".") -> None:
    """Execute a notebook with Papermill (the same call dvc.yaml makes)."""
    import papermill as pm
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd), progress_bar=False,
                        kernel_name="python3")


def to_html(path: str | Path) -> Path:
    """Export an executed notebook to HTML beside it (same name, .html), written atomically, so a reader sees
    every tutorial with its outputs without running it."""
    from nbconvert import HTMLExporter

    from .utils import atomic_path
    path = Path(path)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    out = path.with_suffix(".html")
    with atomic_path(out) as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return out


def producer(path: str | Path, root: str | Path = ".") -> str | None:
    """The dvc.yaml stage whose output is `path` (or a folder holding it)."""
    from .pipeline import outs_of, stages
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
    from .utils import atomic_path
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
