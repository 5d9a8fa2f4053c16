"""Which outputs each channel gets, from the config: the one place an output is wired.

Every builder in ``BUILDERS`` makes one output for a channel, or None where that channel has
none: shared memory for every channel (``{shm-name}``, ``{shm-name}.NAME``), PNG files for every
channel (``--output-dir``, and its folder ``NAME`` for channel NAME), a recording and NDI for
channel ``main`` only (as the design notes fix them), Spout and Syphon for every channel
(``--spout NAME``: sender ``NAME`` for main, ``NAME.CHANNEL`` for the others; ``--syphon`` alike).
The engine gets ``factory(config, parts)`` and knows outputs only by their contract,
``bridge.core.output.Output``.

To add an output: a module in ``bridge/outputs/`` whose class implements that contract, its
option in ``Config`` and the CLI, and one builder line here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ..client.channels import segment_name
from ..config import Config
from ..core.output import Output, OutputFactory
from ..engine.channels import MAIN
from ..outputs.ndi import NdiSender
from ..outputs.png import PngCache, PngFiles
from ..outputs.record import Recorder
from ..outputs.shm import DAEMON_REMEDY, ShmWriter
from ..outputs.texture import TextureOutput
from ..texshare import libraries

CHANNEL_REMEDY = "choose another channel name"


@dataclass(frozen=True)
class OutputParts:
    """What outputs share besides the config: the daemon's PNG encodings (HTTP, streams and files)."""

    png_cache: PngCache


Builder = Callable[[Config, str, OutputParts], Output | None]


def shared_memory(config: Config, channel: str, parts: OutputParts) -> Output | None:
    if not config.shm_name:
        return None
    return ShmWriter(segment_name(config.shm_name, channel), config.max_size, config.max_size,
                     remedy=DAEMON_REMEDY if channel == MAIN else CHANNEL_REMEDY)


def png_files(config: Config, channel: str, parts: OutputParts) -> Output | None:
    if config.output_dir is None:
        return None
    if channel == MAIN:  # main keeps --output-dir itself
        return PngFiles(config.output_dir, parts.png_cache.png_now, config.keep_frames)
    return PngFiles(config.output_dir / channel, parts.png_cache.png_now, config.keep_frames, own_folder=True,
                    remedy=CHANNEL_REMEDY)


def recording(config: Config, channel: str, parts: OutputParts) -> Output | None:
    # Always there for main: without --output-dir it answers why it cannot record.
    return Recorder(config.output_dir) if channel == MAIN else None


def ndi(config: Config, channel: str, parts: OutputParts) -> Output | None:
    return NdiSender(config.ndi) if config.ndi and channel == MAIN else None


def spout(config: Config, channel: str, parts: OutputParts) -> Output | None:
    # Senders are named per channel as segments are: NAME for main, NAME.CHANNEL for the others.
    return (TextureOutput("spout", libraries.sender("spout", segment_name(config.spout, channel)))
            if config.spout else None)


def syphon(config: Config, channel: str, parts: OutputParts) -> Output | None:
    return TextureOutput("syphon", libraries.sender("syphon", segment_name(config.syphon, channel))) if config.syphon \
        else None


# In the order each frame reaches them: shared memory first (the fastest readers).
BUILDERS: tuple[Builder, ...] = (shared_memory, png_files, recording, ndi, spout, syphon)


def factory(config: Config, parts: OutputParts) -> OutputFactory:
    """The outputs of a channel, made (not started) when the channel is."""

    def outputs(channel: str) -> list[Output]:
        return [output for build in BUILDERS if (output := build(config, channel, parts)) is not None]

    return outputs


T = TypeVar("T")


def find(outputs: Iterable[Output], kind: type[T]) -> T | None:
    """The output of that class among ``outputs`` (the app hands main's recorder to its controls)."""
    return next((output for output in outputs if isinstance(output, kind)), None)
