"""The renderer contract on the SANA-Sprint family (the demo-sana model, CPU), also with --overlap on."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSanaContract(DemoFamilyContract):
    model, family = "demo-sana", "sana"


class TestOverlappedSanaContract(DemoFamilyContract):
    """--overlap on: each batch begun at the latents, decoded apart."""

    model, family, overlap = "demo-sana", "sana", True
