"""Model families on the CPU: SD 2.x (demo-sd) against diffusers' own pipelines, the samplers
against the diffusers schedulers' own step, single-file checkpoints written in the original
layout by the test (tests/support/ldm_layout.py), and every file that is not a supported checkpoint."""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from bridge.core.errors import UnsupportedModelError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.families.schedule import SAMPLERS, TCD_ETA, Sampler, scheduler_named  # noqa: E402
from bridge.pipeline.loading.demo import NAMES, ensure_demo  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.loading.single_file import detect_family  # noqa: E402
from bridge.pipeline.render.noise import frame_noise  # noqa: E402
from bridge.pipeline.render.plan import FramePlan  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from ldm_layout import pipeline_to_single_file  # noqa: E402


@pytest.fixture(scope="module")
def sd(cache_dir):
    return DiffusersRenderer(load_pipeline("demo-sd", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def reference_pixels(pipe, prompt, seed, steps, guidance, size=64):
    image = pipe(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                 generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return np.round(image * 255).astype(int)


def test_demo_sd_is_the_sd2_family_with_the_bundled_sd_turbo_scheduler(sd):
    assert sd.family.name == "sd2" and type(sd.pipe).__name__ == "StableDiffusionPipeline"
    assert sd.sampler == "euler" and sd.pipe.scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("steps,guidance", [(1, 0.0), (2, 0.0), (3, 1.5)])
def test_sd_turbo_path_matches_stable_diffusion_pipeline(sd, steps, guidance):
    p = Params(prompt="a cat on a windowsill", seed=4, steps=steps, guidance=guidance, width=64, height=64)
    ours = sd.render(p).pixels[..., :3].astype(int)
    ref = reference_pixels(sd.pipe, p.prompt, 4, steps, guidance)
    assert np.abs(ours - ref).max() <= 1  # sigmas: Python floats here, float32 there


@pytest.mark.parametrize("prompt", ["a cat!!", "一只猫", "a castle, " * 30, ""])
def test_sd2_embeddings_match_diffusers_encode_prompt(sd, prompt):
    embeds, pooled = sd.embeddings(prompt)
    ref, _ = sd.pipe.encode_prompt(prompt, "cpu", 1, False)
    assert torch.equal(embeds, ref) and pooled.shape == (1, 0)


def test_zero_embeddings_have_each_familys_conditioning_shapes(sd, cache_dir):
    """The unconditional zeros (and the frame graph's placeholders) match the encoders' outputs:
    SD 2.x has one text encoder and an empty (1, 0) pooled tensor, SDXL two and a pooled projection."""
    xl = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    for renderer, pooled_width in ((sd, 0), (xl, xl.pipe.text_encoder_2.config.projection_dim)):
        embeds, pooled = renderer.text.conditioning("a lighthouse")
        zeros, zeros_pooled = renderer.text.zeros
        assert zeros.shape == embeds.shape and zeros_pooled.shape == pooled.shape == (1, pooled_width)
        assert embeds.shape[-1] == renderer.pipe.unet.config.cross_attention_dim
        assert not zeros.any() and not zeros_pooled.any()


def test_sd2_determinism_cache_blends(sd):
    p = Params(prompt="a lighthouse", seed=1, width=64, height=64)
    a = sd.render(p).pixels
    assert np.array_equal(a, sd.render(p).pixels)
    runs = sd.text_encoder_runs
    assert not np.array_equal(a, sd.render(p.merged({"seed": 2})).pixels)
    assert sd.text_encoder_runs == runs  # a seed change never runs the text encoder
    castle = sd.render(p.merged({"prompt": "a castle"})).pixels
    assert np.array_equal(a, sd.render(p.merged({"prompt": [["a lighthouse", 1], ["a castle", 0]]})).pixels)
    assert np.array_equal(castle, sd.render(p.merged({"prompt": [["a lighthouse", 0], ["a castle", 3]]})).pixels)


def assert_img2img_latents_match_diffusers(renderer, p: Params, image: InputImage) -> None:
    """The denoised latents of an image-to-image frame (no guidance) equal StableDiffusionImg2ImgPipeline's."""
    from diffusers import StableDiffusionImg2ImgPipeline

    plan = FramePlan.of(p, img2img=True)
    latents = renderer.images.latents(image, p.width, p.height)
    ref = StableDiffusionImg2ImgPipeline.from_pipe(renderer.pipe)(
        prompt=p.prompt, image=latents, strength=p.strength, num_inference_steps=plan.schedule_steps,
        guidance_scale=0.0, generator=torch.Generator("cpu").manual_seed(p.seed), output_type="latent").images
    embeds, extra = renderer.embeddings(p.prompt)
    noise = frame_noise(p, plan.draws, (1, 4, p.height // 8, p.width // 8))
    with torch.inference_mode():
        ours = renderer.calls.denoise_steps(plan, noise, 0.0, embeds, extra, latents)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_sd2_img2img_matches_diffusers(sd):
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64, 4), np.uint8)
    image = InputImage.from_pixels(pixels)
    p = Params(prompt="a cat", seed=5, steps=2, strength=0.5, width=64, height=64)
    assert_img2img_latents_match_diffusers(sd, p, image)
    assert sd.render(p, Scene(image)).pixels.shape == (64, 64, 4)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_sampler_matches_the_diffusers_scheduler_step(cache_dir, name, count):
    """Our schedule against the scheduler's own set_timesteps/scale_model_input/step, same noise."""
    from bridge.pipeline.families.sdxl import SDXL
    from bridge.pipeline.loading.demo import family_scheduler

    scheduler = scheduler_named(name, family_scheduler(SDXL).config)
    schedule = Sampler(scheduler).steps(count, torch.device("cpu"))
    generator = torch.Generator("cpu").manual_seed(count)
    draws = torch.randn((count + 1, 1, 4, 8, 8), generator=generator)
    model = lambda x, t: torch.sin(x * 3 + float(t) / 100)  # noqa: E731  a stand-in UNet, deterministic

    scheduler.set_timesteps(count)
    ref = draws[0] * scheduler.init_noise_sigma
    replay = iter(draws[1:])
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(ref, t), t)
        kwargs = {"eta": TCD_ETA} if name == "tcd" else {}
        with _patched_randn(replay):
            ref = scheduler.step(eps, t, ref, **kwargs).prev_sample
    ours = draws[0] * schedule.init_sigma
    for i, step in enumerate(schedule.steps):
        eps = model(ours / step.input_scale, step.timestep)
        assert int(step.timestep) == int(scheduler.timesteps[i])
        ours = step.advance(ours, eps, draws[i + 1])
    # Coefficients as Python doubles here, float32 tensors there; LCM/TCD divide by sqrt(alpha_t) (1/14.6
    # at t=999), and 8 steps of a sin "UNet" amplify float32 rounding further.
    tolerance = 1e-4 if name.startswith("euler") else 1e-2
    torch.testing.assert_close(ours, ref, rtol=tolerance, atol=tolerance)


class _patched_randn:
    """diffusers' schedulers draw step noise with randn_tensor: hand them our draws, in order."""

    def __init__(self, draws):
        self.draws = draws  # an iterator

    def __enter__(self):
        import diffusers.utils.torch_utils as tu

        self.modules = [m for m in list(sys.modules.values())
                        if m is not None and getattr(m, "randn_tensor", None) is tu.randn_tensor]
        self.original = tu.randn_tensor
        for module in self.modules:
            module.randn_tensor = lambda shape, **kw: next(self.draws).reshape(shape)

    def __exit__(self, *exc):
        for module in self.modules:
            module.randn_tensor = self.original


@pytest.mark.parametrize("model,sgm", [("demo", True), ("demo-sd", False), ("demo-sd", True), ("demo-sd15", False)])
def test_single_file_in_the_original_layout_renders_the_folders_pixels(cache_dir, tmp_path, model, sgm):
    family = NAMES[model][0]
    folder_pipe = load_pipeline(model, "cpu", torch.float32, cache_dir)
    path = tmp_path / f"{model}.safetensors"
    save_file(pipeline_to_single_file(folder_pipe, sgm=sgm), str(path))
    assert detect_family(path) is family
    file_pipe = load_pipeline(str(path), "cpu", torch.float32, cache_dir, configs=ensure_demo(cache_dir, family))
    for name in ["unet", "vae", *family.text_encoders]:
        a, b = getattr(folder_pipe, name).state_dict(), getattr(file_pipe, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    p = Params(prompt="a red barn", seed=9, width=64, height=64, steps=2)
    assert np.array_equal(DiffusersRenderer(folder_pipe, "cpu", torch.float32).render(p).pixels,
                          DiffusersRenderer(file_pipe, "cpu", torch.float32).render(p).pixels)


def tensors(path, names, shape=(4,)):
    special = {"input_blocks.0.0.weight": (32, 4, 3, 3), "attn2.to_k.weight": (1280, 1280)}
    save_file({name: torch.zeros(next((s for k, s in special.items() if name.endswith(k)), shape))
               for name in names}, str(path))
    return path


UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
BAD_FILES = {
    "sd3": (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "Stable Diffusion 3"),
    "flux": (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "FLUX"),
    "lora": (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "--lora-dir"),
    "peft-lora": (["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"], "--lora-dir"),
    "vae": (["encoder.conv_in.weight", "decoder.conv_out.weight"], "a VAE"),
    "unet-only": ([UNET_KEY], "without text encoders"),
    "refiner": ([UNET_KEY, "conditioner.embedders.0.model.text_projection",
                 "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"], "SDXL refiner"),
}


def test_a_cpu_pipeline_owns_its_weights_aligned_whatever_the_loader_mapped(cache_dir, tmp_path):
    """A folder's weights, loaded on the CPU, are copies of their own at 64-byte boundaries (not the file's
    mapped pages: the CPU's kernels round by alignment, the test above compares a folder with a file)."""
    folder = tmp_path / "copy"
    shutil.copytree(ensure_demo(cache_dir, NAMES["demo-sd"].architecture), folder)
    pipe = load_pipeline(str(folder), "cpu", torch.float32, cache_dir)
    weights = [t for name in ("unet", "vae", "text_encoder") for m in [getattr(pipe, name)]
               for t in (*m.parameters(), *m.buffers())]
    assert weights and all(t.data_ptr() % 64 == 0 for t in weights)
    before = {n: t.clone() for n, t in pipe.unet.state_dict().items()}
    for file in folder.rglob("*.safetensors"):  # the files replaced on disk: the weights stay
        file.write_bytes(b"\0" * file.stat().st_size)
    assert all(torch.equal(before[n], t) for n, t in pipe.unet.state_dict().items())


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_every_unsupported_file_gets_its_line(tmp_path, kind):
    names, expected = BAD_FILES[kind]
    path = tensors(tmp_path / f"{kind}.safetensors", names)
    with pytest.raises(UnsupportedModelError) as info:
        load_pipeline(str(path), "cpu", torch.float32, tmp_path)
    message = str(info.value)
    assert expected in message and "\n" not in message and path.name in message


def test_truncated_and_corrupt_files_get_their_line(tmp_path):
    good = tensors(tmp_path / "good.safetensors", [UNET_KEY], shape=(64, 64))
    data = good.read_bytes()
    cases = {"truncated.safetensors": data[: len(data) - 100], "empty.safetensors": b"",
             "garbage.safetensors": struct.pack("<Q", 12) + b"{not json!!}",
             "huge-header.safetensors": struct.pack("<Q", 10**12) + b"{}"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnsupportedModelError, match="truncated|corrupt") as info:
            load_pipeline(str(tmp_path / name), "cpu", torch.float32, tmp_path)
        assert "\n" not in str(info.value)
    (tmp_path / "model.ckpt").write_bytes(b"PK\x03\x04")
    with pytest.raises(UnsupportedModelError, match="only .safetensors"):
        load_pipeline(str(tmp_path / "model.ckpt"), "cpu", torch.float32, tmp_path)


def test_cli_refuses_an_unsupported_file_in_one_line_with_exit_code_2(tmp_path):
    path = tensors(tmp_path / "my-lora.safetensors", ["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"])
    proc = subprocess.run([sys.executable, "-m", "bridge", "serve", "--model", str(path), "--shm-name", "",
                           "--http-port", "0", "--osc-port", "0", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "LoRA" in errors[0] and "--lora-dir" in errors[0] and "Traceback" not in proc.stderr


def test_health_reports_the_family(tmp_path, cache_dir):
    from bridge.app import load_renderer
    from bridge.config import Config

    renderer, info = load_renderer(Config(model="demo-sd", cache_dir=cache_dir, compile="off", device="cpu",
                                          initial=Params(width=64, height=64)))
    assert info["family"] == "sd2" and info["scheduler"] == "euler"
    assert json.dumps(info)


@pytest.mark.parametrize("name", ["sdxl", "sd2", "sd15"])
def test_full_size_layouts_round_trip_through_the_readers(name):
    """The real SDXL-Turbo and SD-Turbo architectures (on the meta device: key names and shapes
    only): our writer's LDM keys read back by diffusers' UNet/VAE converters and our OpenCLIP
    reader give every key of the diffusers modules; an OpenCLIP block past the config's layer
    count (SD 2.x files carry OpenCLIP's 24th layer) is dropped."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from bridge.pipeline.families.registry import FAMILIES
    from bridge.pipeline.loading.demo import build_components
    from bridge.pipeline.loading.single_file import open_clip_to_transformers
    from ldm_layout import clip_to_open_clip, unet_to_ldm, vae_to_ldm

    family = FAMILIES[name]
    parts = build_components(False, device="meta", family=family)
    unet = parts["unet"]
    assert convert_ldm_unet_checkpoint(unet_to_ldm(unet.state_dict(), unet.config), dict(unet.config)).keys() \
        == unet.state_dict().keys()
    assert convert_ldm_vae_checkpoint(vae_to_ldm(parts["vae"].state_dict()), dict(parts["vae"].config)).keys() \
        == parts["vae"].state_dict().keys()
    encoder = parts[family.text_encoders[-1]]
    layers = encoder.config.num_hidden_layers
    open_clip = clip_to_open_clip(encoder.state_dict(), "m.")
    open_clip[f"m.transformer.resblocks.{layers}.ln_1.weight"] = torch.zeros(1, device="meta")
    read = open_clip_to_transformers(open_clip, "m.", layers)
    assert set(read) == {k.removeprefix("text_model.") for k in encoder.state_dict() if not k.endswith("position_ids")}


@pytest.mark.parametrize("name", ["lcm", "tcd", "euler_a"])
def test_scheduler_override_renders_like_the_diffusers_pipeline_with_that_scheduler(cache_dir, name):
    pipe = load_pipeline("demo-sd", "cpu", torch.float32, cache_dir, scheduler=name)
    renderer = DiffusersRenderer(pipe, "cpu", torch.float32)
    assert renderer.sampler == name and type(pipe.scheduler).__name__ == SAMPLERS[name]
    p = Params(prompt="a harbour at night", seed=6, steps=4, width=64, height=64)
    ours = renderer.render(p).pixels[..., :3].astype(int)
    kwargs = {"eta": TCD_ETA} if name == "tcd" else {}
    ref = np.round(pipe(prompt=p.prompt, num_inference_steps=4, guidance_scale=0.0, height=64, width=64, **kwargs,
                        generator=torch.Generator("cpu").manual_seed(6), output_type="np").images[0] * 255).astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_unknown_or_unsupported_scheduler_is_a_config_error(cache_dir):
    from diffusers import DDIMScheduler

    from bridge.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scheduler"):
        load_pipeline("demo-sd", "cpu", torch.float32, cache_dir, scheduler="dpm")
    with pytest.raises(ValueError, match="DDIMScheduler is not supported"):
        Sampler(DDIMScheduler())


def test_a_family_refuses_steering_it_does_not_support_in_one_line(cache_dir):
    """SD 2.x has no IP-Adapter: --ip-adapter is refused at start, before any model loads, naming the family."""
    from bridge.app import load_renderer
    from bridge.config import Config
    from bridge.core.errors import ConfigError
    from bridge.pipeline.families.registry import FAMILIES, check_steering

    check_steering(FAMILIES["sdxl"], {"controlnet", "ip_adapter"})  # supported: nothing to refuse
    with pytest.raises(ConfigError) as info:
        load_renderer(Config(model="demo-sd", ip_adapter="demo", cache_dir=cache_dir / "never-built", compile="off",
                             device="cpu", initial=Params(width=64, height=64)))
    message = str(info.value)
    assert "sd2" in message and "--ip-adapter" in message and "--controlnet" in message and "\n" not in message
    assert not (cache_dir / "never-built").exists()  # refused before the demo model was built
