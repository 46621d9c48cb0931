"""A small causal Transformer (pre-LayerNorm, GELU MLP) with a key/value cache.

It knows nothing of RL: it maps a token sequence (B, T, C) to (B, T, C) with a causal mask, and can
extend a cached prefix by new tokens without recomputing it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# One (key, value) pair per layer, each (B, H, T_past, C/H).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, past: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        qkv = self.qkv(x)  # (B, T, 3C)
        if qkv.dtype != torch.float32 and qkv.device.type == "cpu":
            # Under bf16 on CPU, the attention kernels at these short sequences are 2-3x slower than
            # in fp32 (measured: docs/benchmarks.md, "Speed"), and attention is a sliver of the
            # FLOPs: run it in fp32, outside autocast (which would cast it back to bf16).
            with torch.autocast("cpu", enabled=False):
                y, present = self._attend(qkv.float(), past)
            y = y.to(qkv.dtype)  # back to the projections' precision (also for a model cast to bf16)
        else:
            y, present = self._attend(qkv, past)
        return self.proj(y), present

    def _attend(self, qkv: torch.Tensor, past: Optional[tuple[torch.Tensor, torch.Tensor]]):
        """qkv (B, T, 3C) -> attention output (B, T, C) and this layer's (keys, values) for the cache."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = qkv.split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, T_past + T, hd)
            v = torch.cat([past[1], v], dim=2)
        t_past = k.shape[2] - T
        p = self.dropout if self.training else 0.0
        if t_past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # one new token sees everything
        else:
            # New query j sits at absolute position t_past + j and may see keys 0..t_past + j.
            mask = torch.ones(T, t_past + T, dtype=torch.bool, device=qkv.device).tril(diagonal=t_past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return y.transpose(1, 2).reshape(B, T, C), (k, v)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, past=None):
        a, present = self.attn(self.ln1(x), past)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, present


class CausalTransformer(nn.Module):
    def __init__(self, d_model: int, n_layers: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> tuple[torch.Tensor, KVCache]:
        """x (B, T, C) new tokens; cache from earlier calls or None. Returns (B, T, C) and the new cache."""
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if cache is None else cache[i])
            new_cache.append(present)
        return self.ln_f(x), new_cache
