"""The renderer contract on the SD 1.5 family (the demo-sd15 model, CPU)."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSd15Contract(DemoFamilyContract):
    model, family = "demo-sd15", "sd15"
