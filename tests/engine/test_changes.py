"""The change door on its own: a channel registry of null renderers, LoRA folders that note their
loads, real shared memory. What the front ends rely on: all or nothing, creation undone."""

from concurrent.futures import ThreadPoolExecutor
from multiprocessing import shared_memory

import pytest

from bridge.client.channels import segment_name
from bridge.core.errors import ValidationError
from bridge.core.params import Limits, Params
from bridge.core.renderer import NullRenderer
from bridge.engine.changes import ChangeDoor
from bridge.engine.channel import ChannelConflictError, ChannelLimitError, UnknownChannelError
from bridge.engine.channels import MAIN, ChannelRegistry
from bridge.engine.loras import LoraGate
from bridge.engine.render_queue import RenderQueue
from bridge.outputs.shm import ShmWriter
from lora_folders import NotedFolder
from warning_renderer import WarningRenderer


@pytest.fixture
def folders():
    return [NotedFolder(), NotedFolder()]


@pytest.fixture
async def registry(config, folders):
    """Two devices (each its own render thread and LoRA folder), channel main on the first."""
    threads = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
    loader = ThreadPoolExecutor(1)
    queues = [RenderQueue(NullRenderer(), thread, name=str(i)) for i, thread in enumerate(threads)]
    for queue, folder in zip(queues, folders):
        queue.loras = LoraGate(folder, loader)
    registry = ChannelRegistry(queues, initial=Params(width=64, height=64), limits=Limits(256), max_channels=3,
                               outputs=lambda name: [ShmWriter(segment_name(config.shm_name, name), 256, 256)])
    await registry.create(MAIN)
    yield registry
    await registry.close()
    for queue in queues:
        await queue.close()
    for executor in (*threads, loader):
        executor.shutdown()


def state(registry):
    return {channel.name: (channel.scheduler.params, channel.scheduler.version) for channel in registry}


async def test_a_set_over_several_channels_commits_every_part(registry, folders):
    door = ChangeDoor(registry.main.scheduler, registry)
    applied = await door.apply(door.parse({MAIN: {"seed": 1}, "a": {"seed": 2, "loras": {"ink": 1}}}, creates=True))
    assert {name: a.version for name, a in applied.items()} == {MAIN: 2, "a": 2}
    assert registry["a"].scheduler.params.seed == 2 and dict(registry["a"].scheduler.params.loras) == {"ink": 1.0}
    # a went to the lighter device and its LoRA was read there, not on main's
    assert registry["a"].queue is registry.queues[1]
    assert [folder.loaded for folder in folders] == [[], ["ink"]]


@pytest.mark.parametrize("raw, error", [
    ({MAIN: {"seed": 1}, "a": {"steps": 99}}, ValidationError),  # a field: refused by parsing
    ({MAIN: {"seed": 1}, "a": {"loras": {"nobody": 1}}}, ValidationError),  # a LoRA file: refused by loading
    ({MAIN: {"loras": {"ink": 1, "oil": 1}}, "a": {"controls": {"depth": 1}}}, ValidationError),
    ({MAIN: {"seed": 1}, "a": {}, "b": {}, "c": {}}, ChannelLimitError),  # main + 3 > --max-channels 3
    ({MAIN: {"seed": 1}, "Bad!": {}}, ValidationError),  # not a channel name
])
async def test_a_set_with_one_bad_part_changes_and_creates_nothing(registry, folders, raw, error):
    door = ChangeDoor(registry.main.scheduler, registry)
    before, created = state(registry), registry.created
    with pytest.raises(error):
        await door.apply(door.parse(raw, creates=True))
    assert state(registry) == before and registry.created == created
    assert [folder.loaded for folder in folders] == [[], []]  # no file read for a refused set


async def test_a_part_for_a_missing_channel_needs_a_creating_set(registry):
    door = ChangeDoor(registry.main.scheduler, registry)
    with pytest.raises(UnknownChannelError, match="no channel 'a'"):
        door.apply_now(door.parse({MAIN: {"seed": 1}, "a": {"seed": 2}}))
    assert registry.get("a") is None and registry.main.scheduler.version == 1


async def test_a_failed_creation_removes_the_channels_the_set_created(registry, config):
    """Channel b's segment name is taken by a foreign segment: b fails, and a (made first) goes again."""
    door = ChangeDoor(registry.main.scheduler, registry)
    planted = shared_memory.SharedMemory(config.shm_name + ".b", create=True, size=4096)
    try:
        with pytest.raises(ChannelConflictError, match="cannot be created"):
            await door.apply(door.parse({MAIN: {"seed": 1}, "a": {"seed": 2}, "b": {"seed": 3}}, creates=True))
        assert [c.name for c in registry] == [MAIN] and registry.main.scheduler.version == 1
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(config.shm_name + ".a")  # a's segment went with it
    finally:
        planted.close()
        planted.unlink()


class Refusing:
    """A command that refuses (as ``/bridge/record 1`` does without --output-dir)."""

    def __init__(self):
        self.runs = 0

    def run(self):
        self.runs += 1
        raise ValidationError("action", "recording needs a folder")


async def test_a_refused_command_undoes_the_set(registry):
    door = ChangeDoor(registry.main.scheduler, registry)
    command = Refusing()
    with pytest.raises(ValidationError, match="needs a folder"):
        await door.apply(door.parse({MAIN: {"seed": 1}, "a": {"seed": 2}}, commands=[command], creates=True))
    assert command.runs == 1 and [c.name for c in registry] == [MAIN] and registry.main.scheduler.version == 1
    with pytest.raises(ValidationError):
        door.apply_now(door.parse({MAIN: {"seed": 1}}, commands=[command]))
    assert registry.main.scheduler.version == 1


async def test_apply_now_takes_only_what_needs_no_waiting(registry):
    door = ChangeDoor(registry.main.scheduler, registry)
    loading = door.parse({MAIN: {"loras": {"ink": 1}}})
    assert door.needs_waiting(loading)
    with pytest.raises(RuntimeError, match="await ChangeDoor.apply"):
        door.apply_now(loading)
    assert registry.main.scheduler.version == 1
    await door.apply(loading)  # loads ink; the same change again needs no waiting
    assert not door.needs_waiting(loading) and door.apply_now(door.parse({MAIN: {"seed": 5}}))[MAIN].version == 3


async def test_parsed_values_are_read_only_and_parsed_once(registry):
    door = ChangeDoor(registry.main.scheduler, registry)
    changes = door.parse({MAIN: {"seed": "12", "prompt": [["a", 1], ["b", 3]]}})
    part, = changes.parts
    assert dict(part.values) == {"seed": 12, "prompt": (("a", 1.0), ("b", 3.0))}
    with pytest.raises(TypeError):
        part.values["seed"] = 1
    with pytest.raises(ValidationError):
        door.parse({MAIN: {"seed": -1}})
    assert registry.main.scheduler.stats.rejected == 1  # a refusal is counted on its channel, once


def test_a_set_parsed_without_warnings_is_applied_without_asking_the_renderer():
    from bridge.engine.scheduler import Scheduler

    renderer = WarningRenderer()
    door = ChangeDoor(Scheduler(renderer, ThreadPoolExecutor(1)))
    told = door.apply_now(door.parse({MAIN: {"prompt": "a cat"}}))
    quiet = door.apply_now(door.parse({MAIN: {"prompt": "a dog"}}, warn=False))
    assert told[MAIN].warnings == ("cut: a cat",) and quiet[MAIN].warnings == ()
    assert renderer.asked == ["a cat"] and door.main.params.prompt == "a dog" and quiet[MAIN].version == 3


async def test_a_channel_created_without_warnings_is_not_asked_either(registry, monkeypatch):
    asked = []
    monkeypatch.setattr(NullRenderer, "prompt_warnings", lambda self, text: asked.append(text) or [f"cut: {text}"])
    door = ChangeDoor(registry.main.scheduler, registry)
    quiet = await door.apply(door.parse({"a": {"prompt": "a dog"}}, creates=True, warn=False))
    told = await door.apply(door.parse({"b": {"prompt": "a cat"}}, creates=True))
    assert quiet["a"].warnings == () and told["b"].warnings == ("cut: a cat",) and asked == ["a cat"]
