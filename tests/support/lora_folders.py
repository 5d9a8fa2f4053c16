"""Stand-ins for a device's LoRA folder (``bridge.engine.loras.Catalog``), for daemons whose null
renderer has no model to fold LoRAs into: which names exist, and every load noted."""

from __future__ import annotations

from bridge.core.errors import ValidationError


class NotedFolder:
    """A folder of ``names``; ``load`` notes each name it reads and refuses an unknown one, as
    ``LoraCatalog.load`` does (a ``ValidationError`` on field ``loras``)."""

    folder = "stand-in"

    def __init__(self, names=("ink", "oil")):
        self.names = frozenset(names)
        self.loaded: list[str] = []
        self.pinned: frozenset[str] = frozenset()  # what the LoRA gate says the channels use now

    def ready(self, names) -> bool:
        return all(name in self.loaded for name in names)

    def load(self, name: str) -> None:
        if name not in self.names:
            raise ValidationError("loras", f"unknown LoRA {name!r} (found: {', '.join(sorted(self.names))})")
        self.loaded.append(name)

    def scan(self) -> list:
        return []

    def pin(self, names) -> None:
        self.pinned = frozenset(names)
