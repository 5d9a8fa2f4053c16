"""The frame's noise (render/noise.py): the last seeds' draws are kept and shared, so no frame may
write into them."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Glide, InputImage, Scene  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.noise import frame_noise, seed_noise  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402


def fresh(seed: int, draws: int, shape: tuple[int, ...]) -> torch.Tensor:
    return seed_noise.__wrapped__(seed, draws, shape)


def test_a_kept_seed_gives_the_same_draws_as_a_new_generator():
    a = seed_noise(5, 2, (1, 4, 8, 8))
    assert seed_noise(5, 2, (1, 4, 8, 8)) is a and torch.equal(a, fresh(5, 2, (1, 4, 8, 8)))
    assert not torch.equal(seed_noise(6, 2, (1, 4, 8, 8)), a)
    mixed = frame_noise(Params(seed=5, seed2=6, seed_mix=0.5), 2, (1, 4, 8, 8))
    assert torch.equal(seed_noise(5, 2, (1, 4, 8, 8)), fresh(5, 2, (1, 4, 8, 8)))  # slerp wrote nothing
    assert not torch.equal(mixed, a)


def test_frames_leave_the_kept_draws_as_drawn(cache_dir):
    """Text-to-image, image-to-image, a seed blend and a glide: the kept draws afterwards are a fresh
    generator's, and the same frame again has the same pixels."""
    renderer = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    p = Params(prompt="a lighthouse", seed=3, width=64, height=64, steps=2)
    image = InputImage.from_pixels(np.random.default_rng(1).integers(0, 256, (64, 64, 4), np.uint8))
    first = renderer.render(p).pixels
    renderer.render(p.merged({"strength": 0.5}), Scene(image))
    renderer.render(p.merged({"seed2": 4, "seed_mix": 0.3}))
    renderer.render(p.merged({"prompt": "a castle"}), Scene(glide=Glide(token=1, t=0.5)))
    plans = [renderer.plan(p, Scene()), renderer.plan(p.merged({"strength": 0.5}), Scene(image))]
    for plan in plans:
        shape = tuple(renderer.latent_shape(plan))
        for seed in (3, 4):
            assert torch.equal(seed_noise(seed, plan.draws, shape), fresh(seed, plan.draws, shape))
    assert np.array_equal(renderer.render(p).pixels, first)
