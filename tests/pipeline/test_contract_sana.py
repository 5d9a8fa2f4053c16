"""The renderer contract on the SANA-Sprint family (the demo-sana model, CPU), also with --overlap on."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSanaContract(DemoFamilyContract):
    model, family, guidance_mode = "demo-sana", "sana", "embedded"  # one row, whatever the guidance


class TestOverlappedSanaContract(DemoFamilyContract):
    """--overlap on: each batch begun at the latents, decoded apart."""

    model, family, guidance_mode, overlap = "demo-sana", "sana", "embedded", True
