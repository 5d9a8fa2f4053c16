"""Overlap, third stream: a new prompt's text encoders on a CUDA stream of their own.

With ``--overlap on`` a frame is cut at the latents and decoded on the decode stream
(``overlap.py``); its first half was tokenizing, text encoders and denoiser on the render thread's
stream, so a prompt change still ran its text encoders after the previous frame's denoiser (run S5 on
an H100: SDXL's 2.73 ms, SDXS's 1.40 ms, each of ~300-600 kernels of a few microseconds that leave the
GPU mostly idle at batch 1). Here they run beside it: ``encode`` queues the text graph on the text
stream, keeps copies of its outputs (the prompt's cache entry) and makes the render thread's stream
wait for them, so the denoiser of this frame starts once both the text and the previous denoiser are
done, and a lone change costs one more graph launch and an event.

Ordering, with CUDA events (no host synchronisation):
- the render thread's stream waits for the copies (an event after them) before its frame reads them;
- the copies are marked as used by that stream (and by every render lane's, ``lanes.py``: a later
  frame of the same prompt may read them on another lane), so a cache eviction never frees them under it;
- a LoRA fold changes the text encoders' weights in place on the render thread's stream: ``barrier``
  makes that stream wait for the text work queued so far, and the next encode waits for the fold.
The text graphs have their own ``FrameGraphs``, hence their own memory pool (they replay while the
render thread's graphs replay).

``urgent``: the text stream at a higher CUDA priority than the render thread's (its default stream has
the lowest): where both streams have kernels ready, the text encoders' are scheduled first, so the next
prompt's embeddings are ready sooner, at the cost of the previous frame's denoiser waiting a little more
for SMs. Whether that beats equal priorities is the bench's ``--overlap on,urgent`` A/B.

Only a graphed renderer has a text stream (its frames without graphs encode on the render thread's
stream); on the CPU ``encode`` runs at once (the unit tests' stand-in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

URGENT = -1  # a high priority on every CUDA device (lower numbers go first; the default stream's is 0)
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Store = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TextStream:
    """The text stream of one device, its graphs and events; used from the render thread only."""

    def __init__(self, device: torch.device, urgent: bool = False, readers: Sequence[torch.cuda.Stream] = ()):
        """On CUDA each text encoding replays as a CUDA graph (a compiled renderer's); on the CPU it is called.
        ``urgent``: the stream at a high priority (CUDA's -1; the render thread's default stream has 0).
        ``readers``: the streams besides the encoding frame's that read cached embeddings (the render lanes')."""
        self.device = device
        self._readers = tuple(readers)
        self._cuda = device.type == "cuda"
        self.priority = URGENT if urgent else 0
        self._stream = torch.cuda.Stream(device, priority=self.priority) if self._cuda else None
        self._done = torch.cuda.Event() if self._cuda else None
        self._wait_for_weights = False
        self._graphs = None
        if self._cuda:
            from .graphs import FrameGraphs

            self._graphs = FrameGraphs()

    @property
    def keys(self) -> frozenset[tuple]:
        """The text graphs captured so far (one per token length)."""
        return self._graphs.keys() if self._graphs is not None else frozenset()

    def warm(self, lengths: Iterable[int], rows: int, encode: Encode) -> None:
        """Capture the text graph of every token length a prompt may take, before a live frame."""
        todo = [] if self._graphs is None else [n for n in lengths if ("text", (rows, n)) not in self._graphs]
        if not todo:  # every frame asks: after the first, nothing to do and no stream touched
            return
        with torch.cuda.stream(self._stream):
            for length in todo:
                self._graph(encode, torch.zeros((rows, length), dtype=torch.long))
        torch.cuda.current_stream(self.device).wait_stream(self._stream)

    def barrier(self) -> None:
        """Call before the render thread's stream changes the text encoders' weights (a LoRA fold)."""
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
            self._wait_for_weights = True

    def encode(self, ids: torch.Tensor, encode: Encode, store: Store) -> tuple[torch.Tensor, torch.Tensor]:
        """``store(*encode(ids))`` queued on the text stream; the current stream waits for the result."""
        if not self._cuda:
            return store(*encode(ids.to(self.device)))
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            if self._wait_for_weights:  # the fold queued since ``barrier``
                self._stream.wait_stream(main)
                self._wait_for_weights = False
            embeds, pooled = self._graph(encode, ids).run(ids=ids)
            kept = store(embeds, pooled)  # copies: the graph's outputs are overwritten by its next replay
            for tensor in kept:
                for reader in (main, *self._readers):
                    tensor.record_stream(reader)
            self._done.record(self._stream)
        main.wait_event(self._done)
        return kept

    def _graph(self, encode: Encode, ids: torch.Tensor):
        # keyed as ``warm`` checks: ("text", (rows, length))
        return self._graphs.get(("text", tuple(ids.shape)), encode,
                                lambda: {"ids": torch.zeros(ids.shape, dtype=ids.dtype, device=self.device)})
