"""Selective pruning, rebuttal experiments (notebook 01b): the ViT entry of the architecture tables, each vision
unlearning baseline's core update against a hand computation, the membership-inference attack, the toxicity
helpers and their paper-scale loaders on tiny local data, and the smoke run of the three stages."""
import dataclasses
import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, as_written, read_metrics, stage_env, step_args, step_argv
from torch import nn

from forgetlab.core import neurons
from forgetlab.core.text import split_sentences
from forgetlab.core.train import TrainConfig, train
from forgetlab.data import load_cifar10, load_squad
from forgetlab.methods import pruning
from forgetlab.papers.selective_pruning import toxicity, vision
from forgetlab.repro import pipeline, profile


def tiny_vit(seed=0, layers=2, hidden=32, ff=48, heads=4, num_labels=3, image_size=16, patch_size=8):
    cfg = vision.vit_config(num_labels, image_size=image_size, patch_size=patch_size, hidden=hidden, layers=layers,
                            heads=heads, ff=ff)
    return vision.new_vit(cfg, seed)


# ---------------------------------------------------------------- architecture table
def test_vit_entry_finds_the_ff_and_attention_modules():
    m = tiny_vit(layers=3, hidden=32, ff=48)
    assert neurons.arch_map(m) is neurons.ARCH_MAPS["vit"]
    blocks = list(m.vit.layers)
    assert neurons.blocks(m) == blocks and len(blocks) == 3
    assert all(a is b.mlp.fc2 for a, b in zip(neurons.neuron_modules(m, "ff"), blocks))
    assert all(a is b.attention.o_proj for a, b in zip(neurons.neuron_modules(m, "attn"), blocks))
    assert neurons.n_neurons(m, "ff") == (3, 48) and neurons.n_neurons(m, "attn") == (3, 32)
    assert neurons.n_heads(m) == 4
    assert neurons.mlp_weights(m)[1] == ["vit.layers.1.mlp.fc1.weight", "vit.layers.1.mlp.fc2.weight"]


def test_vit_ff_neurons_are_the_gelu_outputs_and_masks_act_on_them():
    m = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    h = m.vit.layers[0].mlp.fc1.register_forward_hook(lambda mod, a, out: seen.setdefault("fc1", out.detach()))
    with neurons.record_activations(m, "ff") as acts, torch.no_grad():
        m(pixel_values=x)
    h.remove()
    assert torch.allclose(acts[0], F.gelu(seen["fc1"]), atol=1e-6)
    assert acts[0].shape == (2, 5, 48)  # CLS + (16 / 8)^2 patches
    # zero every FF neuron of block 0: its MLP then outputs fc2's bias only
    mask = neurons.full_mask(m, "ff")
    mask[0] = 0
    out = {}
    h = m.vit.layers[0].mlp.register_forward_hook(lambda mod, a, o: out.setdefault("mlp", o.detach()))
    with neurons.apply_masks(m, {"ff": mask}), torch.no_grad():
        m(pixel_values=x)
    h.remove()
    assert torch.allclose(out["mlp"], m.vit.layers[0].mlp.fc2.bias.expand_as(out["mlp"]))


def test_flip_loss_flips_about_half_the_training_images_and_never_in_eval_or_when_off():
    class Seen(nn.Module):
        """Records the pixels it is given; its loss is 0."""
        def forward(self, pixel_values, labels):
            self.x = pixel_values
            return type("Out", (), {"loss": pixel_values.sum() * 0})()

    x = torch.arange(400 * 2, dtype=torch.float).reshape(400, 1, 1, 2)  # each image [a, b]: flipped is [b, a]
    batch, m = {"pixel_values": x, "labels": torch.zeros(400, dtype=torch.long)}, Seen()
    torch.manual_seed(0)
    vision.flip_loss(True)(m, batch)
    flipped = (m.x[..., 0] > m.x[..., 1]).float().mean().item()
    assert 0.4 < flipped < 0.6 and torch.equal(m.x.sort(-1).values, x)  # about half, each mirrored, none lost
    vision.flip_loss(False)(m, batch)
    assert torch.equal(m.x, x)
    m.eval()
    vision.flip_loss(True)(m, batch)
    assert torch.equal(m.x, x)


def test_a_saved_vit_loads_from_its_folder(tmp_path):
    m = tiny_vit(seed=3)
    m.save_pretrained(tmp_path / "vit")
    m2 = vision.load_vit(str(tmp_path / "vit"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(m(pixel_values=x).logits, m2(pixel_values=x).logits)


# ---------------------------------------------------------------- selective pruning of a ViT
def test_prune_vit_masks_the_global_top_neurons_by_forget_over_retain():
    m = tiny_vit()
    g = torch.Generator().manual_seed(0)
    f_pix, r_pix = torch.randn(6, 3, 16, 16, generator=g) * 3, torch.randn(6, 3, 16, 16, generator=g)
    cfg = pruning.PruneConfig(ff_frac=0.25, attn_frac=0.125, scoring="abs")
    f = vision.image_stats(m, f_pix, ["ff", "attn"])
    r = vision.image_stats(m, r_pix, ["ff", "attn"])
    # hand computation of the ff selection: the 24 largest of mean|x|_forget / (mean|x|_retain + eps) over 2 x 48
    ratio = f["ff"].mean_abs / (r["ff"].mean_abs + cfg.eps_ff)
    expect = torch.zeros(96, dtype=torch.bool)
    expect[ratio.flatten().argsort(descending=True)[:24]] = True
    pruner = vision.prune_vit(m, f_pix, r_pix, cfg)
    assert torch.equal(pruner.pruned["ff"].flatten(), expect)
    assert int(pruner.pruned["attn"].sum()) == 8
    with neurons.record_activations(m, "ff") as acts, torch.no_grad():
        m(pixel_values=f_pix)
    for layer in range(2):
        assert acts[layer][..., pruner.pruned["ff"][layer]].abs().max() == 0
    pruner.remove()
    # statistics collected once can be reused for several fractions: same selection
    again = vision.prune_vit(m, None, None, cfg, stats=(f, r))
    for kind in ("ff", "attn"):
        assert torch.equal(again.pruned[kind], pruner.pruned[kind])
    again.remove()


# ---------------------------------------------------------------- baselines: core updates by hand
def test_ssd_dampens_exactly_the_parameters_whose_forget_importance_exceeds_alpha_times_the_full():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]))
    f = {"weight": torch.tensor([[10.0, 1.0, 50.0], [0.0, 31.0, 2.0]])}
    d = {"weight": torch.tensor([[1.0, 1.0, 2.0], [1.0, 3.0, 0.1]])}
    n = vision.ssd_dampen_(lin, f, d, alpha=10.0, lam=1.0)
    # selected: f > 10 d -> (0,2): 50 > 20, (1,1): 31 > 30, (1,2): 2 > 1; (0,0): 10 > 10 is not
    # factor min(lam d / f, 1): 2/50, 3/31, 0.1/2
    expect = torch.tensor([[1.0, -2.0, 3.0 * 2 / 50], [4.0, 5.0 * 3 / 31, -6.0 * 0.1 / 2]])
    assert n == 3
    assert torch.allclose(lin.weight, expect)


def test_ssd_lambda_caps_the_factor_at_one():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    vision.ssd_dampen_(lin, {"weight": torch.tensor([[100.0]])}, {"weight": torch.tensor([[1.0]])}, alpha=10, lam=1000)
    assert lin.weight.item() == 2.0  # selected, but lam * d / f = 10 > 1


class PixelLinear(nn.Module):
    """A linear classifier on flattened pixels with the HF call signature (pixel_values, labels) -> .loss."""

    def __init__(self, d=4, k=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(d, k)

    def forward(self, pixel_values, labels=None):
        logits = self.fc(pixel_values.flatten(1))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return type("Out", (), {"logits": logits, "loss": loss})()


def test_fisher_importance_is_the_mean_squared_batch_gradient():
    m = PixelLinear()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, generator=g), [0, 1, 2, 0, 1, 2]
    imp = vision.fisher_importance(m, x, y, batch_size=3)
    expect = torch.zeros(3, 4)
    for i in (0, 3):  # two batches; d CE / dW = (softmax - onehot)^T x / B
        xb, yb = x[i:i + 3], torch.tensor(y[i:i + 3])
        p = F.softmax(m.fc(xb), -1).detach() - F.one_hot(yb, 3)
        expect += (p.T @ xb / 3).square()
    assert torch.allclose(imp["fc.weight"], expect / 2, atol=1e-6)


def test_gradient_ascent_moves_every_weight_against_its_descent_direction():
    m = PixelLinear()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 4, generator=g), [0, 1, 2, 0]
    w0 = m.fc.weight.detach().clone()
    loss = F.cross_entropy(m.fc(x), torch.tensor(y))
    grad = torch.autograd.grad(loss, m.fc.weight)[0]
    lr = 1e-3
    train(m, vision.items(x, y), TrainConfig(lr=lr, epochs=1, batch_size=4, grad_clip=None),
          loss_fn=vision.neg_ce_loss, desc=None)
    # AdamW's first step moves each weight by lr * sign(its gradient): here + lr * sign(dCE/dw), i.e. ascent
    assert torch.allclose(m.fc.weight.detach() - w0, lr * grad.sign(), atol=1e-6)


def test_amnesiac_relabelling_never_keeps_the_true_class():
    g = torch.Generator().manual_seed(0)
    labels = [3] * 500
    new = vision.random_other_labels(labels, 10, g)
    assert all(0 <= v < 10 and v != 3 for v in new)
    assert set(new) == set(range(10)) - {3}  # uniform over the 9 others (500 draws hit all)


def test_bad_teacher_loss_is_the_kl_to_the_teacher_chosen_per_example():
    s, comp, inc = PixelLinear(seed=0), PixelLinear(seed=1), PixelLinear(seed=2)
    x = torch.randn(4, 4)
    batch = {"pixel_values": x, "forget": torch.tensor([1, 0, 1, 0])}
    loss = vision.teacher_loss(comp, inc, temperature=2.0)(s, batch)
    t = torch.where(batch["forget"].bool()[:, None], inc.fc(x), comp.fc(x)) / 2
    q = F.log_softmax(s.fc(x) / 2, -1)
    p = F.softmax(t, -1)
    expect = (p * (p.log() - q)).sum() / 4
    assert torch.allclose(loss, expect, atol=1e-6)
    # a student identical to its teachers has nothing to learn
    assert vision.teacher_loss(s, s)(s, batch).abs() < 1e-6


def test_unsir_noise_maximizes_the_forget_class_loss():
    m = PixelLinear()
    x0 = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    noise = vision.error_maximizing_noise(m, 1, 8, (4,), steps=30, lr=0.1, reg=0.0, seed=5)
    with torch.no_grad():
        before = F.cross_entropy(m.fc(x0), torch.full((8,), 1))
        after = F.cross_entropy(m.fc(noise), torch.full((8,), 1))
    assert after > before + 1.0


# ---------------------------------------------------------------- membership inference
def test_mia_on_identical_loss_distributions_is_chance():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, 2000), rng.exponential(1.0, 2000)
    assert abs(vision.loss_attack_auc(a, b, seed=0) - 0.5) < 0.04


def test_mia_recognises_members_with_lower_losses():
    rng = np.random.default_rng(1)
    members, non = rng.exponential(0.1, 300), rng.exponential(1.0, 500)
    auc = vision.loss_attack_auc(members, non, seed=0)
    assert auc > 0.85
    assert auc == vision.loss_attack_auc(members, non, seed=0)  # seeded: same value


def test_auc_chance_band_covers_the_null_auc():
    rng = np.random.default_rng(3)
    lo, hi = vision.auc_chance_band(200, 200)
    assert hi - 0.5 == pytest.approx(1.96 * np.sqrt(401 / (12 * 200 * 200)))
    from sklearn.metrics import roc_auc_score
    aucs = [roc_auc_score(np.r_[np.ones(200), np.zeros(200)], rng.normal(size=400)) for _ in range(400)]
    inside = np.mean([(lo <= a <= hi) for a in aucs])
    assert 0.92 <= inside <= 0.98  # ~95% of AUCs of exchangeable scores fall in the band


def test_mia_needs_enough_examples():
    with pytest.raises(ValueError, match="at least folds=5"):
        vision.loss_attack_auc([0.1, 0.2], [0.3, 0.4, 0.5])


# ---------------------------------------------------------------- data
def test_stratified_split_keeps_class_proportions_of_a_sorted_dataset():
    labels = [c for c in range(10) for _ in range(100)]  # sorted by class, like BIG-bench's CIFAR-10
    tr, te = vision.stratified_split(labels, 0.2, seed=0, n=500)
    assert len(tr) == 400 and len(te) == 100 and not set(tr) & set(te)
    assert np.bincount([labels[i] for i in te], minlength=10).tolist() == [10] * 10


def test_cifar10_loader_and_pixels(data_dir):
    images, labels, names = vision.load_images("cifar10", data_dir, 20)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8 and names[0] == "airplane"
    px = vision.to_pixels(images)
    assert px.shape == (20, 3, 32, 32) and -1 <= px.min() and px.max() <= 1
    assert vision.to_pixels(images[:2], 48).shape == (2, 3, 48, 48)


def test_hf_image_dataset_loader_on_a_tiny_saved_dataset(tmp_path):
    """The paper-scale path (e.g. hf:uoft-cs/cifar100) on a dataset in the same format, saved to disk."""
    import datasets
    from PIL import Image
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
    feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["apple", "rocket"])})
    datasets.Dataset.from_dict({"img": imgs, "fine_label": [0, 1, 0, 1, 0, 1]}, features=feats).save_to_disk(
        str(tmp_path / "c100"))
    images, labels, names = vision.load_images(f"hf:{tmp_path / 'c100'}", label_column="fine_label")
    assert images.shape == (6, 32, 32, 3) and labels == [0, 1, 0, 1, 0, 1] and names == ["apple", "rocket"]
    assert np.array_equal(images[0], np.asarray(imgs[0]))
    with pytest.raises(ValueError, match="no column 'label'"):
        vision.load_images(f"hf:{tmp_path / 'c100'}")


def test_unknown_method_and_source_fail_clearly():
    with pytest.raises(ValueError, match="unknown method 'erase'; allowed: prune, retrain"):
        vision.make_method("erase", {})
    with pytest.raises(ValueError, match="unknown image source 'mnist'"):
        vision.load_images("mnist")


# ---------------------------------------------------------------- toxicity
def test_profanity_check_scores_insults_above_plain_text():
    s = toxicity.toxicity_scores(["You are a fucking idiot and a moron.", "The weather is nice today."])
    assert s[0] > 0.8 and s[1] < 0.2


def test_screen_uses_the_papers_thresholds():
    texts = [{"id": str(i), "text": t} for i, t in enumerate("abcde")]
    forget, retain = toxicity.screen(texts, [0.9, 0.8, 0.5, 0.2, 0.1], forget_min=0.8, retain_max=0.2)
    assert [t["id"] for t in forget] == ["0", "1"] and [t["id"] for t in retain] == ["3", "4"]
    assert forget[0]["score"] == 0.9
    with pytest.raises(ValueError, match="retain_max"):
        toxicity.screen(texts, [0] * 5, forget_min=0.2, retain_max=0.5)


def test_prompts_from():
    assert toxicity.prompts_from(["a b c d e"], 3) == ["a b c"]


def test_toxic_fraction_and_paired_drop_by_hand():
    t = toxicity.toxic_fraction([0.9, 0.1, 0.6, 0.2], 0.5, n_boot=200)
    assert t["fraction"] == 0.5 and t["n_toxic"] == 2 and t["mean_score"] == pytest.approx(0.45)
    assert t["ci"][0] <= 0.5 <= t["ci"][1]
    d = toxicity.paired_drop([0.9, 0.9, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1], 0.5, n_boot=200)
    assert d["drop"] == 0.25 and d["ci"][0] >= 0.0
    assert d["score_drop"] == pytest.approx(0.2) and d["score_ci"][0] <= 0.2 <= d["score_ci"][1]


def test_perplexity_is_exp_of_the_token_mean_nll():
    counts = {"nll": torch.tensor([2.0, 6.0], dtype=torch.float64), "n": torch.tensor([2.0, 2.0], dtype=torch.float64)}
    p = toxicity.perplexity(counts, n_boot=100)
    assert p["perplexity"] == pytest.approx(np.exp(2.0)) and p["n_tokens"] == 4
    assert np.exp(1.0) - 1e-9 <= p["ci"][0] <= p["ci"][1] <= np.exp(3.0) + 1e-9


def tiny_lm_and_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from forgetlab.core.models import tiny_model
    words = ["<pad>", "<s>", "</s>"] + list(toxicity.LETTERS) + [".", ":", "Answer"] + [f"w{i}" for i in range(81)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    return tiny_model("llama"), tok


def test_sampled_generations_are_seeded_and_hold_only_the_continuation():
    lm, tok = tiny_lm_and_tokenizer()
    prompts = ["w1 w2 w3", "w4", "w5 w6"]
    a = toxicity.sample_generations(lm, tok, prompts, max_new_tokens=5, temperature=1.0, batch_size=2, seed=3)
    b = toxicity.sample_generations(lm, tok, prompts, max_new_tokens=5, temperature=1.0, batch_size=2, seed=3)
    assert a == b and len(a) == 3
    assert all(1 <= len(t.split()) <= 5 for t in a) and not any("w1 w2 w3" in t for t in a)
    with pytest.raises(ValueError, match="temperature"):
        toxicity.sample_generations(lm, tok, prompts, max_new_tokens=5, temperature=0.0, batch_size=2, seed=3)


def test_civil_comments_loader_on_a_tiny_saved_dataset(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"text": ["you idiot", "nice day", "  "], "toxicity": [0.9, 0.0, 0.5]}).save_to_disk(
        str(tmp_path / "cc"))
    rows = toxicity.load_civil_comments(str(tmp_path / "cc"), n=10)
    assert [r["text"] for r in rows] == ["you idiot", "nice day"] and rows[0]["score"] == 0.9
    forget, retain = toxicity.screen(rows, [r["score"] for r in rows])
    assert [r["text"] for r in forget] == ["you idiot"] and [r["text"] for r in retain] == ["nice day"]


def test_wikitext_and_mmlu_loaders_on_tiny_saved_datasets(tmp_path):
    """The paper-scale loaders (hf:Salesforce/wikitext@..., hf:cais/mmlu@all) on datasets in the same format."""
    import datasets
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": [" = Title = \n", "", " Some text .\n"]})}
                         ).save_to_disk(str(tmp_path / "wiki"))
    docs = toxicity.load_ppl_documents(f"hf:{tmp_path / 'wiki'}", n_docs=10)
    assert [d["text"].strip() for d in docs] == ["= Title =", "Some text ."]
    rows = {"question": ["w1 w2", "w3", "w4 w5 w6"], "subject": ["x"] * 3,
            "choices": [["w7", "w8", "w9", "w10"]] * 3, "answer": [0, 3, 2]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "mmlu"))
    items = toxicity.load_mmlu(f"hf:{tmp_path / 'mmlu'}", n=3)
    assert items[1] == {"question": "w3", "choices": ["w7", "w8", "w9", "w10"], "answer": 3}
    assert toxicity.mc_prompt(items[0]) == "w1 w2\nA. w7\nB. w8\nC. w9\nD. w10\nAnswer:"
    # letter scoring, batched with left padding, against one forward per item
    lm, tok = tiny_lm_and_tokenizer()
    hits = toxicity.mc_letter_correct(lm, tok, items, batch_size=3, desc=None)
    letters = [tok(f" {L}", add_special_tokens=False)["input_ids"][-1] for L in "ABCD"]
    expect = []
    for it in items:
        ids = tok(toxicity.mc_prompt(it), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expect.append(float(int(lm(input_ids=ids).logits[0, -1, letters].argmax()) == it["answer"]))
    assert hits.tolist() == expect
    with pytest.raises(ValueError, match="unknown mmlu_source 'mmlu'"):
        toxicity.load_mmlu("mmlu")


def test_offline_sentences_come_from_reddit_and_amazon(data_dir):
    sents = toxicity.offline_sentences(("reddit",), data_dir, min_words=4)
    comments = [p["context"] for p in load_squad("reddit", data_dir)[0]["paragraphs"]]
    assert len(sents) > len(comments) and {s["source"] for s in sents} == {"reddit"}
    assert [s["text"] for s in sents[:2]] == split_sentences(comments[0], "lines", 4)[:2]
    assert all(len(s["text"].split()) >= 4 for s in sents[:500])


# ---------------------------------------------------------------- the stages, smoke profile
STAGES = ("selective_pruning_vit", "selective_pruning_vit_unlearn", "selective_pruning_vision_toxicity")


@pytest.mark.notebook
def test_vision_toxicity_smoke(smoke):
    m = read_metrics(smoke, "selective_pruning_vision_toxicity")
    p = profile.load_params("smoke", ROOT)
    vis, tox = m["vision"], m["toxicity"]
    assert vis["forget_class"] == p["selective_pruning_vit_unlearn"]["forget_class"] == "airplane"
    assert set(vis["methods"]) == {"original", *vision.METHODS}
    pr = vis["methods"]["prune"]["details"]
    assert pr["ff"] == pytest.approx(p["selective_pruning_vit_unlearn"]["ff_frac"], abs=0.02)
    for r in vis["methods"].values():
        assert 0 <= r["retain_acc"] <= 1 and 0 <= r["forget_acc"] <= 1 and 0 <= r["mia_auc"] <= 1
        assert r["retain_ci"][0] <= r["retain_acc"] <= r["retain_ci"][1]
    # compute: retraining costs 3 x (retain images) x epochs; pruning is forward passes over the train split
    n_train = vis["n_train"]
    n_forget_train = round(n_train / 10)
    assert vis["methods"]["retrain"]["compute"] == 3 * (n_train - n_forget_train) * \
        p["selective_pruning_vit_unlearn"]["retrain_epochs"]
    assert vis["methods"]["prune"]["compute"] == n_train
    assert vis["methods"]["original"]["compute"] == 0
    lo, hi = vis["mia_chance_band"]
    n = vis["mia_n"]
    assert lo < 0.5 < hi and hi == as_written(lambda x: 0.5 + x, 1.96 * np.sqrt((2 * n + 1) / (12 * n ** 2)))
    assert len(vis["sweep"]) == 1 + 2 * len(p["selective_pruning_vision_toxicity"]["sweep_fracs"])
    # toxicity: the offline screen finds some toxic sentences, and the generations are scored before and after
    c = tox["counts"]
    assert c["forget"] >= 20 and c["retain"] > 5 * c["forget"] and c["screen_generations"] == 8
    assert tox["before"]["toxic"]["n"] == tox["after"]["toxic"]["n"] == 8
    # one generation per held-out toxic text (at most n_eval_seqs of them)
    assert tox["before"]["toxic_prompted"]["n"] == min(c["forget_eval"], 8) == tox["after"]["toxic_prompted"]["n"]
    assert set(tox["perplexity_change"]) == {"retain_eval", "forget_eval"}
    for ch in tox["perplexity_change"].values():
        assert ch["ci"][0] <= ch["ratio"] <= ch["ci"][1]
    assert tox["perplexity_change"]["forget_eval"]["ratio"] == as_written(
        lambda a, b: a / b, tox["after"]["forget_eval"]["perplexity"], tox["before"]["forget_eval"]["perplexity"])
    assert tox["pruned"] == pytest.approx({"ff": 0.02, "attn": 0.02}, abs=1e-3)
    assert 1 < tox["before"]["retain_eval"]["perplexity"] < 1000
    lo, hi = tox["before"]["retain_eval"]["ci"]
    assert lo <= tox["before"]["retain_eval"]["perplexity"] <= hi
    for name in ("vision_table", "vision_methods", "vision_prune_sweep", "toxicity_before_after"):
        for fmt in ("png", "pdf"):
            assert (smoke / "figures" / "selective_pruning" / f"{name}.{fmt}").stat().st_size > 5000
    executed = json.loads((smoke / "reports" / "01b_selective_pruning_vision_toxicity.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["n_gen"] == 8


def test_a_bad_method_fails_with_a_clear_message(tmp_path):
    out = subprocess.run(
        ["python"] + step_argv("selective_pruning_vit_unlearn", base=str(tmp_path / "missing"), forget_class="x",
                               methods=["prune", "erase"]), cwd=ROOT, env=stage_env(), capture_output=True, text=True)
    assert out.returncode != 0 and "unknown methods 'erase'" in out.stderr


def test_train_step_saves_a_split_and_a_bad_forget_class_fails_clearly(tmp_path, data_dir):
    vision.train_vit(**step_args("selective_pruning_vit", data_dir=str(data_dir), n_images=100, test_fraction=0.3,
                                 patch_size=8, hidden=16, layers=1, heads=2, ff=16, epochs=0,
                                 out=str(tmp_path / "vit")))
    split = json.loads((tmp_path / "vit" / "split.json").read_text())
    assert len(split["train"]) == 70 and len(split["test"]) == 30 and not set(split["train"]) & set(split["test"])
    data = vision.load_data(tmp_path / "vit")
    _, labels, _ = load_cifar10(data_dir)
    assert data.pixels.shape == (len(labels), 3, 32, 32) and data.class_names[0] == "airplane"
    pix, lab = data.subset("test", 0, "forget")
    assert len(lab) == [labels[i] for i in split["test"]].count(0) > 0 and set(lab) == {0}
    with pytest.raises(ValueError, match="unknown forget_class 'dragon'; allowed: airplane, automobile"):
        vision.unlearn(**step_args("selective_pruning_vit_unlearn", base=str(tmp_path / "vit"), forget_class="dragon",
                                   methods=["prune"], out=str(tmp_path / "u")))
    assert not (tmp_path / "u").exists()


def test_a_bad_notebook_parameter_fails_with_a_clear_message(tmp_path, data_dir):
    work = pipeline.make_workdir(tmp_path, ROOT, data_dir)
    cmd = ("papermill notebooks/01b_selective_pruning_vision_toxicity.ipynb out.ipynb -p scorer perspective "
           "-p figures_dir figs -p metrics_path m.json")
    proc = subprocess.run(cmd, shell=True, cwd=work, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown scorer 'perspective'" in proc.stdout + proc.stderr
    assert not (work / "m.json").exists()


def test_notebook_01b_checks_its_parameters_in_one_typed_config():
    """The notebook's parameters cell, as papermill fills it, makes a valid config; each kind of bad value is
    refused by name (and the config names every parameter it checks: none is read from a default of its own)."""
    import ast
    from dataclasses import fields, replace

    from forgetlab.papers.selective_pruning import vision_toxicity as spv
    nb = json.loads((ROOT / "notebooks" / "01b_selective_pruning_vision_toxicity.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace = {}
    for node in ast.parse("".join(cell["source"])).body:
        namespace[node.targets[0].id] = ast.literal_eval(node.value)
    params = spv.NotebookParams.from_namespace(namespace)
    assert all(f.default is dataclasses.MISSING for f in fields(params))
    for change, message in ((dict(n_gen=0), "parameter 'n_gen' must be an integer > 0"),
                            (dict(forget_min=1.5), "parameter 'forget_min' must be a fraction in"),
                            (dict(scorer="perspective"), "unknown scorer 'perspective'"),
                            (dict(ppl_source="wikitext"), "unknown ppl_source 'wikitext'; allowed: retain"),
                            (dict(sweep_fracs=[0.1, 0.0]), "parameter 'sweep_fracs' must be a fraction in \\(0, 1\\]"),
                            (dict(sweep_fracs="0.1,0.2"), "parameter 'sweep_fracs' must be a list")):
        with pytest.raises((ValueError, TypeError), match=message):
            replace(params, **change)


def test_every_vision_method_is_registered_with_hyperparameters_the_unlearn_step_passes_by_name():
    """One class per method, dispatched by name; each class's fields are flags of the `unlearn` step (so
    params.yaml -> dvc.yaml -> unlearn -> the method, with no second default), and every flag has a user."""
    import inspect
    from dataclasses import fields
    flags = set(inspect.signature(vision.unlearn).parameters)
    used = set()
    for name, cls in vision.REGISTRY.items():
        own = {f.name for f in fields(cls)}
        assert own <= flags, f"{name}: {own - flags} are not flags of vision.unlearn"
        assert all(f.default is dataclasses.MISSING for f in fields(cls)), f"{name} has defaults of its own"
        assert vision.make_method(name, {f: 1 for f in flags}).name == name
        used |= own
    shared = {"batch_size", "weight_decay", "warmup_steps", "grad_clip", "hflip", "retain_fraction"}
    assert flags - used == shared | {"base", "forget_class", "methods", "seed", "out", "device"}
    assert vision.METHODS == ("prune", "retrain", "finetune", "ga", "amnesiac", "unsir", "ssd", "ssd_tuned", "teacher")


def test_the_toxicity_effect_of_pruning_by_hand():
    """Two of three generations toxic before (scores 0.9, 0.8), one after; the perplexity set doubles its mean NLL
    per token, so its perplexity grows by e^1 (nll 10 -> 20 over 10 tokens per sequence)."""
    import math
    counts = lambda nll: {"nll": torch.tensor([nll, nll], dtype=torch.float64),  # noqa: E731
                          "n": torch.tensor([10.0, 10.0], dtype=torch.float64)}
    # as toxicity.measure returns them: each set's summary (unused here) beside its raw scores or counts
    before = {"toxic": {}, "toxic_scores": [0.9, 0.1, 0.8], "retain_eval": {}, "retain_eval_counts": counts(10.0)}
    after = {"toxic": {}, "toxic_scores": [0.1, 0.1, 0.9], "retain_eval": {}, "retain_eval_counts": counts(20.0)}
    drops, ppl = toxicity.pruning_effect(before, after, toxic_threshold=0.5, n_boot=200, seed=0)
    assert set(drops) == {"toxic"} and set(ppl) == {"retain_eval"}  # sets a run lacks are skipped
    assert drops["toxic"]["drop"] == pytest.approx(1 / 3) and drops["toxic"]["score_drop"] == pytest.approx(0.7 / 3)
    assert ppl["retain_eval"]["ratio"] == pytest.approx(math.e)


def test_toxicity_splits_keep_prompts_held_out_and_statistics_apart():
    texts = [{"id": f"t{i}", "source": ("reddit", "amazon")[i % 2], "text": f"word{i} a b c d e f g"}
             for i in range(40)]
    s = toxicity.split_retain(texts, n_screen=3, n_gen=4, n_eval=5, n_stat=100, prompt_words=2, seed=0)
    assert len(s["prompts_screen"]) == 3 and len(s["prompts_eval"]) == 4 and len(s["retain_eval"]) == 5
    assert all(len(p.split()) == 2 for p in s["prompts_screen"] + s["prompts_eval"])
    prompted = {p.split()[0] for p in s["prompts_screen"] + s["prompts_eval"]}
    kept = s["retain_eval"] + s["retain_stat"]
    assert len(kept) == 40 - 7 and not prompted & {t["text"].split()[0] for t in kept}  # no prompt text scored
    assert {t["id"] for t in s["retain_eval"]}.isdisjoint(t["id"] for t in s["retain_stat"])
    assert s == toxicity.split_retain(texts, n_screen=3, n_gen=4, n_eval=5, n_stat=100, prompt_words=2, seed=0)
    held, stat = toxicity.split_forget(texts[:7], texts[7:10], test_fraction=0.3, n_eval=10, n_stat=10, seed=0)
    assert len(held) == 3 and len(stat) == 7 and {t["id"] for t in held}.isdisjoint(t["id"] for t in stat)
    assert toxicity.split_forget(texts[:1], [], test_fraction=0.3, n_eval=10, n_stat=10, seed=0) == ([], texts[:1])
