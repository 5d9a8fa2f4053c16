"""Token ids on the render thread: one Rust ``encode`` on a private copy of a fast tokenizer's backend.

A transformers tokenizer call spends about half its time around the Rust encode, not in it: every call
compares (and sets) the backend's truncation and padding, wraps the text in a batch and converts the
encoding (CLIP: 0.11 ms a call on the 2-core CPU, of which the encode is 0.05; docs/benchmarks.md).
``TruncatedIds`` gives that call's ids from one ``encode`` on a copy of the backend whose truncation is
set once, at construction. Nothing reconfigures the copy afterwards and ``encode`` only reads it, so any
thread may call it, several at once; what is unsafe is reconfiguring a backend while another thread
encodes with it, which transformers' call does to the tokenizer it is given (the pipeline's, shared with
diffusers' own calls). A slow tokenizer (no Rust backend) keeps the transformers call.

``PaddedRows`` puts several tokenizers' ids side by side (CLIP's rows), and lets a row take an earlier
row's ids where its tokenizer is the same but for added tokens the text does not contain (SDXL's CLIP-G
is CLIP-L's tokenizer with '!' as a special token: one encode for both rows unless the prompt has a '!').
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np


def backend_copy(tokenizer, max_length: int | None):
    """A copy of a fast tokenizer's Rust backend that encodes as ``tokenizer(text, truncation=True,
    max_length=max_length)`` does (``None``: untruncated, as ``truncation=False``) and never pads;
    None for a slow tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return None
    copy = type(backend).from_str(backend.to_str())
    copy.no_padding()
    if max_length is None:
        copy.no_truncation()
    else:  # what transformers' set_truncation_and_padding sets for truncation=True
        copy.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    # transformers sets this on every call (its split_special_tokens: special tokens in a text are plain text)
    copy.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return copy


class TruncatedIds:
    """``tokenizer(text, truncation=True, max_length=length).input_ids`` (special tokens added): from the
    private backend copy of a fast tokenizer, from the tokenizer's own call for a slow one."""

    def __init__(self, tokenizer, length: int):
        self.tokenizer = tokenizer
        self.length = length
        self.backend = backend_copy(tokenizer, length)

    def __call__(self, text: str) -> list[int]:
        if self.backend is None:
            return self.tokenizer(text, truncation=True, max_length=self.length).input_ids
        return self.backend.encode(text).ids


def added_only_difference(a, b) -> frozenset[str] | None:
    """The texts of the added tokens that two backends do not share, where the backends are otherwise the
    same tokenizer and each of those tokens is looked for in the raw text (not normalized): a text that
    contains none of them then encodes to the same ids with both. None where they differ otherwise."""
    if a is None or b is None or a.encode_special_tokens != b.encode_special_tokens:
        return None
    first, second = json.loads(a.to_str()), json.loads(b.to_str())
    added = [{json.dumps(token, sort_keys=True) for token in state.pop("added_tokens")} for state in (first, second)]
    if first != second:
        return None
    differ = [json.loads(token) for token in added[0] ^ added[1]]
    if any(token["normalized"] for token in differ):  # matched in the normalized text: not a substring test
        return None
    return frozenset(token["content"] for token in differ)


class PaddedRows:
    """(tokenizers, length) int64 ids of a text, one row per tokenizer: each row its tokenizer's call
    ``tokenizer(text, truncation=True, max_length=length)``, padded on the right with its pad id."""

    def __init__(self, tokenizers: Sequence, length: int):
        self.length = length
        self.rows = [TruncatedIds(tokenizer, length) for tokenizer in tokenizers]
        self.pads = [tokenizer.pad_token_id for tokenizer in tokenizers]
        # Per row: (an earlier row, the added tokens it lacks or has besides) where the row's ids are that
        # row's for a text without those tokens; None where the row always encodes on its own.
        self.shares: list[tuple[int, frozenset[str]] | None] = []
        for i, row in enumerate(self.rows):
            same = ((j, added_only_difference(self.rows[j].backend, row.backend)) for j in range(i))
            self.shares.append(next(((j, differ) for j, differ in same if differ is not None), None))

    def __call__(self, text: str) -> np.ndarray:
        out = np.empty((len(self.rows), self.length), np.int64)
        encoded: list[list[int]] = []
        for row, ids_of, pad, share in zip(out, self.rows, self.pads, self.shares):
            if share is not None and not any(token in text for token in share[1]):
                ids = encoded[share[0]]
            else:
                ids = ids_of(text)
            encoded.append(ids)
            row[:len(ids)] = ids
            row[len(ids):] = pad
        return out
