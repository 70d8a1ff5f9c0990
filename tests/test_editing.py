"""SaLEM / MEND editing: unit tests on tiny random models, then a smoke run of the stages and the notebook."""
import json

import numpy as np
import pytest
import torch
from conftest import ROOT, read_metrics, step_args

from forgetlab.papers.salem import experiment as ed


def tiny_classifier(layers=3, seed=0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=layers, num_attention_heads=2,
        num_labels=3, pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.eval()
    return model


def items(n=6, seed=1, lm=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 5 + i % 3
        ids = torch.randint(3, 50, (length,), generator=g).tolist()
        if lm:
            out.append({"input_ids": ids, "labels": [-100] * (length - 2) + ids[-2:]})
        else:
            out.append({"input_ids": ids, "labels": i % 3})
    return out


# ---------------------------------------------------------------- saliency
@pytest.mark.parametrize("planted", [0, 1, 2])
def test_saliency_picks_the_layer_with_a_planted_large_gradient(planted):
    model = tiny_classifier()
    layers = ed.mlp_layers(model)
    assert layers[1] == ["bert.encoder.layer.1.intermediate.dense.weight", "bert.encoder.layer.1.output.dense.weight"]
    plain = ed.layer_saliency(model, items(20), layers, batch_size=10, desc=None)
    assert plain.shape == (2, 3) and (plain > 0).all()  # two mini-batches of 10, three layers
    w = model.get_parameter(layers[planted][1])
    handle = w.register_hook(lambda g: g * 1e4)
    sal = ed.layer_saliency(model, items(20), layers, batch_size=10, desc=None)
    handle.remove()
    assert ed.pick_layers(sal, 1) == [planted]
    # the planted layer's score is the mean |grad| of its two matrices, the others are unchanged
    others = [i for i in range(3) if i != planted]
    assert torch.allclose(sal[:, others], plain[:, others])
    assert ed.pick_layers(torch.tensor([0.1, 0.5, 0.3]), 2) == [1, 2]


def test_saliency_is_the_mean_abs_gradient_over_the_layer_parameters():
    model = tiny_classifier()
    layers = ed.mlp_layers(model)
    batch = ed.collate(items(4))
    loss = ed.edit_loss(ed.forward(model, batch), batch["labels"])
    grads = torch.autograd.grad(loss, [model.get_parameter(n) for n in layers[2]])
    expected = torch.cat([g.abs().flatten() for g in grads]).mean()
    sal = ed.layer_saliency(model, items(4), layers, batch_size=10, desc=None)
    assert sal[0, 2].item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- MEND
def true_grads(model, names, batch):
    params = [model.get_parameter(n) for n in names]
    for p in params:
        p.requires_grad_(True)
    loss = ed.edit_loss(ed.forward(model, batch), batch["labels"])
    return dict(zip(names, torch.autograd.grad(loss, params)))


@pytest.mark.parametrize("lm", [False, True])
def test_mend_at_init_without_normalization_is_a_plain_gradient_step(lm):
    if lm:
        from forgetlab.core.models import tiny_model
        model = tiny_model("llama", vocab_size=50, hidden=16, ff=24, layers=2, heads=2)
    else:
        model = tiny_classifier()
    layers = ed.mlp_layers(model)
    names = layers[1]
    editor = ed.MEND(model, names, rank=4, edit_lr=0.5, norm=False)
    batch = ed.collate(items(4, lm=lm))
    factors = editor.factors(model, batch)
    grads = true_grads(model, names, batch)
    for n in names:
        u, d = factors[n]
        assert torch.allclose(d.T @ u, grads[n], atol=1e-6)  # the factors are the gradient
        u_t, d_t = editor.nets[editor.keys[n]](u, d, editor.modes[n])
        assert torch.equal(u_t, u) and torch.equal(d_t, d)  # identity at init
    deltas = editor.deltas(model, batch)
    for n in names:
        assert torch.allclose(deltas[n], -0.5 * grads[n], atol=1e-6)
    # the same step as plain SGD on those weights lowers the edit loss
    new = editor.edit(model, batch)
    with torch.no_grad():
        before = ed.edit_loss(ed.forward(model, batch), batch["labels"])
        after = ed.edit_loss(ed.forward(model, batch, new), batch["labels"])
    assert after < before


def test_mend_shares_one_network_per_shape_with_a_mode_per_layer():
    model = tiny_classifier()
    layers = ed.mlp_layers(model)
    editor = ed.MEND(model, layers[0] + layers[2], rank=4)
    assert sorted(editor.nets) == ["16x24", "24x16"]
    assert editor.modes == {layers[0][0]: 0, layers[0][1]: 0, layers[2][0]: 1, layers[2][1]: 1}
    assert editor.nets["16x24"].mlp.scale.shape == (2, 40)


def test_an_edit_on_one_layer_changes_no_other_parameter():
    model = tiny_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = ed.mlp_layers(model)[1]
    editor = ed.MEND(model, names, rank=4, edit_lr=1e-2, norm=False)
    new = editor.edit(model, ed.collate(items(4)))
    assert sorted(new) == sorted(names)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed in the model"  # the model itself is never modified
    edited = dict(before, **new)
    changed = {n for n in before if not torch.equal(edited[n], before[n])}
    assert changed == set(names)
    # fine-tuning restricted to a layer behaves the same way
    ft = ed.fine_tune_edit(model, ed.collate(items(4)), names, steps=2, lr=1e-2)
    assert sorted(ft) == sorted(names) and all(not torch.equal(ft[n], before[n]) for n in names)


def test_locality_loss_is_zero_when_the_edit_is_zero():
    model = tiny_classifier()
    editor = ed.MEND(model, ed.mlp_layers(model)[2], rank=4, edit_lr=1.0, norm=False)
    loc = ed.collate(items(5, seed=3))
    new = editor.edit(model, ed.collate(items(3)), scale=0.0)  # an edit scaled to nothing
    with torch.no_grad():
        pre, post = ed.forward(model, loc), ed.forward(model, loc, new)
    assert ed.locality_kl(pre, post).item() == 0.0
    # and positive for a real edit; LM version averages over unmasked tokens
    with torch.no_grad():
        post = ed.forward(model, loc, editor.edit(model, ed.collate(items(3))))
    assert ed.locality_kl(pre, post).item() > 0
    logits = torch.randn(2, 4, 7)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    other = logits.clone()
    other[0, 2:] += torch.randn(2, 7)  # differences only under the mask's zeros
    assert ed.locality_kl(logits, other, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_normalization_statistics_match_the_rows_seen():
    t = ed.GradientTransform(3, 2, rank=2, n_modes=1)
    rows = torch.randn(50, 5) * torch.tensor([1.0, 2, 3, 4, 5]) + 7
    t.train()
    for chunk in rows.split([7, 20, 23]):
        t(chunk[:, :3], chunk[:, 3:], 0)
    assert int(t.count) == 50
    assert torch.allclose(t.mean, rows.mean(0), atol=1e-5)
    assert torch.allclose((t.m2 / (t.count - 1)).sqrt(), rows.std(0), atol=1e-4)
    t.eval()
    u, d = t(rows[:, :3], rows[:, 3:], 0)  # identity MLP at init: outputs are the standardized inputs
    z = (rows - rows.mean(0)) / rows.std(0)
    assert torch.allclose(torch.cat([u, d], -1), z, atol=1e-4)


def test_training_the_editor_makes_edits_succeed():
    model = tiny_classifier(layers=2)
    its = items(24, seed=5)
    edits = [{"fail": it, "adapt": []} for it in its[:16]]
    editor = ed.MEND(model, ed.mlp_layers(model)[1], rank=8, edit_lr=1e-3)
    batch = ed.collate([e["fail"] for e in edits])
    editor.train()
    with torch.no_grad():
        editor.deltas(model, batch)  # normalization statistics from the edit rows
    editor.eval()
    with torch.no_grad():
        before = ed.edit_loss(ed.forward(model, batch, editor.edit(model, batch)), batch["labels"]).item()
    log = ed.train_mend(model, editor, edits, its[16:], steps=60, edit_batch=4, loc_batch=4, lr=1e-2, lr_lr=1e-2,
                        c_edit=1.0, seed=0, desc=None)
    assert log["n_steps"] == 60 and not log["stopped_early"] and log["val"] == []  # no held-out edits: no stopping
    with torch.no_grad():
        after = ed.edit_loss(ed.forward(model, batch, editor.edit(model, batch)), batch["labels"]).item()
    assert after < before


def test_editor_round_trip(tmp_path):
    model = tiny_classifier()
    editor = ed.MEND(model, ed.mlp_layers(model)[0], rank=4, edit_lr=0.3, norm=False)
    ed.save_editor(editor, tmp_path / "e", {"layers": [0]})
    again = ed.load_editor(model, tmp_path / "e")
    batch = ed.collate(items(3))
    a, b = editor.deltas(model, batch), again.deltas(model, batch)
    assert all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------- data and metrics
def test_split_claim_and_labels():
    ev, claim = ed.split_claim("Westlife: sold 23 million .\nClaim: Westlife sold under 23.5 million .")
    assert ev == "Westlife: sold 23 million ." and claim == "Westlife sold under 23.5 million ."
    with pytest.raises(ValueError, match="Claim"):
        ed.split_claim("no claim here")


def test_fact_pairs_from_bigbench_and_from_a_local_hf_dataset(tmp_path, data_dir):
    from forgetlab.data import load_mc_task
    pairs = ed.load_fact_pairs("vitaminc_fact_verification", data_dir, n=50)
    assert len(pairs) == 50 and {p["label"] for p in pairs} <= {0, 1, 2}
    task = load_mc_task("vitaminc_fact_verification", data_dir)
    evidence, claim = task.examples[0]["input"].rsplit("\nClaim: ", 1)
    assert pairs[0]["claim"] == claim and pairs[0]["evidence"] == evidence
    assert pairs[0]["group"] == evidence.split(":", 1)[0] and pairs[0]["label"] == task.examples[0]["target"]
    import datasets
    ds = datasets.Dataset.from_dict({"claim": ["a is b", "c is d"], "evidence": ["A: a is b .", "C: c is e ."],
                                     "label": ["SUPPORTS", "NOT ENOUGH INFO"], "page": ["A", "C"]})
    ds.save_to_disk(str(tmp_path / "fever"))
    hf = ed.load_fact_pairs(f"hf:{tmp_path / 'fever'}")
    assert [p["label"] for p in hf] == [0, 2] and [p["group"] for p in hf] == ["A", "C"]
    rest, held = ed.split_by_group(pairs + hf, 0.5, seed=0)
    assert not {p["group"] for p in rest} & {p["group"] for p in held}


def test_encode_and_correct_for_classifier_and_lm(data_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    it = ed.encode(tok, {"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"})
    n_answer = sum(1 for v in it["labels"] if v != -100)
    assert n_answer >= 1 and it["labels"][-n_answer:] == it["input_ids"][-n_answer:]
    assert tok.decode(it["input_ids"][-n_answer:]).strip() == "France"
    # teacher-forced exact match: every answer token must be the argmax at the previous position
    labels = torch.tensor([[-100, -100, 5, 6]])
    logits = torch.zeros(1, 4, 10)
    logits[0, 1, 5] = logits[0, 2, 6] = 1
    assert ed.correct(logits, labels).tolist() == [True]
    logits[0, 2, 7] = 2
    assert ed.correct(logits, labels).tolist() == [False]
    assert ed.correct(torch.tensor([[0.1, 0.9, 0], [2, 0, 0]]), torch.tensor([1, 1])).tolist() == [True, False]


def test_paraphrase_filter():
    KEEP = {"min_similarity": 0.8, "length_ratio": [0.6, 1.5]}  # params.yaml's salem_edits filter
    assert ed.paraphrase_filter("Tom sold 23 cars in 2010 .", "In 2010, Tom sold 23 cars.", 0.9, **KEEP) is None
    assert ed.paraphrase_filter("Tom sold 23 cars .", "Tom sold 24 cars.", 0.9, **KEEP) == "numbers"
    assert ed.paraphrase_filter("Tom sold cars .", "tom sold cars", 0.99, **KEEP) == "copy"
    assert ed.paraphrase_filter("Tom sold cars .", "Cars were sold by Tom.", 0.5, **KEEP) == "similarity"
    assert ed.paraphrase_filter("Tom sold cars .", "", 0.0, **KEEP) == "empty"
    assert ed.paraphrase_filter("Tom sold cars .", "Tom sold a great many cars.", 0.9, **KEEP) == "length"  # 27/15
    assert ed.paraphrase_filter("Tom sold cars .", "Tom sold a great many cars.", 0.9, min_similarity=0.8,
                                length_ratio=[0.6, 2.0]) is None


def test_summarize_drawdown_and_adapt_weighting():
    rows = [{"n_edits": 2, "n_adapt": 1, "fail_acc": 1.0, "adapt_acc": 0.0, "pass_acc": 0.8, "heldout_acc": 0.5,
             "time_per_edit_s": 0.1, "edited_params": 10},
            {"n_edits": 2, "n_adapt": 3, "fail_acc": 0.5, "adapt_acc": 1.0, "pass_acc": 0.6, "heldout_acc": 0.5,
             "time_per_edit_s": 0.3, "edited_params": 10}]
    s = ed.summarize_edits(rows, {"pass_acc": 1.0, "heldout_acc": 0.6})
    assert s["fail_acc"] == pytest.approx(0.75) and s["adapt_acc"] == pytest.approx(0.75)
    assert s["pass_drawdown"] == pytest.approx(0.3) and s["heldout_drawdown"] == pytest.approx(0.1)
    assert s["n_edits"] == 4 and s["time_per_edit_s"] == pytest.approx(0.2)


def test_edit_intervals_resample_whole_edit_batches_and_pair_the_methods():
    # 2 batches x 2 edits; 4 pass samples, all right before editing
    rows = {"a": [{"fail_hits": [1, 1], "pass_hits": [1, 1, 1, 0]}, {"fail_hits": [1, 0], "pass_hits": [1, 1, 1, 1]}],
            "b": [{"fail_hits": [0, 1], "pass_hits": [0, 0, 1, 0]}, {"fail_hits": [0, 0], "pass_hits": [0, 1, 1, 0]}]}
    res = {"rows": rows, "base_pass_hits": [1, 1, 1, 1]}
    out = ed.edit_intervals(res, n_boot=2000, seed=0, pairs=[("a", "b")])
    assert out["n_clusters"] == 2
    # point estimates: a fixes 3/4, b 1/4; drawdowns 1/8 and 5/8 (what summarize_edits reports)
    d = out["a_minus_b"]
    assert d["fail_acc"] == pytest.approx(0.5) and d["pass_drawdown"] == pytest.approx(0.125 - 0.625)
    # two clusters: a resample is batch 0 twice, batch 1 twice or one of each, so a's edit success is 1, 1/2 or 3/4
    assert out["methods"]["a"]["fail_acc_ci"] == [0.5, 1.0]
    assert out["methods"]["a"]["pass_drawdown_ci"] == [0.0, 0.25]  # batch drawdowns 1/4 and 0
    # paired: per batch, a - b is +1/2 in edit success both times, so the interval is that one value
    assert d["fail_acc_ci"] == [pytest.approx(0.5), pytest.approx(0.5)]
    # identical methods: every difference is exactly zero
    same = ed.edit_intervals({"rows": {"a": rows["a"], "b": rows["a"]}, "base_pass_hits": [1, 1, 1, 1]},
                             pairs=[("a", "b")])["a_minus_b"]
    assert same["fail_acc_ci"] == [0.0, 0.0] and same["pass_drawdown_ci"] == [0.0, 0.0]


def test_evaluate_edits_scores_every_batch_and_no_edit_equals_the_base_model():
    model = tiny_classifier()
    its = items(12, seed=4)
    edits = [{"fail": it, "adapt": [its[(i + 1) % 6]]} for i, it in enumerate(its[:6])]
    base_pass = ed.predictions(model, its[6:]).int().tolist()
    rows = ed.evaluate_edits(model, ed.NoEdit(), edits, its[6:], its[:3], edit_batch=4)
    assert [r["n_edits"] for r in rows] == [4, 2] and all(r["pass_hits"] == base_pass for r in rows)
    assert rows[0]["heldout_acc"] == ed.accuracy(model, its[:3]) and rows[0]["edited_params"] == 0
    editor = ed.MEND(model, ed.mlp_layers(model)[1], rank=4, edit_lr=1.0, norm=False)
    light = ed.evaluate_edits(model, ed.MendEdit(model, editor, 2.0), edits, its[6:], (), edit_batch=4,
                              with_adapt=False)
    assert light[0]["n_adapt"] == 0 and np.isnan(light[0]["heldout_acc"]) and light[0]["edited_params"] == 2 * 16 * 24


def test_clustered_bootstrap_on_a_hand_made_example():
    from forgetlab.core.metrics import bootstrap_clustered_mean, bootstrap_mean
    # every cluster has mean 1/2 although its items are 0 and 1: whole clusters resampled, the mean never moves
    assert bootstrap_clustered_mean([0, 1, 0, 1, 0, 1], ["a", "a", "b", "b", "c", "c"]) == (0.5, 0.5)
    # two clusters of four identical items: a resample is aa (1), ab (1/2) or bb (0), so the 95% interval is
    # [0, 1]; resampling the 8 items as if independent gives a much narrower one
    values, clusters = [1] * 4 + [0] * 4, ["a"] * 4 + ["b"] * 4
    assert bootstrap_clustered_mean(values, clusters, n_boot=2000) == (0.0, 1.0)
    lo, hi = bootstrap_mean(values, n_boot=2000)
    assert 0.1 <= lo and hi <= 0.9
    # unequal cluster sizes: the mean is over items (sum / count), so {a: [1], b: [0, 0, 0]} drawn as ab is 1/4
    from forgetlab.core.metrics import bootstrap_clusters
    sums, counts = np.array([1.0, 0.0]), np.array([1.0, 3.0])
    # (resamples: aa 1 with probability 1/4, ab 1/4 with 1/2, bb 0 with 1/4: the middle 40% are all ab)
    lo, hi = bootstrap_clusters(lambda i: sums[i].sum() / counts[i].sum(), 2, n_boot=4000, alpha=0.6)
    assert (lo, hi) == (0.25, 0.25)
    with pytest.raises(ValueError, match="length"):
        bootstrap_clustered_mean([1, 2], ["a"])


def test_matched_strength_reads_each_curve_at_the_same_edit_success():
    # one batch of 2 edits, 2 pass samples right before editing. a: scale 1 fixes both edits and breaks one pass
    # sample, scale 0.5 fixes one edit and breaks nothing. b: scale 1 fixes one edit and breaks both pass samples.
    def row(fail, passed):
        return [{"fail_hits": fail, "pass_hits": passed}]
    sweep = {"a": {0.5: row([1, 0], [1, 1]), 1.0: row([1, 1], [1, 0])}, "b": {1.0: row([1, 0], [0, 0])}}
    res = {"sweep": sweep, "base_pass_hits": [1, 1]}
    assert ed.strength_curve(sweep["a"], 1.0) == [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (1.0, 1.0, 0.5)]
    assert ed.drawdown_at(ed.strength_curve(sweep["b"], 1.0), 0.25) == pytest.approx(0.5)  # halfway from (0, 0)
    assert np.isnan(ed.drawdown_at(ed.strength_curve(sweep["b"], 1.0), 0.9))  # b never gets there
    out = ed.matched_strength(res, "a", "b", n_boot=50)
    # the level is b's edit success (1/2): a reaches it at scale 0.5 with no drawdown, b has drawdown 1
    assert out["level"] == 0.5 and out["a_drawdown"] == 0.0 and out["b_drawdown"] == 1.0
    assert out["diff"] == -1.0 and out["diff_ci"] == [-1.0, -1.0]  # one batch: every resample is the same
    with pytest.raises(ValueError, match="scale 1"):
        ed.matched_strength({"sweep": {"a": {0.5: []}, "b": {}}, "base_pass_hits": [1]}, "a", "b")


# ---------------------------------------------------------------- editor training: early stopping, step sizes
def test_editor_early_stopping_stops_after_patience_evaluations_without_improvement():
    model = tiny_classifier(layers=2)
    its = items(24, seed=5)
    edits = [{"fail": it, "adapt": []} for it in its[:12]]
    val = [{"fail": it, "adapt": []} for it in its[12:16]]
    # an editor that cannot change (learning rates 0, no normalization): the held-out loss never improves on the
    # first evaluation, so training stops after eval_every * (1 + patience) steps and keeps the first evaluation
    editor = ed.MEND(model, ed.mlp_layers(model)[1], rank=4, edit_lr=1e-3, norm=False)
    log = ed.train_mend(model, editor, edits, its[16:], steps=500, edit_batch=4, loc_batch=4, lr=0.0, lr_lr=0.0,
                        val_edits=val, eval_every=5, patience=3, desc=None)
    assert log["stopped_early"] and log["n_steps"] == 20 and len(log["val"]) == 4 and log["best_step"] == 5
    assert len({round(v["val_loss"], 6) for v in log["val"]}) == 1
    # a learning editor: stopping restores the best evaluation's editor, whose held-out loss is the logged best
    editor = ed.MEND(model, ed.mlp_layers(model)[1], rank=4, edit_lr=1e-3)
    log = ed.train_mend(model, editor, edits, its[16:], steps=20, edit_batch=4, loc_batch=4, lr=1e-2, lr_lr=1e-2,
                        val_edits=val, eval_every=4, patience=2, desc=None)
    best = min(log["val"], key=lambda v: v["val_loss"])
    assert best["step"] == log["best_step"]
    with torch.no_grad():
        pre = ed.forward(model, ed.collate(its[16:20]))
        e, kl = ed.editor_objective(model, editor, val, ed.collate(its[16:20]), pre)
    assert (e.item(), kl.item()) == pytest.approx((best["val_edit_loss"], best["val_loc_kl"]), rel=1e-4)
    with pytest.raises(ValueError, match="patience"):
        ed.train_mend(model, editor, edits, its[16:], patience=0, desc=None)


def test_learned_edit_step_sizes_move_and_stay_positive():
    model = tiny_classifier(layers=2)
    its = items(24, seed=5)
    edits = [{"fail": it, "adapt": []} for it in its[:16]]
    editor = ed.MEND(model, ed.mlp_layers(model)[1], rank=8, edit_lr=1e-3)
    assert torch.allclose(editor.edit_lrs, torch.full((2,), 1e-3))
    ed.train_mend(model, editor, edits, its[16:], steps=20, edit_batch=4, loc_batch=4, lr=1e-2, lr_lr=0.05,
                  c_edit=1.0, desc=None)
    change = (editor.edit_lrs / 1e-3).log().abs()
    assert (editor.edit_lrs > 0).all() and change.max() > 0.3  # moved by more than a third of their size
    with pytest.raises(ValueError, match="edit_lr"):
        ed.MEND(model, ed.mlp_layers(model)[1], edit_lr=0.0)


# ---------------------------------------------------------------- per-edit saliency and the layer controls
class KnownBlocks(torch.nn.Module):
    """A 3-class classifier whose answer lives in a known block: the input embedding spans dims 0-3; block k's MLP
    reads them and writes only into its own dims (block 1 into 4-7, block 2 into 8-11, block 0 into 12-15, which
    no logit reads); class 1's logit reads dims 4-7, class 2's dims 8-11, class 0's the input dims (and a bias
    makes it the prediction). So the edit toward class 1 must go through block 1, toward class 2 through block 2."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(50, 16)
        self.emb.weight.data = torch.randn(50, 16, generator=g)  # not the global RNG: the test must not depend on order
        self.blocks = torch.nn.ModuleList()
        up = torch.zeros(8, 16)
        up[:, :4] = torch.randn(8, 4, generator=g)
        own = torch.randn(4, 8, generator=g)  # every block writes the same values, each into its own dims ...
        for k, rows in enumerate((slice(12, 16), slice(4, 8), slice(8, 12))):
            block = torch.nn.ModuleDict({"up": torch.nn.Linear(16, 8, bias=False),
                                         "down": torch.nn.Linear(8, 16, bias=False)})
            down = torch.zeros(16, 8)
            down[rows] = own
            block["up"].weight.data, block["down"].weight.data = up.clone(), down
            self.blocks.append(block)
        self.head = torch.nn.Linear(16, 3)
        head = torch.zeros(3, 16)
        reads = torch.randn(4, generator=g)  # ... and classes 1 and 2 read theirs alike, so that only the target
        head[0, :4], head[1, 4:8], head[2, 8:12] = torch.randn(4, generator=g), reads, reads  # tells them apart
        self.head.weight.data, self.head.bias.data = head, torch.tensor([4.0, 0.0, 0.0])
        with torch.no_grad():
            self.emb.weight[:, 4:] = 0

    def forward(self, input_ids, attention_mask=None, **_):
        from types import SimpleNamespace
        mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1).float()
        x = (self.emb(input_ids) * mask).sum(1) / mask.sum(1)
        h = x + sum(b["down"](torch.relu(b["up"](x))) for b in self.blocks)
        return SimpleNamespace(logits=self.head(h))


def test_per_edit_saliency_moves_with_the_target_to_the_block_that_holds_the_answer():
    model = KnownBlocks()
    layers = [[f"blocks.{k}.up.weight", f"blocks.{k}.down.weight"] for k in range(3)]
    its = items(12, seed=2)
    to = lambda c: [{**it, "labels": c} for it in its]  # noqa: E731
    one, two = (ed.layer_saliency(model, to(c), layers, batch_size=1, desc=None) for c in (1, 2))
    assert one.argmax(1).tolist() == [1] * 12 and two.argmax(1).tolist() == [2] * 12
    shift = ed.saliency_shift(one, two)
    assert shift["argmax_gold"] == [0, 12, 0] and shift["argmax_permuted"] == [0, 0, 12]
    assert shift["share_argmax_moved"] == 1.0 and shift["profile_l1_min"] > 0.01  # every profile changes
    # no shift against itself
    same = ed.saliency_shift(one, one)
    assert same["share_argmax_moved"] == 0.0 and same["profile_l1_mean"] == 0.0
    # mixed targets: each edit's argmax is its own target's block
    mixed = [{**it, "labels": 1 + i % 2} for i, it in enumerate(its)]
    per_edit = ed.layer_saliency(model, mixed, layers, batch_size=1, desc=None)
    assert per_edit.argmax(1).tolist() == [1 + i % 2 for i in range(12)]


def test_permuted_targets_are_wrong_and_come_from_the_other_examples():
    pairs = [{"claim": f"c{i}", "evidence": "e", "label": i % 3} for i in range(30)]
    wrong = ed.permuted_targets(pairs, seed=0)
    assert all(w["label"] != p["label"] and 0 <= w["label"] < 3 for w, p in zip(wrong, pairs))
    qa = [{"context": "c", "question": f"q{i}", "answer": f"a{i}"} for i in range(7)]
    moved = ed.permuted_targets(qa, seed=1)
    assert sorted(m["answer"] for m in moved) == sorted(q["answer"] for q in qa)  # a permutation
    assert all(m["answer"] != q["answer"] for m, q in zip(moved, qa))  # nobody keeps their own
    with pytest.raises(ValueError, match="2 examples"):
        ed.permuted_targets(qa[:1])


def test_choose_layers_for_salem_mend_and_the_controls():
    sal = torch.tensor([0.2, 0.9, 0.1, 0.5, 0.3])
    got = ed.choose_layers(sal, top_k=3, seed=0)
    assert got["salem"] == [1] and got["mend_top"] == [2, 3, 4] and got["least"] == [2] and got["last"] == [4]
    assert len(got["random"]) == 1 and got["random"] != [1]
    assert ed.choose_layers(sal, top_k=1, controls=["least"]).keys() == {"salem", "mend_top", "least"}
    with pytest.raises(ValueError, match="controls"):
        ed.choose_layers(sal, top_k=1, controls=["middle"])


def test_bad_parameters_fail_with_clear_messages(tmp_path):
    with pytest.raises(TypeError, match="n_train"):
        ed.train_classifier(**step_args("salem_base", out=str(tmp_path / "x"), n_train="many"))
    with pytest.raises(ValueError, match="'length_ratio' must be \\[low, high\\]"):
        ed.build_edits(**step_args("salem_edits", base=str(tmp_path / "x"), out=str(tmp_path / "y"),
                                   length_ratio=[1.5, 0.6]))
    with pytest.raises(ValueError, match="rank"):
        ed.MEND(tiny_classifier(), [], rank=0)
    from forgetlab.core.models import tiny_model
    odd = tiny_model("llama")
    odd.config.model_type = "mamba"
    with pytest.raises(ValueError, match="unsupported model type 'mamba'"):
        ed.mlp_layers(odd)
    gpt2 = tiny_model("gpt2")  # its MLP matrices are Conv1D, which MEND does not edit
    assert ed.mlp_layers(gpt2)[1] == ["transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight"]
    with pytest.raises(ValueError, match="nn.Linear"):
        ed.MEND(gpt2, ed.mlp_layers(gpt2)[0])


# ---------------------------------------------------------------- smoke run of the stages and the notebook
@pytest.mark.notebook
def test_salem_smoke(smoke):
    from forgetlab.repro import profile
    params = profile.load_params("smoke", ROOT)
    m = read_metrics(smoke, "salem")
    for setting, n_layers, p in (("classify", 6, params["salem_editors"]), ("qa", 30, params["salem_qa_editors"])):
        controls = p["controls"]
        s = m[setting]
        assert len(s["saliency"]) == n_layers
        assert s["salient_layer"] == max(range(n_layers), key=lambda i: s["saliency"][i])
        assert max(s["saliency"]) == 1.0 and s["saliency_scale_1e6"] > 0  # relative to the most salient layer
        assert set(s["methods"]) == {"salem", "mend_top", "fine_tune", "no_edit", *controls}
        assert s["methods"]["no_edit"]["pass_drawdown"] == 0.0 and s["methods"]["no_edit"]["edited_params"] == 0
        assert s["methods"]["no_edit"]["fail_acc"] == 0.0  # fail samples are the ones the base model gets wrong
        top_k = params["salem_editors"]["top_k"]  # both settings' editors
        assert s["methods"]["salem"]["edited_params"] * top_k == s["methods"]["mend_top"]["edited_params"]
        assert s["methods"]["least"]["edited_params"] == s["methods"]["salem"]["edited_params"]
        # per-edit saliency with gold and permuted targets: every profile moves, the argmax counts add up
        sh = s["per_edit_shift"]
        assert sh["profile_l1_min"] > 0 and sum(sh["argmax_gold"]) == sum(sh["argmax_permuted"]) == sh["n_edits"]
        # early stopping ran: held-out evaluations, at most the step budget, step sizes positive
        for log in s["training"].values():
            assert log["val"] and 1 <= log["best_step"] <= log["n_steps"] <= p["steps"]
            assert all(v["edit_lr_min"] > 0 for v in log["val"])
        # matched strength: both comparisons, read at the smaller unscaled edit success
        for other in ("mend_top", "least"):
            mt = s["matched"][f"salem_vs_{other}"]
            assert mt["level"] == pytest.approx(min(s["methods"]["salem"]["fail_acc"], s["methods"][other]["fail_acc"]),
                                                abs=1e-6)
            assert [c["scale"] for c in mt["curves"]["salem"]] == [0.0, *m["scales"]]
        # clustered intervals: one cluster per edit batch, the point estimates inside
        ci = s["intervals"]
        assert ci["n_clusters"] == -(-s["methods"]["salem"]["n_edits"] // s["edit_batch"])
        for name, r in s["methods"].items():
            lo, hi = ci["methods"][name]["fail_acc_ci"]
            assert lo - 1e-6 <= r["fail_acc"] <= hi + 1e-6
            lo, hi = ci["methods"][name]["pass_drawdown_ci"]
            assert lo - 1e-6 <= r["pass_drawdown"] <= hi + 1e-6
        salem, mend = s["methods"]["salem"], s["methods"]["mend_top"]
        diff = ci["salem_minus_mend_top"]
        assert diff["fail_acc"] == pytest.approx(salem["fail_acc"] - mend["fail_acc"], abs=1e-6)
        assert diff["pass_drawdown"] == pytest.approx(salem["pass_drawdown"] - mend["pass_drawdown"], abs=1e-6)
    assert m["classify"]["methods"]["no_edit"]["pass_acc"] == 1.0
    assert 0 < m["classify"]["majority_rate"] <= 1
    for fig in ("saliency", "per_edit_saliency", "editor_training", "edit_vs_drawdown", "matched_strength"):
        assert (smoke / "figures" / "salem" / f"{fig}.png").stat().st_size > 5000
    executed = json.loads((smoke / "reports" / "05_salem_editing.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["seed"] == params["salem_base"]["seed"]


def test_notebook_05_tables_by_hand():
    from forgetlab.papers.salem import analysis as salem
    methods = {"salem": {"pass_drawdown": 0.2, "heldout_drawdown": 0.05}, "no_edit": {"pass_drawdown": 0.0,
                                                                                    "heldout_drawdown": 0.0}}
    # a random flip of a share 0.2 at held-out accuracy 0.6: loses 0.2 * 0.6, gains 0.2 * 0.4 / 2
    assert salem.random_flips(methods, 0.6) == {"salem": {"pass drawdown = flip share c": 0.2,
                                                          "held-out drawdown if random flips": 0.08,
                                                          "held-out drawdown observed": 0.05}}
    ci = {"n_clusters": 3, "salem_minus_least": {"fail_acc": 0.125, "fail_acc_ci": [-0.05, 0.3],
                                                 "pass_drawdown": -0.01, "pass_drawdown_ci": [-0.02, 0.0]}}
    table = salem.differences(ci)
    assert table.loc["least", "edit success (pp)"] == "+12.5 [-5.0, +30.0]"
    assert table.loc["least", "pass drawdown (pp)"] == "-1.0 [-2.0, +0.0]"
