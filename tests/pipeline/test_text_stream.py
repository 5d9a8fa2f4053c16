"""The overlap's text stream without CUDA: a new prompt's text encoding runs at once, its outputs go
through the caller's store (the prompt cache) and come back; there is nothing to capture or order.
Its CUDA ordering (events, the LoRA barrier, its own graph pool) is checked in test_gpu_overlap.py."""

import contextlib

import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.speed.text_stream import TextStream  # noqa: E402


def test_without_cuda_the_text_runs_at_once_and_the_store_keeps_it():
    stream = TextStream(torch.device("cpu"))
    calls, stored = [], []

    def encode(ids):
        calls.append(ids.clone())
        return ids.float() * 2, ids.float().sum(dim=-1)

    def store(embeds, pooled):
        stored.append((embeds, pooled))
        return embeds.clone(), pooled.clone()

    stream.warm([77], rows=1, encode=encode)  # nothing to capture without graphs: encode not called
    stream.barrier()
    assert calls == [] and stream.keys == frozenset()
    ids = torch.arange(6).reshape(1, 6)
    embeds, pooled = stream.encode(ids, encode, store)
    assert len(calls) == 1 and torch.equal(calls[0], ids)
    assert torch.equal(embeds, ids.float() * 2) and torch.equal(pooled, torch.tensor([15.0]))
    assert len(stored) == 1 and embeds is not stored[0][0]  # what the store returned, not the encoder's


def test_an_urgent_text_stream_asks_for_a_high_priority_and_still_runs_at_once_without_cuda():
    """CUDA runs a lower number first; the render thread's default stream has 0."""
    urgent, plain = TextStream(torch.device("cpu"), urgent=True), TextStream(torch.device("cpu"))
    assert urgent.priority < plain.priority == 0
    kept = urgent.encode(torch.ones((1, 4), dtype=torch.long), lambda ids: (ids * 2, ids + 1), lambda e, p: (e, p))
    assert kept[0].tolist() == [[2, 2, 2, 2]] and kept[1].tolist() == [[2, 2, 2, 2]]


def test_a_prompt_queued_on_the_text_stream_is_tokenized_and_timed_as_the_encoders_own_and_cached_once():
    """``PromptEncoder.embeddings(text, queue)``, as the overlapped frame calls it: the same stages, the
    text stream's encode in place of the encoder's, its outputs in the prompt cache; a second frame of
    that prompt finds them there and queues nothing."""
    from bridge.pipeline.render.text import PromptEncoder

    class Part:  # a family's text part, as far as the prompt cache reads it
        def token_ids(self, text, at_least=0):
            return torch.tensor([[len(text), 1, 2]])

    stages, direct, queued = [], [], []

    def timed(name):
        stages.append(name)
        return contextlib.nullcontext()

    prompts = PromptEncoder(Part(), lambda ids: direct.append(ids) or (ids.float(), ids.float()), pin=False,
                            stage=timed)
    stream = TextStream(torch.device("cpu"))

    def queue(ids, store):
        queued.append(ids)
        return stream.encode(ids, lambda i: (i.float() * 3, i.float().sum(dim=-1)), store)

    embeds, pooled = prompts.embeddings("a lighthouse", queue)
    assert stages == ["tokenize", "text_encoders"] and direct == [] and len(queued) == 1
    assert torch.equal(embeds, torch.tensor([[36.0, 3, 6]])) and torch.equal(pooled, torch.tensor([15.0]))
    assert prompts.runs == 1 and prompts.cached("a lighthouse") is not None
    again = prompts.embeddings("a lighthouse", queue)
    assert len(queued) == 1 and stages == ["tokenize", "text_encoders"] and torch.equal(again[0], embeds)
