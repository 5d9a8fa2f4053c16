"""SANA-Sprint's text part on the CPU (demo-sana): Gemma over the text after the cached instruction,
in the 299 positions after it, against diffusers' encode_prompt and
SanaSprintPipeline's frames, compiled without a recompile for a new prompt."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Scene  # noqa: E402
from bridge.pipeline.families import sana as sana_family  # noqa: E402
from bridge.pipeline.families.gemma_prefix import InstructionPrefix  # noqa: E402
from bridge.pipeline.families.sana import MAX_SEQUENCE_LENGTH, GemmaText, instructed  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.compiling import warm_text_lengths  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from test_instruction_tokens import SANA_PROMPTS  # noqa: E402
from test_sana import reference  # noqa: E402

# demo-sana's offline tokenizer makes whole words (loading/sana_build.py): its instruction is 210 tokens
# (the start token first), the whole text 210 + 298 = 508, and every prompt shares the instruction's
# first 209 (the last is where SELECT's kept positions begin): 299 positions are left after it.
WHOLE, CACHED, REST = 508, 209, 299
PROMPTS = {  # the length Gemma runs over after the cached instruction -> a prompt that takes it
    64: "A Lighthouse at dusk",  # 5 tokens
    128: "a lighthouse on a cliff at dusk, " * 7,  # 76 tokens: past 64
    REST: "a lighthouse on a cliff at dusk, " * 20,  # 219 tokens: past 128, not cut
    "cut": "a castle on a hill, " * 60,  # 359 tokens: cut at 298, all 299 positions real
}


@pytest.fixture(scope="module")
def sana(cache_dir):
    return DiffusersRenderer(load_pipeline("demo-sana", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def diffusers_ids(text: GemmaText, prompt: str) -> np.ndarray:
    """encode_prompt's tokenizer call: (ids, attention mask) of the whole text."""
    out = text.tokenizer(instructed(prompt), padding="max_length", max_length=text.whole_length, truncation=True,
                         add_special_tokens=True)
    return np.array([out.input_ids, out.attention_mask])


def test_a_prompt_runs_gemma_over_the_positions_after_the_cached_instruction(sana):
    """A prompt change: 299 tokens through Gemma instead of the whole text's 508 (the cached 209 of
    the instruction are only attended to); the ids are encode_prompt's from the instruction's end."""
    text = sana.parts.text
    assert text.prefix is not None and text.prefix.length == CACHED and text.whole_length == WHOLE
    assert text.lengths == (REST,)
    for length, prompt in PROMPTS.items():
        ids = text.token_ids(prompt).numpy()
        whole = diffusers_ids(text, prompt)
        assert ids.shape == (2, REST) and np.array_equal(ids, whole[:, CACHED:])
        assert np.array_equal(whole[0, :CACHED], text.prefix.ids)
        n = REST if length == "cut" else length  # the prompt's tokens fit the first n positions
        assert not whole[1, CACHED + n:].any()


def test_a_new_prompt_tokenizes_the_instructions_last_line_and_the_prompt_with_encode_prompts_ids(sana):
    """The tokenizer runs over "User Prompt: " and the prompt, the instruction's other ids cached
    (``instruction_tokens.py``): the ids and mask of encode_prompt's call on the whole text, for a wide
    set of prompts (empty, unicode, '!', newlines, cut at max_sequence_length...)."""
    text = sana.parts.text
    assert text._tokens.split and text._tokens.why is None
    for prompt in SANA_PROMPTS:
        assert np.array_equal(text._ids(prompt), diffusers_ids(text, prompt)), prompt


@pytest.mark.parametrize("length", [64, 128, REST, "cut"])
def test_frames_of_prompts_of_every_length_are_sana_sprint_pipelines(sana, length):
    """Short to cut at max_sequence_length (all 299 positions real): diffusers' pixels."""
    p = Params(prompt=PROMPTS[length], seed=9, steps=1, guidance=4.5, width=64, height=64)
    assert sana.parts.text.token_ids(p.prompt).shape[-1] == REST
    ours = sana.render(p).pixels
    assert np.array_equal(ours[..., :3].astype(int), reference(sana.pipe, p.prompt, p.seed, 1, 4.5, 64, 64))


def test_the_whole_text_gives_the_cached_instructions_conditioning(sana):
    """The whole text (a prompt whose tokens reach into the instruction's): the same tensors, bit for bit."""
    text = sana.parts.text
    with torch.inference_mode():
        want = text.encode(text.token_ids(PROMPTS[64]))
        ids = text.token_ids(PROMPTS[64], WHOLE)
        assert ids.shape[-1] == WHOLE
        got = text.encode(ids)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_prompt_whose_tokens_reach_into_the_instruction_runs_over_the_whole_text(sana, monkeypatch):
    """A tokenizer that merged a prompt's first characters into the instruction's last tokens would
    change the ids the cache was made of: that prompt runs Gemma over the whole text, same frames."""
    text = sana.parts.text
    p = Params(prompt="a red kite over the sea", seed=4, steps=1, guidance=4.5, width=64, height=64)
    before = sana.render(p).pixels
    other = text.prefix.ids.copy()
    other[-1] += 1
    monkeypatch.setattr(text.prefix, "ids", other)
    assert text.token_ids(p.prompt).shape == (2, WHOLE)
    sana.text.clear()
    assert np.array_equal(sana.render(p).pixels, before)
    assert ("text", WHOLE) in sana.graph_keys


def test_a_cache_cut_short_of_the_instruction_runs_its_last_tokens_again_with_the_same_conditioning(
        sana, monkeypatch):
    """Where prompts change the instruction's last ids (Gemma's own tokenizer may merge its trailing
    space into a prompt's first word), the cache stops before them and Gemma runs them with the prompt."""
    monkeypatch.setattr(sana_family, "shared_start", lambda a, b: CACHED - 4)
    short = GemmaText(sana.pipe, torch.float32)
    assert short.prefix.length == CACHED - 4 and short.lengths == (REST + 4,)
    cached = sana.parts.text
    with torch.inference_mode():
        for prompt in PROMPTS.values():
            got, want = short.encode(short.token_ids(prompt)), cached.encode(cached.token_ids(prompt))
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_cached_instruction_is_gemmas_own_and_no_frame_writes_it(sana):
    text = sana.parts.text
    prefix = text.prefix
    kept = [t.clone() for t in (*prefix.keys, *prefix.values, prefix.first)]
    for prompt in PROMPTS.values():
        sana.render(Params(prompt=f"{prompt} again", seed=1, steps=1, width=64, height=64))
    assert all(torch.equal(a, b) for a, b in zip(kept, (*prefix.keys, *prefix.values, prefix.first)))
    whole = torch.from_numpy(diffusers_ids(text, "A fox in the snow"))
    assert prefix.check(whole[:1], whole[1:]) == 0.0  # bit for bit in float32 on the CPU


def test_warming_runs_every_length_so_no_prompt_makes_a_new_one(sana):
    """What start-up compiles (``warm``; here the eager keys of the text stage): every length (one
    now, ``PROMPT_LENGTHS``), so no prompt mid-show adds one."""
    plan = sana.plan(Params(width=64, height=64), Scene())
    with torch.inference_mode():
        warm_text_lengths(sana, plan, decode=True)
    lengths = text_keys(sana)
    assert ("text", REST) in lengths
    for i, prompt in enumerate(PROMPTS.values()):
        sana.render(Params(prompt=f"{prompt}, take {i}", seed=i, steps=1, width=64, height=64))
    assert text_keys(sana) == lengths  # the frames add their U-Net and decode keys, no text length


def text_keys(renderer) -> set:
    return {key for key in renderer.graph_keys if key[0] == "text"}


def test_the_compiled_text_part_is_one_graph_per_length_and_a_new_prompt_never_recompiles(sana):
    """torch.compile as the renderer compiles it (fullgraph, static shapes; a Python backend here, no
    C++ build on the CPU): the cache object and the kept tensors trace; a new prompt of a length
    compiled before compiles nothing, and gives the eager tensors."""
    text = sana.parts.text
    torch._dynamo.reset()
    compiled = torch.compile(text.encode, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.inference_mode():
        for prompt in PROMPTS.values():  # start-up: one compile per length
            compiled(text.token_ids(prompt))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for prompt in PROMPTS.values():
                ids = text.token_ids(f"{prompt} at noon")
                got, want = compiled(ids), text.encode(ids)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_without_a_usable_cache_gemma_runs_over_the_whole_text_and_says_why(sana, monkeypatch, caplog):
    encoder = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2", sliding_window=4096))
    assert "eager or sdpa" in InstructionPrefix.usable(encoder, WHOLE)
    for attention in ("eager", "sdpa"):  # transformers 5.25's Gemma-2 and 5.17's
        encoder.config._attn_implementation = attention
        assert InstructionPrefix.usable(encoder, WHOLE) is None
        assert "sliding window" in InstructionPrefix.usable(encoder, 5000)
    monkeypatch.setattr(InstructionPrefix, "usable", staticmethod(lambda encoder, total: "a reason"))
    with caplog.at_level(logging.WARNING, logger=sana_family.__name__):
        whole = GemmaText(sana.pipe, torch.float32)
    assert whole.prefix is None and whole.lengths == (WHOLE,) and "a reason" in caplog.text
    ids = whole.token_ids(PROMPTS[64])
    assert ids.shape == (2, WHOLE)
    cached = sana.parts.text
    with torch.inference_mode():
        got, want = whole.encode(ids), cached.encode(cached.token_ids(PROMPTS[64]))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[0].shape == (1, MAX_SEQUENCE_LENGTH, sana.pipe.text_encoder.config.hidden_size)


def test_a_batch_tokenizes_its_prompts_at_the_longest_length(sana):
    """One batch graph per batch size whatever its prompts (``ChannelRenderer``)."""
    ids = sana.text.batch_token_ids([PROMPTS[64], PROMPTS[128]])
    assert ids.shape == (2, 2, REST)
