"""Check that data/ is exactly what data.dvc pins (the same bytes on every machine).

    python -m forgetlab.repro.datacheck data.dvc

DVC's own `dvc status data.dvc` only says "not in cache" in a fresh clone, so we compare the hash DVC computes
for the workspace with the one recorded in data.dvc.
"""
from __future__ import annotations

import sys


def data_matches(dvc_file: str = "data.dvc") -> tuple[bool, str, str]:
    from dvc.repo import Repo
    out = Repo(".").stage.load_one(dvc_file).outs[0]
    expected, actual = out.hash_info, out.get_hash()
    return expected == actual, str(expected.value), str(actual.value)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    dvc_file = argv[0] if argv else "data.dvc"
    ok, expected, actual = data_matches(dvc_file)
    if ok:
        print(f"data/ matches {dvc_file} ({expected})")
        return
    print(f"data/ does NOT match {dvc_file}: expected {expected}, found {actual}.\n"
          "Rebuild it with `rm -rf data && make data`; if you changed the data builder on purpose, "
          "record the new data with `dvc add data` and commit data.dvc.", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
