"""Checkpoint stages as command lines: `python -m forgetlab.papers.<paper>.experiment <step> --key value ...`.

Each step is a plain function with keyword arguments and type annotations; the flags are built from its
signature, so dvc.yaml passes the stage's section (`${section}`, DVC's dict unpacking: `--key value`, a list as
`--key a b`, a boolean as `--key` or `--no-key`) for exactly the function's arguments (and
`accelerate launch -m forgetlab.papers.<paper>.experiment ...` runs the same thing on several GPUs).
"""
from __future__ import annotations

import argparse
import inspect
import signal
import sys
import typing
from typing import Callable


def _flag_type(hint):
    """The argparse type of an annotation: int, float, str, bool, list[X]; `X | None` is X (None = the flag is
    left out)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if len(args) == 1 and typing.get_origin(hint) is not list else hint
    if typing.get_origin(hint) is list:
        return list[_flag_type(typing.get_args(hint)[0])]
    return hint if hint in (int, float, str, bool) else str


def add_flag(p: argparse.ArgumentParser, *flags: str, typ, **kw) -> None:
    """One flag, read as DVC's dict unpacking writes a value (.dvc/config: parsing.bool = boolean_optional): a bool
    as `--key` / `--no-key`, a list[X] as `--key a b` (a required list reads [] when left out, as DVC leaves out an
    empty one), anything else as `--key value` converted by `typ`."""
    if typing.get_origin(typ) is list:
        if kw.pop("required", False):
            kw["default"] = []
        item = typing.get_args(typ)[0]
        p.add_argument(*flags, nargs="*", type=item, metavar=item.__name__.upper(), **kw)
    elif typ is bool:
        p.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
    else:
        p.add_argument(*flags, type=typ, **kw)


def _parser_for(fn: Callable, sub) -> None:
    """A step's flags: one per argument; an argument without a default is a required flag (a step's values come
    from params.yaml through dvc.yaml, never from a second default here), and a list left out reads [] whatever
    the function's default (DVC's unpacking leaves out an empty list)."""
    p = sub.add_parser(fn.__name__.replace("_", "-"), help=((fn.__doc__ or "").strip().splitlines() or [""])[0])
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        typ = _flag_type(hints.get(name, str))
        required = param.default is inspect.Parameter.empty or typing.get_origin(typ) is list
        kw = {"required": True} if required else {"default": param.default}
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])  # as DVC unpacks a dict
        add_flag(p, *flags, typ=typ, dest=name, **kw)
    p.set_defaults(_fn=fn)


def parse(functions: list[Callable], argv, description: str | None = None) -> tuple[Callable, dict]:
    """The function argv names and its keyword arguments, as `run` would call it."""
    ap = argparse.ArgumentParser(description=description)
    sub = ap.add_subparsers(required=True)
    for fn in functions:
        _parser_for(fn, sub)
    args = vars(ap.parse_args(argv))
    return args.pop("_fn"), args


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds the stack, so utils.atomic_path removes its temporary output on the way out
    sys.exit(128 + signum)


def run(functions: list[Callable], argv=None, description: str | None = None):
    """Parse argv into one of `functions` and call it. SIGTERM (what `dvc` or a scheduler sends to stop a job)
    exits cleanly: a step killed midway leaves neither its output nor a temporary folder behind."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    fn, kwargs = parse(functions, argv, description)
    return fn(**kwargs)
