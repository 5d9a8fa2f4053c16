"""GPU check of ``serve --warm-channels`` (opt-in: ``python -m pytest -m gpu``; needs CUDA): a compiled
daemon's start-up captures the batch graphs of up to N channels, so real rounds of 2, 3 and 4 channels,
with new prompts and with cached ones, capture nothing while the channels wait."""

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from bridge.core.scene import Scene  # noqa: E402


@pytest.mark.parametrize("overlap", [False, True], ids=["overlap-off", "overlap-on"])
def test_the_start_up_captures_every_batch_graph_of_up_to_n_channels(cache_dir, overlap):
    from bridge.app import load_renderer
    from bridge.config import Config

    initial = Params(prompt="a lighthouse at dusk", seed=7, width=64, height=64)
    config = Config(model="demo", device="cuda", compile="on", cache_dir=cache_dir, initial=initial,
                    overlap=overlap, batch_vae="tiny", warm_channels=4)
    channels, info = load_renderer(config)
    assert info["startup_s"]["warm_batches"] > 0
    warmed = channels.inner.graph_keys
    assert {key[1] for key in warmed if key[0] == "batch"} == {2, 4}
    for n in (2, 3, 4):
        items = [(f"ch{i}", initial.merged({"prompt": f"a new prompt for {n}, {i}", "seed": i}), Scene())
                 for i in range(n)]
        for _ in ("new prompts", "cached"):
            frames = channels.begin_batch(items).result()
            assert len(frames) == n and all(frame.pixels.shape == (64, 64, 4) for frame in frames)
    assert channels.inner.graph_keys == warmed
