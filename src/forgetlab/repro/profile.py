"""Parameter profiles: params.yaml is the default; profiles/<name>.yaml are overlays on it.

    python -m forgetlab.repro.profile show smoke     # print the merged parameters
    python -m forgetlab.repro.profile sets smoke     # the overlay as `dvc exp run -S` flags (params.yaml untouched):
    dvc exp run $(python -m forgetlab.repro.profile sets smoke)            # an experiment with the smoke profile
    python -m forgetlab.repro.profile apply paper    # set the overlay's values in params.yaml in place: comments, order
                                               # and every other line stay as they are (git checkout params.yaml)

A profile may start from another one (`extends: paper`): paper-tiny is the paper profile (its hub models and
datasets, its code paths) at smoke sizes, run by the tests on a mirror of tiny hub copies (forgetlab.data.hub).
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

PROFILES = ("default", "smoke", "paper", "paper-tiny")


def deep_merge(base: dict, overlay: dict, path: str = "") -> dict:
    """Overlay values on base; every overlay key must exist in base (a typo is an error, not a new param)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        where = f"{path}{key}"
        if key not in base:
            raise KeyError(f"profile sets unknown parameter {where!r}")
        if isinstance(value, dict):
            if not isinstance(base[key], dict):
                raise TypeError(f"profile parameter {where!r} is a section, but params.yaml has a value")
            out[key] = deep_merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def _overlay(profile: str, root: Path) -> dict:
    """profiles/<profile>.yaml, on top of the profile it extends (if any)."""
    if profile not in PROFILES or profile == "default":
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    own = yaml.safe_load((root / "profiles" / f"{profile}.yaml").read_text()) or {}
    base = own.pop("extends", None)
    if base is None:
        return own
    merged = _overlay(base, root)
    for key, value in own.items():  # a section of the profile replaces single keys of the base's section
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def load_params(profile: str = "default", root: str | Path = ".") -> dict:
    """params.yaml merged with profiles/<profile>.yaml (and the profile that one extends)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    root = Path(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    if profile == "default":
        return params
    return deep_merge(params, _overlay(profile, root))


def flatten(overlay: dict, prefix: str = "") -> dict[str, object]:
    """{"section.key": value} of every leaf of an overlay."""
    out = {}
    for key, value in overlay.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def overlay(profile: str, root: str | Path = ".") -> dict:
    """The profile's overlay, checked against params.yaml (unknown keys are an error, as in load_params)."""
    load_params(profile, root)
    if profile == "default":
        return {}
    return _overlay(profile, Path(root))


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra(value) -> str:
    """A value in Hydra's override grammar, which `dvc exp run -S` reads: a list as [a,b] (a string item quoted
    unless it is plainly a word or a path), a scalar as its YAML text, quoted where Hydra would read a sweep."""
    if isinstance(value, list):
        return "[" + ",".join(_quoted(v) if isinstance(v, str) and not re.fullmatch(r"[\w/.+-]+", v) else _hydra(v)
                              for v in value) + "]"
    text = "true" if value is True else "false" if value is False else str(value)
    if isinstance(value, str) and (_reads_as_other_type(text) or any(c in text for c in ",[]{}()=:' ")):
        return _quoted(text)  # a bare a,b is a sweep; a bare 0.001 a float
    return text


def _reads_as_other_type(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.lower() in ("true", "false", "null", "none", "")


def exp_sets(profile: str, root: str | Path = ".") -> list[str]:
    """`-S section.key=value` flags that make `dvc exp run` use the profile (DVC parses each value as YAML)."""
    import shlex
    flags = []
    for key, value in flatten(overlay(profile, root)).items():
        flags += ["-S", shlex.quote(f"{key}={_hydra(value)}")]
    return flags


def apply(profile: str, path: str | Path = "params.yaml", root: str | Path = ".") -> None:
    """Set the profile's values in params.yaml in place with a round-trip YAML editor (ruamel.yaml, which DVC uses
    itself): comments, key order and untouched lines stay byte for byte."""
    from ruamel.yaml import YAML
    rt = YAML()
    rt.width = 4096  # never re-wrap long lines
    rt.preserve_quotes = True
    # a float the way PyYAML writes it (5.0e-05, not 5e-05, which PyYAML's YAML 1.1 reads back as a string)
    rt.representer.add_representer(float, lambda rep, value: rep.represent_scalar(
        "tag:yaml.org,2002:float", yaml.safe_dump(value).split("\n")[0]))
    path = Path(path)
    doc = rt.load(path.read_text())
    for dotted, value in flatten(overlay(profile, root)).items():
        *parents, leaf = dotted.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if isinstance(value, list):  # [a, b] on one line, as params.yaml writes lists
            from ruamel.yaml.comments import CommentedSeq
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[leaf] = value
    with open(path, "w") as f:
        rt.dump(doc, f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("show", "sets", "apply"))
    ap.add_argument("profile", choices=PROFILES)
    args = ap.parse_args(argv)
    if args.action == "show":
        print(yaml.safe_dump(load_params(args.profile), sort_keys=False))
    elif args.action == "sets":
        print(" ".join(exp_sets(args.profile)))
    else:
        apply(args.profile)
        print(f"params.yaml now holds the {args.profile!r} profile's values (comments kept); run `dvc repro`; "
              "`git checkout params.yaml` restores the default.", file=sys.stderr)


if __name__ == "__main__":
    main()
