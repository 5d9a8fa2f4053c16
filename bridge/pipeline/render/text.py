"""Prompt conditioning: token ids, the embedding cache, and prompt blends.

Embeddings are cached per text (LRU), so a seed-, guidance-, steps- or size-only change never
runs the text encoders, and neither does moving a blend's weights: a blend is the weighted sum
of its texts' cached embeddings (weights relative, normalised by their sum).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, ContextManager

import numpy as np
import torch

from ...core.params import Prompt, prompt_texts
from ..families.family import Family, family_of_pipeline

CLIP_TOKENS = 77

Embeddings = tuple[torch.Tensor, torch.Tensor]  # (prompt_embeds (1, 77, D), pooled (1, P))


class PromptEncoder:
    """Token ids and cached embeddings; ``encode(ids)`` runs the text encoders (maybe as a graph)."""

    def __init__(self, pipe, tokenizers: list, encode: Callable[[torch.Tensor], Embeddings], pin: bool, cache_size: int = 256,
                 stage: Callable[[str], ContextManager] = lambda name: nullcontext(), family: Family | None = None):
        self.pipe = pipe
        self.family = family or family_of_pipeline(pipe)
        self.tokenizers = tokenizers  # one per text encoder, in the order of the token-id rows
        self.encode = encode
        self.stage = stage  # times a stage of the frame (tokenize, text_encoders)
        self.pin = pin
        self.runs = 0  # text encoder runs, for tests and health
        self._cache: OrderedDict[tuple, Embeddings] = OrderedDict()
        # The text encoders' LoRA state: embeddings encoded under another state are not reused
        # (and come back into use if that state returns).
        self.variant: tuple = ()
        self._cache_size = cache_size
        self._zeros: Embeddings | None = None
        # A separate tokenizer for counting on the event loop: a fast tokenizer is not safe to
        # reconfigure (truncation/padding) from two threads at once.
        self._counter = pipe.tokenizer.__class__.from_pretrained(pipe.tokenizer.name_or_path) \
            if pipe.tokenizer.name_or_path else pipe.tokenizer

    def warnings(self, text: str) -> list[str]:
        """A warning when CLIP would cut the text; runs on the event loop."""
        ids = self._counter(text, truncation=False, add_special_tokens=True).input_ids
        if len(ids) <= CLIP_TOKENS:
            return []
        kept = self._counter.decode(ids[1:CLIP_TOKENS - 1])
        return [f"prompt is {len(ids)} tokens; CLIP reads {CLIP_TOKENS} (start and end included), "
                f"so only this part is used: {kept!r}"]

    def token_ids(self, text: str) -> torch.Tensor:
        """(encoders, 77) token ids: SDXL's CLIP-L and CLIP-G rows differ on '!' and padding.

        Padded by hand: the tokenizers' own padding to tensors costs ten times the encoding.
        """
        rows = np.empty((len(self.tokenizers), CLIP_TOKENS), np.int64)
        for row, tokenizer in zip(rows, self.tokenizers):
            ids = tokenizer(text, truncation=True, max_length=CLIP_TOKENS).input_ids
            row[:len(ids)] = ids
            row[len(ids):] = tokenizer.pad_token_id
        ids = torch.from_numpy(rows)
        return ids.pin_memory() if self.pin else ids

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

    def embeddings(self, text: str) -> Embeddings:
        """(prompt_embeds, pooled) for one text, from the cache when it was seen before."""
        found = self.cached(text)
        if found is not None:
            return found
        with self.stage("tokenize"):
            ids = self.token_ids(text)
        with self.stage("text_encoders"), torch.inference_mode():
            embeds, pooled = self.encode(ids)
        return self.store(text, embeds, pooled)

    @property
    def zeros(self) -> Embeddings:
        """Zero embeddings of the family's shapes (SDXL-Turbo's unconditional branch): the encoders'
        hidden states side by side, and the last encoder's pooled projection or (1, 0) without one."""
        if self._zeros is None:
            encoders = [getattr(self.pipe, name) for name in self.family.text_encoders]
            last = encoders[-1]
            width = sum(encoder.config.hidden_size for encoder in encoders)
            pooled = last.config.projection_dim if self.family.pooled else 0
            self._zeros = (torch.zeros((1, CLIP_TOKENS, width), dtype=last.dtype, device=last.device),
                           torch.zeros((1, pooled), dtype=last.dtype, device=last.device))
        return self._zeros

    def unconditional(self, negative_prompt: Prompt) -> Embeddings:
        """Guidance's unconditional branch: the negative prompt's embeddings (cached like prompts).

        Without a negative prompt, zeros when the model asks for them (SDXL-Turbo's
        ``force_zeros_for_empty_prompt``), else the empty text's embeddings, as diffusers does.
        """
        if negative_prompt == "" and self.pipe.config.get("force_zeros_for_empty_prompt", False):
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
