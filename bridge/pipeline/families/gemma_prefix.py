"""Gemma-2 over the tokens after a constant prefix, the prefix's keys and values computed once.

SANA-Sprint puts the same long chat instruction in front of every prompt (``sana.py``). Gemma is a
causal decoder: the prefix's hidden states, keys and values never depend on what follows it. So
``InstructionPrefix`` runs Gemma once over a whole padded text (at load), keeps the first
``length`` positions' keys and values of every layer and the first token's hidden state, and from
then on runs Gemma over the tokens after the prefix only: their queries attend to the kept keys and
values and, causally, to each other.

Nothing of it is mutated by a frame: the kept tensors are read, never written (a CUDA graph replays
the same frame function every frame), and each call builds its own throw-away cache object. The
prefix is kept from a run over a whole text, the shapes of encode_prompt's call, so its keys and
values are that call's; ``check`` compares a run through the prefix with Gemma's own call on
another text before anything uses it.
"""

from __future__ import annotations

import inspect

import torch

# The attention implementations that take the additive mask ``causal_mask`` makes: eager attention adds
# it to the scores, SDPA passes it on as its attn_mask (transformers 5.17 runs Gemma-2 with SDPA, 5.25
# with eager attention).
ATTENTION = ("eager", "sdpa")


class _Prepended:
    """The one cache method Gemma's attention calls, ``update``: the layer's new keys and values after
    the kept ones (a new tensor, nothing stored). With no kept ones it records what it is given."""

    def __init__(self, keys: list[torch.Tensor] | None, values: list[torch.Tensor] | None, start: int):
        self.keys, self.values, self.start = keys, values, start
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The positions before the new tokens (transformers asks when it is not given positions)."""
        return self.start

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_, **__):
        if self.keys is None:
            self.recorded[layer_idx] = (keys, values)
            return keys, values
        rows = keys.shape[0]
        return (torch.cat([self.keys[layer_idx].expand(rows, -1, -1, -1), keys], dim=-2),
                torch.cat([self.values[layer_idx].expand(rows, -1, -1, -1), values], dim=-2))


def causal_mask(count: int, start: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Queries at positions start..start+count-1 over keys 0..start+count-1, causal, as an additive
    mask (0 or the dtype's min, as transformers makes eager attention's), for both of Gemma-2's layer
    kinds (texts shorter than the sliding window: the same mask).

    No padding mask: the texts are right-padded, so a real token's keys are all real; the pads'
    own states come out different from encode_prompt's, and are masked after (``GemmaText``)."""
    mask = torch.full((count, start + count), torch.finfo(dtype).min, dtype=dtype, device=device).triu(start + 1)
    return {"full_attention": mask[None, None], "sliding_attention": mask[None, None]}


class InstructionPrefix:
    """The first ``length`` tokens' keys and values per layer and the first token's hidden state, of
    a Gemma-2 in eager or SDPA attention; ``run`` continues from them."""

    def __init__(self, encoder, text: torch.Tensor, length: int):
        """``text`` (1, L) on the host: a whole padded text starting with the prefix's ``length`` tokens."""
        self.encoder = encoder
        self.length = length
        self.ids = text[0, :length].numpy().copy()  # the prefix's token ids (host)
        # transformers renamed Gemma's past_key_values argument to cache (5.2x; the old name warns).
        parameters = inspect.signature(encoder.forward).parameters
        self._keyword = "cache" if "cache" in parameters else "past_key_values"
        record = _Prepended(None, None, 0)
        with torch.no_grad():
            hidden = self._forward(text.to(encoder.device), 0, record)
        layers = range(encoder.config.num_hidden_layers)
        self.keys = [record.recorded[i][0][:, :, :length].clone() for i in layers]
        self.values = [record.recorded[i][1][:, :, :length].clone() for i in layers]
        self.first = hidden[:, :1].clone()  # position 0 attends to itself only: the same for every text

    @staticmethod
    def usable(encoder, total: int) -> str | None:
        """Why the prefix cannot serve this encoder for texts of ``total`` tokens, or None."""
        config = encoder.config
        if config._attn_implementation not in ATTENTION:
            return (f"attention {config._attn_implementation!r} (the cached prefix hands its own mask to "
                    f"{' or '.join(ATTENTION)} attention)")
        window = getattr(config, "sliding_window", None)
        if window is not None and total > window:
            return f"texts of {total} tokens outrun the sliding window ({window})"
        return None

    def _forward(self, tokens: torch.Tensor, start: int, cache: _Prepended) -> torch.Tensor:
        count = tokens.shape[-1]
        positions = torch.arange(start, start + count, device=tokens.device)[None]
        return self.encoder(tokens, attention_mask=causal_mask(count, start, self.encoder.dtype, tokens.device),
                            position_ids=positions, use_cache=True, **{self._keyword: cache})[0]

    def run(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, n), the text from position ``length`` on -> Gemma's last hidden state (B, n, D)."""
        return self._forward(tokens, self.length, _Prepended(self.keys, self.values, self.length))

    def check(self, text: torch.Tensor, mask: torch.Tensor) -> float:
        """How far the prefix's first state and ``run`` are from Gemma's own call on ``text`` (1, L), at
        the first token and the real tokens after the prefix: the largest difference over the largest
        value (0.0: bit for bit)."""
        with torch.no_grad():
            text, mask = text.to(self.encoder.device), mask.to(self.encoder.device)
            own = self.encoder(text, attention_mask=mask)[0]
            rest = self.run(text[:, self.length:])
        real = mask[0, self.length:].bool()
        own = torch.cat([own[0, :1], own[0, self.length:][real]]).float()
        ours = torch.cat([self.first[0], rest[0][real]]).float()
        return float((own - ours).abs().max() / own.abs().max())
