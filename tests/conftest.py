import json
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


def is_real(d: Path) -> bool:
    """d holds the real data (make data), not the generated BIG-bench stand-in (MANIFEST.json "standin")."""
    manifest = d / "MANIFEST.json"
    return manifest.is_file() and not json.loads(manifest.read_text()).get("standin", False)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The tests' data: $FORGETLAB_TEST_DATA, which `make test` sets to data-test/ (the pinned models and code, and
    the generated stand-in for BIG-bench: forgetlab.data.standin), else the real data/. Tests fail (never skip)
    when it is missing."""
    d = Path(os.environ.get("FORGETLAB_TEST_DATA") or ROOT / "data")
    assert (d / "models").is_dir(), f"{d} is missing: run `make test-data` (make test does) or `make data`"
    return d


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data/ of `make data`, for the tests of the BIG-bench files themselves (counts, task list, the
    hash data.dvc pins). They skip, saying why, where data/ was not built: bigbench 1.0.0 is gone from the package
    index (README, "Known problem"), so a fresh machine cannot build it."""
    d = ROOT / "data"
    if not is_real(d):
        pytest.skip("real data/ not built (`make data` needs the bigbench 1.0.0 sdist, no longer on the package "
                    "index): these tests read the BIG-bench files themselves")
    return d


@pytest.fixture(scope="session")
def smollm(data_dir):
    from forgetlab.core.models import load_causal_lm
    return load_causal_lm("smollm2-135m", data_dir=data_dir)


def step_args(stage: str, index: int = 0, profile_name: str = "smoke", **overrides) -> dict:
    """The keyword arguments that a checkpoint stage's command passes its step function under a profile (step
    functions have no defaults: every value comes from params.yaml), with `overrides` replacing some."""
    from forgetlab.repro import pipeline, profile
    _, kwargs = pipeline.step_arguments(stage, profile.load_params(profile_name, ROOT), ROOT, index)
    unknown = set(overrides) - set(kwargs)
    assert not unknown, f"{stage} takes no {sorted(unknown)}"
    return {**kwargs, **overrides}


def step_argv(stage: str, index: int = 0, **overrides) -> list[str]:
    """step_args as a command line after the interpreter: ["-m", module, step, "--flag", value, ...]."""
    from forgetlab.repro import pipeline, profile
    cmds = dict(pipeline.stage_commands(profile.load_params("smoke", ROOT), ROOT))
    argv = pipeline.step_commands(cmds[stage])[index]
    import shlex
    # written as DVC unpacks a section (a list as --key a b, a boolean as --key / --no-key)
    flags = pipeline.unpack({k: v for k, v in step_args(stage, index, **overrides).items() if v is not None})
    return ["-m", argv[2], argv[3]] + shlex.split(flags)


def stage_env() -> dict:
    from forgetlab.repro.pipeline import venv_env
    return venv_env({"HF_HUB_OFFLINE": "1"})


SMOKE_COSTS = pytest.StashKey[dict]()


def run_smoke(tmp_path_factory, data_dir, name: str, config, only: list[str] | None = None,
              profile_name: str = "smoke", env: dict | None = None) -> Path:
    """The whole pipeline with the smoke profile (or `profile_name`, with `env` added to the stages'
    environment), run from dvc.yaml's own commands in a fresh scratch folder
    (never the tracked figures/ or metrics/). Independent stages run side by side (FORGETLAB_JOBS, default 2 on
    2 cores, each stage with 1 torch thread; FORGETLAB_JOBS=1 runs them one after the other with all threads, as
    `dvc repro`). FORGETLAB_STAGES=a,b limits it to some stages. Each stage's wall time and peak memory go into the
    session's report (pytest_terminal_summary)."""
    import time

    from forgetlab.repro import pipeline, profile
    work = pipeline.make_workdir(tmp_path_factory.mktemp(name), ROOT, data_dir)
    only = only or [s for s in os.environ.get("FORGETLAB_STAGES", "").split(",") if s] or None
    jobs = int(os.environ.get("FORGETLAB_JOBS", min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    done = pipeline.run_stages(work, profile.load_params(profile_name, ROOT), ROOT, only=only,
                               env={**stage_env(), **(env or {})}, jobs=jobs,
                               costs=(pipeline.expected_costs(profile_name, ROOT)
                                      or pipeline.expected_costs("smoke", ROOT)))  # paper-tiny: no bench of its own
    config.stash.setdefault(SMOKE_COSTS, {})[name] = (
        jobs, time.perf_counter() - t0, {s: (r["wall_s"], r["peak_rss_gb"]) for s, r in done.items()})
    return work


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, data_dir, pytestconfig) -> Path:
    return run_smoke(tmp_path_factory, data_dir, "smoke", pytestconfig)


def pytest_terminal_summary(terminalreporter, config):
    """What the smoke pipeline cost, stage by stage (the README's smoke-profile row comes from here)."""
    for name, (jobs, elapsed, costs) in config.stash.get(SMOKE_COSTS, {}).items():
        total = sum(w for w, _ in costs.values())
        terminalreporter.write_sep("-", f"{name} pipeline: {len(costs)} stages, {elapsed:.0f} s elapsed with "
                                        f"{jobs} job(s) (stages sum to {total:.0f} s), largest stage peak "
                                        f"{max(m for _, m in costs.values()):.1f} GB")
        for stage, (wall, peak) in sorted(costs.items(), key=lambda kv: -kv[1][0]):
            terminalreporter.write_line(f"{wall:7.1f} s {peak:5.2f} GB  {stage}")


def read_metrics(work: Path, name: str) -> dict:
    return json.loads((work / "metrics" / f"{name}.json").read_text())


def as_written(f, *inputs) -> pytest.approx:
    """What a metrics file can hold for f(*inputs), where the inputs may themselves have been read back from a
    metrics file (floats at utils.METRIC_DIGITS significant digits): f is evaluated at every corner of the box each
    input could have been rounded from (f monotone in each input within it, as a difference or a ratio is), and the
    result may be rounded by half a unit of its own last digit. Compare with ==; NaN matches NaN."""
    import itertools
    import math
    from forgetlab.core.utils import METRIC_DIGITS

    def half_unit(x: float) -> float:
        if x == 0 or not math.isfinite(x):
            return 0.0
        return 0.5 * 10 ** (math.floor(math.log10(abs(x))) + 1 - METRIC_DIGITS)
    boxes = [(x - half_unit(x), x + half_unit(x)) for x in map(float, inputs)]
    corners = [v for v in (float(f(*c)) for c in itertools.product(*boxes)) if not math.isnan(v)]
    exact = float(f(*inputs))
    if math.isnan(exact):
        return pytest.approx(exact, nan_ok=True)
    lo, hi = min(corners), max(corners)
    lo, hi = lo - half_unit(lo), hi + half_unit(hi)
    return pytest.approx((lo + hi) / 2, abs=(hi - lo) / 2 + 1e-12)


def bpe_tokenizer():
    """A tiny byte-level BPE tokenizer trained in-process (for tiny models saved with save_pretrained)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=True)
    tk.train_from_iterator(["the cat sat in Paris", "New York is big"] * 5,
                           trainers.BpeTrainer(vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                               special_tokens=["<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")
