"""The renderer contract on the SANA-Sprint family (the demo-sana model, CPU)."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSanaContract(DemoFamilyContract):
    model, family = "demo-sana", "sana"
