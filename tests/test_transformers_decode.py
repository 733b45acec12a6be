"""Decoding a pruned prompt: every family and position mode, checked against the plain model.

The reference never looks inside the session: it takes the pruned sequence the
first decoder layer saw in the prefill, runs the unpatched model on it with the
positions the mode promises, and decodes step by step from its own cache. A
session that failed to map a decode step (positions, mask) onto the pruned KV
cache gives other logits, or crashes.
"""

import copy
import functools

import pytest
import torch
from tiny_hf import (
    MROPE_FAMILIES,
    NEW_FAMILIES,
    family_prompt,
    llava_next_prompt,
    llava_prompt,
    qwen_prompt,
    tiny_family,
    tiny_llava,
    tiny_llava_next,
    tiny_qwen,
)
from tops_adapters.hf.compat import cache_argument, output_cache
from tops_adapters.hf.families import FAMILIES as TABLE
from tops_adapters.transformers import Schedule, enable
from transformers.cache_utils import DynamicCache

from tops_core import InvalidInputError

STEPS = 4
FAMILIES = ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl", *NEW_FAMILIES]
# M-RoPE families keep their 3-D positions: "original" is their only mode; the other new families
# run their default (contiguous), Gemma 3 (its rebuilt mask mapping) both.
CASES = [
    ("llava", "contiguous"),
    ("llava", "original"),
    ("llava_next", "contiguous"),
    ("llava_next", "original"),
    ("qwen2_vl", "original"),
    ("qwen2_5_vl", "original"),
    *[(kind, "original" if kind in MROPE_FAMILIES else "contiguous") for kind in NEW_FAMILIES],
    ("gemma3", "original"),
]
# The first layer each family can prune at in Stage II (None: Stage I only).
STAGE2_LAYER = {"qwen3_vl": 2, "qwen3_5": 3, "gemma3": None}


def language_model(model):
    return getattr(model.model, TABLE[model.config.model_type].language_model)


def build(family):
    if family == "llava":
        return tiny_llava(), llava_prompt()
    if family == "llava_next":
        model = tiny_llava_next()
        return model, llava_next_prompt(model)[0]
    if family in NEW_FAMILIES:
        model = tiny_family(family)
        return model, family_prompt(family, model)
    return tiny_qwen(family), qwen_prompt()


@functools.cache
def family_model(family):
    model, prompt = build(family)
    return family, model, prompt


def full_positions(model, family, prompt):
    """Positions of the unpruned prompt as the plain model numbers them: (1, L), or (3, 1, L) for M-RoPE."""
    length = prompt["input_ids"].shape[1]
    if family.startswith("qwen") or family in MROPE_FAMILIES:
        positions, _ = model.model.get_rope_index(
            prompt["input_ids"], prompt["mm_token_type_ids"], image_grid_thw=prompt["image_grid_thw"]
        )
        return positions
    return torch.arange(length)[None]


@torch.no_grad()
def plain_prefill(model, family, prompt, embeds, positions, columns, kept):
    """The unpatched model's prefill on the pruned prompt's embeddings (and what else its family reads)."""
    if family == "gemma3":  # the image's tokens attend to each other (bidirectional block)
        types = prompt["token_type_ids"][:, columns]
        mask = torch.ones_like(types)  # explicit: gathered positions must not read as packed sequences
        return model(
            inputs_embeds=embeds,
            position_ids=positions,
            token_type_ids=types,
            attention_mask=mask,
            use_cache=True,
        )
    if family == "qwen3_vl":  # deepstack features of the kept image tokens, added after the first layers
        encoded = model.model.get_image_features(prompt["pixel_values"], prompt["image_grid_thw"])
        # one tensor per level (5.17) or, per level, one tensor per image (5.24)
        levels = [
            torch.cat(level) if isinstance(level, (list, tuple)) else level
            for level in encoded.deepstack_features
        ]
        lm = model.model.language_model
        out = lm(
            inputs_embeds=embeds,
            position_ids=positions,
            use_cache=True,
            visual_pos_masks=(prompt["input_ids"][:, columns] == model.config.image_token_id),
            deepstack_visual_embeds=[level[kept] for level in levels],
        )
        out.logits = model.lm_head(out.last_hidden_state)
        return out
    return model(inputs_embeds=embeds, position_ids=positions, use_cache=True)


@torch.no_grad()
def plain_decode(model, family, prompt, columns, kept, embeds, prefill_positions, next_position, steps):
    """Greedy logits of the unpatched model on ``embeds``, decoding from position ``next_position``."""
    out = plain_prefill(model, family, prompt, embeds, prefill_positions, columns, kept)
    logits, token = [out.logits[:, -1]], out.logits[:, -1].argmax(-1)
    tokens = [token]
    for t in range(steps - 1):
        position = torch.full((*prefill_positions.shape[:-1], 1), next_position + t)
        out = model(
            input_ids=token[:, None],
            position_ids=position,
            use_cache=True,
            **{cache_argument(model): output_cache(out)},
        )
        token = out.logits[:, -1].argmax(-1)
        logits.append(out.logits[:, -1])
        tokens.append(token)
    return torch.cat(tokens), torch.stack(logits)


@pytest.mark.parametrize(("family", "positions"), CASES)
@torch.no_grad()
def test_pruned_generate_decodes_as_the_plain_model_on_the_pruned_prompt(family, positions):
    family, model, prompt = family_model(family)
    seen = []
    hook = (
        language_model(model).layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    )
    try:
        with enable(model, keep=5, positions=positions) as session:
            out = model.generate(
                **prompt,
                max_new_tokens=STEPS,
                min_new_tokens=STEPS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
    finally:
        hook.remove()
    columns = session.history[0].columns
    pruned = seen[0]  # the prefill: the pruned prompt's embeddings
    assert pruned.shape[1] == columns.shape[1] < prompt["input_ids"].shape[1]
    full = full_positions(model, family, prompt)
    if positions == "original":
        kept = full[..., columns[0]]
        start = int(full.max()) + 1
    else:
        kept, start = torch.arange(columns.shape[1])[None], columns.shape[1]
    tokens, logits = plain_decode(
        model, family, prompt, columns[0], session.history[0].kept[0], pruned, kept, start, STEPS
    )
    assert out.sequences[0, prompt["input_ids"].shape[1] :].tolist() == tokens.tolist()
    torch.testing.assert_close(torch.stack(out.logits), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_prompt_without_image_runs_plain_between_pruned_ones(family):
    family, model, prompt = family_model(family)
    text = {"input_ids": torch.tensor([[1, 5, 6, 7]])}
    ref = model.generate(**text, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    with enable(model, keep=5, positions="original"):
        model.generate(**prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        assert torch.equal(model.generate(**text, max_new_tokens=3, min_new_tokens=3, do_sample=False), ref)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_copied_cache_keeps_decoding_the_pruned_prompt(family):
    """A deepcopy of the prefill's cache (the documented prompt-reuse pattern) carries the pruned sequence."""
    family, model, prompt = family_model(family)
    layer = STAGE2_LAYER.get(family, 1)
    schedule = Schedule(stage1=8, stage2=() if layer is None else ((layer, 4),))
    with enable(model, schedule, positions="original"):
        out = model(**prompt, use_cache=True)
        cache = output_cache(out)
        token = out.logits[:, -1:].argmax(-1)
        step = dict(input_ids=token, use_cache=True)
        first = model(**step, **{cache_argument(model): copy.deepcopy(cache)}).logits
        second = model(**step, **{cache_argument(model): cache}).logits
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_a_decode_step_that_cannot_be_mapped_raises(family):
    family, model, prompt = family_model(family)
    length = prompt["input_ids"].shape[1]
    with enable(model, keep=5, positions="original"):
        out = model(**prompt, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        pruned_len = output_cache(out).get_seq_length()
        # the full prompt's mask (generate's coordinates) on a cache the pruned prefill did not fill
        foreign = DynamicCache(config=model.config.get_text_config())
        width = model.config.get_text_config().hidden_size
        language_model(model)(
            inputs_embeds=torch.zeros(1, pruned_len, width),
            use_cache=True,
            **{cache_argument(model): foreign},
        )
        full_mask = torch.ones(1, length + 1, dtype=torch.long)
        with pytest.raises(InvalidInputError, match="does not carry the pruned sequence"):
            model(
                input_ids=token, attention_mask=full_mask, use_cache=True, **{cache_argument(model): foreign}
            )
        # a new image on a cache that already holds a prompt
        with pytest.raises(InvalidInputError, match="images in a forward that continues a KV cache"):
            model(**prompt, use_cache=True, **{cache_argument(model): output_cache(out)})
        # a cache that is not a transformers Cache (legacy tuples)
        with pytest.raises(InvalidInputError, match="as a transformers Cache"):
            language_model(model)(input_ids=token, use_cache=True, **{cache_argument(model): ((1, 2),)})
    out = None
    with enable(model, keep=5, positions="original"):
        out = model(**prompt, use_cache=True)
    with (
        enable(model, keep=5, positions="original"),
        pytest.raises(InvalidInputError, match="pruned by another TOPS pruning session"),
    ):
        model(input_ids=token, use_cache=True, **{cache_argument(model): output_cache(out)})
