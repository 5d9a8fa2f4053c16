"""Image-to-image on the eager renderer (CPU, demo model), checked against diffusers' own
StableDiffusionXLImg2ImgPipeline: scaling, encoding, the schedule from strength, the frame."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from bridge.core.params import Params, img2img_schedule  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline, load_tiny_vae  # noqa: E402
from bridge.pipeline.render.noise import frame_noise  # noqa: E402
from bridge.pipeline.render.plan import FramePlan  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.steering.input_images import scaled_rgb  # noqa: E402


@pytest.fixture(scope="module")
def renderer(cache_dir):
    return DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


@pytest.fixture(scope="module")
def img2img(renderer):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return StableDiffusionXLImg2ImgPipeline.from_pipe(renderer.pipe)


def picture(seed, width=96, height=80):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
    return InputImage.from_pixels(pixels)


def count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *a: calls.append(1))


def test_scaling_matches_diffusers_image_processor(renderer):
    image = picture(1)
    ours = torch.from_numpy(scaled_rgb(image, 64, 64)).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    ref = renderer.pipe.image_processor.preprocess(Image.fromarray(image.pixels[..., :3]), height=64, width=64)
    assert torch.equal(ours, ref)


def test_latents_are_the_encoders_mean_scaled(renderer):
    image = picture(2)
    latents = renderer.images.latents(image, 64, 64)
    x = renderer.pipe.image_processor.preprocess(Image.fromarray(image.pixels[..., :3]), height=64, width=64)
    with torch.inference_mode():
        ref = renderer.pipe.vae.encode(x).latent_dist.mode() * renderer.pipe.vae.config.scaling_factor
    assert latents.shape == (1, 4, 8, 8)
    torch.testing.assert_close(latents, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps,strength", [(2, 0.5), (4, 0.6), (3, 0.7), (1, 1.0), (1, 0.5), (2, 0.3)])
def test_frame_matches_diffusers_img2img(renderer, img2img, steps, strength):
    """Same latents in, same noise (the generator seeded with the frame's seed), same schedule."""
    image = picture(3)
    params = Params(prompt="a cat", seed=5, steps=steps, strength=strength, width=64, height=64)
    plan = FramePlan.of(params, img2img=True)
    latents = renderer.images.latents(image, 64, 64)
    kwargs = dict(prompt="a cat", image=latents, strength=strength, num_inference_steps=plan.schedule_steps,
                  guidance_scale=0.0)
    ref = img2img(**kwargs, generator=torch.Generator("cpu").manual_seed(5), output_type="latent").images
    embeds, pooled = renderer.embeddings("a cat")
    with torch.inference_mode():
        ours = renderer.calls.denoise_steps(plan, frame_noise(params, plan.draws, (1, 4, 8, 8)), 0.0, embeds, pooled,
                                       latents)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)  # sigmas: Python floats here, float32 there
    ref_pixels = img2img(**kwargs, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images[0]
    pixels = renderer.render(params, Scene(image)).pixels
    assert np.abs(pixels[..., :3].astype(int) - np.round(ref_pixels * 255).astype(int)).max() <= 1


def test_schedule_keeps_steps_times_strength_at_least_one():
    assert img2img_schedule(2, 0.5) == (2, 1)  # diffusers' example: one UNet step
    assert img2img_schedule(1, 0.5) == (2, 1)  # lengthened: int(1 * 0.5) would be 0 steps
    assert img2img_schedule(4, 0.6) == (4, 2)  # int(2.4) = 2 steps, from step 2 of 4
    assert img2img_schedule(1, 0.3) == (4, 3)
    assert img2img_schedule(3, 1.0) == (3, 0)
    assert img2img_schedule(1, 0.05) == (20, 19)
    for steps in range(1, 5):
        for strength in np.linspace(0.05, 1.0, 96):
            length, start = img2img_schedule(steps, float(strength))
            assert length >= steps and int(length * strength) >= 1 and length - start == int(length * strength)
    with pytest.raises(ValueError):
        img2img_schedule(1, 0.0)


def test_input_changes_the_frame_and_same_input_and_seed_repeat(renderer):
    params = Params(prompt="a lighthouse", seed=9, width=64, height=64, steps=4, strength=0.5)
    text_only = renderer.render(params).pixels
    a, b = renderer.render(params, Scene(picture(4))).pixels, renderer.render(params, Scene(picture(4))).pixels
    assert np.array_equal(a, b)
    assert not np.array_equal(a, text_only)
    assert not np.array_equal(a, renderer.render(params, Scene(picture(5))).pixels)
    assert not np.array_equal(a, renderer.render(params.merged({"seed": 10}), Scene(picture(4))).pixels)
    assert not np.array_equal(a, renderer.render(params.merged({"strength": 0.75}), Scene(picture(4))).pixels)


def test_encoder_runs_only_for_a_new_input(renderer):
    params = Params(prompt="a boat", width=64, height=64, strength=0.5)
    calls, handle = count_calls(renderer.pipe.vae.encoder)
    try:
        runs = renderer.vae_encoder_runs
        renderer.render(params, Scene(picture(6)))
        renderer.render(params.merged({"seed": 1, "prompt": "a ship", "strength": 1.0}), Scene(picture(6)))
        renderer.render(params, Scene(InputImage.from_pixels(picture(6).pixels.copy())))  # same content, new array
        assert calls == [1] and renderer.vae_encoder_runs == runs + 1
        renderer.render(params, Scene(picture(7)))
        renderer.render(params.merged({"width": 72}), Scene(picture(7)))  # another size: scaled and encoded again
        assert calls == [1, 1, 1] and renderer.vae_encoder_runs == runs + 3
    finally:
        handle.remove()


def test_tiny_vae_encodes_the_input(cache_dir):
    vae = load_tiny_vae("tiny", "demo", "cpu", torch.float32)
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir, vae=vae)
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32)
    params = Params(prompt="a cat", width=64, height=64, strength=0.5)
    image = picture(8)
    latents = renderer.images.latents(image, 64, 64)
    x = pipe.image_processor.preprocess(Image.fromarray(image.pixels[..., :3]), height=64, width=64)
    with torch.inference_mode():
        torch.testing.assert_close(latents, vae.encode(x).latents * vae.config.scaling_factor)
    a = renderer.render(params, Scene(image)).pixels
    assert np.array_equal(a, renderer.render(params, Scene(image)).pixels)
    assert not np.array_equal(a, renderer.render(params).pixels)
