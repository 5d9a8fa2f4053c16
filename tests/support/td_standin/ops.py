"""Operators: OP, COMP (op(), create()), DATs (tables, text, modules) and TOPs (Script TOP).

Checked against derivative.ca: OP Class, COMP Class, DAT Class, Cell Class, Script TOP and
scriptTOP Class, TOP Class, Connector Class. ``scriptTOP.copyNumpyArray`` accepts a numpy array
of uint8, uint16 or float32 shaped (height, width, channels) with 3 or 4 channels (the Script TOP
page: "The source can be 3 or 4 channels"), during the TOP's cook (or with Modify Outside of
Cook on), from the main thread. A Script TOP cook that copies nothing leaves no image: no page
says the texture is kept, so the stand-in assumes it is not.
"""

from __future__ import annotations

import itertools
import re
import types

import numpy as np

from .pars import Page, Par, ParCollection, TdError, check_main

_IDS = itertools.count(1)
COPY_DTYPES = (np.uint8, np.uint16, np.float32)


class Connector:
    def __init__(self, owner, index: int):
        self.owner, self.index = owner, index
        self.connections: list = []

    def connect(self, target) -> None:
        """Wire ``target`` (an OP) into this input connector."""
        check_main("Connector.connect")
        self.connections = [target]
        self.owner.inputs = [target]


class OP:
    family = "OP"
    builtin: dict[str, tuple] = {}

    def __init__(self, env, parent, name: str):
        self.env, self._parent, self.name = env, parent, name
        self.id = next(_IDS)
        self.valid = True
        self.nodeX = self.nodeY = 0
        self._pars: dict[str, Par] = {}
        self.customPages: list[Page] = []
        self.inputs: list = []
        self.inputConnectors = [Connector(self, 0)]
        self.par = ParCollection(self)
        self.cook_count = 0
        self._reads: set = set()  # what its last cook read (see env: dependency re-cooks)
        for par_name, (style, default, *menu) in self.builtin.items():  # a Menu's third item: its names
            self._pars[par_name] = Par(self, par_name, style, default, menu=menu[0] if menu else None)

    @property
    def OPType(self) -> str:
        return type(self).__name__

    @property
    def totalCooks(self) -> int:
        """OP Class: "Number of times the operator has cooked"."""
        return self.cook_count

    @property
    def path(self) -> str:
        if self._parent is None:
            return "/"
        base = self._parent.path
        return f"{base.rstrip('/')}/{self.name}"

    def parent(self, n: int = 1):
        node = self
        for _ in range(n):
            node = node._parent
        return node

    @property
    def customPars(self) -> list[Par]:
        return [p for p in self._pars.values() if p.isCustom]

    def appendCustomPage(self, name: str) -> Page:
        check_main(f"{self.path}.appendCustomPage")
        for page in self.customPages:
            if page.name == name:
                return page
        page = Page(self, name)
        self.customPages.append(page)
        return page

    def _remove_par(self, name: str) -> None:
        par = self._pars.pop(name)
        if par.page is not None:
            par.page.pars.remove(par)

    def op(self, path: str):
        """Relative to this operator's network (a COMP: its children; others: their siblings)."""
        check_main(f"{self.path}.op")
        if path.startswith("/"):
            node, parts = self.env.root, path.strip("/").split("/")
        else:
            node, parts = (self if isinstance(self, COMP) else self._parent), path.split("/")
        for part in parts:
            if part in ("", "."):
                continue
            node = node._parent if part == ".." else (node.children_by_name.get(part)
                                                       if isinstance(node, COMP) else None)
            if node is None:
                return None
        return node

    def _par_changed(self, par: Par, prev) -> None:
        self.env._par_event("valuechange", par, prev)

    def _par_pulsed(self, par: Par) -> None:
        self.env._par_event("pulse", par, None)

    def _initialize(self) -> None:
        """What creating the operator sets up besides its parameters (docked DATs)."""

    def cook(self, force: bool = False, recurse: bool = False) -> None:
        check_main(f"{self.path}.cook")
        self.cook_count += 1

    def destroy(self) -> None:
        check_main(f"{self.path}.destroy")
        self._parent.children_by_name.pop(self.name)
        self.valid = False

    def __repr__(self) -> str:
        return f"type:{self.OPType} path:{self.path}"


class COMP(OP):
    family = "COMP"

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self.children_by_name: dict[str, OP] = {}

    @property
    def children(self) -> list[OP]:
        return list(self.children_by_name.values())

    def create(self, optype, name: str | None = None, initialize: bool = True):
        check_main(f"{self.path}.create")
        if not (isinstance(optype, type) and issubclass(optype, OP)):
            raise TdError(f"create: {optype!r} is not an operator type")
        if name is None:
            name = f"{optype.__name__[:-3].lower()}1"
        if name in self.children_by_name:  # TD renumbers a taken name: frame -> frame1, top2 -> top3
            stem, digits = re.fullmatch(r"(.*?)(\d*)", name).groups()
            name = next(f"{stem}{i}" for i in itertools.count(int(digits or 0) + 1)
                        if f"{stem}{i}" not in self.children_by_name)
        node = optype(self.env, self, name)
        self.children_by_name[name] = node
        self.env._created(node)
        if initialize:
            node._initialize()
        return node


class baseCOMP(COMP):
    pass


class Cell:
    def __init__(self, dat, row: int, col: int):
        self._dat, self.row, self.col = dat, row, col

    @property
    def val(self) -> str:
        return self._dat._rows[self.row][self.col]

    def __str__(self) -> str:
        return self.val


class DAT(OP):
    family = "DAT"

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._rows: list[list[str]] = []
        self._text = ""
        self._module = None

    # -- text and module -------------------------------------------------------------------
    def _was_read(self) -> None:
        self.env._read(("dat", id(self)))

    def _was_changed(self) -> None:
        self.env._changed(("dat", id(self)))

    @property
    def text(self) -> str:
        check_main(f"{self.path}.text")
        self._was_read()
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        check_main(f"{self.path}.text")
        self._text, self._module = str(value), None
        self._was_changed()

    @property
    def module(self):
        """The DAT's text as a module, with TouchDesigner's globals (``me`` is this DAT)."""
        if self._module is None:
            module = types.ModuleType(self.name)
            module.__dict__.update(self.env.script_globals(self))
            exec(compile(self._text, self.path, "exec"), module.__dict__)
            self._module = module
        return self._module

    # -- table -----------------------------------------------------------------------------
    @property
    def numRows(self) -> int:
        self._was_read()
        return len(self._rows)

    @property
    def numCols(self) -> int:
        self._was_read()
        return max((len(r) for r in self._rows), default=0)

    def _index(self, key, axis: int):
        if isinstance(key, int):
            return key
        key = str(key)
        if axis == 0:
            return next((i for i, row in enumerate(self._rows) if row and row[0] == key), None)
        header = self._rows[0] if self._rows else []
        return next((i for i, name in enumerate(header) if name == key), None)

    def __getitem__(self, rowcol):
        check_main(f"{self.path}[]")
        self._was_read()
        row, col = self._index(rowcol[0], 0), self._index(rowcol[1], 1)
        if row is None or col is None or not 0 <= row < len(self._rows) or not 0 <= col < len(self._rows[row]):
            return None
        return Cell(self, row, col)

    def __setitem__(self, rowcol, value) -> None:
        check_main(f"{self.path}[]=")
        cell = self[rowcol]
        if cell is None:
            raise TdError(f"{self.path}: no cell {rowcol!r}")
        self._rows[cell.row][cell.col] = str(value)
        self._was_changed()

    def appendRow(self, cells, nameOrIndex=None, sort=None) -> int:
        check_main(f"{self.path}.appendRow")
        self._rows.append(["" if c is None else str(c) for c in cells])
        width = self.numCols
        for row in self._rows:
            row.extend([""] * (width - len(row)))
        self._was_changed()
        return len(self._rows) - 1

    def deleteRow(self, nameOrIndex) -> None:
        check_main(f"{self.path}.deleteRow")
        del self._rows[self._index(nameOrIndex, 0)]
        self._was_changed()

    def clear(self, keepSize=False, keepFirstRow=False, keepFirstCol=False) -> None:
        check_main(f"{self.path}.clear")
        self._rows = self._rows[:1] if keepFirstRow else []
        self._was_changed()

    def row(self, nameOrIndex):
        self._was_read()
        index = self._index(nameOrIndex, 0)
        return None if index is None else [Cell(self, index, c) for c in range(len(self._rows[index]))]


class textDAT(DAT):
    pass


class tableDAT(DAT):
    pass


class executeDAT(DAT):
    builtin = {"active": ("Toggle", True), "start": ("Toggle", False), "create": ("Toggle", False),
               "exit": ("Toggle", False), "framestart": ("Toggle", False), "frameend": ("Toggle", False)}


class parameterexecuteDAT(DAT):
    builtin = {"active": ("Toggle", True), "op": ("OP", ""), "pars": ("Str", "*"), "custom": ("Toggle", True),
               "builtin": ("Toggle", False), "valuechange": ("Toggle", True), "onpulse": ("Toggle", True)}


class TOP(OP):
    """A TOP's image: ``_texture`` H x W x C (C 1, 2 or 4: a 3-channel source gets alpha 1)."""

    family = "TOP"

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._image: np.ndarray | None = None
        self.image_changes = 0  # stand-in only: how often the image was replaced (what dependents follow)
        self._delayed: np.ndarray | None = None  # the download a numpyArray(delayed=True) started
        self.stalls = 0  # stand-in only: numpyArray() calls that waited for the GPU (not delayed)
        self.downloads = 0  # stand-in only: numpyArray() calls of any kind

    @property
    def _texture(self) -> np.ndarray | None:
        return self._image

    @_texture.setter
    def _texture(self, image: np.ndarray | None) -> None:
        """A new image (a cook, a copy, a Movie File In frame): TOPs that use this one cook again."""
        self._image = image
        self.image_changes += 1

    def _set_texture(self, arr: np.ndarray) -> None:
        tex = arr.copy()  # TD uploads a copy; the caller may reuse arr
        if tex.shape[2] == 3:
            alpha = {np.uint8: 255, np.uint16: 65535}.get(tex.dtype.type, 1.0)
            tex = np.concatenate([tex, np.full(tex.shape[:2] + (1,), alpha, tex.dtype)], axis=2)
        self._texture = tex

    @property
    def width(self) -> int:
        return 0 if self._texture is None else self._texture.shape[1]

    @property
    def height(self) -> int:
        return 0 if self._texture is None else self._texture.shape[0]

    def _pull(self) -> None:
        """Bring the image up to date before it is used (filters cook here; see tops.py)."""

    def _download(self) -> np.ndarray | None:
        if self._texture is None:
            return None
        tex = self._texture
        scale = {np.uint8: 255.0, np.uint16: 65535.0}.get(tex.dtype.type, 1.0)
        return tex.astype(np.float32) / scale

    def numpyArray(self, delayed: bool = False, writable: bool = False):
        """Like TOP.numpyArray(): float32, H x W x C with the TOP's own channel count (a mono TOP
        gives one), rows bottom-first, fixed formats scaled to 0..1; None without an image.
        ``delayed=True`` returns the download the previous delayed call started (None the first
        time): the result "will be delayed until the next call" (TOP Class)."""
        check_main(f"{self.path}.numpyArray")
        self._pull()  # TouchDesigner cooks a TOP whose image is asked for, if that is required
        self.downloads += 1
        if not delayed:
            self.stalls += 1
            return self._download()
        ready, self._delayed = self._delayed, self._download()
        return ready


class outTOP(TOP):
    pass


class moviefileinTOP(TOP):
    """Stand-in only: a TOP whose image comes from outside Python (a file, a camera)."""

    def play(self, arr: np.ndarray) -> None:
        """Show ``arr`` (H x W x C, C 1..4, rows bottom-first) as this TOP's image: one cook."""
        assert arr.ndim == 3 and 1 <= arr.shape[2] <= 4 and arr.dtype.type in COPY_DTYPES, arr.shape
        self._set_texture(arr)
        self.cook_count += 1


class scriptTOP(TOP):
    builtin = {"callbacks": ("DAT", ""), "setuppars": ("Pulse", False), "modoutsidecook": ("Toggle", False)}

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._cooking = False
        self._copied = False
        self.copies = 0

    def _initialize(self) -> None:
        """Like the Script TOP's OP Create Dialog: a docked callbacks DAT from the template."""
        dat = self._parent.create(textDAT, f"{self.name}_callbacks")
        dat.text = "def onSetupParameters(scriptOp):\n\treturn\n\ndef onCook(scriptOp):\n\treturn\n"
        self.par.callbacks = dat.name

    def _par_pulsed(self, par: Par) -> None:
        """A pulse runs its callback, then the TOP cooks (its parameters changed)."""
        if par.name == "setuppars":
            self.destroyCustomPars()
            self._callback("onSetupParameters", self)
        else:
            self._callback("onPulse", par)
            super()._par_pulsed(par)
        self.cook(force=True)

    def destroyCustomPars(self) -> None:
        for par in self.customPars:
            self._remove_par(par.name)
        self.customPages = []

    def _callback(self, name: str, *args):
        dat = self.par.callbacks.eval()
        function = getattr(dat.module, name, None) if dat is not None else None
        return function(*args) if function is not None else None

    def cook(self, force: bool = False, recurse: bool = False) -> None:
        super().cook(force, recurse)
        self.env._begin_cook(self)
        self._cooking, self._copied = True, False
        try:
            self._callback("onCook", self)
        finally:
            self._cooking = False
            self.env._end_cook(self)
        if not self._copied and not self.par.modoutsidecook.eval():
            self._texture = None  # not documented to survive a cook without a copy: assume the worst

    def copyNumpyArray(self, arr) -> None:
        check_main(f"{self.path}.copyNumpyArray")
        if not (self._cooking or self.par.modoutsidecook.eval()):
            raise TdError("copyNumpyArray: only during the TOP's cook (or with Modify Outside of Cook on)")
        if not isinstance(arr, np.ndarray):
            raise TdError(f"copyNumpyArray: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype.type not in COPY_DTYPES:
            raise TdError(f"copyNumpyArray: unsupported dtype {arr.dtype} (uint8, uint16 or float32)")
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise TdError(f"copyNumpyArray: shape {arr.shape} is not (height, width, 3 or 4)")
        self._set_texture(arr)
        self._copied = True
        self.copies += 1
