"""Checkpoint stages as command lines: `python -m forgetlab.<paper> <step> --key value ...`.

Each step is a plain function with keyword arguments and type annotations; the flags are built from its
signature, so dvc.yaml passes `--key ${section.key}` for exactly the function's arguments (and
`accelerate launch -m forgetlab.<paper> ...` runs the same thing on several GPUs).
"""
from __future__ import annotations

import argparse
import inspect
import signal
import sys
import typing
from typing import Callable


def _parser_for(fn: Callable, sub) -> None:
    p = sub.add_parser(fn.__name__.replace("_", "-"), help=((fn.__doc__ or "").strip().splitlines() or [""])[0])
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        typ = hints.get(name, str)
        flag = f"--{name.replace('_', '-')}"
        if typ is bool:
            p.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=param.default,
                           metavar="BOOL", dest=name)
        else:
            kw = {"required": True} if param.default is inspect.Parameter.empty else {"default": param.default}
            p.add_argument(flag, type=typ if typ in (int, float, str) else str, dest=name, **kw)
    p.set_defaults(_fn=fn)


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds the stack, so utils.atomic_path removes its temporary output on the way out
    sys.exit(128 + signum)


def run(functions: list[Callable], argv=None, description: str | None = None):
    """Parse argv into one of `functions` and call it. SIGTERM (what `dvc` or a scheduler sends to stop a job)
    exits cleanly: a step killed midway leaves neither its output nor a temporary folder behind."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ap = argparse.ArgumentParser(description=description)
    sub = ap.add_subparsers(required=True)
    for fn in functions:
        _parser_for(fn, sub)
    args = vars(ap.parse_args(argv))
    fn = args.pop("_fn")
    return fn(**args)
