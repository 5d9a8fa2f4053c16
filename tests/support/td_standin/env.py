"""The TouchDesigner process: /project1, the frame loop, callbacks and the script globals.

``run_frame()`` is one TouchDesigner frame on the main thread: OSC In DATs deliver what
arrived, Execute DATs get onFrameStart, Parameter Execute DATs get the frame's parameter
changes (one ``onValueChange(par, val, prev)`` per changed parameter, the arguments of the
documented callback template, "called once each frame") and pulses, then onFrameEnd; last,
the Script TOPs whose cook read something that changed since cook again (TouchDesigner
re-cooks an operator when what it depends on changes; here every such TOP counts as viewed,
so it cooks the same frame).
"""

from __future__ import annotations

import fnmatch
import threading
import types

from . import ops, osc, tops
from .pars import _MAIN, TdError

OP_TYPES = {cls.__name__: cls for cls in (ops.baseCOMP, ops.scriptTOP, ops.outTOP, ops.moviefileinTOP, tops.selectTOP,
                                          tops.fitTOP, ops.textDAT, ops.tableDAT, ops.executeDAT,
                                          ops.parameterexecuteDAT, osc.oscoutDAT, osc.oscinDAT)}


class TouchDesigner:
    def __init__(self):
        _MAIN["thread"] = threading.get_ident()
        self.absTime = types.SimpleNamespace(frame=0, seconds=0.0)
        self._ops: list[ops.OP] = []
        self._events: dict[tuple, tuple] = {}  # (kind, par id) -> (kind, par, prev, serial), this frame
        self._serial = 0  # orders creations and parameter events
        self._cooking: list = []  # the operators cooking now, innermost last
        self._readers: dict[tuple, set] = {}  # ("par"|"dat", id) -> operators whose last cook read it
        self._dirty: dict[int, object] = {}  # id -> operator to cook again at the end of the frame
        self.root = ops.baseCOMP(self, None, "")
        self.root.children_by_name = {}
        self.project = self.root.create(ops.baseCOMP, "project1")

    # -- globals ---------------------------------------------------------------------------
    def script_globals(self, me) -> dict:
        """What a DAT's module sees: me, op() relative to me, parent(), root, absTime, the OP types."""
        return {"me": me, "op": me.op, "parent": me.parent, "root": self.root, "absTime": self.absTime,
                "tdError": TdError, "debug": print, **OP_TYPES}

    def textport(self, code: str, **variables) -> dict:
        """Run code as the Textport does (op() from the root); returns its globals."""
        namespace = {**self.script_globals(self.root), **variables}
        exec(compile(code, "<textport>", "exec"), namespace)
        return namespace

    # -- dependencies: what a cook reads makes it cook again when it changes ----------------
    def _read(self, key: tuple) -> None:
        if self._cooking:
            node = self._cooking[-1]
            self._readers.setdefault(key, set()).add(node)
            node._reads.add(key)

    def _changed(self, key: tuple) -> None:
        for node in self._readers.get(key, ()):
            self._dirty[node.id] = node

    def _begin_cook(self, node) -> None:
        for key in node._reads:
            self._readers.get(key, set()).discard(node)
        node._reads = set()
        self._dirty.pop(node.id, None)
        self._cooking.append(node)

    def _end_cook(self, node) -> None:
        self._cooking.pop()

    def _cook_dirty(self) -> None:
        dirty, self._dirty = list(self._dirty.values()), {}
        for node in dirty:
            if node.valid:
                node.cook()

    # -- events ----------------------------------------------------------------------------
    def _created(self, node) -> None:
        self._serial += 1
        node._serial = self._serial
        self._ops.append(node)

    def _par_event(self, kind: str, par, prev) -> None:
        key = (kind, id(par))
        if kind == "valuechange" and key in self._events:
            prev = self._events[key][2]  # one call a frame, from the first previous value
        self._serial += 1
        self._events[key] = (kind, par, prev, self._serial)

    def _live(self, cls) -> list:
        return [node for node in self._ops if isinstance(node, cls) and node.valid and node.par.active.eval()]

    def _call(self, dat, name: str, *args) -> None:
        function = getattr(dat.module, name, None)
        if function is not None:
            function(*args)

    def _dispatch_par_events(self) -> None:
        events, self._events = list(self._events.values()), {}
        watchers = self._live(ops.parameterexecuteDAT)
        for kind, par, prev, serial in events:
            for dat in watchers:
                if dat._serial > serial or par.owner is not dat.par.op.eval():  # made after the change
                    continue
                if not (dat.par.custom.eval() if par.isCustom else dat.par.builtin.eval()):
                    continue
                if not any(fnmatch.fnmatchcase(par.name, p) for p in dat.par.pars.eval().split()):
                    continue
                if kind == "valuechange" and dat.par.valuechange.eval():
                    self._call(dat, "onValueChange", par, par._val, prev)  # (par, val, prev): the template
                elif kind == "pulse" and dat.par.onpulse.eval():
                    self._call(dat, "onPulse", par)

    # -- the frame loop --------------------------------------------------------------------
    def start(self) -> None:
        """The project opened: Execute DATs with Start on get onStart()."""
        for dat in self._live(ops.executeDAT):
            if dat.par.start.eval():
                self._call(dat, "onStart")

    def run_frame(self) -> None:
        self.absTime.frame += 1
        self.absTime.seconds = self.absTime.frame / 60.0
        for dat in self._live(osc.oscinDAT):
            dat._pump()
        for dat in self._live(ops.executeDAT):
            if dat.par.framestart.eval():
                self._call(dat, "onFrameStart", self.absTime.frame)
        self._dispatch_par_events()
        for dat in self._live(ops.executeDAT):
            if dat.par.frameend.eval():
                self._call(dat, "onFrameEnd", self.absTime.frame)
        self._cook_dirty()

    def exit(self) -> None:
        """Quit: Execute DATs with Exit on get onExit(); sockets close."""
        for dat in self._live(ops.executeDAT):
            if dat.par.exit.eval():
                self._call(dat, "onExit")
        for node in self._ops:
            if isinstance(node, (osc.oscinDAT, osc.oscoutDAT)):
                node.close()
        _MAIN["thread"] = None
