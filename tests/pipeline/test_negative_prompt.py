"""The negative prompt on the eager renderer (CPU, demo model), checked against diffusers'
StableDiffusionXLPipeline with the same negative prompt, seed and schedule."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.errors import ValidationError  # noqa: E402
from bridge.core.params import Params, parse_changes  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402


@pytest.fixture(scope="module")
def renderer(cache_dir):
    return DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def reference(renderer, params: Params, negative_prompt):
    """diffusers' own frame: the generator seeded with the frame's seed, as the daemon seeds its noise."""
    out = renderer.pipe(prompt=params.prompt, negative_prompt=negative_prompt, guidance_scale=params.guidance,
                        num_inference_steps=params.steps, width=params.width, height=params.height,
                        generator=torch.Generator("cpu").manual_seed(params.seed), output_type="np").images[0]
    return np.round(out * 255).astype(int)


@pytest.mark.parametrize("steps,guidance", [(1, 3.0), (2, 5.5)])
def test_frame_matches_diffusers_with_negative_prompt(renderer, steps, guidance):
    params = Params(prompt="a castle", negative_prompt="blurry, low quality", seed=11, steps=steps,
                    guidance=guidance, width=64, height=64)
    pixels = renderer.render(params).pixels[..., :3].astype(int)
    ref = reference(renderer, params, "blurry, low quality")
    assert np.array_equal(pixels, ref), f"max difference {np.abs(pixels - ref).max()}"


def test_empty_negative_prompt_is_diffusers_default(renderer):
    """No negative prompt: SDXL-Turbo's zeroed unconditional branch (diffusers' negative_prompt=None)."""
    params = Params(prompt="a castle", seed=3, steps=1, guidance=2.0, width=64, height=64)
    pixels = renderer.render(params).pixels[..., :3].astype(int)
    assert np.array_equal(pixels, reference(renderer, params, None))
    with_negative = renderer.render(params.merged({"negative_prompt": "fog"})).pixels[..., :3].astype(int)
    assert not np.array_equal(pixels, with_negative)


def test_negative_prompt_blend_is_the_weighted_sum_of_its_texts(renderer):
    blend = (("fog", 3.0), ("rain", 1.0))
    embeds, pooled = renderer.text.unconditional(blend)
    fog, rain = renderer.embeddings("fog"), renderer.embeddings("rain")
    torch.testing.assert_close(embeds, fog[0] * 0.75 + rain[0] * 0.25)
    torch.testing.assert_close(pooled, fog[1] * 0.75 + rain[1] * 0.25)
    params = Params(prompt="a castle", negative_prompt=blend, seed=4, guidance=2.0, width=64, height=64)
    assert not np.array_equal(renderer.render(params).pixels,
                              renderer.render(params.merged({"negative_prompt": "fog"})).pixels)


def test_without_guidance_the_negative_prompt_changes_nothing_and_is_not_encoded(renderer):
    params = Params(prompt="a harbour", seed=2, guidance=0.0, width=64, height=64)
    base = renderer.render(params).pixels
    runs = renderer.text_encoder_runs
    assert np.array_equal(renderer.render(params.merged({"negative_prompt": "never seen before 1"})).pixels, base)
    assert renderer.text_encoder_runs == runs


def test_negative_prompt_is_cached_like_prompts(renderer):
    params = Params(prompt="a harbour", negative_prompt="never seen before 2", seed=2, guidance=2.0,
                    width=64, height=64)
    first = renderer.render(params).pixels
    runs = renderer.text_encoder_runs
    again = renderer.render(params.merged({"seed": 2})).pixels
    renderer.render(params.merged({"seed": 5, "guidance": 4.0}))
    assert renderer.text_encoder_runs == runs and np.array_equal(first, again)


def test_negative_prompt_validation_names_its_field():
    assert parse_changes({"negative_prompt": [["fog", 1], ["rain", 2]]}) == {
        "negative_prompt": (("fog", 1.0), ("rain", 2.0))}
    for bad in (3, "a\x00b", [["fog", -1]], [["fog", 0]], "x" * 5000):
        with pytest.raises(ValidationError) as info:
            parse_changes({"negative_prompt": bad})
        assert info.value.field == "negative_prompt"
    assert Params(negative_prompt=(("a", 1.0),)).to_json()["negative_prompt"] == [["a", 1.0]]
