"""Attention kernels for training, chosen by name through transformers' attention interface.

Registered under their own names, they apply only to the models loaded with that `attn_implementation`.
"""

from __future__ import annotations

EAGER_AUTOCAST = "eager_autocast"


def attention_implementation(attention: str) -> str | None:
    """The attn_implementation to load the model with; None keeps the model's default."""
    import torch

    if attention != "auto":
        return attention
    # On a CPU, PyTorch's SDPA backward loses to plain matmul + softmax by far on short padded rows
    # (11 vs 3.6 ms a layer forward and backward, embedded model's batches); on a GPU the model's own.
    return None if torch.cuda.is_available() else eager_autocast_attention()


def eager_autocast_attention() -> str:
    """The name of eager attention computed in the autocast dtype, registered once.

    transformers' eager attention adds a float32 mask to the bf16 scores, which makes a float32 square per
    head, takes the softmax into float32 and casts it back to bf16: three passes over the largest tensors of
    a small model's step. Here the mask is built in the autocast dtype and the softmax runs in the scores'
    dtype. A bf16 or fp16 softmax accumulates in float32 and rounds once, so the attention weights are the
    same numbers as transformers' (tested), with a float32 tensor and two casts less each way: 3.6 vs 2.3 ms
    a layer forward and backward on the embedded model's batches. Without autocast it is transformers' eager.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if EAGER_AUTOCAST not in AttentionInterface._global_mapping:
        AttentionInterface.register(EAGER_AUTOCAST, _eager_autocast_attention)
        AttentionMaskInterface.register(EAGER_AUTOCAST, _autocast_dtype_mask)
    return EAGER_AUTOCAST


def _autocast_dtype_mask(*args, **kwargs):
    import torch
    from transformers.masking_utils import eager_mask

    device_type = torch.device(kwargs.get("device", "cpu")).type
    if torch.is_autocast_enabled(device_type):
        kwargs["dtype"] = torch.get_autocast_dtype(device_type)
    return eager_mask(*args, **kwargs)


def _repeat_kv(query, key, value):
    """Keys and values with as many heads as the query (grouped-query attention shares them)."""
    if key.shape[1] == query.shape[1]:
        return key, value
    groups = query.shape[1] // key.shape[1]
    return key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)


def _scaled_scores(query, key, scaling):
    import torch

    return torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)


def _eager_autocast_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    import torch

    key, value = _repeat_kv(query, key, value)
    scores = _scaled_scores(query, key, scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.nn.functional.softmax(scores, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def unpadded_attention(kernel: str | None) -> str:
    """The name of an attention that runs padding-free batches on `kernel` ('sdpa', else eager), registered once.

    TRL's padding-free collator concatenates a batch's rows into one sequence (position ids restarting
    per row, boundaries in cu_seq_lens_q). Only FlashAttention's varlen kernels take that as is; with
    eager or SDPA, transformers masks a block-diagonal square over the whole batch, about ten times
    the attention work of the padded batch (measured 0.32 vs 0.11 s a step, embedded model). This
    attention lays the rows out padded for the attention product alone and gathers them back, so every
    other layer (projections, MLP, norms, LM head, loss) sees real tokens only, and no token attends
    across rows.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    kernel = kernel or "sdpa"
    name = f"unpadded_{kernel}"
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, lambda *a, **kw: _unpadded_attention(kernel, *a, **kw))
        # The rows are masked inside the attention: the square block-diagonal mask is never built.
        AttentionMaskInterface.register(name, lambda *a, **kw: None)
    return name


def _unpadded_attention(kernel, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    import torch

    cu = kw.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:
        # Without row boundaries the rows cannot be kept apart: refuse rather than attend across them.
        raise ValueError("padding-free attention needs a padding-free batch (cu_seq_lens_q from TRL's collator)")
    lengths = cu.diff().long()
    rows, width, n = lengths.numel(), int(kw["max_length_q"]), query.shape[2]
    row = torch.repeat_interleave(torch.arange(rows, device=query.device), lengths, output_size=n)
    pos = torch.arange(n, device=query.device) - cu[:-1].long()[row]
    slot = row * width + pos  # each token's place in a [rows, width] grid

    def padded(x):  # [1, heads, n, dim] -> [rows, heads, width, dim]
        flat = x[0].transpose(0, 1)
        grid = flat.new_zeros(rows * width, *flat.shape[1:]).index_copy(0, slot, flat)
        return grid.view(rows, width, *flat.shape[1:]).transpose(1, 2)

    q, k, v = padded(query), padded(key), padded(value)
    k, v = _repeat_kv(q, k, v)
    idx = torch.arange(width, device=query.device)
    mask = (idx[None, :] <= idx[:, None])[None] & (idx[None, None, :] < lengths[:, None, None])
    mask = mask[:, None]  # [rows, 1, width, width]: causal, and only the row's own tokens
    p = dropout if module.training else 0.0
    if kernel == "sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scaling)
    else:
        scores = _scaled_scores(q, k, scaling)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(torch.nn.functional.dropout(weights, p=p, training=module.training), v)
    heads, dim = out.shape[1], out.shape[3]
    out = out.transpose(1, 2).reshape(rows * width, heads, dim).index_select(0, slot)
    return out.unsqueeze(0), None  # [1, n, heads, dim], as the model's own attention returns it
