"""Parameters: Par, custom Pages and the ``op.par`` collection, with TouchDesigner's rules.

Checked against derivative.ca: Par Class, Page Class, Custom Parameters (names: an uppercase
first letter, then lowercase letters and digits; sized parameters get 1, 2, 3... suffixes;
``help`` is read-only). Int parameters hold signed 32-bit values here: the Par Class documents
no width, so the stand-in assumes the narrow one and refuses values beyond it.
"""

from __future__ import annotations

import re
import threading

CUSTOM_NAME = re.compile(r"^[A-Z][a-z0-9]*$")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_MAIN: dict[str, int | None] = {"thread": None}


class TdError(Exception):
    """What TouchDesigner raises (td.tdError) for a rejected operation."""


def check_main(what: str) -> None:
    """TouchDesigner objects may only be touched from the main thread."""
    main = _MAIN["thread"]
    if main is not None and threading.get_ident() != main:
        raise TdError(f"{what}: TouchDesigner objects can only be used from the main thread")


class Par:
    STYLES = {"Str", "Int", "Float", "Toggle", "Pulse", "Menu", "COMP", "OP", "DAT", "TOP"}

    def __init__(self, owner, name: str, style: str, default=None, label: str | None = None,
                 custom: bool = False, page=None, menu: list[str] | None = None):
        assert style in self.STYLES, style
        self.owner, self.name, self.style = owner, name, style
        self.label = label or name
        self.isCustom, self.page = custom, page
        self.min = self.max = None
        self.clampMin = self.clampMax = False
        self.normMin, self.normMax = 0, 1
        self._help = ""
        self.readOnly = False
        self.menuNames = list(menu or [])
        self.menuLabels = list(menu or [])
        self._val = self._coerce(default if default is not None else self._zero())
        self.default = self._val

    def _zero(self):
        return {"Int": 0, "Float": 0.0, "Toggle": False, "Pulse": False}.get(self.style, "")

    # -- kinds -----------------------------------------------------------------------------
    isPulse = property(lambda self: self.style == "Pulse")
    isToggle = property(lambda self: self.style == "Toggle")
    isString = property(lambda self: self.style == "Str")
    isMenu = property(lambda self: self.style == "Menu")
    isInt = property(lambda self: self.style == "Int")
    isFloat = property(lambda self: self.style == "Float")
    isOP = property(lambda self: self.style in ("COMP", "OP", "DAT", "TOP"))

    def _coerce(self, value):
        if self.style in ("Int", "Float"):
            if isinstance(value, str) or not isinstance(value, (int, float, bool)):
                raise TdError(f"{self.name}: a number parameter cannot take {value!r}")
            value = int(round(value)) if self.style == "Int" else float(value)
            if self.clampMin and self.min is not None:
                value = max(value, self.min)
            if self.clampMax and self.max is not None:
                value = min(value, self.max)
            if self.style == "Int" and not INT_MIN <= value <= INT_MAX:
                raise TdError(f"{self.name}: {value} does not fit an Int parameter (32-bit in this stand-in)")
            return value
        if self.style in ("Toggle", "Pulse"):
            return bool(value)
        if hasattr(value, "path") and self.isOP:
            return value.path
        value = str(value)
        if self.style == "Menu" and self.menuNames and value not in self.menuNames:
            raise TdError(f"{self.name}: {value!r} is not one of the menu names {self.menuNames}")
        return value

    @property
    def help(self) -> str:
        return self._help

    @help.setter
    def help(self, value) -> None:
        raise TdError(f"{self.name}.help is read-only (Par Class)")

    @property
    def val(self):
        check_main(f"{self.owner.path}.par.{self.name}")
        self.owner.env._read(("par", id(self)))
        return self._val

    @val.setter
    def val(self, value) -> None:
        check_main(f"{self.owner.path}.par.{self.name}")
        if self.readOnly:
            raise TdError(f"{self.name} is read-only")
        value = self._coerce(value)
        prev, self._val = self._val, value
        if prev != value:
            self.owner.env._changed(("par", id(self)))
            self.owner._par_changed(self, prev)

    def eval(self):
        """The value; for OP parameters the operator (resolved from the owner) or None."""
        value = self.val
        if self.isOP:
            return self.owner.op(value) if value else None
        return value

    def pulse(self) -> None:
        check_main(f"{self.owner.path}.par.{self.name}.pulse()")
        if not self.isPulse:
            raise TdError(f"{self.name} is not a pulse parameter")
        self.owner._par_pulsed(self)

    def __str__(self) -> str:
        return str(self.eval())

    def __int__(self) -> int:
        return int(self.eval())

    def __float__(self) -> float:
        return float(self.eval())

    def __repr__(self) -> str:
        return f"type:Par name:{self.name} owner:{self.owner.path} value:{self._val!r}"


class Page:
    """A custom page; append* return the created ParGroup (indexable like a list)."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.isCustom = owner, name, True
        self.pars: list[Par] = []

    def _append(self, style: str, name: str, label=None, size: int = 1, replace=True, menu=None) -> list[Par]:
        check_main(f"{self.owner.path}.appendCustomPage('{self.name}').append{style}")
        if not CUSTOM_NAME.match(name):
            raise TdError(f"invalid custom parameter name {name!r}: an uppercase first letter, "
                          "then lowercase letters and digits only")
        names = [name] if size == 1 else [f"{name}{i}" for i in range(1, size + 1)]
        group = []
        for par_name in names:
            if par_name in self.owner._pars:
                if not replace:
                    raise TdError(f"parameter {par_name} already exists")
                self.owner._remove_par(par_name)
            par = Par(self.owner, par_name, style, label=label, custom=True, page=self, menu=menu)
            self.owner._pars[par_name] = par
            self.pars.append(par)
            group.append(par)
        return group

    def appendStr(self, name, label=None, order=None, replace=True):
        return self._append("Str", name, label, replace=replace)

    def appendInt(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Int", name, label, size, replace)

    def appendFloat(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Float", name, label, size, replace)

    def appendToggle(self, name, label=None, order=None, replace=True):
        return self._append("Toggle", name, label, replace=replace)

    def appendPulse(self, name, label=None, order=None, replace=True):
        return self._append("Pulse", name, label, replace=replace)

    def appendMenu(self, name, label=None, order=None, replace=True):
        return self._append("Menu", name, label, replace=replace)

    def appendCOMP(self, name, label=None, order=None, replace=True):
        return self._append("COMP", name, label, replace=replace)

    def appendTOP(self, name, label=None, order=None, replace=True):  # Page Class: a TOP reference
        return self._append("TOP", name, label, replace=replace)

    def __len__(self) -> int:
        return len(self.pars)


class ParCollection:
    """``op.par``: attribute access to parameters; assigning to one sets its value."""

    def __init__(self, owner):
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name: str) -> Par:
        pars = object.__getattribute__(self, "_owner")._pars
        if name not in pars:
            raise AttributeError(f"'td.ParCollection' object has no attribute '{name}'")
        return pars[name]

    def __setattr__(self, name: str, value) -> None:
        getattr(self, name).val = value

    def __getitem__(self, name: str) -> Par:
        return getattr(self, name)
