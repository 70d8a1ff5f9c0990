"""Parameter profiles: params.yaml is the default; profiles/<name>.yaml are overlays on it.

    python -m forgetlab.profile show smoke     # print the merged parameters
    python -m forgetlab.profile apply paper    # rewrite params.yaml (git checkout params.yaml to undo)
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

PROFILES = ("default", "smoke", "paper")


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


def load_params(profile: str = "default", root: str | Path = ".") -> dict:
    """params.yaml merged with profiles/<profile>.yaml."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    root = Path(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    if profile == "default":
        return params
    return deep_merge(params, yaml.safe_load((root / "profiles" / f"{profile}.yaml").read_text()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("show", "apply"))
    ap.add_argument("profile", choices=PROFILES)
    args = ap.parse_args(argv)
    text = yaml.safe_dump(load_params(args.profile), sort_keys=False)
    if args.action == "show":
        print(text)
    else:
        header = (f"# Profile {args.profile!r} written by `make profile PROFILE={args.profile}`; "
                  "`git checkout params.yaml` restores the default.\n")
        Path("params.yaml").write_text(header + text)
        print(f"params.yaml now holds the {args.profile!r} profile; run `dvc repro`.")


if __name__ == "__main__":
    main()
