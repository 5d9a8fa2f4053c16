"""Prompt conditioning: token ids, the embedding cache, and prompt blends.

Embeddings are cached per text (LRU), so a seed-, guidance-, steps- or size-only change never
runs the text encoders, and neither does moving a blend's weights: a blend is the weighted sum
of its texts' cached embeddings (weights relative, normalised by their sum).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ...core.params import Prompt, prompt_texts
from ..families.parts import Conditioning, TextConditioning

Embeddings = Conditioning  # (embeds (1, L, D), extra (1, P)): the family's two conditioning tensors
# (ids, store) -> store's result: ids encoded elsewhere (the overlap's text stream), their outputs stored
Queue = Callable[[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], Embeddings]], Embeddings]


class PromptEncoder:
    """Token ids and cached embeddings of the family's text part; ``encode(ids)`` runs its text
    encoders (maybe as a graph)."""

    def __init__(self, text: TextConditioning, encode: Callable[[torch.Tensor], Embeddings], pin: bool,
                 cache_size: int = 256, stage: Callable[[str], AbstractContextManager] = lambda name: nullcontext()):
        self.part = text
        self.encode = encode
        self.stage = stage  # times a stage of the frame (tokenize, text_encoders)
        self.pin = pin
        self.runs = 0  # text encoder runs, for tests and health
        self._cache: OrderedDict[tuple, Embeddings] = OrderedDict()
        # The text encoders' LoRA state: embeddings encoded under another state are not reused
        # (and come back into use if that state returns).
        self.variant: tuple = ()
        self._cache_size = cache_size

    def warnings(self, text: str) -> list[str]:
        """What the text encoders will not read of ``text``; runs on the event loop."""
        return self.part.warnings(text)

    def token_ids(self, text: str, at_least: int = 0) -> torch.Tensor:
        """The family's (rows, n) token ids (``TextConditioning.token_ids``), pinned for the copy to a
        CUDA device."""
        ids = self.part.token_ids(text, at_least)
        return ids.pin_memory() if self.pin else ids

    def batch_token_ids(self, texts: list[str]) -> torch.Tensor:
        """(rows, B, n): the texts' ids at one length, the text part's longest (one batch graph per
        batch size, whatever the prompts), or longer where a text needs it."""
        ids = [self.part.token_ids(text, self.part.lengths[-1]) for text in texts]
        length = max(row.shape[-1] for row in ids)
        return torch.stack([row if row.shape[-1] == length else self.part.token_ids(text, length)
                            for text, row in zip(texts, ids)], dim=1)

    def clear(self) -> None:
        """Forget every prompt's embeddings: the next frame of each runs the text encoders again."""
        self._cache.clear()

    def cached(self, text: str) -> Embeddings | None:
        found = self._cache.get((self.variant, text))
        if found is not None:
            self._cache.move_to_end((self.variant, text))
        return found

    def store(self, text: str, embeds: torch.Tensor, pooled: torch.Tensor) -> Embeddings:
        """Keep copies: a CUDA graph's outputs are overwritten by its next replay."""
        self.runs += 1
        key = (self.variant, text)
        self._cache[key] = (embeds.clone(), pooled.clone())
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self._cache[key]

    def embeddings(self, text: str, queue: Queue | None = None) -> Embeddings:
        """(prompt_embeds, pooled) for one text, from the cache when it was seen before. ``queue(ids,
        store)``: encode on another stream instead (the overlap's text stream: ``speed/text_stream.py``),
        which calls ``store`` with the outputs; the stage then times the queueing, not the GPU's work."""
        found = self.cached(text)
        if found is not None:
            return found
        with self.stage("tokenize"):
            ids = self.token_ids(text)
        with self.stage("text_encoders"), torch.inference_mode():
            if queue is not None:
                return queue(ids, lambda embeds, pooled: self.store(text, embeds, pooled))
            # the cache's copies inside the stage: its closing sync waits for them, so a profile never
            # finds them after it, in no stage or in the next (they ran there when the GPU lagged the CPU)
            return self.store(text, *self.encode(ids))

    @property
    def zeros(self) -> Embeddings:
        """Zero embeddings of the family's shapes (SDXL-Turbo's unconditional branch)."""
        return self.part.zeros()

    def unconditional(self, negative_prompt: Prompt) -> Embeddings:
        """Guidance's unconditional branch: the negative prompt's embeddings (cached like prompts).

        Without a negative prompt, zeros when the model asks for them (SDXL-Turbo's
        ``force_zeros_for_empty_prompt``), else the empty text's embeddings, as diffusers does.
        """
        if negative_prompt == "" and self.part.zeros_for_empty:
            return self.zeros
        return self.conditioning(negative_prompt)

    def conditioning(self, prompt: Prompt) -> Embeddings:
        """A text's embeddings, or a blend's weighted sum (every text encoded once, weight 0 too)."""
        if isinstance(prompt, str):
            return self.embeddings(prompt)
        parts = [self.embeddings(text) for text in prompt_texts(prompt)]
        total = sum(weight for _, weight in prompt)
        weights = [weight / total for _, weight in prompt]
        return weighted_sum([e for e, _ in parts], weights), weighted_sum([p for _, p in parts], weights)


def weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum(w * x) in float32, back in the tensors' dtype; a weight of 1 next to 0s returns x exactly."""
    out = tensors[0].float() * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:]):
        out = out + tensor.float() * weight
    return out.to(tensors[0].dtype)
