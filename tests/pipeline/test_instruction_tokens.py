"""SANA-Sprint's tokenizer call over the instruction and a prompt (``families/instruction_tokens.py``):
the cached head and the tail's ids are encode_prompt's call's ids and mask for every prompt, and a
tokenizer for which that is not proven tokenizes the whole text, with the same result."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bridge.pipeline.families.instruction_tokens import InstructedIds
from bridge.pipeline.families.sana import (
    INSTRUCTION,
    MAX_SEQUENCE_LENGTH,
    PROBES,
    instructed,
    prepared,
)
from bridge.pipeline.loading.sana_build import offline_tokenizer
from test_fast_tokens import PROMPTS, Slow

SANA_PROMPTS = PROMPTS + [
    "User Prompt: a cat", "\nUser Prompt:", ":\nUser", "<bos>", "<pad> <eos> <mask>", "<0x0A>",
    "Please generate only the enhanced description", "a castle on a hill, " * 80,  # cut at the whole length
    "castle " * 297, "castle " * 298, "castle " * 299,  # around the cut: 298 tokens after the instruction
]


def whole_length(tokenizer) -> int:
    return len(tokenizer.encode(INSTRUCTION)) + MAX_SEQUENCE_LENGTH - 2


def the_call(tokenizer, text: str) -> np.ndarray:
    """diffusers' encode_prompt's tokenizer call on an instructed text: (ids, attention mask)."""
    out = tokenizer(text, padding="max_length", max_length=whole_length(tokenizer), truncation=True,
                    add_special_tokens=True)
    return np.array([out.input_ids, out.attention_mask])


def instructed_ids(tokenizer) -> InstructedIds:
    tokenizer.padding_side = "right"  # GemmaText's
    return InstructedIds(tokenizer, INSTRUCTION, whole_length(tokenizer), PROBES)


def assert_every_prompt_is_the_calls(ids: InstructedIds, tokenizer) -> None:
    """Each prompt as encode_prompt prepares it (lower case, stripped), and as it is: any text after the instruction."""
    for prompt in SANA_PROMPTS:
        assert np.array_equal(ids(prepared(prompt)), the_call(tokenizer, instructed(prompt))), prompt
        assert np.array_equal(ids(prompt), the_call(tokenizer, INSTRUCTION + prompt)), prompt


def gemma(extra: tuple[str, ...] = (), merges_first: tuple[tuple[str, str], ...] = ()):
    """demo-sana's offline tokenizer with ``extra`` tokens in its vocabulary and ``merges_first`` ranked
    before all of its own merges."""
    state = json.loads(offline_tokenizer().backend_tokenizer.to_str())["model"]
    vocab = dict(state["vocab"])
    for token in extra:
        vocab.setdefault(token, len(vocab))
    merges = list(merges_first) + [tuple(pair) for pair in state["merges"]]
    return transformers.GemmaTokenizerFast(vocab=vocab, merges=merges, add_bos_token=True)


@pytest.fixture(params=["in memory", "saved and loaded"])
def demo_tokenizer(request, tmp_path):
    """random-sana's tokenizer (made in memory) and demo-sana's (saved with the model, loaded back)."""
    tokenizer = offline_tokenizer()
    if request.param == "saved and loaded":
        tokenizer.save_pretrained(tmp_path)
        tokenizer = transformers.GemmaTokenizerFast.from_pretrained(tmp_path)
    return tokenizer


def test_the_demo_tokenizers_tokenize_the_tail_only_with_encode_prompts_ids(demo_tokenizer):
    ids = instructed_ids(demo_tokenizer)
    assert demo_tokenizer.is_fast and ids.split and ids.why is None
    assert ids.anchor == "User Prompt: " and len(ids.head) == 206  # the start token, the instruction's first lines
    assert_every_prompt_is_the_calls(ids, demo_tokenizer)


def test_a_tail_that_does_not_start_with_the_anchors_token_tokenizes_the_whole_text(demo_tokenizer):
    ids = instructed_ids(demo_tokenizer)
    ids.first += 1  # as if a prompt had changed the anchor's first token
    assert ids.split and ids._split("a cat") is None
    assert_every_prompt_is_the_calls(ids, demo_tokenizer)


def spoiled(kind: str):
    """Tokenizers the cut is not proven for, and the reason each gives."""
    if kind == "merges across the cut":  # '\n' + 'U' merged before anything else: the whole text differs
        return gemma(("\n", "\nU"), (("\n", "U"),)), "the first probe's text does not end with its tail's tokens"
    if kind == "a token across the cut":  # in the vocabulary, no merge makes it: still refused
        return gemma(("\n", "\nU"),), "BPE may merge across the cut ('\\nU' is a token)"
    tokenizer = offline_tokenizer()
    if kind == "added token":
        tokenizer.add_tokens([transformers.AddedToken(":\nUser", normalized=False)])
        return tokenizer, "the added token ':\\nUser' may match across the cut"
    if kind == "normalizer":
        normalizers = pytest.importorskip("tokenizers.normalizers")
        tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        return tokenizer, "the normalizer Sequence may change text across the cut"
    if kind == "truncation on the left":
        tokenizer.truncation_side = "left"
        return tokenizer, "truncation on the left"
    return Slow(tokenizer), "a slow tokenizer (no Rust backend)"


@pytest.mark.parametrize("kind", ["merges across the cut", "a token across the cut", "added token", "normalizer",
                                  "truncation on the left", "slow"])
def test_a_tokenizer_not_proven_for_the_cut_tokenizes_the_whole_text_with_the_same_ids(kind):
    tokenizer, why = spoiled(kind)
    ids = instructed_ids(tokenizer)
    assert not ids.split and ids.why == why
    assert_every_prompt_is_the_calls(ids, tokenizer)
    if kind == "slow":
        assert tokenizer.calls > 2 * len(SANA_PROMPTS)  # its own call, every time


def test_the_cut_would_be_wrong_where_bpe_merges_across_it():
    """The control for the refusal above: tail + head really is not the whole text's tokenization."""
    tokenizer, _ = spoiled("merges across the cut")
    whole = tokenizer(INSTRUCTION + "a cat").input_ids
    tail = tokenizer.backend_tokenizer.encode("User Prompt: a cat", add_special_tokens=False).ids
    assert whole[-len(tail):] != tail
