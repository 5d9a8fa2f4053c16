"""Issue 31 on two GPUs: two devices' render threads capture and replay their graphs at once without
breaking each other's (opt-in: ``python -m pytest -m gpu``; skipped with fewer than two CUDA devices:
the device kinds ``nvidia-h100-x2`` or ``nvidia-h200-x2``).

One compiled SDXL demo pipeline (512 px) per device, each built on a thread bound to its device, as
``--device all`` builds them (``app/renderers.py``). Reference frames: each renderer alone on its own
device's thread, the other idle. Then both threads at once, every round dropping every graph and
capturing it again, so that captures on one device overlap replays and captures on the other; each
frame must equal its own device's reference bit for bit (``tests/support/graph_threads.py`` says
what a mismatch reports). Last, the same channel on either device: the two devices' references must
agree, as a channel moved between devices expects (cuDNN's benchmark off: ``speed/optimize.Tuning``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bridge.core.params import Params
from graph_threads import Compiles, check, difference, on_threads, render_rounds

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs two CUDA GPUs (issue 31: nvidia-h100-x2 or nvidia-h200-x2)")]

DEVICES = ("cuda:0", "cuda:1")
PARAMS = [Params(prompt=f"a lighthouse, take {i}", seed=i, width=512, height=512) for i in range(3)]
ROUNDS = 5  # each round drops every graph and captures them again, on both devices' threads at once


def on_device(device: str, work):
    """``work()`` on a new thread bound to ``device`` (as the device's render thread is); its result, or its
    exception raised here."""
    from bridge.pipeline.loading.loader import bind_thread

    thread = ThreadPoolExecutor(1, thread_name_prefix=f"on-{device}", initializer=bind_thread, initargs=(device,))
    try:
        return thread.submit(work).result(timeout=900)
    finally:
        thread.shutdown(wait=False)  # a work still running after 900 s fails the test, not hangs it


@pytest.fixture(scope="module")
def renderers(cache_dir):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer
    from bridge.pipeline.speed.optimize import configure_compile_cache

    configure_compile_cache(cache_dir)
    return [on_device(device, lambda device=device: DiffusersRenderer(
        load_pipeline("demo", device, torch.bfloat16, cache_dir), device, torch.bfloat16, compile=True))
        for device in DEVICES]


@pytest.fixture(scope="module")
def want(renderers):
    """Each device's reference frames, rendered alone on its own thread (compiling and capturing every graph)."""
    frames = [on_device(device, lambda r=r: [r.render(p).pixels for p in PARAMS])
              for device, r in zip(DEVICES, renderers)]
    assert not np.array_equal(frames[0][0], frames[0][1])
    return frames


def test_two_devices_threads_capture_and_replay_at_once_and_render_their_own_frames(renderers, want):
    names = [f"render-{i}-{device}" for i, device in enumerate(DEVICES)]
    jobs = {name: (lambda i=i: render_rounds(renderers[i], i, PARAMS, ROUNDS, capture=True))
            for i, name in enumerate(names)}
    with Compiles() as compiles:
        frames, errors = on_threads(jobs, devices=dict(zip(names, DEVICES)))
    assert len(frames) == len(DEVICES) * ROUNDS * 2 * len(PARAMS) or errors
    check("two devices at once", frames, want, compiles, errors, names=DEVICES)


def test_a_channel_renders_the_same_pixels_on_either_device(want):
    found = [f"frame {i}: {d}" for i, (a, b) in enumerate(zip(*want)) if (d := difference(b, a))]
    assert not found, f"{DEVICES[1]} against {DEVICES[0]}: " + "; ".join(found)
