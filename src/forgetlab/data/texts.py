"""A user's own documents, for any corpus parameter (notebooks, stages and the `forgetlab` command):

    notes.txt                   one document per block of text separated by a blank line
    docs.jsonl                  one JSON object per line with a "text" field (other fields are kept)
    mydocs/                     every .txt and .jsonl file in the folder and below it, in sorted path order
    hf:<dataset>[:split][@rev]  a Hugging Face dataset (hub id or a `save_to_disk` folder), its "text" column,
                                split "train" by default, pinned to a revision with @rev

Every document is {"id", "source", "title", "text"}: id is "<file>/<n>" (or "<dataset>/<row>"), so a split by
document (corpora.split_documents) is reproducible.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".jsonl")
FORMS = ("a .txt file (documents separated by blank lines)", "a .jsonl file with a 'text' field",
         "a folder of such files", "hf:<dataset>[:split][@revision]")
_HF = re.compile(r"^hf:(?P<name>[^:@]+)(?::(?P<split>[^@]+))?(?:@(?P<rev>.+))?$")


def is_text_spec(spec: str) -> bool:
    """True when `spec` names user documents (a path with a known suffix, an existing folder, or hf:...)."""
    return spec.startswith("hf:") or Path(spec).suffix in TEXT_SUFFIXES or Path(spec).is_dir()


def read_txt(path: Path) -> list[dict]:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
    return [{"id": f"{path}/{i}", "source": str(path), "title": "", "text": b} for i, b in enumerate(blocks) if b]


def jsonl_rows(path: Path, fields: tuple[str, ...], where: str = "") -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a .jsonl file; a line that is not a JSON object with a
    string in each of `fields` is an error naming `where` (default: the file) and the line."""
    where = where or str(path)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}, line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in fields):
            raise ValueError(f"{where}, line {i}: each line must be a JSON object with "
                             f"{' and '.join(repr(f) for f in fields)} strings")
        rows.append((i, row))
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [{**row, "id": f"{path}/{i - 1}", "source": str(path), "title": str(row.get("title") or ""),
             "text": row["text"]} for i, row in jsonl_rows(path, ("text",)) if row["text"].strip()]


def load_texts(spec: str, max_docs: int | None = None) -> list[dict]:
    """The documents of a text spec (see the module docstring). Raises ValueError naming the spec and the forms
    allowed when it is none of them, does not exist, or holds no text."""
    from .corpora import load_hf_text
    m = _HF.match(spec)
    if m:
        kwargs = {"revision": m["rev"]} if m["rev"] else {}
        docs = load_hf_text(m["name"], split=m["split"] or "train", n_docs=max_docs, **kwargs)
    else:
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"texts {spec!r}: no such file or folder; use one of: {'; '.join(FORMS)}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            if not files:
                raise ValueError(f"texts {spec!r}: the folder has no .txt or .jsonl file")
        elif path.suffix in TEXT_SUFFIXES:
            files = [path]
        else:
            raise ValueError(f"texts {spec!r}: unknown file type {path.suffix!r}; use one of: {'; '.join(FORMS)}")
        docs = [d for f in files for d in (read_txt(f) if f.suffix == ".txt" else read_jsonl(f))][:max_docs]
    if not docs:
        raise ValueError(f"texts {spec!r}: no non-empty document")
    return docs
