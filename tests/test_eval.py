"""Next-token evaluation and bootstrap intervals against direct computations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgetlab.core import eval as ev, metrics
from forgetlab.core.models import tiny_model


def data():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (4, 9), generator=g)
    att = torch.ones_like(ids)
    att[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": att}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_token_counts_match_a_direct_computation(family):
    model = tiny_model(family)
    d = data()
    skip = torch.tensor([5, 6, 7])
    summary, counts = ev.evaluate_lm(model, [d], top_k=3, skip_ids=skip, desc=None)
    with torch.no_grad():
        logits = model(**d).logits[:, :-1]
    tgt, valid = d["input_ids"][:, 1:], d["attention_mask"][:, 1:].bool()
    pred = logits.argmax(-1)
    top3 = logits.topk(3, -1).indices
    n = valid.sum().item()
    assert summary["n_tokens"] == n == 4 * 8 - 3
    assert summary["top1"] == pytest.approx(((pred == tgt) & valid).sum().item() / n)
    assert summary["topk"] == pytest.approx(((top3 == tgt[..., None]).any(-1) & valid).sum().item() / n)
    nll = F.cross_entropy(logits[valid], tgt[valid])
    assert summary["loss"] == pytest.approx(nll.item(), rel=1e-5)
    assert summary["perplexity"] == pytest.approx(math.exp(nll.item()), rel=1e-5)
    keep = valid & ~torch.isin(tgt, skip)
    assert summary["top1_skip"] == pytest.approx(((pred == tgt) & keep).sum().item() / keep.sum().item())
    assert counts["n"].tolist() == valid.sum(1).tolist()  # per sequence, for the bootstrap


def test_batching_does_not_change_the_result():
    model = tiny_model("llama")
    d = data()
    whole, _ = ev.evaluate_lm(model, [d], desc=None)
    split, _ = ev.evaluate_lm(model, [{k: v[:1] for k, v in d.items()}, {k: v[1:] for k, v in d.items()}], desc=None)
    assert whole == pytest.approx(split)


def test_most_common_tokens():
    seqs = {"input_ids": torch.tensor([[5, 5, 5, 9, 9, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]])}
    assert ev.most_common_tokens(seqs, 2).tolist() == [5, 9]


def test_bootstrap_ratio_covers_the_truth_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.3, 50)
    large = rng.binomial(1, 0.3, 5000)
    lo_s, hi_s = metrics.bootstrap_ratio(small, np.ones(50), seed=1)
    lo_l, hi_l = metrics.bootstrap_ratio(large, np.ones(5000), seed=1)
    assert lo_l < 0.3 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5


def test_paired_bootstrap_of_identical_measures_is_zero():
    num, den = np.array([3.0, 5, 1, 7]), np.array([10.0, 10, 10, 10])
    assert metrics.bootstrap_diff_of_ratios(num, den, num, den) == (0.0, 0.0)


def test_area_between_curves():
    assert metrics.area_between([0, 1, 2], [0, 2, 4], [0, 1, 2]) == pytest.approx(2.0)


def test_mlm_corruption_is_80_10_10_on_15_percent():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 100), generator=g)
    cand = torch.ones_like(ids, dtype=torch.bool)
    cand[:, 0] = False  # e.g. [CLS]
    corrupted, targets = ev.mlm_corrupt(ids, cand, mask_token_id=3, vocab_size=1000, generator=g)
    assert not targets[:, 0].any()
    assert targets.float().mean().item() == pytest.approx(0.15 * 99 / 100, abs=0.01)
    t = targets
    masked = (corrupted[t] == 3).float().mean().item()
    same = (corrupted[t] == ids[t]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.02) and same == pytest.approx(0.1 + 0.1 / 1000, abs=0.02)
    assert torch.equal(corrupted[~t], ids[~t])  # nothing else changes


def test_mlm_counts_on_a_tiny_bert():
    model = tiny_model("bert")
    d = data()
    specials = torch.tensor([0, 1, 2])
    counts = ev.mlm_token_counts(model, [d], mask_token_id=4, special_ids=specials, top_k=3, seed=0)
    again = ev.mlm_token_counts(model, [d], mask_token_id=4, special_ids=specials, top_k=3, seed=0)
    assert all(torch.equal(counts[k], again[k]) for k in counts)  # seeded: the same targets every time
    # recompute by hand with the same corruption
    g = torch.Generator().manual_seed(0)
    cand = d["attention_mask"].bool() & ~torch.isin(d["input_ids"], specials)
    corrupted, targets = ev.mlm_corrupt(d["input_ids"], cand, 4, 97, g)
    with torch.no_grad():
        logits = model(input_ids=corrupted, attention_mask=d["attention_mask"]).logits
    assert counts["n"].sum().item() == targets.sum().item() > 0
    hits = (logits.argmax(-1) == d["input_ids"]) & targets
    assert counts["top1"].sum().item() == hits.sum().item()


def test_drop_gap_ci_brackets_the_gap_and_is_zero_for_no_change():
    base = {"top1": np.array([5.0, 6, 7, 8] * 5), "n": np.full(20, 10.0)}
    pruned_f = {"top1": base["top1"] - 3, "n": base["n"]}  # forget drops 30 pp on every sequence
    lo, hi = metrics.drop_gap_ci(base, pruned_f, base, base)
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    assert metrics.drop_gap_ci(base, base, base, base) == (0.0, 0.0)


def test_count_stats_are_eval_summarize_counts_and_the_paired_bootstrap_by_hand():
    """metrics.COUNT_STATS (vectorized for bootstrap sums) give eval.summarize_counts's numbers; the paired
    difference of two models on the same sequences by hand; a model against itself has the interval [0, 0]."""
    from forgetlab.core import eval as ev
    from forgetlab.core import metrics
    a = {"n": torch.tensor([10., 20.]), "n_skip": torch.tensor([5., 10.]), "nll": torch.tensor([10., 40.]),
         "top1": torch.tensor([5., 4.]), "topk": torch.tensor([8., 16.]), "top1_skip": torch.tensor([1., 2.]),
         "topk_skip": torch.tensor([4., 6.])}
    b = dict(a, top1=torch.tensor([2., 1.]), nll=torch.tensor([10., 20.]))
    for k, f in metrics.COUNT_STATS.items():
        s = {key: float(v.sum()) for key, v in a.items()}
        assert float(f(s)) == pytest.approx(ev.summarize_counts(a)[k], rel=1e-6), k
    diff, ci = metrics.paired_bootstrap_diff(a, b, "top1", n_boot=200)
    assert diff == pytest.approx(9 / 30 - 3 / 30)
    assert ci[0] <= diff <= ci[1]
    diff, ci = metrics.paired_bootstrap_diff(a, b, "perplexity", n_boot=50)
    assert diff == pytest.approx(math.exp(50 / 30) - math.exp(30 / 30))
    assert metrics.paired_bootstrap_diff(a, a, "topk_skip", n_boot=50) == (0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="stat must be one of"):
        metrics.paired_bootstrap_diff(a, b, "accuracy")


def test_pad_left_and_right_with_the_attention_mask():
    from forgetlab.core import tokens
    ids, mask = tokens.pad([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = tokens.pad([(5, 6, 7), (8,)], -1, left=True)
    assert ids.tolist() == [[5, 6, 7], [-1, -1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
