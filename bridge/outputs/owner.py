"""Who owns a shared-memory segment, and whether that process still runs.

A pid alone can be reused by an unrelated process after the owner died; the pid together with
the process's start time (Linux: field 22 of ``/proc/PID/stat``, clock ticks since boot) cannot.
Where the start time is unknown (0), a live pid counts as the owner: refusing to start is the
safe mistake, taking over a live daemon's segment is not.
"""

from __future__ import annotations

import os
import sys

from ..client.layout import Owner


def process_start(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot; 0 where unknown (not Linux, gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall: fields 3.. start at index 0
    except (IndexError, ValueError):
        return 0


def this_process() -> Owner:
    return Owner(os.getpid(), process_start(os.getpid()))


def is_alive(owner: Owner) -> bool:
    """True while the process that ``owner`` names runs (the same process, not a reused pid)."""
    if owner.pid <= 0:
        return False
    if sys.platform == "win32":
        # Windows frees a segment with its last handle: one that exists has a live holder.
        # (os.kill(pid, 0) would send CTRL_C_EVENT there, not probe.)
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, run by another user
    started = process_start(owner.pid)
    return not (owner.started and started) or started == owner.started
