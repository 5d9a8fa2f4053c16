"""The renderer contract on SDXS-512 (the demo-sdxs model, CPU): the sd2 family with a pruned UNet
and a tiny decoder."""

import pytest

pytest.importorskip("torch")

from contract import DemoFamilyContract  # noqa: E402


class TestSdxsContract(DemoFamilyContract):
    model, family = "demo-sdxs", "sd2"
