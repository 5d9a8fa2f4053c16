"""The IP-Adapter (style image) on the eager renderer (CPU, demo model, a demo adapter written as a
model folder), checked against diffusers' StableDiffusionXLPipeline with ``load_ip_adapter`` from
the same folder and ``ip_adapter_image``: same weights, same inputs, same pixels."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from bridge.core.errors import ConfigError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.demo import DEMO_UNET  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.steering.ip_adapter import StyleAttnProcessor, load_ip_adapter, save_random  # noqa: E402

SIZE = 64
WEIGHTS = "ip-adapter_demo.safetensors"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ip-adapter")
    save_random(folder, DEMO_UNET, weight_name=WEIGHTS)
    return folder


@pytest.fixture(scope="module")
def renderer(cache_dir, adapter_dir):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    adapter = load_ip_adapter(str(adapter_dir), pipe.unet, "cpu", torch.float32)
    return DiffusersRenderer(pipe, "cpu", torch.float32, ip_adapter=adapter)


@pytest.fixture(scope="module")
def reference(cache_dir, adapter_dir):
    """diffusers' own pipeline with the adapter loaded by ``load_ip_adapter`` from the same folder.

    ``low_cpu_mem_usage=False``: diffusers copies the adapter's weights into parameters of its own, as
    ``load_ip_adapter`` (ours) does. By default it keeps the tensors safetensors read, whose data may
    sit 8 bytes off a 16-byte boundary, and MKL's sgemm rounds differently for such operands on some
    CPUs (AVX-512): the same products of the same values, one pixel off, depending on the heap."""
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    pipe.load_ip_adapter(str(adapter_dir), subfolder="", weight_name=WEIGHTS, low_cpu_mem_usage=False)
    return pipe


def picture(seed, width=96, height=80):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
    return InputImage.from_pixels(pixels)


def diffusers_frame(pipe, params: Params, image: InputImage, negative_prompt=None):
    pipe.set_ip_adapter_scale(params.style_scale)
    out = pipe(prompt=params.prompt, negative_prompt=negative_prompt, guidance_scale=params.guidance,
               num_inference_steps=params.steps, width=params.width, height=params.height,
               ip_adapter_image=Image.fromarray(image.pixels[..., :3]),
               generator=torch.Generator("cpu").manual_seed(params.seed), output_type="np").images[0]
    return np.round(out * 255).astype(int)


@pytest.mark.parametrize("steps,scale,guidance", [(1, 0.8, 0.0), (2, 1.5, 0.0), (2, 0.6, 3.0)])
def test_frame_matches_diffusers_load_ip_adapter(renderer, reference, steps, scale, guidance):
    image = picture(1)
    params = Params(prompt="a lighthouse", seed=9, steps=steps, guidance=guidance, style_scale=scale,
                    width=SIZE, height=SIZE)
    ours = renderer.render(params, Scene(style=image)).pixels[..., :3].astype(int)
    ref = diffusers_frame(reference, params, image)
    assert np.array_equal(ours, ref), f"max difference {np.abs(ours - ref).max()}"
    plain = renderer.render(params).pixels[..., :3].astype(int)
    assert not np.array_equal(ours, plain)  # the demo adapter steers


def test_scale_zero_is_exactly_the_frame_without_the_adapter(renderer, cache_dir):
    bare = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    params = Params(prompt="a road", seed=11, steps=2, width=SIZE, height=SIZE)
    runs = renderer.style.encodes
    off = renderer.render(params, Scene(style=picture(2))).pixels
    assert np.array_equal(off, bare.render(params).pixels)
    assert renderer.style.encodes == runs  # scale 0: not even the image encoder runs


def test_style_image_encoded_once_per_content(renderer):
    params = Params(prompt="a field", seed=1, style_scale=0.7, width=SIZE, height=SIZE)
    image = picture(3)
    first = renderer.render(params, Scene(style=image)).pixels
    runs = renderer.style.encodes
    again = renderer.render(params.merged({"seed": 2, "style_scale": 1.2}), Scene(style=image)).pixels
    same = renderer.render(params, Scene(style=InputImage.from_pixels(image.pixels.copy()))).pixels
    assert renderer.style.encodes == runs and np.array_equal(first, same) and not np.array_equal(first, again)
    renderer.render(params, Scene(style=picture(4)))
    assert renderer.style.encodes == runs + 1


def test_processors_wrap_only_cross_attention(renderer):
    processors = renderer.pipe.unet.attn_processors
    styled = [name for name, proc in processors.items() if isinstance(proc, StyleAttnProcessor)]
    assert styled and all(name.endswith("attn2.processor") for name in styled)
    assert len(styled) == sum(name.endswith("attn2.processor") for name in processors)


def test_adapter_for_another_unet_is_refused(cache_dir, tmp_path):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    save_random(tmp_path, {**DEMO_UNET, "cross_attention_dim": 48}, weight_name=WEIGHTS)
    with pytest.raises(ConfigError, match="does not fit the model's UNet"):
        load_ip_adapter(str(tmp_path), pipe.unet, "cpu", torch.float32)
    (tmp_path / "second.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="exactly one IP-Adapter weight file"):
        load_ip_adapter(str(tmp_path), pipe.unet, "cpu", torch.float32)
    (tmp_path / "second.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_ip_adapter(str(tmp_path / "second.safetensors"), pipe.unet, "cpu", torch.float32)


def test_channels_render_style_frames_alone(renderer):
    from bridge.pipeline.render.batch import ChannelRenderer

    channels = ChannelRenderer(renderer)
    params = Params(prompt="a field", seed=1, style_scale=0.9, width=SIZE, height=SIZE)
    styled = Scene(style=picture(6))
    assert channels.batch_key(params, styled) is None  # never batched with other channels' frames
    assert channels.batch_key(params, Scene()) is not None
    assert np.array_equal(channels.render(params, styled).pixels, renderer.render(params, styled).pixels)


def test_hub_adapter_missing_offline_says_how_to_get_it(cache_dir, monkeypatch):
    from bridge.core.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    with pytest.raises(ModelNotFoundError) as info:
        load_ip_adapter("nobody/no-such-adapter", pipe.unet, "cpu", torch.float32)
    message = str(info.value)
    assert "hf download nobody/no-such-adapter" in message and "demo/random" in message and "\n" not in message
    from bridge.pipeline.families.sd2 import SD2

    with pytest.raises(ConfigError, match="the sd2 family .* does not support it"):
        load_ip_adapter("demo", pipe.unet, "cpu", torch.float32, family=SD2)
