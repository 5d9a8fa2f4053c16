"""The IP-Adapter's cross-attention processor: the style image's tokens attended beside the text.

``IpAdapter.install`` (``ip_adapter.py``) wraps each cross-attention processor of the UNet with one
of these, holding that layer's added K/V projections. The frame's style reaches it through the
UNet's ``encoder_hidden_states`` as (text, tokens, scale): graph inputs, so a new style image or
scale never recompiles, and plain text states run the model's own processor unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class StyleAttnProcessor(torch.nn.Module):
    """A cross-attention processor with the IP-Adapter's added K/V projections.

    ``encoder_hidden_states`` as (text, tokens, scale) adds ``scale * attention(query, tokens)``
    to the text attention, as diffusers' ``IPAdapterAttnProcessor2_0`` does with one adapter
    (the same operations in the same order); plain text states go to the model's own processor.
    """

    def __init__(self, base, to_k_ip: torch.nn.Linear, to_v_ip: torch.nn.Linear):
        super().__init__()
        self.base = base
        self.to_k_ip, self.to_v_ip = to_k_ip, to_v_ip

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if not isinstance(encoder_hidden_states, tuple):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        encoder_hidden_states, tokens, scale = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size = encoder_hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.to_q(hidden_states)
        if getattr(attn, "fused_projections", False):  # the compiled path fuses K and V (optimize.prepare_modules)
            kv = attn.to_kv(encoder_hidden_states)
            key, value = torch.split(kv, kv.shape[-1] // 2, dim=-1)
        else:
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        ip_key = self.to_k_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        ip_value = self.to_v_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        styled = F.scaled_dot_product_attention(query, ip_key, ip_value, attn_mask=None, dropout_p=0.0,
                                                is_causal=False)
        styled = styled.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = hidden_states + scale * styled  # scale: a float, or a 0-d tensor inside a frame graph
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
