"""One channel's outputs as one sink: started all or none, fed on the render thread, closed together.

Starting and closing run off the event loop (an output may map memory, make a folder, join its
worker). A failure an output reports later, from whatever thread it runs on, reaches the
listeners on the event loop (the channel's scheduler: OSC ``/bridge/error``, ``last_error``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ..core.frame import Frame
from ..core.output import Output

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 30.0  # for each output to finish its work in flight (a recording's last frames)


class ChannelOutputs:
    """The outputs of channel ``channel``, in the order they get each frame."""

    def __init__(self, channel: str, outputs: Sequence[Output]):
        self.channel = channel
        self._outputs = tuple(outputs)
        self._listeners: list[Callable[[str], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    def __iter__(self):
        return iter(self._outputs)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(message)`` on the event loop when an output reports a failure."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Start every output, or none: one failing to start closes those started before it, then
        its ``OutputError`` goes to the caller."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(None, self._start_all)
        self._started = True

    def _start_all(self) -> None:
        started: list[Output] = []
        try:
            for output in self._outputs:
                output.start(self._report)
                started.append(output)
        except BaseException:
            _close_all(self.channel, started, CLOSE_TIMEOUT_S)
            raise

    def publish(self, frame: Frame) -> None:
        """The scheduler's sink, on the render thread: each output takes the frame (quick, never raises)."""
        for output in self._outputs:
            output.publish(frame)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close every output (last first), off the event loop; once no frame comes any more."""
        if not self._started:
            return
        self._started = False
        await asyncio.get_running_loop().run_in_executor(None, _close_all, self.channel, self._outputs, timeout)

    def health(self) -> dict[str, dict]:
        return {output.kind: output.health() for output in self._outputs}

    def errors(self) -> list[str]:
        """What is failing now, one line per failing output."""
        return [f"{output.kind}: {output.error}" for output in self._outputs if output.error]

    def _report(self, message: str) -> None:
        # Any thread: hand over to the event loop, where the listeners live.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._tell, message)
        except RuntimeError:  # the loop closed in between (shutting down): the output logged it
            pass

    def _tell(self, message: str) -> None:
        for listener in self._listeners:
            listener(message)


def _close_all(channel: str, outputs: Sequence[Output], timeout: float) -> None:
    for output in reversed(outputs):
        try:
            output.close(timeout)
        except Exception:  # one output failing to let go must not keep the others open
            log.exception("channel %r: the %s output failed to close", channel, output.kind)
