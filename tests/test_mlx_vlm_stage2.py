"""TOPS Stage II (text-rater attention inside the LLM) in mlx-vlm, on tiny random models."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models.cache import make_prompt_cache
from tiny_mlx_vlm import BUILDERS, available, build
from tops_adapters import mlx_vlm_compat as compat
from tops_adapters.hf.budget import Schedule
from tops_adapters.mlx_vlm import enable

import tops_core
from tops_core import InvalidInputError

STAGE2 = [name for name in BUILDERS if compat.stage2_supported(compat.FAMILIES[name])]


@pytest.fixture(scope="module", params=STAGE2)
def case(request):
    name = request.param
    if not available(name):
        pytest.skip(
            f"mlx-vlm {compat.MLX_VLM_VERSION} has no {name} model; the family needs mlx-vlm "
            f">= {compat.FAMILIES[name].min_version}"
        )
    return (name, *build(name))


def tokens(model, ids, pixels, extra, steps=4, **kw):
    mask = mx.ones(ids.shape, dtype=mx.int32)
    stream = generate_step(ids, model, pixels, mask, max_tokens=steps, **extra, **kw)
    return [tok for (tok, _), _ in zip(stream, range(steps))]


@pytest.mark.parametrize("step", [None, 2048], ids=["one-forward", "mlx-vlm-chunking"])
def test_keeping_every_token_in_stage_ii_changes_nothing(case, step):
    _, model, ids, pixels, extra = case
    ref = tokens(model, ids, pixels, extra, prefill_step_size=step)
    with enable(model, Schedule(stage2=((1, 10_000),))) as session:
        assert tokens(model, ids, pixels, extra, prefill_step_size=step) == ref
    assert [r.layer for r in session.history] == [0, 1]


@pytest.mark.parametrize("step", [None, 2048], ids=["one-forward", "mlx-vlm-chunking"])
def test_stage_i_and_ii_generate_with_the_expected_kept_counts(case, step):
    _, model, ids, pixels, extra = case
    with enable(model, Schedule(stage1=8, stage2=((1, 3),))) as session:
        got = tokens(model, ids, pixels, extra, prefill_step_size=step)
    first, second = session.history
    assert (first.layer, first.kept.shape[1], second.layer, second.kept.shape[1]) == (0, 8, 1, 3)
    pruned_prompt = first.columns.shape[1]
    # mlx-vlm 0.7's chunked prefill runs the last prompt token alone (after Stage II); 0.6.8 does not
    forward = {pruned_prompt} if step is None else {pruned_prompt, pruned_prompt - 1}
    assert second.columns.shape[1] + (8 - 3) in forward
    assert len(got) == 4 and second.source == "raters"


def test_rater_relevance_and_selection_match_a_direct_computation():
    model, ids, pixels, extra = build("llava")
    layers = compat.decoder_layers(model)
    seen = {}
    plain = type(layers[0])

    def spy(layer, *args, **kwargs):  # layer 0's output is layer 1's input
        out = plain.__call__(layer, *args, **kwargs)
        seen.setdefault("hidden", out)
        return out

    layers[0].__class__ = type("Spy", (plain,), {"__call__": spy})
    try:
        with enable(model, Schedule(stage1=8, stage2=((1, 3),))) as session:
            tokens(model, ids, pixels, extra, steps=1, prefill_step_size=None)
    finally:
        layers[0].__class__ = plain
    record = session.history[1]
    hidden = seen["hidden"]
    attn = layers[1].self_attn
    normed = layers[1].input_layernorm(hidden)
    b, length, _ = hidden.shape
    q = attn.rope(attn.q_proj(normed).reshape(b, length, attn.n_heads, -1).transpose(0, 2, 1, 3))
    k = attn.rope(attn.k_proj(normed).reshape(b, length, attn.n_kv_heads, -1).transpose(0, 2, 1, 3))
    q, k = np.array(q, dtype=np.float32)[0], np.array(k, dtype=np.float32)[0]
    k = np.repeat(k, attn.n_heads // attn.n_kv_heads, axis=0)
    visual = record.visual_positions[0]
    raters = np.arange(visual[-1] + 1, length)
    logits = np.einsum("hrd,hld->hrl", q[:, raters], k) * attn.scale
    logits = np.where(np.arange(length)[None, None, :] <= raters[None, :, None], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).mean(0)
    expected = probs[:, visual].mean(0)
    np.testing.assert_allclose(record.relevance[0], expected, rtol=1e-4, atol=1e-6)
    feats = np.array(hidden[0], dtype=np.float32)[visual]
    choice = tops_core.select(expected, tops_core.cosine(feats), 3, objective=tops_core.TOPSRule())
    assert record.kept[0].tolist() == choice.indices.tolist()


def test_decoding_equals_the_plain_layers_run_on_the_pruned_sequences():
    model, ids, pixels, extra = build("llava")
    steps = 4
    with enable(model, Schedule(stage1=8, stage2=((1, 3),))) as session:
        got = tokens(model, ids, pixels, extra, steps=steps, prefill_step_size=None)
        first, second = session.history
        embeds = model.get_input_embeddings(ids, pixels).inputs_embeds  # Stage I again
    assert first.layer == 0 and second.layer == 1
    lm = model.language_model
    cache = make_prompt_cache(lm)
    layers = compat.decoder_layers(model)
    h = layers[0](embeds, "causal", cache[0])
    h = layers[1](h[:, mx.array(second.columns[0])], "causal", cache[1])
    logits = lm.lm_head(lm.model.norm(h))
    token, direct = int(mx.argmax(logits[0, -1]).item()), []
    for _ in range(steps):  # the unpatched language model on per-layer caches of different lengths
        direct.append(token)
        token = int(mx.argmax(lm(mx.array([[token]]), cache=cache).logits[0, -1]).item())
    assert cache[0].offset != cache[1].offset
    assert got == direct


def test_gemma3_stage_ii_rebuilds_the_sliding_window_masks_and_equals_the_plain_layers():
    """Prune at a global layer (1), then at a sliding one (2): later layers get their masks rebuilt."""
    from mlx_vlm.models.base import create_attention_mask

    model, ids, pixels, extra = build("gemma3", layers=4)
    steps = 4
    mask = mx.ones(ids.shape, dtype=mx.int32)
    with enable(model, Schedule(stage1=8, stage2=((1, 4), (2, 2)))) as session:
        got = tokens(model, ids, pixels, extra, steps=steps, prefill_step_size=None)
        _, at_1, at_2 = session.history
        embeds = model.get_input_embeddings(ids, pixels, mask=mask, **extra).inputs_embeds  # Stage I
    assert (at_1.layer, at_1.kept.shape[1], at_2.layer, at_2.kept.shape[1]) == (1, 4, 2, 2)
    lm = model.language_model
    layers = compat.decoder_layers(model)
    window = lm.model.window_size
    assert embeds.shape[1] > window  # the sliding layers get mask arrays
    cache = lm.make_cache()
    h = embeds
    if getattr(lm.model, "scale_inputs_embeds", True):
        h = h * mx.array(lm.config.hidden_size**0.5, mx.bfloat16).astype(h.dtype)
    for i, layer in enumerate(layers):
        if i == 1:
            h = h[:, mx.array(at_1.columns[0])]
        if i == 2:
            h = h[:, mx.array(at_2.columns[0])]
        sliding = layer.self_attn.is_sliding
        layer_mask = (
            create_attention_mask(h, cache[i], window_size=window)
            if sliding
            else create_attention_mask(h, cache[i])
        )
        h = layer(h, layer_mask, cache[i])
    logits = lm.lm_head(lm.model.norm(h))
    token, direct = int(mx.argmax(logits[0, -1]).item()), []
    for _ in range(steps):  # the unpatched language model on the pruned per-layer caches
        direct.append(token)
        token = int(mx.argmax(lm(mx.array([[token]]), cache=cache).logits[0, -1]).item())
    assert got == direct


def test_a_stage_ii_layer_beyond_the_llm_is_rejected():
    model = build("llava")[0]
    with pytest.raises(InvalidInputError, match="stage2 layer must be < the LLM's 2 decoder layers"):
        enable(model, Schedule(stage2=((2, 3),)))


@pytest.mark.parametrize("padded", [False, True])
def test_stage_ii_under_batch_generate_raises_instead_of_running_plain(padded):
    from test_mlx_vlm_families import _batch_tokens

    model, ids, pixels, extra = build("llava")
    row = ids[0].tolist()
    rows = [[0, 0, *row], [row[0], 11, 12, *row[1:]]] if padded else [row]
    mask = mx.array([[0, 0] + [1] * len(row), [1] * (len(row) + 2)] if padded else [[1] * len(row)])
    refusal = r"Stage II needs (one prompt per forward|the causal mask)"
    with enable(model, Schedule(stage1=8, stage2=((1, 3),))), pytest.raises(InvalidInputError, match=refusal):
        _batch_tokens(model, mx.array(rows), mx.concatenate([pixels] * len(rows)), extra, mask)


def test_an_image_split_across_prefill_chunks_raises():
    model, ids, pixels, extra = build("llava")
    with (
        enable(model, Schedule(stage1=8, stage2=((1, 3),))),
        pytest.raises(InvalidInputError, match="needs every image token in one prefill chunk"),
    ):
        tokens(model, ids, pixels, extra, prefill_step_size=4)


def test_mrope_stage_ii_equals_the_plain_layers_on_the_pruned_sequence_and_positions():
    """Qwen2-VL: the layers after the pruning point see the kept columns' original 3-D positions."""
    model, ids, pixels, extra = build("qwen2_vl")
    steps = 4
    mask = mx.ones(ids.shape, dtype=mx.int32)
    with enable(model, Schedule(stage1=8, stage2=((1, 3),))) as session:
        got = tokens(model, ids, pixels, extra, steps=steps, prefill_step_size=None)
        first, second = session.history
        pruned = model.get_input_embeddings(ids, pixels, mask=mask, **extra)  # Stage I again
    positions = pruned.position_ids
    top = int(np.array(positions).max())
    lm = model.language_model
    cache = make_prompt_cache(lm)
    layers = compat.decoder_layers(model)
    h = layers[0](pruned.inputs_embeds, "causal", cache[0], positions)
    kept = mx.array(second.columns[0])
    h = layers[1](h[:, kept], "causal", cache[1], positions[:, :, kept])
    logits = lm.lm_head(lm.model.norm(h))
    token, direct = int(mx.argmax(logits[0, -1]).item()), []
    for t in range(steps):
        direct.append(token)
        step = mx.full((3, 1, 1), top + 1 + t, dtype=mx.int32)
        token = int(mx.argmax(lm(mx.array([[token]]), cache=cache, position_ids=step).logits[0, -1]).item())
    assert (first.layer, second.layer, second.kept.shape[1]) == (0, 1, 3)
    assert got == direct


def test_stage_ii_before_the_deepstack_layers_is_rejected():
    model = build("qwen3_vl")[0]
    model.config.vision_config.deepstack_visual_indexes = [0, 1]  # features added at layers 0 and 1
    try:
        with pytest.raises(InvalidInputError, match="stage2 layers must be >= 2 for this qwen3_vl"):
            enable(model, Schedule(stage2=((1, 3),)))
    finally:
        model.config.vision_config.deepstack_visual_indexes = [0]


def test_disable_restores_every_wrapped_layer(case):
    _, model, ids, pixels, extra = case
    layers = compat.decoder_layers(model)
    before = [type(layer) for layer in layers]
    ref = tokens(model, ids, pixels, extra)
    with enable(model, Schedule(stage1=8, stage2=((1, 3),))):
        assert [type(layer) for layer in layers] != before
        assert tokens(model, ids, pixels, extra) != [] and model._tops_pruning.history[-1].layer == 1
    assert [type(layer) for layer in layers] == before
    assert not hasattr(model, "_tops_pruning")
    assert tokens(model, ids, pixels, extra) == ref
