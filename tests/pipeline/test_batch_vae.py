"""``--batch-vae tiny`` on the demo model (CPU): a batch of several channels' frames decodes with the
family's tiny VAE, a single frame keeps the pipeline's own; ``same`` is the batch as before.

Each renderer has its own pipeline: the tiling flags live in the shared modules' convolutions, and a
renderer only resets those it set itself. References are exact on the CPU: the same latents through
the same decoder at the same batch size give the same pixels (the GPU path: test_gpu_overlap.py)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.errors import ConfigError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Scene  # noqa: E402


def channel_renderer(cache_dir, overlapped=False, vae="full", batch_vae=None):
    """A ChannelRenderer (or OverlappedRenderer) on its own demo pipeline: ``vae`` its decoder (``--vae``),
    ``batch_vae`` "tiny" a second, tiny autoencoder for batches (``--batch-vae tiny`` beside the full VAE)."""
    from bridge.pipeline.loading.loader import load_pipeline, load_tiny_vae
    from bridge.pipeline.render.batch import ChannelRenderer
    from bridge.pipeline.render.overlapped import OverlappedRenderer
    from bridge.pipeline.render.renderer import DiffusersRenderer

    def tiny():  # the demo's random-weight tiny VAE: the same weights on every build
        return load_tiny_vae("tiny", "demo", "cpu", torch.float32)

    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir, vae=tiny() if vae == "tiny" else None)
    inner = DiffusersRenderer(pipe, "cpu", torch.float32, batch_vae=tiny() if batch_vae == "tiny" else None)
    return (OverlappedRenderer if overlapped else ChannelRenderer)(inner)


@pytest.fixture(scope="module")
def renderers(cache_dir):
    """same: today's; batched_tiny: --batch-vae tiny; overlapped: the same with --overlap on;
    tiny: --vae tiny (the reference of a tiny-decoded batch: the same UNet, the tiny VAE as its decoder)."""
    return {"same": channel_renderer(cache_dir), "batched_tiny": channel_renderer(cache_dir, batch_vae="tiny"),
            "overlapped": channel_renderer(cache_dir, overlapped=True, batch_vae="tiny"),
            "tiny": channel_renderer(cache_dir, vae="tiny")}


def items(n, **more):
    return [(f"ch{i}", Params(prompt=f"channel {i}", seed=13 * i + 5, width=64, height=64, **more), Scene())
            for i in range(n)]


def pixels(rendered) -> list[np.ndarray]:
    return [r.pixels for r in rendered]


def latents_of(renderer, batch) -> torch.Tensor:
    with torch.inference_mode():
        return renderer.device_frames(batch, decode=False)


def decoded(decoder, latents) -> list[np.ndarray]:
    with torch.inference_mode():
        return list(decoder.decode(latents).numpy())


def mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_a_batch_decodes_each_row_with_the_tiny_decoder(renderers):
    batch = items(2)
    got = pixels(renderers["batched_tiny"].render_batch(batch))
    # the batch's latents (the same renderer again: eager, its prompt cache holds the rows' embeddings), decoded
    # by the --vae tiny pipeline's own decoder (another build of the same weights)
    latents = latents_of(renderers["batched_tiny"], batch)
    want = decoded(renderers["tiny"].inner.parts.decoder, latents)
    assert len(got) == 2 and all(np.array_equal(g, w) for g, w in zip(got, want))
    assert all(np.array_equal(g, w) for g, w in zip(got, pixels(renderers["tiny"].render_batch(batch))))
    full = decoded(renderers["same"].inner.parts.decoder, latents)
    assert all(mean_levels(g, f) > 8 for g, f in zip(got, full))  # not the full VAE's frames


def test_a_single_frame_keeps_the_full_vae(renderers):
    # a prompt no batch encoded: a batch's text encoders round its rows' embeddings a little differently (CPU)
    item = [("alone", Params(prompt="a channel alone", seed=9, width=64, height=64), Scene())]
    want = renderers["same"].render_batch(item)[0].pixels
    assert np.array_equal(renderers["batched_tiny"].render_batch(item)[0].pixels, want)
    assert np.array_equal(renderers["overlapped"].begin_batch(item).result()[0].pixels, want)
    assert mean_levels(renderers["tiny"].render_batch(item)[0].pixels, want) > 8  # the tiny VAE's frame is another


def test_same_decodes_a_batch_with_the_full_vae_as_before(renderers):
    same, batch = renderers["same"], items(3)  # padded to four rows, the last dropped
    latents = latents_of(same, batch)
    assert latents.shape[0] == 4
    want = decoded(same.inner.parts.decoder, latents)[:3]
    got = pixels(same.render_batch(batch))
    assert len(got) == 3 and all(np.array_equal(g, w) for g, w in zip(got, want))
    assert same.inner.batch_decoder is same.inner.parts.decoder


def test_the_overlapped_batch_decodes_with_the_tiny_decoder(renderers):
    batch = items(3)
    want = pixels(renderers["tiny"].render_batch(batch))
    got = pixels(renderers["overlapped"].begin_batch(batch).result())
    assert len(got) == 3 and all(np.array_equal(g, w) for g, w in zip(got, want))


def test_a_tiled_batch_wraps_through_the_tiny_decoder_too(renderers):
    """The tiny decoder's convolutions follow the frame's tiling as the pipeline's own decoder's do: the
    reference's tiny VAE is its pipeline's decoder, tiled with it."""
    batch = items(2, tiling="xy")
    want = pixels(renderers["tiny"].render_batch(batch))
    assert all(np.array_equal(g, w) for g, w in zip(pixels(renderers["batched_tiny"].render_batch(batch)), want))
    untiled = pixels(renderers["tiny"].render_batch(items(2)))
    assert all(mean_levels(w, u) > 1 for w, u in zip(want, untiled))  # the tiling changed the frames


def test_a_family_without_a_tiny_decoder_refuses_it_in_one_line(cache_dir):
    from bridge.app import load_renderer
    from bridge.config import Config

    with pytest.raises(ConfigError) as info:
        load_renderer(Config(model="demo-sana", cache_dir=cache_dir, compile="off", device="cpu",
                             initial=Params(width=64, height=64), batch_vae="tiny"))
    message = str(info.value)
    assert message.startswith("--batch-vae tiny: the sana family") and message.endswith("use --batch-vae same")
    assert "\n" not in message


@pytest.mark.parametrize("model, vae, extra", [("demo", "full", True), ("demo", "tiny", False),
                                               ("demo-sdxs", "full", False)])  # SDXS-512's own VAE is a tiny one
def test_the_daemons_renderer_loads_a_tiny_decoder_only_beside_a_full_vae(cache_dir, model, vae, extra):
    from bridge.app import load_renderer
    from bridge.config import Config

    renderer, info = load_renderer(Config(model=model, cache_dir=cache_dir, compile="off", device="cpu",
                                          initial=Params(width=64, height=64), vae=vae, batch_vae="tiny"))
    inner = renderer.inner
    assert info["batch_vae"] == "tiny" and info["vae"] == vae
    assert (inner.batch_decoder is not inner.parts.decoder) is extra
    assert type(inner.batch_decoder.module).__name__ == "AutoencoderTiny"


def test_a_tiny_vae_loaded_apart_from_the_pipeline_owns_its_weights_on_the_cpu(tmp_path):
    """--batch-vae tiny's decoder is no module of the pipeline, whose loader copies its modules out of the
    files' mapped pages on the CPU (test_families.py): ``load_tiny_vae`` copies its own, aligned as theirs
    are (the CPU's kernels round by alignment), and a file replaced on disk leaves them as they were."""
    from bridge.pipeline.loading.demo import build_tiny_vae
    from bridge.pipeline.loading.loader import load_tiny_vae

    build_tiny_vae(torch.float32, "cpu").save_pretrained(tmp_path)
    vae = load_tiny_vae(str(tmp_path), "demo", "cpu", torch.float32)
    weights = [*vae.parameters(), *vae.buffers()]
    assert weights and all(t.data_ptr() % 64 == 0 for t in weights)
    before = {n: t.clone() for n, t in vae.state_dict().items()}
    for file in tmp_path.rglob("*.safetensors"):
        file.write_bytes(b"\0" * file.stat().st_size)
    assert all(torch.equal(before[n], t) for n, t in vae.state_dict().items())


async def test_health_says_which_decoder_batches_take(config, daemon_factory):
    for batch_vae in ("same", "tiny"):
        async with daemon_factory(config, batch_vae=batch_vae) as daemon:
            assert daemon.health()["batch_vae"] == batch_vae
