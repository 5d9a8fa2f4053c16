"""The renderer contract on the overlapped renderer (``--overlap on``: each batch begun at the
latents, decoded apart), on the SDXL family's demo model (CPU)."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestOverlappedSdxlContract(DemoFamilyContract):
    model, family, overlap = "demo", "sdxl", True

    def test_the_renderer_is_the_overlapped_one(self, renderer):
        from bridge.pipeline.render.overlapped import OverlappedRenderer

        assert isinstance(renderer, OverlappedRenderer)
