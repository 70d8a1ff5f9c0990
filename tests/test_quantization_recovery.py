"""Quantization recovery (notebook 04): RTN and bitsandbytes codes, unlearning losses against hand computations,
SURE's mask, MUSE's metrics, the news split, and the smoke-profile notebook run."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, as_written, read_metrics

from forgetlab.core import metrics
from forgetlab.core.models import tiny_model
from forgetlab.core.train import TrainConfig, stack_collate, train
from forgetlab.methods import muse, quantization as quant, unlearning
from forgetlab.papers.quantization_recovery import experiment


# ================================================================ RTN
@pytest.mark.parametrize("bits", [4, 8])
def test_rtn_is_exact_on_grid_values(bits):
    qmax = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-qmax, qmax + 1, (6, 64), generator=g).float()
    codes[:, 0] = qmax  # every row reaches the top code, so max|w| / qmax is the row's step
    delta = 2.0 ** -torch.arange(3, 9).float()[:, None]  # powers of two: w = codes * delta exactly
    w = codes * delta
    assert torch.equal(quant.rtn(w, bits, "channel"), w)
    codes[:, 1:] = codes[:, 1:].clamp(-qmax, qmax)
    w_t = codes * 2.0 ** -5
    assert torch.equal(quant.rtn(w_t, bits, "tensor"), w_t)


@pytest.mark.parametrize("gran,group", [("tensor", None), ("channel", None), ("group", 32), ("group", 48)])
@pytest.mark.parametrize("bits", [4, 8])
def test_rtn_error_is_at_most_half_a_step_and_idempotent(gran, group, bits):
    w = torch.randn(24, 96, generator=torch.Generator().manual_seed(1))
    q = quant.rtn(w, bits, gran, group)
    _, delta = quant.rtn_codes(w, bits, gran, group)
    step = delta.expand(*delta.shape[:-1], group or (w.numel() if gran == "tensor" else 96))
    step = step.reshape(w.shape[0] if gran != "tensor" else 1, -1)[:, :w.numel() if gran == "tensor" else 96]
    err = (q - w).abs().reshape(step.shape)
    assert bool((err <= step / 2 * (1 + 1e-6)).all())
    assert err.max() > 0  # random weights are not on the grid
    assert torch.equal(quant.rtn(q, bits, gran, group), q)
    # the largest weight is exactly representable (Delta = max|w| / (2^(N-1) - 1))
    assert q.abs().max() == pytest.approx(w.abs().max().item(), rel=1e-6)
    # 4 bits: at most 15 distinct values per channel
    if gran == "channel" and bits == 4:
        assert max(len(torch.unique(r)) for r in q) <= 15


def test_parse_precision_rejects_unknown_names():
    assert quant.parse_precision("rtn4-g128") == {"kind": "rtn", "bits": 4, "granularity": "group", "group_size": 128}
    assert quant.parse_precision("rtn8")["granularity"] == "channel"
    for bad in ("int4", "rtn", "rtn4-g0", "rtn4-rows"):
        with pytest.raises(ValueError, match="unknown precision"):
            quant.parse_precision(bad)


# ================================================================ bitsandbytes
@pytest.mark.parametrize("precision", ["int8", "fp4", "nf4"])
def test_in_memory_bnb_codes_equal_bitsandbytes(precision):
    # rows a multiple of the block size (64), as in every model here: bitsandbytes' CPU dequantization kernel
    # assigns blocks per row otherwise, unlike its own quantization and its CUDA kernels
    w = torch.randn(40, 128, generator=torch.Generator().manual_seed(2)) * 0.05
    w[3, 5] = 0.9  # an outlier
    assert torch.equal(quant.bnb_dequantized(w, precision), quant.bnb_reference(w, precision))


def test_real_bitsandbytes_load_holds_the_in_memory_weights(tmp_path, data_dir):
    model = tiny_model("llama", hidden=64, ff=128)
    model.save_pretrained(tmp_path / "m")
    from transformers import AutoTokenizer  # a tokenizer is needed by load_causal_lm: borrow SmolLM2's
    AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m").save_pretrained(tmp_path / "m")
    for precision in ("nf4", "fp4"):
        real, _ = quant.load_bnb(tmp_path / "m", precision)
        got = quant.bnb_dequantized_weights(real)
        lins = quant.quantizable_linears(model)
        assert set(got) == set(lins)  # every Linear but the output head
        for name, w in got.items():
            assert torch.equal(w, quant.bnb_dequantized(lins[name].weight.data, precision)), name
        # notebook 04's check: the same comparison, and it sees a model that is not the checkpoint
        assert quant.bnb_check(tmp_path / "m", model, precision) == {"layers": len(lins), "layers_expected": len(lins),
                                                                     "max_abs_diff": 0.0}
    other = tiny_model("llama", hidden=64, ff=128, seed=1)
    assert quant.bnb_check(tmp_path / "m", other, "nf4")["max_abs_diff"] > 0


def test_sure_comparison_pairs_each_sure_run_with_its_baseline_at_the_selected_epoch():
    import pandas as pd
    from forgetlab.papers.quantization_recovery import analysis as qr
    base, sure = experiment.run_name("GA", 1e-4), experiment.run_name("GA", 1e-4, sure=True)
    rows = [{"name": n, "epoch": e, "precision": p, "selected": e == 2, "verbmem": v, "share": 0.5, "utility": 0.9,
             "code_change": c}
            for n, off in ((base, 0.0), (sure, 0.1)) for e in (1, 2) for p, c in (("full", 0.0), ("nf4", 0.2 + off),
                                                                                  ("int8", 0.9))
            for v in [e / 10 + off]]
    out = qr.sure_comparison([{"name": sure, "method": "GA", "lr": 1e-4}], pd.DataFrame(rows))
    assert [(r["variant"], r["precision"]) for r in out] == [("baseline", "full"), ("baseline", "nf4"),
                                                              ("SURE", "full"), ("SURE", "nf4")]
    assert [r["verbmem"] for r in out] == pytest.approx([0.2, 0.2, 0.3, 0.3])  # epoch 2, the selected one
    assert [r["code_change_nf4"] for r in out] == pytest.approx([0.2, 0.2, 0.3, 0.3])


def test_recovery_regime_decides_each_verdict_by_its_stated_rule():
    """The paper's regime on per-epoch rows, by hand: a constrained (GDR/KLR), non-SURE epoch that kept <= full_max
    of the gap at full precision and >= quant_min at 4 bits "holds"; a forgotten epoch whose 4-bit interval lies
    above its full share "partly"; forgotten epochs that stay forgotten "does not hold"; none forgotten "not
    tested". Unconstrained (GA, NPO) and SURE runs, the target_emb control and undefined shares never count."""
    from forgetlab.papers.quantization_recovery.recovery import CONSTRAINED, recovery_regime

    def rows(name, method, full, quant, ci, sure=False, epoch=1):
        base = {"name": name, "method": method, "sure": sure, "epoch": epoch}
        return [{**base, "precision": "full", "share": full, "share_ci": (full, full)},
                {**base, "precision": "nf4", "share": quant, "share_ci": ci},
                {**base, "precision": "nf4+target_emb", "share": 0.99, "share_ci": (0.98, 1.0)}]

    assert CONSTRAINED == ("GA_GDR", "GA_KLR", "NPO_GDR", "NPO_KLR")
    rule = {"full_max": 0.3, "quant_min": 0.7}
    decoys = (rows("ga", "GA", 0.1, 0.9, (0.8, 1.0)) + rows("sure", "GA_KLR", 0.1, 0.9, (0.8, 1.0), sure=True)
              + rows("nan", "NPO_GDR", math.nan, 0.9, (0.8, 1.0)))
    held = recovery_regime(decoys + rows("klr", "GA_KLR", 0.2, 0.8, (0.7, 0.9)), **rule)
    assert held["verdict"] == "holds" and held["hits"] == [("klr", 1, "nf4", 0.2, 0.8)] and held["forgot"] == 1
    partly = recovery_regime(decoys + rows("klr", "GA_KLR", 0.2, 0.5, (0.3, 0.7)), **rule)
    assert partly["verdict"] == "partly" and partly["closest"]["share"] == 0.5
    kept_forgotten = recovery_regime(decoys + rows("klr", "GA_KLR", 0.2, 0.25, (0.1, 0.4)), **rule)
    assert kept_forgotten["verdict"] == "does not hold" and kept_forgotten["hits"] == []
    untested = recovery_regime(decoys + rows("klr", "GA_KLR", 0.5, 0.6, (0.5, 0.7))
                               + rows("gdr", "GA_GDR", 0.4, 0.45, (0.4, 0.5)), **rule)
    assert untested["verdict"] == "not tested" and untested["forgot"] == 0
    assert untested["closest"]["name"] == "gdr" and untested["closest"]["full_share"] == 0.4  # nearest at full
    assert recovery_regime(decoys, **rule)["verdict"] == "not tested"  # the decoys alone never count


def test_quantized_context_skips_the_head_and_restores_exactly():
    model = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with quant.quantized(model, "rtn4"):
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"{n}.weight" for n in quant.quantizable_linears(model)}
    assert "lm_head.weight" not in changed and "model.embed_tokens.weight" not in changed
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_code_change_share_counts_updates_that_cross_a_bucket():
    a, b = tiny_model("llama"), tiny_model("llama")
    assert quant.code_change_share(a, b, "rtn4") == 0.0
    with torch.no_grad():
        for lin in quant.quantizable_linears(b).values():
            lin.weight.add_(1e-7)  # far below a 4-bit step
    assert quant.code_change_share(a, b, "rtn4") < 0.01 and quant.weight_change_share(a, b) > 0.9
    with torch.no_grad():
        for lin in quant.quantizable_linears(b).values():
            lin.weight.add_(lin.weight.abs().max())  # a whole range
    assert quant.code_change_share(a, b, "rtn4") > 0.5


def test_rtn_of_smollm2_takes_under_two_seconds(smollm):
    model, _ = smollm
    seconds = quant.time_rtn(model, "rtn4", repeats=3)
    print(f"RTN 4-bit of SmolLM2-135M: {seconds:.2f} s")
    assert seconds < 2.0


# ================================================================ losses
def _batch(seed=0, b=2, t=7, vocab=97):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, t), generator=g)
    rids = torch.randint(3, vocab, (b, t), generator=g)
    att = torch.ones(b, t, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": att, "retain_input_ids": rids, "retain_attention_mask": att,
            "ref_logp": torch.tensor([-30.0, -25.0])}


def _hand_logprobs(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    lp = torch.log_softmax(logits[:, :-1], -1)
    return lp, lp.gather(-1, ids[:, 1:, None])[..., 0]


def test_ga_and_gdr_losses_match_a_hand_computation():
    model, batch = tiny_model("llama"), _batch()
    _, tok_f = _hand_logprobs(model, batch["input_ids"])
    _, tok_r = _hand_logprobs(model, batch["retain_input_ids"])
    ga = tok_f.mean()  # -CE = mean token log-probability
    with torch.no_grad():
        assert unlearning.make_loss("GA")(model, batch).item() == pytest.approx(ga.item(), rel=1e-5)
        assert unlearning.make_loss("GA_GDR")(model, batch).item() == pytest.approx((ga - tok_r.mean()).item(),
                                                                                    rel=1e-5)
        assert unlearning.make_loss("GA_GDR", retain_weight=0.25)(model, batch).item() == pytest.approx(
            (ga - 0.25 * tok_r.mean()).item(), rel=1e-5)


def test_npo_uses_sequence_log_likelihoods():
    model, batch = tiny_model("llama"), _batch()
    _, tok_f = _hand_logprobs(model, batch["input_ids"])
    beta = 0.1
    seq = tok_f.sum(1)
    ratio = seq - batch["ref_logp"]
    hand = -(2 / beta) * torch.log(1 / (1 + torch.exp(beta * ratio))).mean()
    _, tok_r = _hand_logprobs(model, batch["retain_input_ids"])
    with torch.no_grad():
        assert unlearning.make_loss("NPO", beta=beta)(model, batch).item() == pytest.approx(hand.item(), rel=1e-5)
        assert unlearning.make_loss("NPO_GDR", beta=beta)(model, batch).item() == pytest.approx(
            (hand - tok_r.mean()).item(), rel=1e-5)
        # at the reference itself NPO is (2 / beta) log 2
        batch0 = dict(batch, ref_logp=seq)
        assert unlearning.make_loss("NPO", beta=beta)(model, batch0).item() == pytest.approx(2 / beta * math.log(2),
                                                                                             rel=1e-5)


def test_klr_is_the_per_token_kl_from_the_reference():
    model, ref, batch = tiny_model("llama", seed=0), tiny_model("llama", seed=1), _batch()
    lp, tok_f = _hand_logprobs(model, batch["retain_input_ids"])
    lr_, _ = _hand_logprobs(ref, batch["retain_input_ids"])
    kl = (lr_.exp() * (lr_ - lp)).sum(-1).mean()
    _, tok_forget = _hand_logprobs(model, batch["input_ids"])
    with torch.no_grad():
        got = unlearning.make_loss("GA_KLR", ref_model=ref)(model, batch).item()
        assert got == pytest.approx((tok_forget.mean() + kl).item(), rel=1e-5)
        assert kl > 0
        # KL to itself is zero
        same = unlearning.make_loss("GA_KLR", ref_model=model)(model, batch).item()
        assert same == pytest.approx(tok_forget.mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="needs ref_model"):
        unlearning.make_loss("NPO_KLR")
    with pytest.raises(ValueError, match="unknown method"):
        unlearning.make_loss("RMU")


def test_official_kl_variant_matches_a_hand_computation_of_its_value_and_gradient():
    """The official code's KL: kl_div(z_theta, z_ref, batchmean, log_target=True) on raw logits = mean over tokens
    of sum_v exp(z_ref) (z_ref - z_theta); 0 at theta = ref with gradient -exp(z_ref) / n_tokens per logit."""
    model, ref, batch = tiny_model("llama", seed=0), tiny_model("llama", seed=1), _batch()
    ids, att = batch["retain_input_ids"], batch["retain_attention_mask"]
    with torch.no_grad():
        z, zr = model(input_ids=ids).logits.double(), ref(input_ids=ids).logits.double()
    n_tok = ids.numel()
    hand = (zr.exp() * (zr - z)).sum(-1).sum() / n_tok
    got = unlearning.kl_official(model, ref, ids, att)
    assert got.item() == pytest.approx(hand.item(), rel=1e-4)
    # at theta = ref: value 0, but the gradient w.r.t. the logits is -exp(z_ref) / n_tokens, not 0
    logits = z.clone().float().requires_grad_(True)
    F.kl_div(logits.reshape(-1, logits.shape[-1]), z.float().reshape(-1, z.shape[-1]), reduction="batchmean",
             log_target=True).backward()
    assert torch.allclose(logits.grad.double(), -z.exp() / n_tok, rtol=1e-4)
    assert unlearning.kl_official(model, model, ids, att).item() == pytest.approx(0.0, abs=1e-4)
    # its parameter gradient at theta = ref dwarfs GA's; the correct KL's gradient there is 0
    grads = {}
    for name, fn in (("official", lambda m: unlearning.kl_official(m, ref, ids, att)),
                     ("correct", lambda m: unlearning.kl_to_reference(m, ref, ids, att)),
                     ("ga", lambda m: -unlearning.mean_ce(m, batch["input_ids"], batch["attention_mask"]))):
        m = tiny_model("llama", seed=1)  # = ref
        fn(m).backward()
        grads[name] = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None]).norm().item()
    assert grads["correct"] < 1e-5 * grads["ga"] and grads["official"] > 10 * grads["ga"]
    # the variant is chosen by name, the correct one is the default
    with torch.no_grad():
        full = unlearning.make_loss("GA_KLR", ref_model=ref, klr_variant="official")(model, batch).item()
        ga = unlearning.make_loss("GA")(model, batch).item()
        assert full == pytest.approx(ga + got.item(), rel=1e-4)
    with pytest.raises(ValueError, match="klr_variant"):
        unlearning.make_loss("GA_KLR", ref_model=ref, klr_variant="tofu")


@pytest.mark.parametrize("history, expected", [
    # the case that broke MUSE's rule: utility is never lost, forgetting comes at epoch 3
    ([(0.9, 1.0), (0.6, 0.98), (0.2, 0.95), (0.1, 0.9)], {"epoch": 3, "reason": "forgot"}),
    # utility falls below 0.9 of the target's before the model forgets
    ([(0.9, 1.0), (0.7, 0.85), (0.1, 0.5)], {"epoch": 2, "reason": "utility"}),
    ([(0.9, 1.0), (0.2, 0.5)], {"epoch": 2, "reason": "both"}),
    ([(0.9, 1.0), (0.8, 1.0)], {"epoch": 2, "reason": "last"}),  # never forgot: the last epoch
    ([(0.24, 1.0)], {"epoch": 1, "reason": "forgot"}),  # within the tolerance of the retrain level
])
def test_select_epoch_stops_at_forgetting_or_lost_utility(history, expected):
    hist = [{"epoch": i + 1, "verbmem_forget": v, "utility": u} for i, (v, u) in enumerate(history)]
    assert experiment.select_epoch(hist, retrain_verbmem=0.2, target_utility=1.0, tolerance=0.05,
                                   utility_share=0.9) == expected


def test_select_epoch_does_not_fire_at_epoch_one_when_the_target_is_below_the_retrain_utility():
    """MUSE's rule compared retain KnowMem with the retrain model's; our target's was already below it (0.150 vs
    0.192), so every run stopped after epoch 1. The rule now compares with the TARGET's utility."""
    hist = [{"epoch": e, "verbmem_forget": v, "utility": 0.15} for e, v in ((1, 0.9), (2, 0.5), (3, 0.21))]
    assert experiment.select_epoch(hist, retrain_verbmem=0.2, target_utility=0.15, tolerance=0.05,
                                   utility_share=0.9) == {"epoch": 3, "reason": "forgot"}
    with pytest.raises(ValueError, match="empty"):
        experiment.select_epoch([], retrain_verbmem=0.2, target_utility=1.0, tolerance=0.0, utility_share=0.9)


def test_train_keeps_one_optimizer_across_epochs_and_stops_on_request():
    """on_epoch runs after each epoch and can stop training; AdamW's moments carry over. One batch per epoch, so the
    order of the items plays no part: only a restart of the optimizer per epoch (the old way) tells b from c."""
    items = [{"input_ids": torch.arange(3, 10) + i, "attention_mask": torch.ones(7, dtype=torch.long),
              "labels": torch.arange(3, 10) + i} for i in range(4)]
    seen = []
    a = tiny_model("llama")
    losses = train(a, items, TrainConfig(lr=1e-2, epochs=3, batch_size=4, grad_clip=None),
                   on_epoch=lambda e: seen.append(e) or e == 2, desc=None)
    assert seen == [1, 2] and len(losses) == 2  # stopped after epoch 2
    b = tiny_model("llama")
    for _ in range(2):  # a fresh optimizer per epoch
        train(b, items, TrainConfig(lr=1e-2, epochs=1, batch_size=4, grad_clip=None), desc=None)
    c = tiny_model("llama")
    train(c, items, TrainConfig(lr=1e-2, epochs=2, batch_size=4, grad_clip=None), desc=None)
    wa, wb, wc = (m.model.layers[0].mlp.down_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wc) and not torch.allclose(wa, wb, atol=1e-4)


def test_bf16_unlearning_runs_in_bf16_and_small_steps_underflow():
    """The bf16 arm: weights, gradients and AdamW states in bf16; a 1e-5 step on weights of size ~1 is below half
    the bf16 spacing (2^-8), so those weights do not move at all, while the fp32 model's do."""
    items = [{k: v[i] for k, v in _batch(seed=s).items()} for s in range(2) for i in range(2)]
    loss = unlearning.make_loss("GA")
    moved = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = tiny_model("llama").to(dtype)
        w = m.model.layers[0].mlp.down_proj.weight
        with torch.no_grad():
            w.fill_(1.0)
        states = []
        train(m, items, TrainConfig(lr=1e-5, epochs=1, batch_size=2, grad_clip=None), loss_fn=loss, desc=None,
              grad_hook=lambda mm: states.append(mm.model.layers[0].mlp.down_proj.weight.grad.dtype))
        assert w.dtype == dtype and set(states) == {dtype}
        moved[dtype] = float((w != 1.0).float().mean())
    assert moved[torch.float32] > 0.9 and moved[torch.bfloat16] == 0.0


def test_target_embedding_control_restores_only_the_embedding_matrix():
    model, ref = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    emb, lin = model.get_input_embeddings().weight, model.model.layers[0].mlp.down_proj.weight
    before_emb, before_lin = emb.detach().clone(), lin.detach().clone()
    with experiment.evaluated_as(model, "nf4" + experiment.EMB_SUFFIX, ref):
        assert torch.equal(model.get_input_embeddings().weight, ref.get_input_embeddings().weight)
        assert torch.equal(lin, quant.bnb_dequantized(before_lin, "nf4"))  # the linears are still quantized
    assert torch.equal(emb, before_emb) and torch.equal(lin, before_lin)  # all restored
    with pytest.raises(ValueError, match="needs ref_model"):
        with experiment.evaluated_as(model, "full+target_emb"):
            pass
    with pytest.raises(ValueError, match="unknown precision"):
        experiment.check_precisions("epoch_precisions", ["full", "nf3"])


def test_recovery_share_is_nan_when_the_gap_is_inside_its_interval():
    """Per passage scores of the target, the retrain model and an unlearned model: a share is reported only when
    the target-retrain gap's bootstrap interval excludes 0 (a KnowMem gap of 0.05 on 16 questions does not)."""
    rng = np.random.default_rng(0)
    n = 16
    target, retrain = rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.3, n)
    unlearned = (target + retrain) / 2
    ok = metrics.bootstrap_recovery("share_full_gap", unlearned, retrain, target, target, np.ones(n), n_boot=500)
    assert ok["value"] == pytest.approx(0.5) and ok["ci"][0] <= 0.5 <= ok["ci"][1] and ok["gap_ci"][0] > 0
    noisy_t = rng.choice([0.0, 1.0], n)  # KnowMem-like 0/1 scores with a tiny mean gap
    noisy_r = np.roll(noisy_t, 1)
    bad = metrics.bootstrap_recovery("share_full_gap", noisy_t, noisy_r, noisy_t, noisy_t, np.ones(n), n_boot=500)
    assert bad["gap_ci"][0] <= 0 and math.isnan(bad["value"]) and all(map(math.isnan, bad["ci"]))


# ================================================================ SURE
def test_sure_mask_freezes_non_salient_rows_through_a_training_step():
    model = tiny_model("llama")
    items = [{k: v[i] for k, v in _batch(seed=s).items()} for s in range(2) for i in range(2)]
    loss = unlearning.make_loss("GA")
    sal = unlearning.row_saliency(model, loss, [stack_collate(items)])
    mask = unlearning.saliency_mask(sal, 90)
    n_rows = sum(len(m) for m in mask.values())
    assert 0 < sum(int(m.sum()) for m in mask.values()) <= math.ceil(0.1 * n_rows) + 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, items, TrainConfig(lr=1e-2, epochs=1, batch_size=4, grad_clip=None), loss_fn=loss,
          grad_hook=unlearning.mask_hook(mask), desc=None)
    after = dict(model.named_parameters())
    moved_rows = 0
    for name, p in after.items():
        if name in mask:
            same = (p == before[name]).all(dim=1)
            assert bool(same[~mask[name]].all()), name  # non-salient rows unchanged
            moved_rows += int((~same[mask[name]]).sum())
        else:
            assert torch.equal(p, before[name]), name  # embeddings, norms, head frozen
    assert moved_rows > 0  # and the salient rows did move
    # without the hook everything moves
    model2 = tiny_model("llama")
    train(model2, items, TrainConfig(lr=1e-2, epochs=1, batch_size=4, grad_clip=None), loss_fn=loss, desc=None)
    assert not torch.equal(model2.model.layers[0].mlp.down_proj.weight, before["model.layers.0.mlp.down_proj.weight"])


def test_sure_hook_masks_with_the_start_mask_or_recomputes_it_keeping_the_steps_gradients():
    """recompute_every=0: the second step's gradients are masked with the mask of the start; recompute_every=1:
    with the mask of the weights before that step, applied to the step's own gradients (not the saliency pass's)."""
    items = [{k: v[i] for k, v in _batch(seed=s).items()} for s in range(2) for i in range(2)]
    loss, batch = unlearning.make_loss("GA"), stack_collate(items)

    def step(model, hook):
        """One backward pass, the hook, one plain SGD step; the gradients before and after the hook."""
        model.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        raw = {n: p.grad.clone() for n, p in model.named_parameters()}
        hook(model)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
        return raw, {n: p.grad for n, p in model.named_parameters()}

    for every in (0, 1):
        model = tiny_model("llama")
        start = unlearning.saliency_mask(unlearning.row_saliency(model, loss, [batch]), 90)
        hook = unlearning.sure_hook(model, loss, [batch], percentile=90, recompute_every=every)
        step(model, hook)
        now = unlearning.saliency_mask(unlearning.row_saliency(model, loss, [batch]), 90) if every else start
        raw, masked = step(model, hook)
        for name, g in masked.items():
            expected = raw[name] * now[name][:, None] if name in now else torch.zeros_like(g)
            assert torch.equal(g, expected), (every, name)
        if every:
            assert any(not torch.equal(start[n], now[n]) for n in start)  # the recomputed mask differs


# ================================================================ MUSE metrics
def test_privleak_sign_matches_muse():
    rng = np.random.default_rng(0)
    holdout = rng.normal(-4, 0.5, 50)  # mean of the lowest token log-probs of unseen passages
    memorized = rng.normal(-1, 0.5, 50)  # a model that memorized the forget set finds it more likely
    unseen = rng.normal(-4, 0.5, 50)
    auc_target, auc_retrain = muse.mink_auc(memorized, holdout), muse.mink_auc(unseen, holdout)
    assert auc_target < 0.1 and 0.3 < auc_retrain < 0.7
    assert muse.privleak(auc_target, auc_retrain) < -80  # under-unlearned: strongly negative
    over = rng.normal(-7, 0.5, 50)  # over-unlearned: the forget set is now LESS likely than unseen text
    assert muse.privleak(muse.mink_auc(over, holdout), auc_retrain) > 50
    lo, hi = muse.privleak_ci(memorized, holdout, unseen, holdout, n_boot=200)
    assert lo <= muse.privleak(auc_target, auc_retrain) <= hi and hi < 0
    # the bootstrap's vectorized AUC is sklearn's (ties included)
    from scipy.stats import mannwhitneyu
    a, b = np.round(memorized, 0), np.round(holdout, 0)
    assert mannwhitneyu(b, a).statistic / 2500 == pytest.approx(muse.mink_auc(a, b))


def test_min_k_and_rouge_and_recovery_share():
    assert muse.min_k_score([-1.0, -5.0, -2.0, -0.5, -3.0], 0.4) == pytest.approx(-4.0)  # lowest 2 of 5
    assert muse.rouge_l_f1("the cat sat", "the cat sat") == 1.0
    assert muse.rouge_l_f1("a dog", "the cat sat") == 0.0
    assert muse.rouge_l_f1("the cat", "the cat sat") == pytest.approx(2 * (1 * 2 / 3) / (1 + 2 / 3))
    # the shared share (forgetlab.core.metrics): (K_unlearned - K_retrain) / (K_target - K_retrain)
    assert metrics.recovery_share(0.3, 0.1, 0.9) == pytest.approx(0.25)
    assert math.isnan(metrics.recovery_share(0.3, 0.5, 0.5))


def test_news_split_is_deterministic_and_disjoint(data_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    a = muse.news_split(tok, n_forget=5, n_retain=5, n_holdout=5, seq_len=48, data_dir=data_dir, seed=3)
    b = muse.news_split(tok, n_forget=5, n_retain=5, n_holdout=5, seq_len=48, data_dir=data_dir, seed=3)
    assert a == b
    titles = [p["title"] for k in ("forget", "retain", "holdout") for p in a[k]]
    assert len(set(titles)) == 15
    for p in a["forget"] + a["retain"]:
        assert len(p["ids"]) == 48 and p["qas"]
        assert all(any(ans in p["text"] for ans in q["answers"]) for q in p["qas"])
    with pytest.raises(ValueError, match="n_forget"):
        muse.news_split(tok, n_forget=0, n_retain=5, n_holdout=5, data_dir=data_dir)


def test_muse_news_loader_reads_the_hub_format(tmp_path, data_dir):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    text = lambda i: f"Passage {i}: the mayor of Springfield said on Tuesday that the bridge will reopen."  # noqa
    DatasetDict({s: Dataset.from_dict({"text": [text(i) for i in range(3)]})
                 for s in ("forget", "retain1", "retain2", "holdout")}).save_to_disk(tmp_path / "raw")
    qa = {"question": ["Who spoke?", "When?"], "answer": ["the mayor", "Tuesday"]}
    DatasetDict({s: Dataset.from_dict(qa) for s in ("forget_qa", "retain_qa", "retain_qa_icl")}).save_to_disk(
        tmp_path / "knowmem")
    split = muse.load_muse_news(str(tmp_path), tok, seq_len=8, n_shots=1)
    assert [len(split[k]) for k in ("forget", "retain", "holdout")] == [3, 3, 3]
    assert len(split["forget"][0]["ids"]) == 8
    assert sum(len(p["qas"]) for p in split["forget"]) == 2
    assert split["shots"] == [{"question": "Who spoke?", "answer": "the mayor"}]


def test_unlearning_trains_on_passages_of_unequal_length():
    """MUSE-News passages are cut at seq_len, not padded, so one batch holds passages of several lengths: the
    collate pads them (stacking failed before), and the padded batch's losses equal the unpadded passages' own."""
    model, ref = tiny_model("llama"), tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    passages = [{"ids": torch.randint(3, 97, (n,), generator=g).tolist()} for n in (12, 7, 9)]
    items = unlearning.unlearning_items(ref, passages, passages[::-1])
    batch = stack_collate(items)
    assert batch["input_ids"].shape == (3, 12) and batch["attention_mask"].sum().item() == 28
    assert batch["retain_input_ids"].shape == (3, 12)
    with torch.no_grad():
        pooled = unlearning.mean_ce(model, batch["input_ids"], batch["attention_mask"])
        alone = [unlearning.mean_ce(model, it["input_ids"][None], it["attention_mask"][None]) for it in items]
        n = [len(p["ids"]) - 1 for p in passages]
        assert pooled.item() == pytest.approx(sum(a.item() * k for a, k in zip(alone, n)) / sum(n), rel=1e-5)
        seq = muse.sequence_logprob(model, batch["input_ids"], batch["attention_mask"])
        assert seq.tolist() == pytest.approx([muse.sequence_logprob(model, it["input_ids"][None],
                                                                    it["attention_mask"][None]).item()
                                              for it in items], rel=1e-5)
    lm = stack_collate(muse.lm_items(passages))
    assert (lm["labels"] == -100).sum().item() == 2 * 12 - 7 - 9  # padding is never a target
    for method in ("NPO_KLR", "GA_GDR"):
        losses = train(model, items, TrainConfig(lr=1e-3, epochs=1, batch_size=3),
                       loss_fn=unlearning.make_loss(method, ref_model=ref), desc=None)
        assert len(losses) == 1 and math.isfinite(losses[0])


def test_training_past_the_selection_comes_back_to_the_selected_epoch(data_dir):
    """extra_epochs: the run goes on past the selected epoch (the curve beyond it), then the model is put back to
    the selected weights, kept on the host meanwhile. Selected at epoch 1 and trained through epoch 2, it ends equal
    to a run of 1 epoch, and unlike a run of 2."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    tok.pad_token = tok.eos_token
    g = torch.Generator().manual_seed(1)
    passages = [{"ids": torch.randint(3, 200, (12,), generator=g).tolist()} for _ in range(4)]
    split = {"forget": passages[:2], "retain": passages[2:]}
    ref = tiny_model("llama", vocab_size=len(tok))

    def run(epochs, extra_epochs, tolerance):
        model = tiny_model("llama", vocab_size=len(tok))
        info = experiment.run_unlearning(
            model, tok, ref, split, method="GA_GDR", lr=1e-2, epochs=epochs, batch_size=2, beta=0.1,
            retain_weight=1.0, weight_decay=0.0, warmup_steps=0, grad_clip=1.0, sure_percentile=None, recompute_every=0,
            klr_variant="correct",
            levels={"retrain_verbmem": 0.0, "target_utility": 1.0}, tolerance=tolerance, utility_share=0.0,
            extra_epochs=extra_epochs, epoch_precisions=["full"], code_precisions=[], prompt_len=4,
            max_new_tokens=3, seed=0)
        return info, torch.cat([p.detach().flatten() for p in model.parameters()])
    info, back = run(3, 1, tolerance=1.0)  # every epoch "forgot": selected at 1, trained through 2
    assert info["selected_epoch"] == 1 and len(info["history"]) == 2
    assert torch.equal(back, run(1, 0, tolerance=1.0)[1])
    assert not torch.equal(back, run(2, 0, tolerance=-1.0)[1])  # never selected: ends at epoch 2


def test_generation_and_logprobs_on_a_tiny_model(data_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(data_dir / "models" / "smollm2-135m")
    tok.pad_token = tok.eos_token
    model = tiny_model("llama", vocab_size=len(tok))
    split = {"forget": [{"ids": list(range(10, 26)), "qas": [{"question": "Q?", "answers": ["a"]}]}],
             "retain": [{"ids": list(range(30, 46)), "qas": [{"question": "R?", "answers": ["b"]}]}],
             "holdout": [{"ids": list(range(50, 66)), "qas": []}], "shots": [{"question": "X?", "answer": "y"}]}
    raw = muse.raw_outputs(model, tok, split, prompt_len=8, max_new_tokens=4, answer_tokens=3)
    assert len(raw["verbmem"]) == 1 and len(raw["knowmem_forget"]) == 1
    assert len(raw["logprobs_forget"][0]) == 15 and all(lp <= 0 for lp in raw["logprobs_forget"][0])
    s = muse.score(raw, split, tok, prompt_len=8, max_new_tokens=4)
    assert set(s) == {"verbmem", "knowmem_forget", "knowmem_retain", "minK_forget", "minK_holdout"}


# ================================================================ the notebook, smoke profile
@pytest.mark.notebook
def test_quantization_recovery_smoke(smoke):
    from forgetlab.repro import profile
    m = read_metrics(smoke, "quantization_recovery")
    p = profile.load_params("smoke", ROOT)
    assert m["split"] == {"forget": 4, "retain": 4, "holdout": 4, "shots": 1}
    assert m["precisions"] == p["quantization_recovery_eval"]["precisions"]
    t = m["table"]
    p_un, p_nb = p["quantization_recovery_unlearn"], p["quantization_recovery"]
    p_sched = p["quantization_recovery_schedule"]
    runs = [experiment.run_name(meth, lr) for meth in p_un["methods"] for lr in p_un["lrs"]]
    assert set(t) == {"target", "retrain", "base", *runs}
    assert set(t["base"]) == set(p_nb["base_precisions"])
    assert set(t["target"]) == set(p["quantization_recovery_eval"]["precisions"]) and {"full", "nf4"} <= set(t["target"])
    for row in t.values():
        for s in row.values():
            assert 0 <= s["verbmem"] <= 1 and 0 <= s["knowmem_forget"] <= 1 and 0 <= s["auc"] <= 1
            lo, hi = s["privleak_ci"]
            assert lo <= hi
    assert t["retrain"]["full"]["privleak"] == 0.0  # the reference of PrivLeak
    # the target fine-tuned on the forget passages reproduces them better than the base model
    assert t["target"]["full"]["verbmem"] > t["base"]["full"]["verbmem"]
    # real bitsandbytes nf4 weights of the target equal the in-memory ones
    assert m["bnb_check"]["max_abs_diff"] == 0.0 and m["bnb_check"]["layers"] == 210
    # recovery shares are consistent with the table
    for run in runs:
        k = m["recovery"]["verbmem"][run]["full"]
        assert k == as_written(metrics.recovery_share, t[run]["full"]["verbmem"], t["retrain"]["full"]["verbmem"],
                               t["target"]["full"]["verbmem"])
    # every epoch of every run is recorded at every epoch precision, with the selection marked once per run
    eprecs = p_sched["epoch_precisions"]
    assert m["epoch_precisions"] == eprecs
    by_run = {}
    for r in m["epochs"]:
        by_run.setdefault(r["name"], []).append(r)
    sure_runs = [experiment.run_name(meth, lr, True) for meth in p["quantization_recovery_sure"]["methods"]
                 for lr in p["quantization_recovery_sure"]["lrs"]]
    arm_lrs = p["quantization_recovery_arms"]["lrs"]
    arm_runs = [experiment.run_name(p_un["keep"], lr, dtype="bfloat16") for lr in arm_lrs] + [
        experiment.run_name(p_un["keep"], lr, klr_variant="official") for lr in arm_lrs]
    assert set(by_run) == {*runs, *sure_runs, *arm_runs}
    for name, rows in by_run.items():
        epochs = sorted({r["epoch"] for r in rows})
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) <= p_sched["epochs"]
        assert {r["precision"] for r in rows} == set(eprecs)
        assert len({r["epoch"] for r in rows if r["selected"]}) == 1
        for r in rows:
            assert 0 <= r["verbmem"] <= 1
            if math.isnan(r["share"]):
                assert r["gap_ci"][0] <= 0  # a share is NaN only when the gap is not told from noise
    assert m["regime"]["verdict"] in ("holds", "partly", "does not hold", "not tested")
    # SURE moves only the salient 10% of rows; the baseline at the same lr moves more 4-bit codes
    sure_nf4 = {(r["method"], r["variant"]): r["code_change_nf4"] for r in m["sure"] if r["precision"] == "full"}
    for (meth, variant), change in sure_nf4.items():
        if variant == "SURE":
            assert change < sure_nf4[(meth, "baseline")]
    assert {g["granularity"] for g in m["group_size"]} == {"tensor", "channel"} | {
        f"g{g}" for g in p_nb["group_sizes"]}
    for name in ("fig1_table_heatmap", "fig2_recovery", "fig3_group_size", "fig4_sure", "fig5_epoch_curves",
                 "fig6_bf16_embedding", "fig7_official_kl"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "quantization_recovery" / f"{name}.{fmt}").stat().st_size > 5000
    executed = json.loads((smoke / "reports" / "04_quantization_recovery.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["headline"] == p_un["keep"]


@pytest.mark.parametrize("precision", ["nf4", "fp4"])
def test_fourbit_builds_its_tables_on_the_weights_device(precision):
    """Issue 26, a first device check without a GPU: under FakeTensorMode a weight can sit on a fake `cuda` device.
    The 4-bit lookup tables used to stay on the CPU (a device-mismatch error, as on a real GPU); now they follow the
    weight. Later ops this CPU build cannot fake ("not linked with support for cuda devices") end the check there:
    it proves the absence of a mismatch up to that point, not a full CUDA run."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode
    quant.fourbit_table(precision), quant._bucket_lut(precision)  # fill the caches with real tensors first
    with FakeTensorMode(allow_non_fake_inputs=True):  # the cached CPU tables enter as they would on a GPU run
        w = torch.empty(8, 64, device="cuda")
        try:
            deq, idx = quant.fourbit(w, precision)
            assert deq.device.type == "cuda" and idx.device.type == "cuda"
        except FakeTensorDeviceMismatchError:
            raise
        except RuntimeError as e:
            assert "not linked with support for cuda" in str(e), e


def test_notebook_04s_recovery_shares_by_hand():
    """An unlearned model half-way between retrain (0.2) and target (0.6) at full precision, back at the target's
    level under nf4: recovery shares 0.5 and 1; where target and retrain coincide the share is undefined."""
    from forgetlab.papers.quantization_recovery import analysis as qr
    row = lambda v, k: {"verbmem": v, "knowmem_forget": k}  # noqa: E731
    table = {"target": {"full": row(0.6, 0.5), "nf4": row(0.6, 0.5)},
             "retrain": {"full": row(0.2, 0.5), "nf4": row(0.2, 0.5)},
             "GA@1e-05": {"full": row(0.4, 0.5), "nf4": row(0.6, 0.5)}}
    rec = qr.recovery_shares(table, ["GA@1e-05"], ["full", "nf4"])
    assert rec["verbmem"]["GA@1e-05"] == {"full": pytest.approx(0.5), "nf4": pytest.approx(1.0)}
    assert np.isnan(rec["knowmem_forget"]["GA@1e-05"]["full"])
    assert qr.mean_recovery(rec, ["GA@1e-05"], ["full", "nf4"])["verbmem"] == {"full": pytest.approx(0.5),
                                                                               "nf4": pytest.approx(1.0)}
    assert qr.target_retrain_gaps(table, ["full"]) == {"verbmem": {"full": pytest.approx(0.4)},
                                                       "knowmem_forget": {"full": 0.0}}
