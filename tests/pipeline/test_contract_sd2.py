"""The renderer contract on the SD 2.x family (the demo-sd model, CPU)."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSd2Contract(DemoFamilyContract):
    model, family = "demo-sd", "sd2"
