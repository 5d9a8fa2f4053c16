"""GPU check of ``serve --warm-channels`` (opt-in: ``python -m pytest -m gpu``; needs CUDA): a compiled
daemon's start-up captures the batch graphs of up to N channels, so real rounds of 2, 3 and 4 channels,
with new prompts, cached ones and a mix, capture nothing while the channels wait: neither a batch graph
nor, with ``--overlap on``, a batch's decode graph on the decode stream."""

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from show_rounds import real_rounds  # noqa: E402


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
    decodes = channels.decode_graph_keys if overlap else frozenset()
    assert {key[1][0] for key in decodes if key[0] == "decode-batch"} == ({2, 4} if overlap else set())
    shapes = []

    def render(items):
        frames = channels.begin_batch(items).result()
        shapes.append({frame.pixels.shape for frame in frames} if len(frames) == len(items) else None)

    real_rounds(render, initial)
    assert shapes == [{(64, 64, 4)}] * 9
    assert channels.inner.graph_keys == warmed
    assert (channels.decode_graph_keys if overlap else frozenset()) == decodes
