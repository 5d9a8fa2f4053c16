"""Seeded random-weight builds (``loading/seeded.py``): the same seed gives the same weights whichever
thread builds, and the caller's random state is left as it was."""

import threading

import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.loading.demo import DEMO_UNET, build_tiny_vae  # noqa: E402
from bridge.pipeline.loading.seeded import seeded_init  # noqa: E402
from bridge.pipeline.steering.controlnet import build_random_controlnet  # noqa: E402


def test_inside_the_draws_are_the_seeds_and_after_the_callers_state_is_back():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    with seeded_init(7):
        inside = torch.rand(5)
    assert torch.equal(inside, torch.rand(5, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_second_thread_waits_until_the_first_build_is_done():
    """The second thread's seeding would reset the first's sequence mid-build; it waits instead. (It is
    given a moment to barge in; with the lock held it cannot, whatever the timing.)"""
    reference = torch.rand(8, generator=torch.Generator().manual_seed(0))
    entered = threading.Event()

    def other():
        with seeded_init(99):
            entered.set()
            torch.rand(100)

    with seeded_init(0):
        first = torch.rand(4)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.5)
        assert not entered.is_set()
        second = torch.rand(4)
    thread.join()
    assert entered.is_set()
    assert torch.equal(torch.cat([first, second]), reference)


def test_a_build_may_seed_its_parts_inside_its_own():
    with seeded_init(0):
        with seeded_init(1):
            inner = torch.rand(3)
        outer = torch.rand(3)
    assert torch.equal(inner, torch.rand(3, generator=torch.Generator().manual_seed(1)))
    # the inner build restored the outer one's sequence where it left it
    assert torch.equal(outer, torch.rand(3, generator=torch.Generator().manual_seed(0)))


def _weights(module) -> dict:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def test_builds_on_two_threads_at_once_get_the_weights_of_a_build_alone():
    alone = _weights(build_random_controlnet(DEMO_UNET, 3, torch.float32, "cpu"))
    tiny_alone = _weights(build_tiny_vae(torch.float32, "cpu"))
    start = threading.Barrier(2)
    built = {}

    def build(name, make):
        start.wait()
        built[name] = _weights(make())

    threads = [threading.Thread(target=build, args=("net", lambda: build_random_controlnet(DEMO_UNET, 3, torch.float32,
                                                                                            "cpu"))),
               threading.Thread(target=build, args=("tiny", lambda: build_tiny_vae(torch.float32, "cpu")))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, expected in (("net", alone), ("tiny", tiny_alone)):
        assert built[name].keys() == expected.keys()
        assert all(torch.equal(built[name][key], expected[key]) for key in expected), name
