"""The pruned sequence's bookkeeping and the tensor surgery shared by Stage I and Stage II."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tops_core._validate import InvalidInputError

__all__ = [
    "StageRecord",
    "PrunedSequence",
    "kept_columns",
    "encoded_rows",
    "per_row",
    "renumber",
    "gather_mask",
]


@dataclass
class StageRecord:
    """What one pruning point did (for inspection and tests).

    Attributes
    ----------
    layer : int
        ``0`` for Stage I, else the decoder layer pruned at.
    visual_positions : (B, N) positions of the candidate visual tokens in the sequence entering the stage.
    relevance : (B, N) the scores given to the selector.
    kept : (B, k) indices into the N candidates the selector chose (ascending).
    columns : (B, L') the columns of the entering sequence that survive.
    selection : tops_core.Selection or None (None when k == N: nothing to choose).
    """

    layer: int
    visual_positions: torch.Tensor
    relevance: torch.Tensor
    kept: torch.Tensor
    columns: torch.Tensor
    selection: object = None


@dataclass
class PrunedSequence:
    """Bookkeeping of the sequence pruned at the last prefill, for decoding."""

    full_len: int
    pruned_len: int
    columns: torch.Tensor  # (B, L') kept columns of the full prompt
    valid: torch.Tensor  # (B, Lcur) non-padding, current stage
    visual_pos: torch.Tensor  # (B, Ncur) visual positions, current stage
    session: object = None  # the Pruning session that pruned it
    prefilling: bool = True  # False once the prefill returned: later forwards decode
    stages: list = field(default_factory=list)  # (layer, cum_columns in L' coords)
    override: dict = field(default_factory=dict)  # prefill: per layer type, kwargs after a Stage II point
    step: dict = field(default_factory=dict)  # decode: per (stage, layer type), kwargs of this step

    def __deepcopy__(self, memo):
        # A copied KV cache (the prompt-reuse pattern) holds the same pruned prompt: the bookkeeping
        # is read-only after the prefill, and copying would also copy the session it points to.
        return self


def kept_columns(visual, visual_pos, kept):
    """Columns that survive: every non-visual one plus the kept visual ones, in order, (B, L')."""
    keep = ~visual
    keep = keep.scatter(1, visual_pos.gather(1, kept), True)
    return keep.nonzero()[:, 1].view(visual.shape[0], -1)


def encoded_rows(encoded) -> int:
    """Image-feature rows in an encoder output (``pooler_output``: a list per image or a tensor)."""
    features = encoded.pooler_output
    if isinstance(features, (list, tuple)):
        return sum(f.shape[0] for f in features)
    return features.reshape(-1, features.shape[-1]).shape[0]


def per_row(values, b, n, what):
    """Per-token values of the encoded images as (b, n) rows.

    ``generate()`` encodes each image once and repeats its features for beams
    and ``num_return_sequences`` (``repeat_interleave`` on the batch), so rows
    encoded once are repeated the same way.
    """
    total = values.shape[0]
    if total == b * n:
        return values.view(b, n)
    if total % n == 0 and b % (total // n) == 0:
        return values.view(total // n, n).repeat_interleave(b // (total // n), dim=0)
    raise InvalidInputError(
        f"{what} covers {total} tokens but the batch holds {b} rows of {n} image tokens; pass one "
        "image per row (and one image_sizes row per image)"
    )


def renumber(valid):
    """Contiguous positions over the real tokens of each row (padding at 0), as ``generate()`` counts."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0).masked_fill(valid == 0, 0)


def gather_mask(mask, columns, rows):
    """Keep ``columns`` of an attention mask (and the same rows when ``rows``); None stays None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise InvalidInputError(
            "Stage II pruning supports tensor attention masks (eager, sdpa, flash); got "
            f"{type(mask).__name__} (e.g. flex attention's BlockMask)"
        )
    if mask.ndim == 2:
        return mask.gather(1, columns)
    if mask.ndim != 4:
        raise InvalidInputError(f"attention mask must be 2-D or 4-D; got shape {tuple(mask.shape)}")
    b = columns.shape[0]
    mask = mask.expand(b, -1, -1, -1)
    cols = columns[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1)
    mask = mask.gather(3, cols)
    if rows:
        mask = mask.gather(2, columns[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
    return mask
