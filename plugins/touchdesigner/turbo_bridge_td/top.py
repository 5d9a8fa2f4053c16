"""Script TOP callbacks: the daemon's newest frame into the TOP, and only when there is one.

The frame-start Execute DAT forces a cook when the source has a new frame (one 8-byte load of
the shared-memory seq, or a flag set by the HTTP worker); a cook with nothing new copies
nothing and the TOP keeps its last image.
"""

from __future__ import annotations

from .session import session_for


def on_setup_parameters(script_op) -> None:
    """The TOP's own page: which control COMP drives it (empty: the COMP it sits in)."""
    page = script_op.appendCustomPage("Bridge")
    control = page.appendCOMP("Control", label="Control COMP")[0]
    control.help = "The turbo-bridge control COMP whose frames this TOP shows; empty: its parent."


def control_comp(script_op):
    pars = script_op.customPars
    comp = script_op.par.Control.eval() if any(p.name == "Control" for p in pars) else None
    return comp if comp is not None else script_op.parent()


def on_cook(script_op) -> None:
    session_for(control_comp(script_op)).cook(script_op)
