"""The SANA-Sprint family on the CPU (demo-sana): frames against diffusers' own SanaSprintPipeline,
the text part against its encode_prompt, the embedding cache, embedded guidance, sizes, and every
feature the family does not take refused in one line naming it."""

import inspect
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.app import load_renderer  # noqa: E402
from bridge.config import Config, ControlNetSpec  # noqa: E402
from bridge.core.errors import ConfigError, ValidationError  # noqa: E402
from bridge.core.params import Limits, Params, parse_changes  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.families.sana import INSTRUCTION  # noqa: E402
from bridge.pipeline.families.scm import ScmSampler, img2img_schedule  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402


@pytest.fixture(scope="module")
def sana(cache_dir):
    return DiffusersRenderer(load_pipeline("demo-sana", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


def reference(pipe, prompt, seed, steps, guidance, width, height):
    """diffusers' SanaSprintPipeline at the requested size itself (no 1024 aspect-ratio binning)."""
    image = pipe(prompt=prompt, num_inference_steps=steps, intermediate_timesteps=1.3 if steps == 2 else None,
                 guidance_scale=guidance, height=height, width=width, use_resolution_binning=False,
                 generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return np.round(image * 255).astype(int)


@pytest.mark.parametrize("steps,guidance,width,height", [(1, 4.5, 128, 96), (2, 4.5, 64, 64), (3, 1.0, 64, 128)])
def test_eager_frames_match_diffusers_sana_sprint_pipeline_pixel_for_pixel(sana, steps, guidance, width, height):
    p = Params(prompt="A Lighthouse at dusk ", seed=7, steps=steps, guidance=guidance, width=width, height=height)
    ours = sana.render(p).pixels
    assert ours.shape == (height, width, 4)
    ref = reference(sana.pipe, p.prompt, p.seed, steps, guidance, width, height)
    assert np.array_equal(ours[..., :3].astype(int), ref)
    assert len(np.unique(ref)) > 50  # a frame with content, not a flat colour


def test_the_text_part_is_diffusers_encode_prompt_with_its_instruction(sana):
    """Bit for bit where the transformer reads it (mask 1); the padding it never reads is zeros, not
    Gemma's states of the pad tokens, which the cached instruction's shorter runs never compute (the
    frames are diffusers' pixels all the same: the tests above and ``test_sana_text.py``)."""
    default = inspect.signature(type(sana.pipe).__call__).parameters["complex_human_instruction"].default
    assert "\n".join(default) == INSTRUCTION
    for prompt in ("A cat!", "", "a castle, " * 120):
        embeds, mask = sana.embeddings(prompt)
        ref, ref_mask = sana.pipe.encode_prompt(prompt, device="cpu", complex_human_instruction=default)
        assert torch.equal(mask, ref_mask.float()) and embeds.shape == ref.shape and embeds.shape[1] == 300
        read = mask[0] > 0
        assert torch.equal(embeds[0, read], ref[0, read]) and not embeds[0, ~read].any()


def test_a_seed_guidance_steps_or_size_change_never_runs_the_text_encoder(sana):
    calls = []
    hook = sana.pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        p = Params(prompt="a fox in the snow", seed=1, steps=1, guidance=4.5, width=64, height=64)
        first = sana.render(p).pixels
        for change in ({"seed": 2}, {"guidance": 1.0}, {"steps": 2}, {"width": 96}):
            sana.render(p.merged(change))
        assert len(calls) == 1
        assert np.array_equal(first, sana.render(p).pixels)
        sana.render(p.merged({"prompt": "a fox in the rain"}))
        assert len(calls) == 2
    finally:
        hook.remove()


def test_guidance_is_embedded_one_row_and_it_changes_the_frame(sana):
    p = Params(prompt="a red kite", seed=3, steps=1, guidance=4.5, width=64, height=64)
    assert not sana.plan(p, Scene()).cfg and sana.parts.denoiser.guidance == "embedded"
    assert not np.array_equal(sana.render(p).pixels, sana.render(p.merged({"guidance": 1.5})).pixels)


def test_image_to_image_starts_from_the_input_at_the_steps_angle(sana):
    rng = np.random.default_rng(0)
    picture = InputImage.from_pixels(rng.integers(0, 256, (64, 64, 4), np.uint8))
    p = Params(prompt="a boat", seed=5, steps=2, strength=0.5, width=64, height=64)
    a = sana.render(p, Scene(picture)).pixels
    assert np.array_equal(a, sana.render(p, Scene(picture)).pixels)
    assert not np.array_equal(a, sana.render(p.merged({"strength": 0.0})).pixels)


def img2img_reference(pipe, rgb, prompt, seed, steps, strength, guidance, width, height):
    """diffusers' SanaSprintImg2ImgPipeline on the same modules, at the requested size."""
    from diffusers import SanaSprintImg2ImgPipeline
    from PIL import Image

    image = SanaSprintImg2ImgPipeline(**pipe.components)(
        prompt=prompt, image=Image.fromarray(rgb), strength=strength, num_inference_steps=steps,
        intermediate_timesteps=1.3 if steps == 2 else None, guidance_scale=guidance, height=height, width=width,
        use_resolution_binning=False, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return np.round(image * 255).astype(int)


@pytest.mark.parametrize("steps,strength", [(2, 0.5), (4, 0.75), (4, 0.6), (8, 0.3), (3, 0.5), (1, 1.0),
                                            (1, 0.5), (3, 0.7), (2, 0.9)])
def test_image_to_image_matches_diffusers_sana_sprint_img2img_pipeline_pixel_for_pixel(sana, steps, strength):
    """Where diffusers keeps the input, its own (steps, strength); where it would start at pi/2 with a
    strength below 1 (the input ignored: steps 1, or steps x (1 - strength) < 1), the lengthened
    schedule, which is diffusers' call at (length, (length - start) / length)."""
    rgba = np.random.default_rng(steps).integers(0, 256, (64, 96, 4), np.uint8)
    rgba[..., 3] = 255
    p = Params(prompt="a boat on a lake", seed=5, steps=steps, strength=strength, guidance=4.5, width=96, height=64)
    ours = sana.render(p, Scene(InputImage.from_pixels(rgba))).pixels[..., :3].astype(int)
    length, start = img2img_schedule(steps, strength)
    diffusers_start = int(max(steps - min(steps * strength, steps), 0))
    if diffusers_start > 0 or strength == 1:
        assert (length, start) == (steps, diffusers_start)
    else:
        strength = (length - start) / length
        assert int(max(length - min(length * strength, length), 0)) == start  # diffusers' rounding agrees
    ref = img2img_reference(sana.pipe, rgba[..., :3], p.prompt, p.seed, length, strength, 4.5, 96, 64)
    assert np.array_equal(ours, ref)


def test_the_img2img_schedule_rounds_as_diffusers_sana_sprint_and_keeps_the_input():
    assert img2img_schedule(3, 0.5) == (3, 1)  # int(3 - 1.5) = 1: two steps (SD's rule: int(1.5) = 1 step)
    assert img2img_schedule(8, 0.3) == (8, 5)  # 8 * 0.3 = 2.4000000000000004: int(5.6) = 5
    assert img2img_schedule(4, 1.0) == (4, 0)  # strength 1: from pure noise, as asked
    assert img2img_schedule(1, 0.5) == (2, 1)  # diffusers would start at pi/2: one step from angle 1.3
    assert img2img_schedule(1, 0.05) == (20, 19)
    for steps in range(1, 9):
        for strength in np.arange(0.05, 1.0, 0.05):
            length, start = img2img_schedule(steps, float(strength))
            assert 1 <= start < length and length - start <= steps


def test_the_scm_sampler_takes_only_an_scm_scheduler():
    from diffusers import EulerDiscreteScheduler, SCMScheduler

    with pytest.raises(ValueError, match="SCMScheduler only"):
        ScmSampler(EulerDiscreteScheduler())
    schedule = ScmSampler(SCMScheduler()).steps(1, torch.device("cpu"))
    assert schedule.init_sigma == 0.5 and len(schedule.steps) == 1 and schedule.steps[0].last


def test_a_long_prompt_is_warned_about_in_one_line(sana):
    assert sana.prompt_warnings("a cat") == []
    assert sana.prompt_warnings("a castle on a hill " * 50) == []  # 250 words: about 250 tokens, all read
    warning, = sana.prompt_warnings("a castle on a hill " * 80)
    # 400 words, the first without its space: 399 tokens; the warning is one line
    assert "prompt is 399 tokens; SANA-Sprint reads 298" in warning and "\n" not in warning


@pytest.mark.parametrize("changes,option", [
    ({"controlnets": (ControlNetSpec("depth", "demo"),)}, "--controlnet"),
    ({"ip_adapter": "demo"}, "--ip-adapter"),
    ({"lora_dir": "loras"}, "LoRAs"),
    ({"vae": "tiny"}, "--vae"),
])
def test_what_the_family_does_not_take_is_refused_at_start_in_one_line(cache_dir, changes, option):
    with pytest.raises(ConfigError) as info:
        load_renderer(Config(model="demo-sana", cache_dir=cache_dir, compile="off", device="cpu",
                             initial=Params(width=64, height=64), **changes))
    message = str(info.value)
    assert "sana" in message and option in message and "\n" not in message


def test_another_scheduler_is_refused_in_one_line(cache_dir):
    with pytest.raises(ConfigError, match="SCMScheduler only") as info:
        load_pipeline("demo-sana", "cpu", torch.float32, cache_dir, scheduler="euler")
    assert "\n" not in str(info.value)


def test_random_sana_1_6b_is_the_1_6b_transformer_beside_the_0_6b():
    """The builder names' transformer configs, built on the meta device (shapes, no weights)."""
    from diffusers import SanaTransformer2DModel

    from bridge.pipeline.loading.demo import NAMES
    from bridge.pipeline.loading.sana_build import transformer_config

    counts = {}
    for name in ("random-sana", "random-sana-1.6b"):
        builtin = NAMES[name]
        assert builtin.family.name == "sana" and not builtin.demo
        with torch.device("meta"):
            model = SanaTransformer2DModel.from_config(transformer_config(False, builtin.architecture.configs))
        counts[name] = sum(p.numel() for p in model.parameters())
        assert model.config.in_channels == 32 and model.config.guidance_embeds
    assert 0.55e9 < counts["random-sana"] < 0.65e9 and 1.55e9 < counts["random-sana-1.6b"] < 1.65e9
    assert NAMES["random-sana-1.6b"].architecture.configs.name == "sana-sprint-1.6b"


def test_guidance_starts_at_the_family_default_and_below_1_is_refused_in_one_line():
    from bridge.app.renderers import initial_params
    from bridge.cli import build_parser, config_from_args

    info = {"family": "sana", "default_size": 1024, "size_multiple": 32, "default_guidance": 4.5, "min_guidance": 1.0}
    left_out = config_from_args(build_parser().parse_args(["serve", "--model", "demo-sana"]))
    assert left_out.family_guidance and initial_params(left_out, info).guidance == 4.5
    explicit = config_from_args(build_parser().parse_args(["serve", "--model", "demo-sana", "--guidance", "2"]))
    assert not explicit.family_guidance and initial_params(explicit, info).guidance == 2.0
    sd = {"family": "sdxl", "default_size": 512, "size_multiple": 8, "default_guidance": 0.0, "min_guidance": 0.0}
    assert initial_params(left_out, sd).guidance == 0.0  # the SD families keep theirs
    zero = config_from_args(build_parser().parse_args(["serve", "--model", "demo-sana", "--guidance", "0"]))
    with pytest.raises(ConfigError, match="from 1 up") as info_error:
        initial_params(zero, info)
    assert "\n" not in str(info_error.value)
    limits = Limits(1024, size_multiple=32, min_guidance=1.0, default_guidance=4.5)
    assert parse_changes({"guidance": 1.0}, limits) == {"guidance": 1.0}
    with pytest.raises(ValidationError, match=r"\[1, 30\] for this model") as refused:
        parse_changes({"guidance": 0}, limits)
    assert "\n" not in str(refused.value) and parse_changes({"guidance": 0}, Limits()) == {"guidance": 0.0}


def test_sizes_are_multiples_of_32_for_this_family():
    limits = Limits(1024, size_multiple=32)
    assert parse_changes({"width": 768, "height": 512}, limits) == {"width": 768, "height": 512}
    with pytest.raises(ValidationError, match="multiple of 32"):
        parse_changes({"width": 520}, limits)


def _serve(cache_dir, *args):
    env = {"TURBO_BRIDGE_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    import os

    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "demo-sana", "--http-port", "0",
                             "--osc-port", "0", "--shm-name", f"tb-sana-{os.getpid()}", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env})
    lines, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"ready: http://127\.0\.0\.1:(\d+)/v1/", line)
        if match:
            return proc, f"http://127.0.0.1:{match.group(1)}/v1"
    proc.kill()
    pytest.fail("daemon did not start:\n" + "".join(lines))


def _patch(url: str, changes: dict) -> int:
    request = urllib.request.Request(url, json.dumps(changes).encode(), method="PATCH")
    return json.load(urllib.request.urlopen(request))["version"]


def _frame(url: str, version: int) -> bytes:
    """The first frame of ``url`` (a stream's frame.rgba) at ``version`` or later."""
    seq = 0
    while True:
        with urllib.request.urlopen(f"{url}?after={seq}&timeout=60") as frame:
            seq = int(frame.headers["X-Frame-Seq"])
            if int(frame.headers["X-Params-Version"]) >= version:
                return frame.read()


def test_the_daemon_serves_sana_at_1024_by_default_and_512_and_768_on_request(cache_dir):
    proc, url = _serve(cache_dir)
    try:
        health = json.load(urllib.request.urlopen(f"{url}/health"))
        assert health["family"] == "sana" and health["size_multiple"] == 32 and health["steering"] == []
        assert (health["default_guidance"], health["min_guidance"]) == (4.5, 1.0)
        params = json.load(urllib.request.urlopen(f"{url}/params"))
        assert params["guidance"] == 4.5  # the family's, not 0: GET /v1/params says what the frame is made of
        guidance = json.load(urllib.request.urlopen(f"{url}/schema"))["parameters"]["guidance"]
        assert (guidance["minimum"], guidance["default"]) == (1.0, 4.5)
        with urllib.request.urlopen(f"{url}/frame.rgba") as frame:
            assert (frame.headers["X-Width"], frame.headers["X-Height"]) == ("1024", "1024")
        for size in (768, 512):
            version = _patch(f"{url}/params", {"width": size, "height": size, "seed": size})
            assert len(_frame(f"{url}/frame.rgba", version)) == size * size * 4
        first = _frame(f"{url}/frame.rgba", 0)
        _frame(f"{url}/frame.rgba", _patch(f"{url}/params", {"guidance": 1.0}))
        # same params, same pixels
        assert _frame(f"{url}/frame.rgba", _patch(f"{url}/params", {"guidance": 4.5})) == first
        for changes, words in (({"loras": {"a": 1}}, "sana family takes no LoRAs"), ({"guidance": 0}, "[1, 30]")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                _patch(f"{url}/params", changes)
            assert refused.value.code == 400 and words in refused.value.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_two_channels_with_overlap_on_get_their_own_deterministic_frames(cache_dir):
    """--overlap on through the real daemon: channels of one shape render as one batch, each its
    own prompt; the same state again gives the same pixels (within the one 8-bit level a CPU batch
    of another size may round differently, as the contract suite allows)."""
    proc, url = _serve(cache_dir, "--overlap", "on", "--width", "64", "--height", "64")
    try:
        assert json.load(urllib.request.urlopen(f"{url}/health"))["overlap"] is True
        prompts = {"left": "a red kite over the sea", "right": "a blue boat in a harbour"}
        first = {}
        for name, prompt in prompts.items():
            version = _patch(f"{url}/channels/{name}/params", {"prompt": prompt, "seed": 11})
            first[name] = np.frombuffer(_frame(f"{url}/channels/{name}/frame.rgba", version), np.uint8)
        assert first["left"].size == first["right"].size == 64 * 64 * 4
        assert np.abs(first["left"].astype(int) - first["right"].astype(int)).max() > 8  # each its own prompt
        for name in prompts:  # away and back, both channels at once
            _patch(f"{url}/channels/{name}/params", {"seed": 12})
        versions = {name: _patch(f"{url}/channels/{name}/params", {"seed": 11}) for name in prompts}
        for name, version in versions.items():
            again = np.frombuffer(_frame(f"{url}/channels/{name}/frame.rgba", version), np.uint8)
            assert np.abs(again.astype(int) - first[name].astype(int)).max() <= 1
        channels = json.load(urllib.request.urlopen(f"{url}/channels"))
        assert {"main", "left", "right"} <= set(channels["channels"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
