"""TOPS pruning inside Hugging Face transformers: the families of :data:`tops_adapters.hf.families.FAMILIES`.

One call switches pruning on in a model you already run; ``generate()`` is
unchanged::

    from tops_adapters.transformers import Schedule, enable

    with enable(model, Schedule.paper(64)):          # Stage I 128, Stage II 32 / 16
        out = model.generate(**inputs, max_new_tokens=64)

Stage I prunes right after the projector (relevance: the vision encoder's CLS
attention for CLIP encoders, the instruction for encoders without one); Stage II prunes inside
the LLM at the schedule's layers (relevance: text-rater attention recomputed
for the rater rows only). The budget ``k`` depends on ``N`` and the schedule
only, never on the data.
"""

from __future__ import annotations

from tops_adapters.hf.budget import Budget, Schedule
from tops_adapters.hf.session import Pruning, StageRecord

__all__ = ["enable", "disable", "Budget", "Schedule", "Pruning", "StageRecord"]


def enable(
    model,
    schedule=None,
    *,
    keep=None,
    ratio=None,
    objective=None,
    relevance="auto",
    positions="auto",
    raters="all_mean",
    crops="joint",
    newlines="keep",
    spatial=True,
) -> Pruning:
    """Turn TOPS pruning on in ``model``; returns the session (also a context manager).

    Parameters
    ----------
    model : transformers model
        The ``*ForConditionalGeneration`` model (or its inner ``*Model``) of a
        family in :data:`tops_adapters.hf.families.FAMILIES`: LLaVA,
        LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5,
        GLM-4V, Mistral 3, InternVL, Idefics3, SmolVLM, Gemma 3. Another
        ``model_type`` raises an error naming the supported ones.
    schedule : Schedule, optional
        Stage I budget and Stage II points, e.g. ``Schedule.paper(T)``. Shortcuts:
        ``keep=`` tokens or ``ratio=`` give a Stage-I-only schedule. Exactly one
        of ``schedule``, ``keep`` and ``ratio``.
    objective : tops_core.Objective or rule, optional
        What the selector maximises. Default ``tops_core.TOPSRule()``: the
        paper's rule (normalised relevance + 0.5 diversity + 0.5 coverage), the
        method this integration reproduces. Pass ``tops_core.Objective()`` for
        the certified relevance-weighted coverage objective.
    relevance : {"auto", "cls", "instruction", "uniform"}
        Stage I scores. ``auto``: CLS attention (LLaVA, LLaVA-NeXT, InternVL),
        the instruction for every other family (SigLIP, Pixtral, Qwen and GLM
        encoders have no CLS token); a row without text is refused, not
        scored uniformly.
    positions : {"auto", "contiguous", "original"}
        Position ids after pruning: renumbered from 0 (the paper) or the
        original ones (FastV-style). M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
        Qwen3.5, GLM-4V) requires ``"original"``; ``"auto"`` (default) picks it
        for them and ``"contiguous"`` for the other families.
    raters : {"all_mean", "last", "threshold"}
        Stage II text raters (see :func:`tops_adapters.hf.scores.rater_relevance`).
    crops : {"joint", "crop"}
        LLaVA-NeXT: one budget over all anyres crops, or split over crops in
        proportion to their token counts.
    newlines : {"keep", "select"}
        LLaVA-NeXT ``image_newline`` tokens: always kept and not counted in the
        budget, or ordinary candidates.
    spatial : bool, default True
        Position-aware similarity (:func:`tops_core.spatial` with its defaults) at
        Stage I with a ``tops_core.Objective`` (the rules keep the plain cosine), where
        the layout is known: LLaVA-1.5's square patch grids, and the merged grids
        (``image_grid_thw``) of Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and GLM-4V.
        The other families, and Stage II, select on the plain cosine. Where the layout
        is known but a forward's images do not fit it (pre-encoded features without
        ``image_grid_thw``, another grid) it raises rather than falling back.
        ``False`` turns it off.

    Returns
    -------
    Pruning
        ``.disable()`` (or leaving the ``with`` block) restores the model;
        ``.history`` holds the last prefill's :class:`StageRecord` s.
    """
    given = [x is not None for x in (schedule, keep, ratio)]
    if sum(given) != 1:
        from tops_core._validate import InvalidInputError

        raise InvalidInputError(
            "enable needs exactly one of schedule=, keep= or ratio=; got "
            f"schedule={schedule!r}, keep={keep!r}, ratio={ratio!r}"
        )
    if schedule is None:
        schedule = Schedule(stage1=Budget(keep=keep, ratio=ratio))
    return Pruning(
        model,
        schedule,
        objective=objective,
        relevance=relevance,
        positions=positions,
        raters=raters,
        crops=crops,
        newlines=newlines,
        spatial=spatial,
    )


def disable(session: Pruning) -> None:
    """Turn pruning off again (same as ``session.disable()``)."""
    session.disable()
