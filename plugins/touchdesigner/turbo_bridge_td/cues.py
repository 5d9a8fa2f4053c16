"""Cues for a performance: a Table DAT of prompts and seeds, stepped by pulse or OSC.

The table's first row names the columns: ``name`` plus any of the protocol fields (prompt, seed,
guidance, steps, width, height). An empty cell keeps the current value. Cue n is table row n
(1 = the first cue under the header). Going to a cue sets the control COMP's parameters (so the
panel shows it) and sends all of its fields as one atomic change.
"""

from __future__ import annotations

from typing import Any

from .control import FIELD_PARS, PAR_FOR_FIELD, Controller, coerce

COLUMNS = ("name", *FIELD_PARS.values())


class CueError(ValueError):
    """A cue that cannot be applied (no such cue, or a cell that is not a number)."""


def header_row() -> list[str]:
    return list(COLUMNS)


class Cues:
    def __init__(self, comp, controller: Controller):
        self.comp = comp
        self.controller = controller
        self.applied = 0  # the cue last sent (0: none); Cue parameter echoes of it are ignored

    def _table(self):
        return self.comp.op("cues")

    @property
    def count(self) -> int:
        return max(0, self._table().numRows - 1)

    @property
    def current(self) -> int:
        return int(self.comp.par.Cue.eval())

    def find(self, name: str) -> int:
        table = self._table()
        for row in range(1, table.numRows):
            cell = table[row, "name"]
            if cell is not None and cell.val == name:
                return row
        raise CueError(f"no cue named {name!r} in {table.path}")

    def changes(self, index: int) -> dict[str, Any]:
        """The fields that cue ``index`` sets, converted and checked."""
        if not 1 <= index <= self.count:
            raise CueError(f"cue {index} does not exist ({self.count} cues in {self._table().path})")
        table, changes = self._table(), {}
        for field in FIELD_PARS.values():
            cell = table[index, field]
            text = cell.val.strip() if cell is not None else ""
            if not text:
                continue
            try:
                changes[field] = coerce(field, text)
            except ValueError:
                raise CueError(f"cue {index}, column {field}: {text!r} is not a number") from None
        return changes

    def go(self, index: int) -> dict[str, Any]:
        changes = self.changes(index)
        # Record first: the Parameter Execute echo of the assignments below then sends nothing.
        self.controller.last_sent.update(changes)
        for field, value in changes.items():
            setattr(self.comp.par, PAR_FOR_FIELD[field], value)
        self.applied = index
        self.comp.par.Cue = index
        if changes:
            self.controller.send_changes(changes)
        return changes

    def step(self, delta: int) -> dict[str, Any]:
        """Next (+1) or previous (-1) cue, held at the first and last."""
        if self.count == 0:
            raise CueError(f"{self._table().path} has no cues")
        return self.go(min(max(self.current + delta, 1), self.count))

    def name(self, index: int) -> str:
        cell = self._table()[index, "name"] if 1 <= index <= self.count else None
        return cell.val if cell is not None else ""
