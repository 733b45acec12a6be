"""Relevance and similarity on the model's device (torch ops, no host copy).

Everything here recomputes only the attention rows it needs (a CLS row, the
text-rater rows), so the model itself keeps its SDPA / flash attention.
"""

from __future__ import annotations

import torch

from .compat import rotary_function

__all__ = ["cosine_similarity", "cls_attention", "instruction_relevance", "rater_relevance", "RATERS"]

RATERS = ("all_mean", "last", "threshold")


def cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    """``(1 + cos) / 2`` of token features ``(B, N, d)`` -> ``(B, N, N)`` float32.

    The same quantity as :func:`tops_core.cosine` (non-negative, as
    :func:`tops_core.select` requires), computed where the features live.
    """
    x = features.float()
    norm = x.norm(dim=-1, keepdim=True)
    unit = x / torch.where(norm == 0, torch.ones_like(norm), norm)
    cos = (unit @ unit.transpose(-1, -2)).clamp_(-1.0, 1.0)
    cos = (cos + cos.transpose(-1, -2)) / 2  # exact symmetry
    return (1 + cos) / 2


def _query_key(attention, rows: torch.Tensor, tokens: torch.Tensor):
    """Float32 queries ``(B, H, R, d)`` of ``rows`` and keys ``(B, Hkv, L, d)`` of ``tokens``, before RoPE.

    As the attention module computes them: a ``q_proj`` that also holds the
    output gate (Qwen3.5) keeps the query half, and ``q_norm`` / ``k_norm``
    (Qwen3, Gemma 3) are applied per head.
    """
    d = attention.head_dim
    b = rows.shape[0]
    q = attention.q_proj(rows)
    heads = attention.config.num_attention_heads
    if q.shape[-1] == 2 * heads * d:  # query and output gate interleaved per head
        q = q.view(b, rows.shape[1], heads, 2 * d)[..., :d]
    q = q.reshape(b, rows.shape[1], -1, d)
    k = attention.k_proj(tokens).view(b, tokens.shape[1], -1, d)
    if getattr(attention, "q_norm", None) is not None:
        q = attention.q_norm(q)
    if getattr(attention, "k_norm", None) is not None:
        k = attention.k_norm(k)
    return q.transpose(1, 2).float(), k.transpose(1, 2).float()


def cls_attention(layer, hidden: torch.Tensor) -> torch.Tensor:
    """CLS -> token attention of a ViT encoder layer, averaged over heads.

    Parameters
    ----------
    layer : CLIPEncoderLayer-like or InternVLVisionLayer-like
        Has ``layer_norm1`` and ``self_attn`` (CLIP) or ``layernorm_before``
        and ``attention`` (InternViT, whose optional ``q_norm`` / ``k_norm``
        act on the whole embedding), each with ``q_proj``, ``k_proj``,
        ``num_heads``, ``head_dim`` and ``scale``.
    hidden : torch.Tensor, shape (C, 1 + P, d)
        The layer's input (CLS first).

    Returns
    -------
    torch.Tensor, shape (C, 1 + P), float32
        Softmax row of the CLS query (sums to 1 over all tokens, CLS included).
    """
    attn = getattr(layer, "self_attn", None) or layer.attention
    norm = getattr(layer, "layer_norm1", None) or layer.layernorm_before
    normed = norm(hidden)
    c, n, _ = normed.shape
    q, k = attn.q_proj(normed[:, :1]), attn.k_proj(normed)
    if getattr(attn, "q_norm", None) is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = q.view(c, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = k.view(c, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    logits = (q.float() @ k.float().transpose(-1, -2)) * attn.scale
    return logits.softmax(dim=-1).mean(dim=1)[:, 0]


def instruction_relevance(
    visual: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor
) -> torch.Tensor:
    """Mean ``(1 + cos) / 2`` between each visual token and the instruction's tokens.

    Parameters
    ----------
    visual : (B, N, d) projected visual tokens.
    tokens : (B, L, d) input embeddings of the whole sequence.
    text_mask : (B, L) bool, the instruction tokens (text, not padding).

    Returns
    -------
    torch.Tensor, shape (B, N), float32 in [0, 1]
        Uniform ``0.5`` for a row without text.
    """
    v = torch.nn.functional.normalize(visual.float(), dim=-1)
    t = torch.nn.functional.normalize(tokens.float(), dim=-1)
    cos = (1 + (v @ t.transpose(-1, -2)).clamp(-1.0, 1.0)) / 2
    w = text_mask.float()
    count = w.sum(dim=-1, keepdim=True)
    rel = (cos * w[:, None, :]).sum(dim=-1) / count.clamp(min=1)
    return torch.where(count > 0, rel, torch.full_like(rel, 0.5))


def rater_relevance(layer, hidden, cos, sin, visual_pos, valid, raters="all_mean"):
    """Mean attention of the text rater tokens to each visual token at a decoder layer.

    Recomputes ``softmax(q_rater K^T * scaling)`` with the layer's own
    ``q_proj``/``k_proj`` and RoPE for the rater rows only (causal and
    padding-masked over all keys), so the layer itself keeps SDPA.

    Parameters
    ----------
    layer : decoder layer with ``input_layernorm`` and ``self_attn`` (``q_proj``,
        ``k_proj``, ``head_dim``, ``scaling``; optionally ``q_norm``, ``k_norm``),
        rotated with its modeling module's ``apply_rotary_pos_emb``.
    hidden : (B, L, D) the layer's input hidden states.
    cos, sin : (B, L, rotary_dim) the RoPE tables the layer receives.
    visual_pos : (B, N) long, positions of the visual tokens (ascending).
    valid : (B, L) bool, non-padding tokens.
    raters : {"all_mean", "last", "threshold"}
        ``all_mean``: every text token after the last visual token;
        ``last``: the last token (FastV); ``threshold``: SparseVLM's rule —
        ``M = V T^T`` softmaxed over the text, averaged over the visual
        tokens; raters are the text tokens above the mean.

    Returns
    -------
    torch.Tensor, shape (B, N), float32, non-negative
    """
    attn = layer.self_attn
    b, length, _ = hidden.shape
    dev = hidden.device
    normed = layer.input_layernorm(hidden)
    start = int(visual_pos[:, -1].min()) + 1  # first column after the image in every row
    tail = torch.arange(start, length, device=dev)
    cols = torch.arange(length, device=dev)
    weight = valid[:, start:].float()
    is_visual = torch.zeros(b, length, dtype=torch.bool, device=dev)
    is_visual.scatter_(1, visual_pos, True)
    weight = weight * (~is_visual[:, start:]).float()
    if raters == "last":
        weight = torch.zeros_like(weight)
        weight[:, -1] = 1.0
    elif raters == "threshold":
        vis = normed.gather(1, visual_pos[..., None].expand(-1, -1, normed.shape[-1])).float()
        txt = normed[:, start:].float()
        m = vis @ txt.transpose(-1, -2)
        m = m.masked_fill(weight[:, None, :] == 0, float("-inf")).softmax(dim=-1).mean(dim=1)
        count = weight.sum(-1, keepdim=True).clamp(min=1)
        mean = (m * weight).sum(-1, keepdim=True) / count
        chosen = ((m > mean) & (weight > 0)).float()
        weight = torch.where(chosen.sum(-1, keepdim=True) > 0, chosen, weight)
    q, k = _query_key(attn, normed[:, start:], normed)
    rotate = rotary_function(attn)
    c, s = cos.float(), sin.float()
    q, _ = rotate(q, q, c[:, start:], s[:, start:])
    k, _ = rotate(k, k, c, s)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q @ k.transpose(-1, -2)) * attn.scaling  # (B, H, R, L)
    allowed = (cols[None, :] <= tail[:, None])[None] & valid[:, None, :]  # (B, R, L)
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    probs = logits.softmax(dim=-1).nan_to_num_(0.0).mean(dim=1)  # (B, R, L)
    to_visual = probs.gather(2, visual_pos[:, None, :].expand(-1, probs.shape[1], -1))
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    return (to_visual * weight[..., None]).sum(dim=1)
