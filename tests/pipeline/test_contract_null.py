"""The renderer contract on its reference implementation, ``NullRenderer`` (no model, no torch)."""

import pytest

from bridge.core.renderer import NullRenderer
from contract import RendererContract


class TestNullRendererContract(RendererContract):
    transitions = False  # nothing kept per stream
    img2img = False  # flat frames: the input is not read

    @pytest.fixture
    def renderer(self):
        return NullRenderer()
