"""The Spout or Syphon sender and receiver of a kind (``link.KINDS``), by name: the one place that
picks the library behind a kind.

``link`` is the contract that ``spout`` and ``syphon`` implement; this module stands above all
three, so the contract never imports what implements it. Importing it loads neither library: each
is imported when a sender or receiver opens.
"""

from __future__ import annotations

from .link import Receiver, Sender
from .spout import SpoutReceiver, SpoutSender
from .syphon import SyphonReceiver, SyphonSender


def sender(kind: str, name: str) -> Sender:
    """A Spout sender or Syphon server of that name, not opened."""
    return SpoutSender(name) if kind == "spout" else SyphonSender(name)


def receiver(kind: str, name: str) -> Receiver:
    """A Spout receiver or Syphon client of the sender of that name, not opened."""
    return SpoutReceiver(name) if kind == "spout" else SyphonReceiver(name)
