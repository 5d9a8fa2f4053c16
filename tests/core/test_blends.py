"""Prompt blends and seed blends: exact ends, cached embeddings, the same validation everywhere."""

import aiohttp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.core.params import Params  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.noise import seed_noise, slerp  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from conftest import null_factory  # noqa: E402


@pytest.fixture(scope="module")
def renderer(cache_dir):
    return DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)


BASE = Params(prompt="a cat", seed=11, seed2=12, width=64, height=64)


def render(renderer, **changes):
    return renderer.render(BASE.merged(changes)).pixels


def test_prompt_blend_weights_one_and_zero_equal_the_pure_prompts(renderer):
    cat, lion = render(renderer, prompt="a cat"), render(renderer, prompt="a lion")
    assert np.array_equal(render(renderer, prompt=(("a cat", 1.0), ("a lion", 0.0))), cat)
    assert np.array_equal(render(renderer, prompt=(("a cat", 0.0), ("a lion", 3.0))), lion)  # weights are relative
    middle = render(renderer, prompt=(("a cat", 0.5), ("a lion", 0.5)))
    assert not np.array_equal(middle, cat) and not np.array_equal(middle, lion)


def test_blend_embeddings_are_the_weighted_sum(renderer):
    (cat, cat_pooled), (lion, lion_pooled) = renderer.embeddings("a cat"), renderer.embeddings("a lion")
    embeds, pooled = renderer.text.conditioning((("a cat", 0.7), ("a lion", 0.3)))
    torch.testing.assert_close(embeds, 0.7 * cat + 0.3 * lion)
    torch.testing.assert_close(pooled, 0.7 * cat_pooled + 0.3 * lion_pooled)


def test_moving_a_weight_runs_no_text_encoder(renderer):
    render(renderer, prompt=(("a red fox", 0.0), ("a snowy field", 1.0)))  # both texts encoded, weight 0 too
    runs = renderer.text_encoder_runs
    for w in (0.1, 0.4, 0.9, 1.0):
        render(renderer, prompt=(("a red fox", w), ("a snowy field", 1 - w)))
    render(renderer, prompt="a red fox")
    assert renderer.text_encoder_runs == runs


def test_seed_mix_ends_equal_the_pure_seeds(renderer):
    assert np.array_equal(render(renderer, seed_mix=1.0), render(renderer, seed=12))
    assert np.array_equal(render(renderer, seed_mix=0.0), render(renderer))
    middle = render(renderer, seed_mix=0.5)
    assert not np.array_equal(middle, render(renderer)) and not np.array_equal(middle, render(renderer, seed=12))
    assert np.array_equal(middle, render(renderer, seed_mix=0.5))


def test_slerp_is_exact_at_its_ends_and_keeps_the_norm():
    a, b = seed_noise(1, 2, (1, 4, 16, 16)), seed_noise(2, 2, (1, 4, 16, 16))
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    for t in (0.25, 0.5, 0.75):
        mixed = slerp(a, b, t)
        for i in range(2):  # each draw stays on the sphere between its ends (a straight mix would shrink it)
            low, high = sorted((float(a[i].norm()), float(b[i].norm())))
            assert 0.99 * low <= float(mixed[i].norm()) <= 1.01 * high
    assert torch.equal(slerp(a, a, 0.3), a * 0.7 + a * 0.3)  # parallel: a straight mix, no division by ~0


def test_long_text_inside_a_blend_warns(renderer):
    assert renderer.prompt_warnings("a very long prompt " * 30)
    from bridge.engine.scheduler import Scheduler

    sched = Scheduler(renderer, None)
    applied = sched.apply({"prompt": [["a cat", 1], ["a very long prompt " * 30, 1]]})
    assert len(applied.warnings) == 1 and "CLIP reads 77" in applied.warnings[0]


@pytest.mark.parametrize("change,needle", [
    ({"prompt": [["a cat", -0.5]]}, "finite weight >= 0"),
    ({"prompt": [["a cat", 0]]}, "needs a weight above 0"),
    ({"prompt": [["a cat", 1e308], ["a dog", 1e308]]}, "add up past the largest number"),  # issue 24
    ({"negative_prompt": [["blur", 1e308], ["noise", 1e308]]}, "add up past the largest number"),
    ({"seed_mix": 2}, "seed_mix must be a number from 0"),
])
async def test_rest_and_websocket_validate_blends_alike(config, daemon_factory, change, needle):
    async with daemon_factory(config, renderer_factory=null_factory) as daemon:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.http_port}") as session:
            async with session.patch("/v1/params", json=change) as r:
                assert r.status == 400
                rest_error = await r.json()
            assert needle in rest_error["error"]["message"]
            async with session.ws_connect("/v1/ws") as ws:
                await ws.send_json({"params": change})
                while (reply := await ws.receive_json())["type"] != "error":
                    pass
            assert reply == {"type": "error", **rest_error}
            async with session.patch("/v1/params", json={"prompt": [["a cat", 0.7], ["a lion", 0.3]]}) as r:
                assert r.status == 200
            async with session.get("/v1/params") as r:
                assert (await r.json())["prompt"] == [["a cat", 0.7], ["a lion", 0.3]]
