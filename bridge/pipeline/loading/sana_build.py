"""SANA-Sprint pipelines with random weights: ``demo-sana`` (small, the real block types: linear
attention transformer with embedded guidance, Gemma-2, DC-AE with f 32), ``random-sana`` (the
published 0.6B transformer, DC-AE f32c32 and Gemma-2 2B configs bundled in ``configs/sana-sprint``) and
``random-sana-1.6b`` (the 1.6B transformer of ``configs/sana-sprint-1.6b``, the same other parts).

No model hub here, so the tokenizer is made offline: a Gemma tokenizer (BOS first, right padding,
SentencePiece's ``▁`` for spaces) over lower-case letters and byte fallback. It tokenizes any text,
so the whole daemon runs; it is not Gemma's vocabulary (``random-sana`` keeps the real embedding
size, 256000 rows, so its compute is the real model's). A hub id or diffusers folder of the real
model brings its own tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..families.sana import SANA

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
LETTERS = "▁abcdefghijklmnopqrstuvwxyz0123456789,.'-:"


def offline_tokenizer():
    """A Gemma tokenizer made here: specials at Gemma's ids, a few symbols, every byte as fallback."""
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for symbol in [f"<0x{b:02X}>" for b in range(256)] + list(LETTERS):
        vocab[symbol] = len(vocab)
    tokenizer = GemmaTokenizerFast(vocab=vocab, merges=[], add_bos_token=True)
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
    torch.manual_seed(0)
    with torch.device(device):
        modules = {"transformer": SanaTransformer2DModel.from_config(transformer),
                   "text_encoder": Gemma2Model(Gemma2Config(**text)),
                   **({"vae": AutoencoderDC.from_config(vae)} if with_vae else {})}
    for module in modules.values():
        module.eval().requires_grad_(False)
        if dtype != torch.float32:
            module.to(dtype=dtype)
    scheduler = SCMScheduler.from_config(json.loads((SANA.configs / "scheduler/scheduler_config.json").read_text()))
    return {**modules, "tokenizer": tokenizer, "scheduler": scheduler}
