"""Seamless tiling on the demo model: with circular padding the network is translation-equivariant
on the torus (rolling the initial noise by k latent pixels rolls the frame by 8k pixels), without it not."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.errors import ValidationError
from bridge.core.params import Params, parse_changes
from bridge.pipeline.loading.loader import load_pipeline, load_tiny_vae
from bridge.pipeline.render import renderer as renderer_module
from bridge.pipeline.render.renderer import DiffusersRenderer
from bridge.pipeline.render.tiling import Tiling, TilingConv2d

SIZE = 128  # latents of 16 x 16: the demo UNet downsamples once (2), its VAEs scale by 8
K = 2  # latent pixels: a multiple of the UNet's total downsampling


@pytest.fixture(scope="module", params=["full", "tiny"])
def renderer(request, cache_dir):
    vae = None if request.param == "full" else load_tiny_vae("tiny", "demo", "cpu", torch.float32)
    made = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir, vae=vae), "cpu", torch.float32)
    made.frames = {}  # (tiling, shift) -> frame: each rendered once per module (CPU time)
    return made


def render(renderer, monkeypatch, tiling: str, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A frame whose noise is the seed's, rolled by ``shift`` (rows, columns) latent pixels."""
    if (tiling, shift) not in renderer.frames:
        real = renderer_module.frame_noise
        monkeypatch.setattr(renderer_module, "frame_noise",
                            lambda *args: torch.roll(real(*args), shift, dims=(-2, -1)))
        params = Params(prompt="a brick wall", seed=7, width=SIZE, height=SIZE, tiling=tiling)
        renderer.frames[tiling, shift] = renderer.render(params).pixels[..., :3].astype(int)
        monkeypatch.undo()
    return renderer.frames[tiling, shift]


def level_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


@pytest.mark.parametrize("shift", [(0, K), (K, 0), (K, 3 * K)])
def test_xy_tiling_rolls_the_frame_with_the_noise(renderer, monkeypatch, shift):
    base = render(renderer, monkeypatch, "xy")
    moved = render(renderer, monkeypatch, "xy", shift)
    assert base.std() > 3  # a frame with structure, not a flat one (for which any roll is equal)
    assert level_diff(moved, np.roll(base, (8 * shift[0], 8 * shift[1]), axis=(0, 1))) <= 1


def test_without_tiling_the_frame_does_not_roll(renderer, monkeypatch):
    base = render(renderer, monkeypatch, "none")
    moved = render(renderer, monkeypatch, "none", (0, K))
    assert level_diff(moved, np.roll(base, 8 * K, axis=1)) > 8


def test_one_axis_wraps_only_along_that_axis(renderer, monkeypatch):
    base = render(renderer, monkeypatch, "x")
    assert level_diff(render(renderer, monkeypatch, "x", (0, K)), np.roll(base, 8 * K, axis=1)) <= 1
    assert level_diff(render(renderer, monkeypatch, "x", (K, 0)), np.roll(base, 8 * K, axis=0)) > 8


def test_switching_back_gives_the_untiled_pixels(renderer, monkeypatch):
    plain = render(renderer, monkeypatch, "none")
    assert level_diff(render(renderer, monkeypatch, "xy"), plain) > 8
    params = Params(prompt="a brick wall", seed=7, width=SIZE, height=SIZE)
    again = renderer.render(params).pixels[..., :3].astype(int)  # after xy: the flags off, nn.Conv2d's own path
    assert np.array_equal(again, plain)


def test_every_convolution_is_switched():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1)))
    tiling = Tiling([net])
    assert tiling.convolutions == 2 and all(isinstance(m, TilingConv2d) for m in net if not len(list(m.children())))
    assert tiling.set("xy") and not tiling.set("xy") and net[0].tile_x and net[0].tile_y


def test_bad_tiling_values_are_refused():
    assert parse_changes({"tiling": "xy"}) == {"tiling": "xy"}
    for bad in ("XY", "both", 1, None, ["x"]):
        with pytest.raises(ValidationError, match="tiling must be one of none, x, y, xy"):
            parse_changes({"tiling": bad})
