"""Hugging Face hub datasets and models, resolved in one place (the paper-scale profile's data).

Every hub read goes through `load_dataset` here (datasets) or `forgetlab.core.models.resolve_model` (models):

* a folder written by `save_to_disk` is read offline with `datasets.load_from_disk` (a config's own folder,
  `<folder>/<config>`, when there is one);
* a hub id goes to `datasets.load_dataset(id, config, split=..., revision=..., streaming=...)`; one that still ships a
  loading script (which datasets >= 4 refuses: ybisk/piqa, eriktks/conll2003, codeparrot/github-code-clean) is read
  from the hub's parquet conversion of it (revision refs/convert/parquet), saying so;
* where the environment variable FORGETLAB_HUB_MIRROR names a folder, hub ids are read from that folder instead
  of the network, and a missing copy is an error (nothing falls back to the hub):

      <mirror>/datasets/<id>[/<config>]   a DatasetDict saved with save_to_disk
      <mirror>/models/<id>                a model and its tokenizer saved with save_pretrained

The tests build such a mirror of tiny random-init models and small datasets with the hub's schemas
(forgetlab.repro.tinyhub) and run the `paper-tiny` profile on it, so every paper-profile code path runs on every commit;
a user on a machine without network can fill one with real copies.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from forgetlab.core.utils import check_choice

MIRROR = "FORGETLAB_HUB_MIRROR"
SCRIPT_REFUSED = "Dataset scripts are no longer supported"  # datasets >= 4 on a repository with a loading script
PARQUET_BRANCH = "refs/convert/parquet"
# datasets' packaged builders (load_dataset("json", data_files=...)): local files, never a hub id
PACKAGED = frozenset({"json", "csv", "parquet", "text", "arrow", "imagefolder", "audiofolder", "webdataset"})


def mirror() -> Path | None:
    """The hub mirror folder named by $FORGETLAB_HUB_MIRROR, or None."""
    value = os.environ.get(MIRROR)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"${MIRROR} names {path}, which is not a folder")
    return path


def mirrored(kind: str, hub_id: str) -> Path | None:
    """The mirror's copy of a hub model or dataset (kind "models" or "datasets"); None without a mirror. A hub id
    the mirror lacks is an error naming the folder it should be in."""
    root = mirror()
    if root is None:
        return None
    path = root / kind / hub_id
    if not path.exists():
        raise FileNotFoundError(f"{hub_id!r} is not in the hub mirror ${MIRROR}: expected {path}")
    return path


def is_saved(path: Path) -> bool:
    """True for a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json",
                                                                "state.json"))


def saved_folder(name: str, config: str | None = None) -> Path | None:
    """The save_to_disk folder that stands for `name` (and its config): the folder itself, its `<config>` subfolder,
    or the mirror's copy of a hub id; None for a hub id read from the network."""
    path = Path(name)
    if name in PACKAGED:
        return None
    if not path.is_dir():
        found = mirrored("datasets", name)
        if found is None:
            return None
        path = found
    if config and is_saved(path / config):
        return path / config
    if is_saved(path):
        return path
    raise FileNotFoundError(f"{path} holds no dataset saved with save_to_disk"
                            + (f" (nor a {config!r} subfolder with one)" if config else ""))


def load_dataset(name: str, config: str | None = None, split: str | None = None, *, revision: str | None = None,
                 streaming: bool = False, **kwargs):
    """A Dataset (split given) or DatasetDict (split None): a save_to_disk folder, the mirror's copy of a hub id,
    or the hub (`datasets.load_dataset`, with kwargs such as data_files). Streaming a saved copy gives an
    IterableDataset as the hub would."""
    import datasets
    folder = saved_folder(name, config)
    if folder is None:
        try:
            return datasets.load_dataset(name, config, split=split, revision=revision, streaming=streaming, **kwargs)
        except RuntimeError as e:
            if SCRIPT_REFUSED not in str(e) or revision is not None:
                raise
        # a dataset that still ships a loading script (datasets >= 4 refuses them, e.g. ybisk/piqa): the hub's own
        # parquet conversion of it, on the branch refs/convert/parquet (where a script's single config is "default")
        print(f"{name} ships a loading script, which datasets >= 4 refuses: reading the hub's parquet conversion "
              f"(revision {PARQUET_BRANCH!r})", file=sys.stderr)
        try:
            return datasets.load_dataset(name, config, split=split, revision=PARQUET_BRANCH, streaming=streaming,
                                         **kwargs)
        except Exception as e:
            raise RuntimeError(
                f"{name} ships a loading script (refused by datasets >= 4) and its parquet conversion "
                f"({PARQUET_BRANCH}) did not load either ({type(e).__name__}: {e}); convert it yourself with "
                f"`datasets-cli convert_to_parquet` (datasets 3.6) or put a copy in ${MIRROR}") from e
    ds = datasets.load_from_disk(str(folder))
    if split is not None and isinstance(ds, datasets.DatasetDict):
        ds = ds[check_choice("split", split, ds)]
    if streaming:
        ds = (datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in ds.items()})
              if isinstance(ds, datasets.DatasetDict) else ds.to_iterable_dataset())
    return ds
