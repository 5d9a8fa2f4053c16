"""The eager renderer on the demo model (CPU): determinism, the embedding cache, load errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.errors import ModelNotFoundError
from bridge.core.params import Params
from bridge.pipeline.loading.loader import load_pipeline
from bridge.pipeline.render.renderer import DiffusersRenderer


@pytest.fixture(scope="module")
def renderer(cache_dir):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    return DiffusersRenderer(pipe, "cpu", torch.float32)


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_frame_is_rgba8_of_requested_size(renderer):
    out = renderer.render(Params(prompt="a cat", width=96, height=64))
    assert out.pixels.shape == (64, 96, 4) and out.pixels.dtype == np.uint8
    assert (out.pixels[..., 3] == 255).all()
    assert out.pixels[..., :3].std() > 5  # noise, not a flat frame


def test_same_params_same_pixels_other_seed_other_pixels(renderer):
    p = Params(prompt="a cat on a windowsill", seed=42, width=64, height=64)
    a, b = renderer.render(p).pixels, renderer.render(p).pixels
    assert np.array_equal(a, b)
    c = renderer.render(p.merged({"seed": 43})).pixels
    assert not np.array_equal(a, c)
    d = renderer.render(p.merged({"prompt": "a dog"})).pixels
    assert not np.array_equal(a, d)


def test_seed_and_guidance_changes_skip_the_text_encoders(renderer):
    p = Params(prompt="a lighthouse at dusk", width=64, height=64)
    renderer.render(p)
    calls1, h1 = count_calls(renderer.pipe.text_encoder)
    calls2, h2 = count_calls(renderer.pipe.text_encoder_2)
    try:
        renderer.render(p.merged({"seed": 7}))
        renderer.render(p.merged({"seed": 8, "steps": 2, "width": 72}))
        assert calls1 == [] and calls2 == []
        renderer.render(p.merged({"prompt": "a lighthouse at dawn"}))
        assert calls1 == [1] and calls2 == [1]
    finally:
        h1.remove()
        h2.remove()


def test_guidance_above_zero_changes_the_frame(renderer):
    p = Params(prompt="a red car", seed=1, width=64, height=64, steps=2)
    assert not np.array_equal(renderer.render(p).pixels, renderer.render(p.merged({"guidance": 3.0})).pixels)


def test_long_prompt_warns_and_short_prompt_does_not(renderer):
    assert renderer.prompt_warnings("a cat") == []
    warnings = renderer.prompt_warnings("a very long prompt " * 30)
    assert len(warnings) == 1 and "tokens; CLIP reads 77" in warnings[0]


def test_chinese_prompt_is_real_tokens_not_endoftext(renderer):
    row = renderer.text.token_ids("一只猫")[0].tolist()  # start, the text's tokens, end, padding
    assert row.index(49407, 1) >= 3  # the first end-of-text comes after at least two real tokens


def test_missing_model_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline("nobody/no-such-model", "cpu", torch.float32, tmp_path)
    message = str(info.value)
    assert "--model demo" in message and "hf download" in message and "\n" not in message


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path), "cpu", torch.float32, tmp_path)


@pytest.mark.parametrize("prompt", ["a cat!!", "一只猫在窗台上", "a castle on a hill, " * 20, ""])
def test_embeddings_match_diffusers_encode_prompt(renderer, prompt):
    embeds, pooled = renderer.embeddings(prompt)
    ref_embeds, _, ref_pooled, _ = renderer.pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(embeds, ref_embeds) and torch.equal(pooled, ref_pooled)
