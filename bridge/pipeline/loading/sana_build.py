"""SANA-Sprint pipelines with random weights: ``demo-sana`` (small, the real block types: linear
attention transformer with embedded guidance, Gemma-2, DC-AE with f 32), ``random-sana`` (the
published 0.6B transformer, DC-AE f32c32 and Gemma-2 2B configs bundled in ``configs/sana-sprint``) and
``random-sana-1.6b`` (the 1.6B transformer of ``configs/sana-sprint-1.6b``, the same other parts).

No model hub here, so the tokenizer is made offline: a Gemma tokenizer (BOS first, right padding,
SentencePiece's ``▁`` for spaces, byte fallback) whose words are the instruction's and the 4,000 most
frequent words of the bundled CLIP vocabulary. It is not Gemma's vocabulary, but English tokenizes at
about Gemma's rate (the instruction: 210 tokens; CLIP's BPE gives 209): a prompt change runs Gemma
over as many tokens as the real model does, so benchmarks of ``random-sana`` (which keeps the real
embedding size, 256000 rows) cost what the real model costs. The letters-only tokenizer before it
made the instruction 1,058 tokens and so Gemma's share of a prompt change 2.6 times too long.
A hub id or diffusers folder of the real model brings its own tokenizer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..families.sana import INSTRUCTION, SANA
from .seeded import seeded_init

# Small but of the real kinds: 2 linear-attention blocks, a 2-layer Gemma-2, a 6-stage DC-AE (f 32).
DEMO_TRANSFORMER = {
    "in_channels": 8, "out_channels": 8, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8,
    "num_cross_attention_heads": 2, "cross_attention_head_dim": 8, "cross_attention_dim": 16,
    "caption_channels": 32, "sample_size": 32, "patch_size": 1, "qk_norm": "rms_norm_across_heads",
    "guidance_embeds": True, "guidance_embeds_scale": 0.1, "mlp_ratio": 2.5,
}
DEMO_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 16}
DEMO_VAE = {
    "latent_channels": 8, "attention_head_dim": 8,
    "encoder_block_out_channels": [8, 8, 16, 16, 32, 32], "decoder_block_out_channels": [8, 8, 16, 16, 32, 32],
    "encoder_layers_per_block": [1, 1, 1, 1, 1, 1], "decoder_layers_per_block": [1, 1, 1, 1, 1, 1],
}
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # Gemma's ids 0-4
LETTERS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.'-:"
CLIP_VOCAB = SANA.configs.parent / "sd15" / "tokenizer" / "vocab.json"  # ranked by BPE merge: by frequency
WORDS = 4000  # the most frequent words of CLIP's vocabulary that become whole tokens


def _words() -> list[str]:
    """The instruction's words, then CLIP's most frequent (lower case, two letters or more)."""
    ranked = sorted(json.loads(CLIP_VOCAB.read_text()).items(), key=lambda item: item[1])
    common = [token[:-4] for token, _ in ranked if token.endswith("</w>") and re.fullmatch(r"[a-z]{2,}", token[:-4])]
    own = [word.lower() for word in re.findall(r"[A-Za-z]{2,}", INSTRUCTION)]
    return list(dict.fromkeys(own + common[:WORDS]))


def offline_tokenizer():
    """A Gemma tokenizer made here: specials at Gemma's ids, every byte as fallback, letters and symbols,
    then whole words as BPE merge chains (``▁w``, ``▁W`` and ``W``, then bare ``w`` for the parts of
    compounds), ranked in that order so a word after a space is one token where it can be."""
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for symbol in [f"<0x{b:02X}>" for b in range(256)] + list(LETTERS):
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []

    def chain(word: str) -> None:  # "▁cat": ▁+c, ▁c+a, ▁ca+t
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                vocab[word[:end]] = len(vocab)
                merges.append((word[:end - 1], word[end - 1]))

    words = _words()
    for word in words:
        chain("▁" + word)
        chain("▁" + word.capitalize())
        chain(word.capitalize())
    for word in words:
        chain(word)
    tokenizer = GemmaTokenizerFast(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.padding_side = "right"
    return tokenizer


def _json(name: str, configs: Path = SANA.configs) -> dict:
    config = json.loads((configs / name).read_text())
    return {key: value for key, value in config.items() if not key.startswith("_") and key != "architectures"}


def transformer_config(demo: bool, configs: Path = SANA.configs) -> dict:
    """The transformer's config: the bundled one of ``configs`` (0.6B or 1.6B), or the demo's."""
    return {**_json("transformer/config.json", configs), **(DEMO_TRANSFORMER if demo else {})}


def sana_components(demo: bool, dtype: torch.dtype, device: str, with_vae: bool = True,
                    configs: Path = SANA.configs) -> dict:
    """The pipeline's modules with random weights (fixed init seed), in ``dtype`` on ``device``;
    the transformer of ``configs``, the other parts SANA-Sprint's (the 0.6B and 1.6B share them)."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel, SCMScheduler
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = offline_tokenizer()
    text = _json("text_encoder/config.json")
    if demo:
        text.update(DEMO_TEXT, vocab_size=len(tokenizer))
    transformer = transformer_config(demo, configs)
    vae = {**_json("vae/config.json"), **(DEMO_VAE if demo else {})}
    with seeded_init(0, device), torch.device(device):
        modules = {"transformer": SanaTransformer2DModel.from_config(transformer),
                   "text_encoder": Gemma2Model(Gemma2Config(**text)),
                   **({"vae": AutoencoderDC.from_config(vae)} if with_vae else {})}
    for module in modules.values():
        module.eval().requires_grad_(False)
        if dtype != torch.float32:
            module.to(dtype=dtype)
    scheduler = SCMScheduler.from_config(json.loads((SANA.configs / "scheduler/scheduler_config.json").read_text()))
    return {**modules, "tokenizer": tokenizer, "scheduler": scheduler}
