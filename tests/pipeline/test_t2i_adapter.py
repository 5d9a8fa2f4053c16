"""T2I-Adapters on the eager renderer (CPU, demo model, demo-t2i adapters), checked against
diffusers' StableDiffusionXLAdapterPipeline (one adapter, MultiAdapter sums, guidance,
adapter_conditioning_factor), beside a ControlNet, the scale-0 frame, the feature cache, and the
loader's refusals."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from bridge.core.controls import ControlNetSpec  # noqa: E402
from bridge.core.errors import ConfigError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.steering.controlnet import ControlNets, load_controlnet  # noqa: E402
from bridge.pipeline.steering.t2i_adapter import adapter_size  # noqa: E402
from test_controlnet import SIZE, assert_matches, controlled, picture  # noqa: E402


@pytest.fixture(scope="module")
def renderer(cache_dir):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    sources = {"sketch": "demo-t2i", "depth": "demo-t2i", "edges": "demo"}
    nets = {name: load_controlnet(ControlNetSpec(name, source), pipe.unet.config, "cpu", torch.float32)
            for name, source in sources.items()}
    return DiffusersRenderer(pipe, "cpu", torch.float32, controlnets=ControlNets(nets))


def pil(image):
    return Image.fromarray(image.pixels[..., :3])


def reference(renderer, adapters, **kwargs):
    from diffusers import MultiAdapter, StableDiffusionXLAdapterPipeline

    nets = [renderer.controlnets.nets[name] for name in adapters]
    adapter = nets[0] if len(nets) == 1 else MultiAdapter(nets)
    pipe = StableDiffusionXLAdapterPipeline.from_pipe(renderer.pipe, adapter=adapter)
    seed = kwargs.pop("seed", 5)
    return pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]


def test_demo_adapter_fits_the_demo_unet_and_is_seeded_by_name(renderer):
    nets = renderer.controlnets
    assert set(nets.adapters) == {"sketch", "depth"} and nets.split(("depth", "edges", "sketch")) == \
        (("edges",), ("depth", "sketch"))
    features = nets.nets["sketch"](torch.rand(1, 3, SIZE, SIZE))
    assert [f.shape[1] for f in features] == list(renderer.pipe.unet.config.block_out_channels)
    assert all(f.shape[-2:] == (SIZE // 16, SIZE // 16) for f in features)  # the UNet's first down block's size
    assert not torch.equal(nets.nets["sketch"].adapter.conv_in.weight, nets.nets["depth"].adapter.conv_in.weight)


@pytest.mark.parametrize("steps,scale,end", [(1, 0.8, 1.0), (2, 1.5, 1.0), (4, 0.7, 0.5)])
def test_frame_matches_diffusers_adapter_pipeline(renderer, steps, scale, end):
    image = picture(1)
    params = controlled(Params(prompt="a house", seed=5, steps=steps, width=SIZE, height=SIZE),
                        sketch={"scale": scale, "end": end})
    ours = renderer.render(params, Scene(controls=(("sketch", image),))).pixels
    ref = reference(renderer, ["sketch"], prompt="a house", image=pil(image), num_inference_steps=steps,
                    guidance_scale=0.0, adapter_conditioning_scale=scale, adapter_conditioning_factor=end,
                    width=SIZE, height=SIZE)
    assert_matches(ours, ref)
    plain = renderer.render(controlled(params, sketch={"scale": 0.0})).pixels
    assert not np.array_equal(ours, plain)  # the demo adapter steers


def test_two_adapters_sum_like_multiadapter(renderer):
    depth, sketch = picture(2), picture(3)
    params = controlled(Params(prompt="a tree", seed=3, steps=2, width=SIZE, height=SIZE),
                        depth={"scale": 0.6}, sketch={"scale": 1.2})
    ours = renderer.render(params, Scene(controls=(("depth", depth), ("sketch", sketch)))).pixels
    ref = reference(renderer, ["depth", "sketch"], seed=3, prompt="a tree", image=[pil(depth), pil(sketch)],
                    num_inference_steps=2, guidance_scale=0.0, adapter_conditioning_scale=[0.6, 1.2],
                    width=SIZE, height=SIZE)
    assert_matches(ours, ref)


def test_guidance_doubles_the_features_like_diffusers(renderer):
    image = picture(6)
    params = controlled(Params(prompt="a cat", seed=2, steps=2, guidance=2.0, width=SIZE, height=SIZE),
                        sketch={"scale": 1.0})
    ours = renderer.render(params, Scene(controls=(("sketch", image),))).pixels
    ref = reference(renderer, ["sketch"], seed=2, prompt="a cat", image=pil(image), num_inference_steps=2,
                    guidance_scale=2.0, width=SIZE, height=SIZE)
    assert_matches(ours, ref)


def test_adapter_and_controlnet_steer_together(renderer):
    """Both kinds in one frame: the ControlNet's skip residuals and the adapter's in-block ones."""
    edges, sketch = picture(7), picture(8)
    base = Params(prompt="a bridge", seed=9, steps=2, width=SIZE, height=SIZE)
    both = renderer.render(controlled(base, edges={"scale": 1.0}, sketch={"scale": 1.0}),
                           Scene(controls=(("edges", edges), ("sketch", sketch)))).pixels
    one = renderer.render(controlled(base, edges={"scale": 1.0}), Scene(controls=(("edges", edges),))).pixels
    other = renderer.render(controlled(base, sketch={"scale": 1.0}), Scene(controls=(("sketch", sketch),))).pixels
    assert len({both.tobytes(), one.tobytes(), other.tobytes()}) == 3


def test_img2img_with_an_adapter_runs_the_features_on_the_steps_run(renderer):
    source, control = picture(4), picture(5)
    params = controlled(Params(prompt="a boat", seed=7, steps=2, strength=0.5, width=SIZE, height=SIZE),
                        sketch={"scale": 0.9})
    steered = renderer.render(params, Scene(source, controls=(("sketch", control),))).pixels
    plain = renderer.render(params.merged({"controls": (("sketch", (("scale", 0.0),)),)}), Scene(source)).pixels
    assert not np.array_equal(steered, plain)


def test_scale_zero_is_exactly_the_frame_without_adapters(renderer):
    bare = DiffusersRenderer(renderer.pipe, "cpu", torch.float32)
    params = Params(prompt="a road", seed=11, steps=2, width=SIZE, height=SIZE)
    calls = []
    handle = renderer.controlnets.nets["sketch"].register_forward_hook(lambda *a: calls.append(1))
    try:
        off = controlled(params, sketch={"scale": 0.0})
        assert np.array_equal(renderer.render(off).pixels, bare.render(params).pixels)
        assert calls == []
    finally:
        handle.remove()


def test_features_computed_once_per_content_size_and_preprocess(renderer):
    image = picture(9, 80, 48)
    params = controlled(Params(prompt="a hill", width=SIZE, height=SIZE), sketch={"scale": 1.0})
    before = renderer.adapter_features.computed
    a = renderer.render(params, Scene(controls=(("sketch", image),))).pixels
    # A new seed, scale and window, the same content in another buffer: the cached features.
    renderer.render(params.merged({"seed": 4, "controls": (("sketch", (("scale", 0.5), ("end", 0.5))),)}),
                    Scene(controls=(("sketch", InputImage.from_pixels(image.pixels.copy())),)))
    assert renderer.adapter_features.computed == before + 1
    b = renderer.render(controlled(params, sketch={"preprocess": "canny"}), Scene(controls=(("sketch", image),))).pixels
    assert renderer.adapter_features.computed == before + 2 and not np.array_equal(a, b)


def test_a_size_off_the_adapters_grid_renders(renderer):
    """72 px is not a multiple of the adapter's 16: the control image is scaled to 80 and the
    feature maps get the UNet's ceil shapes."""
    assert adapter_size(72, 64, 16) == (80, 64)
    params = controlled(Params(prompt="a hill", seed=1, width=72, height=64), sketch={"scale": 1.0})
    steered = renderer.render(params, Scene(controls=(("sketch", picture(10)),))).pixels
    assert steered.shape == (64, 72, 4)
    assert not np.array_equal(steered, renderer.render(controlled(params, sketch={"scale": 0.0})).pixels)


def test_refusals_name_what_fits(renderer, tmp_path):
    from diffusers import T2IAdapter

    unet = dict(renderer.pipe.unet.config)
    with pytest.raises(ConfigError, match="does not fit the model's UNet"):
        load_controlnet(ControlNetSpec("big", "random-t2i"), unet, "cpu", torch.float32)
    folder = tmp_path / "sd15-adapter"
    T2IAdapter(channels=[32, 64], num_res_blocks=1, adapter_type="full_adapter").save_pretrained(folder)
    with pytest.raises(ConfigError, match="full_adapter_xl"):
        load_controlnet(ControlNetSpec("old", str(folder)), unet, "cpu", torch.float32)
    xl = tmp_path / "xl-adapter"
    T2IAdapter(channels=[32, 64], num_res_blocks=1, downscale_factor=16,
               adapter_type="full_adapter_xl").save_pretrained(xl)
    net = load_controlnet(ControlNetSpec("folder", str(xl)), unet, "cpu", torch.float32)
    assert isinstance(net, T2IAdapter)  # the kind is read from the folder's config


async def test_demo_daemon_steers_with_a_demo_adapter_over_rest_and_osc(config, daemon_factory):
    """The live path end to end: a PNG PUT to /v1/control/sketch, the scale over OSC
    /bridge/control, scale 0 over REST gives back exactly the plain frame."""
    import asyncio

    import aiohttp

    from bridge.client import osc_message
    from control_calls import patch, put, rendered
    from uploads import encoded, rgba

    async with daemon_factory(config, controlnets=(ControlNetSpec("sketch", "demo-t2i"),)) as daemon:
        assert daemon.health()["t2i_adapters"] == ["sketch"]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            plain = await daemon.scheduler.next_frame(0, 60)
            status, _ = await put(session, "sketch", encoded(rgba(64, 64), "PNG"), "image/png")
            assert status == 200
            before = daemon.scheduler.version
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                               remote_addr=("127.0.0.1", daemon.osc_port))
            try:
                transport.sendto(osc_message("/bridge/control", "sketch", 1.0))

                async def applied():
                    while not daemon.scheduler.params.controls:
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(applied(), 60)
            finally:
                transport.close()
            assert daemon.scheduler.version > before
            steered = await rendered(daemon, daemon.scheduler.version)
            assert not np.array_equal(plain.pixels, steered.pixels)
            status, body = await patch(session, {"controls": {"sketch": 0}})
            off = await rendered(daemon, body["version"])
            assert np.array_equal(plain.pixels, off.pixels)


def test_adapter_frames_render_alone_across_channels(renderer):
    """Channels batch frames of one shape; the batched graph carries no adapter features, so a
    frame a T2I-Adapter steers renders alone, as a ControlNet's does."""
    from bridge.pipeline.render.batch import ChannelRenderer

    channels = ChannelRenderer(renderer)
    params = Params(prompt="a lake", width=SIZE, height=SIZE)
    assert channels.batch_key(params, Scene()) is not None
    steered = controlled(params, sketch={"scale": 1.0})
    assert channels.batch_key(steered, Scene(controls=(("sketch", picture(12)),))) is None
    solo = channels.render_batch([("left", steered, Scene(controls=(("sketch", picture(12)),)))])[0].pixels
    assert np.array_equal(solo, renderer.render(steered, Scene(controls=(("sketch", picture(12)),))).pixels)
