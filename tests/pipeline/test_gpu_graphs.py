"""Issue 31 on one GPU: two render threads capture and replay their frame graphs at the same time,
while a third thread places LoRA-like tensors on the device (allocations, copies, synchronisation),
and neither thread's captures nor frames are disturbed (opt-in: ``python -m pytest -m gpu``).

In CUDA's global capture mode this breaks (another thread's cudaMalloc or sync during a capture
invalidates it, and torch.cuda.graph empties every device's allocator cache on entry); the frame
graphs capture thread-locally, on their own stream, without emptying caches (speed/graphs.py), and
no lock is taken between the threads.
"""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402

ROUNDS = 6  # each round drops every graph and captures them again, on both threads at once


@pytest.fixture(scope="module")
def two_renderers(cache_dir):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    configure_compile_cache(cache_dir)
    return [DiffusersRenderer(load_pipeline(model, "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                              compile=True) for model in ("demo", "demo-sd")]


def test_two_threads_capture_and_replay_at_once_without_breaking_each_other(two_renderers):
    from bridge.pipeline.steering.lora_fold import _moved

    params = [[Params(prompt=f"{name}, take {i}", seed=i, width=512, height=512) for i in range(3)]
              for name in ("a lighthouse", "a castle")]
    # Reference frames, one thread at a time (compiles both models, captures their graphs).
    want = [[r.render(p).pixels for p in ps] for r, ps in zip(two_renderers, params)]
    assert not np.array_equal(want[0][0], want[0][1])

    start, stop = threading.Barrier(3), threading.Event()
    failures: list[str] = []
    placed = [0]

    def render(index: int) -> None:
        renderer = two_renderers[index]
        try:
            torch.cuda.set_device(0)
            start.wait(60)
            for round_no in range(ROUNDS):
                renderer.runner.forget_graphs()  # every frame below captures its graph again (same streams, pool)
                for i, p in enumerate(params[index]):
                    # a prompt seen before: the cached-embeddings graph; the first of a round after the
                    # cache's eviction below: the with-text graph
                    got = renderer.render(p).pixels
                    if not np.array_equal(got, want[index][i]):
                        failures.append(f"renderer {index}, round {round_no}, frame {i}: other pixels")
                renderer.text.clear()  # the next round's first frames run the text encoders again
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread that raised it
            failures.append(f"renderer {index}: {type(exc).__name__}: {exc}")

    def loader() -> None:  # what the LoRA loader thread does, concurrently, with no lock
        try:
            start.wait(60)
            while not stop.is_set():
                host = [torch.randn(64, 1280) for _ in range(8)]
                moved = _moved(host, torch.device("cuda"))
                assert all(torch.equal(m.cpu(), h) for m, h in zip(moved, host))
                placed[0] += 1
        except Exception as exc:  # noqa: BLE001
            failures.append(f"loader: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=render, args=(i,), name=f"gpu-test-{i}") for i in range(2)]
    side = threading.Thread(target=loader, name="lora-loader-test")
    for t in (*threads, side):
        t.start()
    for t in threads:
        t.join(600)
    stop.set()
    side.join(60)
    assert not failures, failures
    assert placed[0] > 0  # the loader ran while the renderers captured
    torch.cuda.synchronize()
