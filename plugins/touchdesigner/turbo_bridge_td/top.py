"""Script TOP callbacks: the daemon's newest frame into the TOP.

The frame-start Execute DAT forces a cook when the source has a new frame (one 8-byte load of
the shared-memory seq, or a flag set by the HTTP worker). Every cook copies the newest frame
taken, also a cook TouchDesigner starts for its own reasons: no documentation says a Script TOP
keeps its texture through a cook that does not call ``copyNumpyArray`` (a 512x512 copy is cheap).
``onCook`` reads no table and writes none, so it never makes itself cook again.
"""

from __future__ import annotations

from .session import session_for


def on_setup_parameters(script_op) -> None:
    """The TOP's own page: which control COMP drives it (empty: the COMP it sits in)."""
    page = script_op.appendCustomPage("Bridge")
    page.appendCOMP("Control", label="Control COMP (empty: parent)")  # Par.help is read-only in TD


def control_comp(script_op):
    pars = script_op.customPars
    comp = script_op.par.Control.eval() if any(p.name == "Control" for p in pars) else None
    return comp if comp is not None else script_op.parent()


def on_cook(script_op) -> None:
    session_for(control_comp(script_op)).cook(script_op)
