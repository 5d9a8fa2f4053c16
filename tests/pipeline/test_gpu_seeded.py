"""GPU checks of seeded random-weight builds (opt-in: ``python -m pytest -m gpu``; needs CUDA): weights
built on the GPU draw from its generator, which ``seeded_init`` seeds and restores as it does the CPU's."""

import threading

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.pipeline.loading.demo import DEMO_UNET, build_tiny_vae  # noqa: E402
from bridge.pipeline.loading.seeded import seeded_init  # noqa: E402
from bridge.pipeline.steering.controlnet import build_random_controlnet  # noqa: E402


def test_the_devices_generator_is_seeded_and_restored():
    torch.cuda.manual_seed(1234)
    before = torch.cuda.get_rng_state()
    with seeded_init(7, "cuda"):
        inside = torch.rand(5, device="cuda")
    assert torch.equal(inside, torch.rand(5, device="cuda", generator=torch.Generator("cuda").manual_seed(7)))
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_builds_on_two_threads_at_once_get_the_weights_of_a_build_alone():
    def net():
        return build_random_controlnet(DEMO_UNET, 3, torch.float16, "cuda")

    def tiny():
        return build_tiny_vae(torch.float16, "cuda")

    alone = {"net": net().state_dict(), "tiny": tiny().state_dict()}
    start = threading.Barrier(2)
    built = {}

    def build(name, make):
        start.wait()
        built[name] = make().state_dict()

    threads = [threading.Thread(target=build, args=item) for item in (("net", net), ("tiny", tiny))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, expected in alone.items():
        assert built[name].keys() == expected.keys()
        assert all(torch.equal(built[name][key], expected[key]) for key in expected), name
