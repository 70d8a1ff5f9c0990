import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data/ built by `make data`. Tests fail (never skip) when it is missing."""
    d = ROOT / "data"
    assert (d / "models").is_dir(), f"{d} is missing: run `make data` first (make test does)"
    return d


@pytest.fixture(scope="session")
def smollm(data_dir):
    from forgetlab.models import load_causal_lm
    return load_causal_lm("smollm2-135m", data_dir=data_dir)
