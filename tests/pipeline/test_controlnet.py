"""ControlNets on the eager renderer (CPU, demo model and demo ControlNets), checked against
diffusers' StableDiffusionXLControlNetPipeline / ...Img2ImgPipeline, MultiControlNet sums, the
scale-0 frame, and the control image cache."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.steering.controlnet import ControlNets, ControlNetSpec, load_controlnet  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def renderer(cache_dir):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    nets = {name: load_controlnet(ControlNetSpec(name, "demo"), pipe.unet.config, "cpu", torch.float32)
            for name in ("edges", "depth")}
    return DiffusersRenderer(pipe, "cpu", torch.float32, controlnets=ControlNets(nets))


def picture(seed, width=SIZE, height=SIZE):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
    return InputImage.from_pixels(pixels)


def controlled(params, **controls):
    return params.merged({"controls": tuple((name, tuple(fields.items())) for name, fields in controls.items())})


def reference(renderer, cls, nets, **kwargs):
    from diffusers import MultiControlNetModel

    controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = cls.from_pipe(renderer.pipe, controlnet=controlnet)
    return pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(kwargs.pop("seed", 5)),
                output_type="np").images[0]


def pixels_of(image):
    return np.round(image * 255).astype(int)


def assert_matches(ours, ref):
    """Pixel for pixel, up to rounding: sigmas are Python floats here, float32 in diffusers' scheduler,
    so a value on a .5 boundary may round the other way (as in test_img2img)."""
    diff = np.abs(ours[..., :3].astype(int) - pixels_of(ref))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())


def test_demo_controlnet_has_no_zero_convolutions(renderer):
    net = renderer.controlnets.nets["edges"]
    for module in (net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks, net.controlnet_mid_block):
        assert module.weight.abs().sum() > 0
    other = renderer.controlnets.nets["depth"]
    assert not torch.equal(net.controlnet_mid_block.weight, other.controlnet_mid_block.weight)  # seeded by name


@pytest.mark.parametrize("steps,scale,start,end", [(1, 0.8, 0.0, 1.0), (2, 1.5, 0.0, 1.0), (4, 0.7, 0.25, 0.75)])
def test_frame_matches_diffusers_controlnet_pipeline(renderer, steps, scale, start, end):
    from diffusers import StableDiffusionXLControlNetPipeline

    image = picture(1)
    params = controlled(Params(prompt="a house", seed=5, steps=steps, width=SIZE, height=SIZE),
                        edges={"scale": scale, "start": start, "end": end})
    ours = renderer.render(params, Scene(controls=(("edges", image),))).pixels
    ref = reference(renderer, StableDiffusionXLControlNetPipeline, [renderer.controlnets.nets["edges"]],
                    prompt="a house", image=Image.fromarray(image.pixels[..., :3]), num_inference_steps=steps,
                    guidance_scale=0.0, controlnet_conditioning_scale=scale, control_guidance_start=start,
                    control_guidance_end=end, width=SIZE, height=SIZE)
    assert_matches(ours, ref)
    plain = renderer.render(params.merged({"controls": (("edges", (("scale", 0.0),)),)})).pixels
    assert not np.array_equal(ours, plain)  # the demo ControlNet steers


def test_two_controlnets_sum_like_multicontrolnet(renderer):
    from diffusers import StableDiffusionXLControlNetPipeline

    edges, depth = picture(2), picture(3)
    params = controlled(Params(prompt="a tree", seed=3, steps=2, width=SIZE, height=SIZE),
                        depth={"scale": 0.6}, edges={"scale": 1.2, "end": 0.5})
    scene = Scene(controls=(("depth", depth), ("edges", edges)))
    ours = renderer.render(params, scene).pixels
    nets = renderer.controlnets.nets
    ref = reference(renderer, StableDiffusionXLControlNetPipeline, [nets["depth"], nets["edges"]], seed=3,
                    prompt="a tree",
                    image=[Image.fromarray(depth.pixels[..., :3]), Image.fromarray(edges.pixels[..., :3])],
                    num_inference_steps=2, guidance_scale=0.0, controlnet_conditioning_scale=[0.6, 1.2],
                    control_guidance_start=[0.0, 0.0], control_guidance_end=[1.0, 0.5], width=SIZE, height=SIZE)
    assert_matches(ours, ref)


def test_img2img_matches_diffusers_controlnet_img2img(renderer):
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    source, control = picture(4), picture(5)
    params = controlled(Params(prompt="a boat", seed=7, steps=2, strength=0.5, width=SIZE, height=SIZE),
                        edges={"scale": 0.9})
    ours = renderer.render(params, Scene(source, controls=(("edges", control),))).pixels
    latents = renderer.images.latents(source, SIZE, SIZE)  # the VAE mean, as test_img2img feeds diffusers
    ref = reference(renderer, StableDiffusionXLControlNetImg2ImgPipeline, [renderer.controlnets.nets["edges"]],
                    seed=7, prompt="a boat", image=latents, control_image=Image.fromarray(control.pixels[..., :3]),
                    strength=0.5, num_inference_steps=2, guidance_scale=0.0, controlnet_conditioning_scale=0.9,
                    width=SIZE, height=SIZE)
    assert_matches(ours, ref)


def test_guidance_batches_the_control_image_like_diffusers(renderer):
    from diffusers import StableDiffusionXLControlNetPipeline

    image = picture(6)
    params = controlled(Params(prompt="a cat", seed=2, steps=2, guidance=2.0, width=SIZE, height=SIZE),
                        edges={"scale": 1.0})
    ours = renderer.render(params, Scene(controls=(("edges", image),))).pixels
    ref = reference(renderer, StableDiffusionXLControlNetPipeline, [renderer.controlnets.nets["edges"]], seed=2,
                    prompt="a cat", image=Image.fromarray(image.pixels[..., :3]), num_inference_steps=2,
                    guidance_scale=2.0, width=SIZE, height=SIZE)
    assert_matches(ours, ref)


def test_scale_zero_is_exactly_the_frame_without_controlnets(renderer, cache_dir):
    bare = DiffusersRenderer(renderer.pipe, "cpu", torch.float32)
    params = Params(prompt="a road", seed=11, steps=2, width=SIZE, height=SIZE)
    off = controlled(params, edges={"scale": 0.0, "preprocess": "canny"})
    calls = []
    handle = renderer.controlnets.nets["edges"].register_forward_hook(lambda *a: calls.append(1))
    try:
        # The scheduler puts no scale-0 ControlNet into the scene: nothing runs.
        assert np.array_equal(renderer.render(off).pixels, bare.render(params).pixels)
        assert calls == []
    finally:
        handle.remove()


def test_control_image_prepared_once_per_content_size_and_preprocess(renderer):
    image = picture(8, 80, 48)
    params = controlled(Params(prompt="a hill", width=SIZE, height=SIZE), edges={"scale": 1.0})
    before = renderer.control_images.prepared
    a = renderer.render(params, Scene(controls=(("edges", image),))).pixels
    renderer.render(params.merged({"seed": 4, "controls": (("edges", (("scale", 0.5),)),)}),
                    Scene(controls=(("edges", InputImage.from_pixels(image.pixels.copy())),)))
    assert renderer.control_images.prepared == before + 1  # scaled once to 64x64, reused
    b = renderer.render(controlled(params, edges={"preprocess": "canny"}), Scene(controls=(("edges", image),))).pixels
    assert renderer.control_images.prepared == before + 2 and not np.array_equal(a, b)
    prepared = renderer.control_images.image(image, SIZE, SIZE, "none")
    expected = renderer.pipe.image_processor.preprocess(Image.fromarray(image.pixels[..., :3]), height=SIZE, width=SIZE)
    torch.testing.assert_close(prepared, (expected + 1) / 2, rtol=0, atol=1e-6)  # Lanczos-scaled, in [0, 1]
