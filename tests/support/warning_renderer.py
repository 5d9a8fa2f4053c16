"""A null renderer that warns about every prompt (as a CLIP family warns about a cut one) and keeps
the prompts it was asked about: whether a path finds prompt warnings, and for which prompts."""

from bridge.core.renderer import NullRenderer


class WarningRenderer(NullRenderer):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def prompt_warnings(self, prompt: str) -> list[str]:
        self.asked.append(prompt)
        return [f"cut: {prompt}"]
