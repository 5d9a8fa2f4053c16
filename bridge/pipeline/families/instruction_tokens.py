"""encode_prompt's tokenizer call over a fixed instruction and a prompt, tokenizing the prompt's end only.

SANA-Sprint's text is a 1,057-character chat instruction followed by the prompt (``sana.py``); Gemma's
tokenizer has no pre-tokenizer, so its BPE runs over the whole text as one word (the instruction is about
nine tenths of the work) on every new prompt. ``InstructedIds`` cuts the text at the start of the
instruction's last line (the *anchor*, "User Prompt: "): the *head* before it is tokenized once, at load,
and each call encodes the anchor and the prompt (the *tail*) and puts the head's ids in front.

That equals the whole text's tokenization where no step of the tokenizer crosses the cut, which this
module proves at load from the tokenizer itself, and otherwise encodes the whole text (a private backend
copy, ``fast_tokens``):
- the normalizer and the pre-tokenizer work character by character (no step merges across the cut):
  none, one-character string replacements, lower-casing; splits on one character that is at neither side
  of the cut (the cut stays inside one word of BPE, or ends one);
- no added token can match across the cut, nor strip the whitespace before the anchor (``lstrip``);
- BPE (no dropout, no ``ignore_merges``, no word prefixes or suffixes) never merges across the cut. Its
  symbols only grow by merging two neighbours into a token whose text is theirs joined (the BPE builder
  refuses a merge whose result is not in the vocabulary). Until a merge crosses the cut, each side
  evolves as it would alone, so the symbols at the cut are, on the left, suffixes of the head's last token
  and on the right prefixes of the tail's first token; where no suffix + prefix is in the vocabulary no
  merge across the cut exists. Neither token may be the unknown token (``fuse_unk`` joins unknowns);
- the post-processor puts special tokens in front only (checked on the probes), and truncation (right)
  keeps the head.
The head's last token is fixed, the tail's first is checked on every call (the anchor's first token; a
prompt that changed it would be tokenized whole), and probes check the result against the whole text's
encoding at load. A slow tokenizer or any condition unmet: the whole text every call, ``why`` says why.
"""

from __future__ import annotations

import json

import numpy as np

from .fast_tokens import TruncatedIds, backend_copy

# A long probe: its tail is cut by the truncation (checked like the short ones).
LONG_PROBE = "a castle on a hill at dusk, " * 80


def _normalizer_safe(state: dict | None) -> bool:
    """Character-wise normalizers only: nothing they do depends on the characters around a cut."""
    if state is None:
        return True
    kind = state["type"]
    if kind == "Sequence":
        return all(_normalizer_safe(part) for part in state["normalizers"])
    if kind == "Replace":
        return "String" in state["pattern"] and len(state["pattern"]["String"]) == 1
    return kind == "Lowercase"


def _pre_tokenizer_safe(state: dict | None, sides: str) -> bool:
    """Splits on one character that is at neither side of the cut (``sides``, normalized): the cut stays
    inside one word."""
    if state is None:
        return True
    if state["type"] == "Sequence":
        return all(_pre_tokenizer_safe(part, sides) for part in state["pretokenizers"])
    pattern = state.get("pattern", {})
    return (state["type"] == "Split" and "String" in pattern and len(pattern["String"]) == 1
            and pattern["String"] not in sides)


def _added_tokens_cross(added: dict, head: tuple[str, str], anchor: tuple[str, str]) -> str | None:
    """The first added token that could match across the cut or strip the space before the anchor;
    ``head``/``anchor``: (raw, normalized) text on each side."""
    for token in added.values():
        h, a = (head[1], anchor[1]) if token.normalized else (head[0], anchor[0])
        text = token.content
        at_start = a.startswith(text) or text.startswith(a)
        if (token.lstrip or token.single_word) and at_start:
            return text
        for cut in range(1, len(text)):
            rest = text[cut:]
            if h.endswith(text[:cut]) and (a.startswith(rest) or rest.startswith(a)):
                return text
    return None


class InstructedIds:
    """``tokenizer(instruction + prompt, padding="max_length", max_length=length, truncation=True)`` as
    (ids, attention mask), (2, length) int64. ``split``: calls tokenize the tail only; ``why`` they do not.

    Thread safety: two backend copies (``fast_tokens.backend_copy``), configured here and never again,
    so any thread may call it, several at once."""

    def __init__(self, tokenizer, instruction: str, length: int, probes: tuple[str, ...]):
        self.length = length
        self.pad = tokenizer.pad_token_id
        self.instruction = instruction
        self.whole = TruncatedIds(tokenizer, length)
        cut = instruction.rfind("\n") + 1
        self.anchor = instruction[cut:]
        self.tail = backend_copy(tokenizer, None)  # untruncated, its special tokens left out per call
        self.head: list[int] = []  # the whole text's ids before the anchor, special tokens included
        self.first = -1  # the anchor's first token: every tail must start with it
        self.template = np.zeros((2, length), np.int64)  # the head's ids and mask, padding after them
        self.why = self._structure(tokenizer, instruction[:cut]) or self._cut(tokenizer, probes + (LONG_PROBE,))
        self.split = self.why is None

    def _structure(self, tokenizer, head: str) -> str | None:
        """Why the tokenizer's parts may act across the cut, or None."""
        if self.tail is None:
            return "a slow tokenizer (no Rust backend)"
        if not head or not self.anchor or self.anchor[0].isspace():
            return "the instruction has no last line to start the tail at"
        if tokenizer.truncation_side != "right":
            return f"truncation on the {tokenizer.truncation_side}"
        state = json.loads(self.tail.to_str())
        model = state["model"]
        if (model["type"] != "BPE" or model.get("dropout") or model.get("ignore_merges")
                or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")):
            return "not a plain BPE model"
        normalize = self.tail.normalizer.normalize_str if self.tail.normalizer else str
        sides = (head, normalize(head)), (self.anchor, normalize(self.anchor))
        if not _normalizer_safe(state["normalizer"]) or not sides[0][1] or not sides[1][1]:
            return f"the normalizer {state['normalizer']['type']} may change text across the cut"
        if not _pre_tokenizer_safe(state["pre_tokenizer"], sides[0][1][-1] + sides[1][1][0]):
            return f"the pre-tokenizer {state['pre_tokenizer']['type']} may split across the cut"
        crossing = _added_tokens_cross(self.tail.get_added_tokens_decoder(), *sides)
        return None if crossing is None else f"the added token {crossing!r} may match across the cut"

    def _cut(self, tokenizer, probes: tuple[str, ...]) -> str | None:
        """The head's ids and the anchor's first token from the probes; why BPE may merge across the cut
        or the probes differ from their whole text, or None."""
        whole = [self.whole(self.instruction + probe) for probe in probes]
        tails = [self._tail_ids(probe) for probe in probes]
        self.head = whole[0][:len(whole[0]) - len(tails[0])]
        if not self.head or not tails[0] or whole[0][len(self.head):] != tails[0]:
            return "the first probe's text does not end with its tail's tokens"
        self.template = self._padded(self.head)
        self.first = tails[0][0]
        if any(not tail or tail[0] != self.first for tail in tails):
            return "the anchor's first token depends on the prompt"
        if tokenizer.unk_token_id in (self.head[-1], self.first):
            return "the unknown token at the cut (unknown tokens fuse)"
        last, first = self.tail.id_to_token(self.head[-1]), self.tail.id_to_token(self.first)
        joined = (last[i:] + first[:j] for i in range(len(last)) for j in range(1, len(first) + 1))
        merged = next((text for text in joined if self.tail.token_to_id(text) is not None), None)
        if merged is not None:
            return f"BPE may merge across the cut ({merged!r} is a token)"
        if any(not np.array_equal(self._split(probe), self._padded(ids)) for probe, ids in zip(probes, whole)):
            return "a probe tokenized in two parts differs from the whole text"
        return None

    def _tail_ids(self, prompt: str) -> list[int]:
        return self.tail.encode(self.anchor + prompt, add_special_tokens=False).ids

    def _split(self, prompt: str) -> np.ndarray | None:
        """The head's cached ids and the tail's, cut at ``length`` as the backend truncates (its special
        tokens are in front, in the head); None where the tail does not start with the anchor's token."""
        tail = self._tail_ids(prompt)
        if not tail or tail[0] != self.first:
            return None
        out, start = self.template.copy(), len(self.head)
        end = min(start + len(tail), self.length)
        out[0, start:end] = tail[:end - start]
        out[1, start:end] = 1
        return out

    def _padded(self, ids: list[int]) -> np.ndarray:
        out = np.zeros((2, self.length), np.int64)
        out[0, :len(ids)] = ids
        out[0, len(ids):] = self.pad
        out[1, :len(ids)] = 1
        return out

    def __call__(self, prompt: str) -> np.ndarray:
        """``prompt`` as it follows the instruction (diffusers lower-cases and strips it first)."""
        split = self._split(prompt) if self.split else None
        return split if split is not None else self._padded(self.whole(self.instruction + prompt))
