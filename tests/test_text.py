"""forgetlab.core.text: the three sentence rules by hand, and one generation loop checked against unbatched greedy
decoding, its seeding, its stop string and its end-of-sequence switch."""
import pytest
import torch

from forgetlab.core.models import tiny_model
from forgetlab.core.text import generate, split_sentences

TEXT = 'Mr. smith left. "He came back!" Ann said.\nok then\n3.5 m away? Yes.'


def test_sentence_rules_by_hand():
    assert split_sentences(TEXT, "punctuation") == ["Mr.", "smith left.", '"He came back!" Ann said.',
                                                    "ok then\n3.5 m away?", "Yes."]
    assert split_sentences(TEXT, "lines") == ["Mr.", "smith left.", '"He came back!" Ann said.', "ok then",
                                              "3.5 m away?", "Yes."]
    # a capital or digit (after an optional opening quote) must follow, so "Mr. smith" and "3.5 m" stay whole; the
    # closing quote after "!" goes with the split
    assert split_sentences(TEXT, "capitalized") == ["Mr. smith left.", '"He came back!',
                                                    "Ann said.\nok then\n3.5 m away?", "Yes."]
    assert split_sentences(TEXT, "lines", min_words=2) == ["smith left.", '"He came back!" Ann said.', "ok then",
                                                           "3.5 m away?"]
    assert split_sentences("  ", "punctuation") == []
    with pytest.raises(ValueError, match="unknown rule 'commas'"):
        split_sentences(TEXT, "commas")


def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<pad>", "<s>", "</s>", "."] + [f"w{i}" for i in range(93)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    model = tiny_model("llama").eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def greedy_by_hand(model, ids: list[int], n: int) -> list[int]:
    """Argmax decoding of one unpadded prompt, one forward pass per token."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def test_greedy_batches_match_unbatched_argmax_decoding():
    model, tok = tiny_lm()
    prompts = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    got = generate(model, tok, prompts, 4, batch_size=3, stop_at_eos=False)  # left padding in a batch of 3
    want = [tok.decode(greedy_by_hand(model, p, 4), skip_special_tokens=True) for p in prompts]
    assert got == want


def test_sampling_is_seeded_per_batch_and_temperature_is_checked():
    model, tok = tiny_lm()
    prompts = [[5, 6], [7], [8, 9, 10]]
    a = generate(model, tok, prompts, 6, batch_size=2, temperature=1.0, seed=3, min_new_tokens=1)
    torch.manual_seed(123)  # the global stream before the call does not matter
    assert generate(model, tok, prompts, 6, batch_size=2, temperature=1.0, seed=3, min_new_tokens=1) == a
    assert generate(model, tok, prompts, 6, batch_size=2, temperature=1.0, seed=4, min_new_tokens=1) != a
    assert all(t.strip() for t in a)  # min_new_tokens: never empty
    with pytest.raises(ValueError, match="'temperature'"):
        generate(model, tok, prompts, 6, temperature=-1.0)


def test_stop_string_and_end_of_sequence():
    model, tok = tiny_lm()
    prompt = [5, 6, 7]
    full = greedy_by_hand(model, prompt, 8)
    words = [tok.convert_ids_to_tokens(i) for i in full]
    stop_word = next(w for w in words[1:] if w.startswith("w"))  # a later greedy word as the stop string
    text = generate(model, tok, [prompt], 8, stop=stop_word)[0]
    assert text == tok.decode(full, skip_special_tokens=True).split(stop_word)[0]
    # make the first greedy token the end-of-sequence token: stop_at_eos decides whether decoding ends there
    model.generation_config.eos_token_id = full[0]
    assert generate(model, tok, [prompt], 8)[0] == tok.decode(full[:1])
    assert generate(model, tok, [prompt], 8, stop_at_eos=False)[0] == tok.decode(full, skip_special_tokens=True)
