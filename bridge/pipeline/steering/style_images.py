"""Style images for the IP-Adapter: encoded to projected image tokens, cached, handed to a frame.

``StyleTokens`` runs the adapter's image encoder and projection once per image content (cached by
digest), so a held style image costs nothing per frame; ``values`` gives the renderer a frame's
style inputs (tokens and ``style_scale``) and ``graph_inputs`` zero buffers of their shapes for
capturing a frame graph, like ``control_images.py`` does for the ControlNets.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ...core.scene import InputImage
from .ip_adapter import IpAdapter


class StyleTokens:
    """The projected image tokens of recent style images by digest; ``encodes`` counts encoder runs."""

    def __init__(self, adapter: IpAdapter, device: torch.device, dtype: torch.dtype, cache_size: int = 8):
        self.adapter = adapter
        self.device = device
        self.dtype = dtype
        self.encodes = 0
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self._uncond_features: torch.Tensor | None = None
        self._token_shape: tuple[int, ...] | None = None

    @torch.inference_mode()
    def tokens(self, image: InputImage) -> dict[str, torch.Tensor]:
        """``alone`` (1, T, C): the tokens without guidance; ``cond``/``uncond``: with guidance, projected
        as one batch of two like diffusers does (so each path gives diffusers' exact values)."""
        found = self._cache.get(image.digest)
        if found is not None:
            self._cache.move_to_end(image.digest)
            return found
        from PIL import Image

        adapter = self.adapter
        pixels = adapter.feature_extractor(Image.fromarray(image.pixels[..., :3], "RGB"),
                                           return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        features = self._features(pixels)
        if self._uncond_features is None:  # the unconditional image: zero embeds (plus: a zero image's states)
            self._uncond_features = self._features(torch.zeros_like(pixels)) if adapter.penultimate \
                else torch.zeros_like(features)
        alone = adapter.projection(features)
        pair = adapter.projection(torch.cat([self._uncond_features, features]))
        out = {"alone": alone.to(self.dtype), "uncond": pair[:1].to(self.dtype), "cond": pair[1:].to(self.dtype)}
        self.encodes += 1
        self._cache[image.digest] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    @property
    def token_shape(self) -> tuple[int, ...]:
        """(1, T, C) of a style image's tokens (the projection of zero features, worked out once)."""
        if self._token_shape is None:
            config = self.adapter.encoder.config
            side = config.image_size // config.patch_size
            shape = (1, side * side + 1, config.hidden_size) if self.adapter.penultimate else (1, config.projection_dim)
            with torch.inference_mode():
                zeros = torch.zeros(shape, dtype=self.dtype, device=self.device)
                self._token_shape = tuple(self.adapter.projection(zeros).shape)
        return self._token_shape

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.adapter.penultimate:
            return self.adapter.encoder(pixels, output_hidden_states=True).hidden_states[-2]
        return self.adapter.encoder(pixels).image_embeds


def values(style: StyleTokens | None, image: InputImage | None, scale: float, cfg: bool) -> dict:
    """The frame's style inputs (``style_tokens``, with guidance ``style_uncond``, ``style_scale``), or none."""
    if style is None or image is None:
        return {}
    tokens = style.tokens(image)
    # A float, like guidance: a frame graph fills its 0-d input with it (no host-to-device copy that
    # would wait for the GPU); eager, it is diffusers' own Python float.
    out: dict = {"style_scale": float(scale)}
    if cfg:
        return {**out, "style_tokens": tokens["cond"], "style_uncond": tokens["uncond"]}
    return {**out, "style_tokens": tokens["alone"]}


def graph_inputs(style: StyleTokens | None, on: bool, cfg: bool) -> dict[str, torch.Tensor]:
    """Zero buffers shaped like ``values``, for capturing a frame graph."""
    if style is None or not on:
        return {}
    shape = style.token_shape
    made = {"style_scale": torch.zeros((), dtype=torch.float32, device=style.device),
            "style_tokens": torch.zeros(shape, dtype=style.dtype, device=style.device)}
    if cfg:
        made["style_uncond"] = torch.zeros(shape, dtype=style.dtype, device=style.device)
    return made
