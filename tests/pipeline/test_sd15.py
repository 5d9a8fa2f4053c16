"""The SD 1.5 family (demo-sd15) and the SDXS-512 architecture (demo-sdxs) on the CPU, against
diffusers' own pipelines: text-to-image, image-to-image, guidance with a negative prompt, LoRAs
(diffusers and kohya layouts, with --scheduler lcm as an LCM-LoRA runs), ControlNets, T2I-Adapters
(SD 1.x's FullAdapter) and the IP-Adapter; what a family does not take is refused in one line."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from bridge.core.errors import ConfigError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.demo import ensure_demo  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline, model_family  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.steering.controlnet import ControlNets, ControlNetSpec, load_controlnet  # noqa: E402
from test_families import assert_img2img_latents_match_diffusers  # noqa: E402

SIZE = 64
BASE = Params(prompt="a lighthouse", seed=9, steps=2, width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def sd15(cache_dir):
    return DiffusersRenderer(load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def reference(pipe, params: Params, negative_prompt=None, **kwargs):
    image = pipe(prompt=params.prompt, negative_prompt=negative_prompt, num_inference_steps=params.steps,
                 guidance_scale=params.guidance, height=params.height, width=params.width, output_type="np",
                 generator=torch.Generator("cpu").manual_seed(params.seed), **kwargs).images[0]
    return np.round(image * 255).astype(int)


def assert_matches(ours: np.ndarray, ref: np.ndarray):
    """Pixel for pixel, up to rounding: sigmas are Python floats here, float32 in diffusers' scheduler."""
    diff = np.abs(ours[..., :3].astype(int) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())


def picture(seed, size=SIZE):
    return InputImage.from_pixels(np.random.default_rng(seed).integers(0, 256, (size, size, 4), np.uint8))


def test_demo_sd15_is_the_sd15_family_in_sd15s_layout(sd15):
    config = sd15.pipe.unet.config
    assert sd15.family.name == "sd15" and type(sd15.pipe).__name__ == "StableDiffusionPipeline"
    assert config.down_block_types[0] == "CrossAttnDownBlock2D" and not config.use_linear_projection
    assert sd15.pipe.text_encoder.config.hidden_act == "quick_gelu" and sd15.sampler == "euler"


@pytest.mark.parametrize("steps,guidance,negative",
                         [(1, 0.0, ""), (2, 0.0, ""), (3, 1.5, ""), (2, 4.0, "blurry, dark")])
def test_frames_match_stable_diffusion_pipeline(sd15, steps, guidance, negative):
    p = BASE.merged({"steps": steps, "guidance": guidance, "negative_prompt": negative})
    assert_matches(sd15.render(p).pixels, reference(sd15.pipe, p, negative_prompt=negative or None))


@pytest.mark.parametrize("prompt", ["a cat!!", "a castle, " * 30, ""])
def test_embeddings_match_diffusers_encode_prompt(sd15, prompt):
    embeds, extra = sd15.embeddings(prompt)
    ref, _ = sd15.pipe.encode_prompt(prompt, "cpu", 1, False)
    assert torch.equal(embeds, ref) and extra.shape == (1, 0)


def test_img2img_matches_stable_diffusion_img2img(sd15):
    image = picture(3)
    p = BASE.merged({"prompt": "a cat", "seed": 5, "strength": 0.5})
    assert_img2img_latents_match_diffusers(sd15, p, image)
    assert not np.array_equal(sd15.render(p, Scene(image)).pixels, sd15.render(p).pixels)


def test_demo_sdxs_is_sd2_with_the_pruned_unet_and_the_tiny_decoder(cache_dir):
    pipe = load_pipeline("demo-sdxs", "cpu", torch.float32, cache_dir)
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32)
    assert renderer.family.name == "sd2" and type(pipe.vae).__name__ == "AutoencoderTiny"
    assert pipe.unet.mid_block is None and pipe.unet.config.layers_per_block == 1
    p = BASE.merged({"steps": 1})
    assert_matches(renderer.render(p).pixels, reference(pipe, p))


def test_full_size_sdxs_unet_has_the_papers_parameter_count():
    """The derived SDXS-512 UNet config (configs/sdxs-512/README.md): 0.32B parameters, as the paper says."""
    from bridge.pipeline.loading.demo import NAMES, build_components

    parts = build_components(False, device="meta", family=NAMES["random-sdxs"].architecture)
    count = sum(p.numel() for p in parts["unet"].parameters())
    assert 0.315e9 < count < 0.325e9 and parts["unet"].config.cross_attention_dim == 1024
    assert sum(p.numel() for p in parts["vae"].decoder.parameters()) < 1.3e6  # the 1.2M-parameter decoder


def test_a_folder_and_a_hub_id_are_told_apart_from_sd2(cache_dir):
    from bridge.pipeline.families.registry import FAMILIES

    assert model_family(str(ensure_demo(cache_dir, FAMILIES["sd15"]))).name == "sd15"
    assert model_family(str(ensure_demo(cache_dir, FAMILIES["sd2"]))).name == "sd2"
    assert model_family("stable-diffusion-v1-5/stable-diffusion-v1-5").name == "sd15"
    assert model_family("IDKiro/sdxs-512-0.9").name == "sd2"
    assert model_family("demo-sdxs").name == "sd2" and model_family("random-sd15").name == "sd15"


def test_loras_fold_like_diffusers_with_the_lcm_scheduler(cache_dir, tmp_path):
    """An LCM-LoRA's way of running: --scheduler lcm, a LoRA at weight 1; kohya and diffusers layouts alike."""
    pytest.importorskip("peft")
    from lora_files import lora_layers, write_diffusers, write_kohya

    pipe = load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir, scheduler="lcm")
    layers = lora_layers(pipe, seed=1)
    write_diffusers(layers, tmp_path / "lcm.safetensors")
    write_kohya(layers, tmp_path / "lcm_kohya.safetensors")
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32, lora_dir=tmp_path)
    assert renderer.sampler == "lcm"
    for name in ("lcm", "lcm_kohya"):
        renderer.loras.catalog.load(name)
    p = BASE.merged({"steps": 4, "loras": (("lcm", 1.0),)})
    ours = renderer.render(p).pixels
    kohya = renderer.render(BASE.merged({"steps": 4, "loras": (("lcm_kohya", 1.0),)})).pixels
    assert np.array_equal(ours, kohya)
    ref_pipe = load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir, scheduler="lcm")
    ref_pipe.load_lora_weights(str(tmp_path), weight_name="lcm.safetensors", adapter_name="lcm")
    ref_pipe.fuse_lora()
    assert_matches(ours, reference(ref_pipe, p))
    assert not np.array_equal(ours, renderer.render(BASE.merged({"steps": 4})).pixels)


def controlled(params, **scales):
    return params.merged({"controls": tuple((name, (("scale", scale),)) for name, scale in scales.items())})


@pytest.mark.parametrize("source,cls", [("demo", "StableDiffusionControlNetPipeline"),
                                        ("demo-t2i", "StableDiffusionAdapterPipeline")])
def test_controlnet_and_t2i_adapter_match_diffusers(cache_dir, source, cls):
    import diffusers

    from bridge.pipeline.families.registry import FAMILIES

    pipe = load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir)
    net = load_controlnet(ControlNetSpec("edges", source), pipe.unet.config, "cpu", torch.float32, FAMILIES["sd15"])
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32, controlnets=ControlNets({"edges": net}))
    image = picture(1)
    p = controlled(BASE, edges=0.8)
    ours = renderer.render(p, Scene(controls=(("edges", image),))).pixels
    component, scale = ("controlnet", "controlnet_conditioning_scale") if source == "demo" else \
        ("adapter", "adapter_conditioning_scale")
    ref_pipe = getattr(diffusers, cls).from_pipe(pipe, **{component: net})
    assert_matches(ours, reference(ref_pipe, p, image=Image.fromarray(image.pixels[..., :3]), **{scale: 0.8}))
    plain = renderer.render(BASE).pixels
    assert not np.array_equal(ours, plain)
    # The scheduler puts no scale-0 ControlNet into the scene: the frame without it.
    assert np.array_equal(renderer.render(controlled(BASE, edges=0.0)).pixels, plain)


def test_a_controlnet_for_another_family_is_refused_in_one_line(cache_dir):
    """An SDXL ControlNet on an SD 1.5 model (full size, on the meta device), and a full-size
    ControlNet on a demo model: refused at start, one line naming both."""
    from bridge.app import load_renderer
    from bridge.config import Config
    from bridge.pipeline.families.registry import FAMILIES
    from bridge.pipeline.loading.demo import unet_config
    from bridge.pipeline.steering.controlnet import _check_fits, build_random_controlnet

    xl_net = build_random_controlnet(unet_config(FAMILIES["sdxl"], demo=False), 0, torch.float32, "meta")
    with pytest.raises(ConfigError) as info:
        _check_fits(ControlNetSpec("depth", "xl"), xl_net, unet_config(FAMILIES["sd15"], demo=False), FAMILIES["sd15"])
    message = str(info.value)
    assert "sd15-family model" in message and "made for the sdxl family" in message and "\n" not in message
    with pytest.raises(ConfigError) as info:
        load_renderer(Config(model="demo-sd15", controlnets=(ControlNetSpec("depth", "random"),), cache_dir=cache_dir,
                             compile="off", device="cpu", initial=Params(width=SIZE, height=SIZE)))
    assert "sd15-family model" in str(info.value) and "made for the sd15 family" in str(info.value)


def test_ip_adapter_matches_diffusers_load_ip_adapter(cache_dir, tmp_path):
    from bridge.pipeline.families.registry import FAMILIES
    from bridge.pipeline.steering.ip_adapter import load_ip_adapter, save_random

    pipe = load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir)
    save_random(tmp_path, dict(pipe.unet.config), weight_name="ip.safetensors")
    adapter = load_ip_adapter(str(tmp_path), pipe.unet, "cpu", torch.float32, FAMILIES["sd15"])
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32, ip_adapter=adapter)
    style = picture(4, 96)
    p = BASE.merged({"style_scale": 0.8})
    ours = renderer.render(p, Scene(style=style)).pixels
    ref_pipe = load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir)
    # low_cpu_mem_usage=False: the weights copied into aligned parameters, like ours (test_ip_adapter's reference)
    ref_pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip.safetensors", low_cpu_mem_usage=False)
    ref_pipe.set_ip_adapter_scale(0.8)
    assert_matches(ours, reference(ref_pipe, p, ip_adapter_image=Image.fromarray(style.pixels[..., :3])))
    assert np.array_equal(renderer.render(BASE.merged({"style_scale": 0.0}), Scene(style=style)).pixels,
                          renderer.render(BASE).pixels)


def test_tiling_wraps_the_sd15_frame(cache_dir):
    renderer = DiffusersRenderer(load_pipeline("demo-sd15", "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    plain = renderer.render(BASE).pixels
    tiled = renderer.render(BASE.merged({"tiling": "xy"})).pixels
    assert not np.array_equal(plain, tiled)
    assert np.array_equal(renderer.render(BASE).pixels, plain)  # switching back gives the untiled pixels
