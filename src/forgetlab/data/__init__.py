"""Data for forgetlab: built once by `make data` (see build.py), then read offline by these functions.

    from forgetlab.data import load_corpus, split_documents, load_mc_task
"""
from .bigbench import MCTask, list_mc_tasks, load_cifar10, load_mc_task, load_squad
from .corpora import (CODE_LANGUAGES, CORPORA, TEXT_SOURCES, load_code_documents, load_corpus, load_hf_text,
                      load_split, load_text_documents, split_documents)

__all__ = ["CODE_LANGUAGES", "CORPORA", "TEXT_SOURCES", "MCTask", "check_data", "list_mc_tasks", "load_cifar10",
           "load_code_documents", "load_corpus", "load_hf_text", "load_mc_task", "load_split", "load_squad", "load_text_documents",
           "split_documents"]


def check_data(data_dir="data") -> list[str]:
    """Differences between data_dir and its MANIFEST.json (empty when every sha256 matches); see build.check_data."""
    from .build import check_data as check
    return check(data_dir)
