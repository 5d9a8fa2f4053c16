"""The renderer contract on the SDXL family (the demo model, CPU)."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSdxlContract(DemoFamilyContract):
    model, family = "demo", "sdxl"
