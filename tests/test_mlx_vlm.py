"""TOPS Stage I inside tiny random mlx-vlm LLaVA and Qwen2-VL models (no hub, no downloads)."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models import llava, qwen2_vl
from mlx_vlm.models.cache import make_prompt_cache
from tops_adapters.mlx_vlm import enable

import tops_core
from tops_core import InvalidInputError

N = 16


@pytest.fixture(scope="module")
def llava_model():
    mx.random.seed(0)
    text = llava.TextConfig(
        model_type="llama",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    vision = llava.VisionConfig(
        model_type="clip_vision_model",
        num_hidden_layers=3,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
    )
    model = llava.Model(
        llava.ModelConfig(
            text_config=text, vision_config=vision, model_type="llava", image_token_index=99, vocab_size=100
        )
    )
    ids = mx.array([[1, 5, 6] + [99] * N + [7, 8, 9]])
    return model, ids, mx.random.normal((1, 3, 16, 16)), {}


@pytest.fixture(scope="module")
def qwen_model():
    mx.random.seed(0)
    vision = qwen2_vl.VisionConfig(
        depth=2,
        embed_dim=32,
        hidden_size=32,
        num_heads=4,
        patch_size=2,
        spatial_patch_size=2,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    text = qwen2_vl.TextConfig(
        model_type="qwen2_vl",
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=128,
        rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
    )
    model = qwen2_vl.Model(
        qwen2_vl.ModelConfig(
            text_config=text,
            vision_config=vision,
            model_type="qwen2_vl",
            image_token_id=120,
            video_token_id=121,
            vision_start_token_id=122,
            vocab_size=128,
        )
    )
    ids = mx.array([[3, 4, 122] + [120] * N + [123, 5, 6, 7]])
    return model, ids, mx.random.normal((64, 3 * 2 * 2 * 2)), {"image_grid_thw": mx.array([[1, 8, 8]])}


@pytest.fixture(params=["llava", "qwen2_vl"])
def case(request, llava_model, qwen_model):
    return llava_model if request.param == "llava" else qwen_model


def prefill_logits(model, ids, pixels, extra):
    emb = model.get_input_embeddings(ids, pixels, **extra)
    meta = {
        k: v
        for k, v in (("position_ids", emb.position_ids), ("rope_deltas", emb.rope_deltas))
        if v is not None
    }
    return model.language_model(ids, inputs_embeds=emb.inputs_embeds, **meta).logits


def tokens(model, ids, pixels, extra, steps=5, **kw):
    stream = generate_step(ids, model, pixels, None, max_tokens=steps, **extra, **kw)
    return [tok for (tok, _), _ in zip(stream, range(steps))]


def test_keeping_every_token_gives_the_unpruned_logits_exactly(case):
    model, ids, pixels, extra = case
    ref, ref_tokens = prefill_logits(model, ids, pixels, extra), tokens(model, ids, pixels, extra)
    with enable(model, keep=N):
        assert mx.array_equal(prefill_logits(model, ids, pixels, extra), ref).item()
        assert tokens(model, ids, pixels, extra) == ref_tokens


def test_llava_keeps_the_tokens_the_selector_chose_by_cls_attention(llava_model):
    model, ids, pixels, _ = llava_model
    k = 5
    *_, hidden = model.vision_tower(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
    layer = model.vision_tower.vision_model.encoder.layers[-2]  # produces hidden[-2]
    x = np.array(layer.layer_norm1(hidden[-3]))[0]
    q = x[:1] @ np.array(layer.self_attn.q_proj.weight).T + np.array(layer.self_attn.q_proj.bias)
    kk = x @ np.array(layer.self_attn.k_proj.weight).T + np.array(layer.self_attn.k_proj.bias)
    heads = layer.self_attn.num_heads
    logits = np.einsum("hd,hnd->hn", q.reshape(heads, -1), kk.reshape(-1, heads, 8).transpose(1, 0, 2))
    logits = logits * layer.self_attn.scale
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    cls = (weights / weights.sum(-1, keepdims=True)).mean(0)[1:]
    features = np.array(model.multi_modal_projector(hidden[-2][:, 1:]))[0]
    expected = tops_core.select(cls, tops_core.cosine(features), k, objective=tops_core.TOPSRule())
    with enable(model, keep=k) as session:
        pruned = model.get_input_embeddings(ids, pixels).inputs_embeds
    record = session.history[0]
    assert record.source == "cls"
    np.testing.assert_allclose(record.relevance[0], cls, rtol=1e-4, atol=1e-6)
    assert record.kept[0].tolist() == expected.indices.tolist()
    np.testing.assert_allclose(
        np.array(pruned)[0, 3 : 3 + k], features[expected.indices], rtol=1e-5, atol=1e-6
    )
    assert record.input_ids[0].tolist() == [1, 5, 6] + [99] * k + [7, 8, 9]


def test_qwen_positions_rope_deltas_and_decoding_match_a_direct_computation(qwen_model):
    model, ids, pixels, extra = qwen_model
    k, steps = 6, 4
    full = model.get_input_embeddings(ids, pixels, **extra)
    with enable(model, keep=k) as session:
        got = tokens(model, ids, pixels, extra, steps)
        pruned = model.get_input_embeddings(ids, pixels, **extra)
    record = session.history[0]
    columns = record.columns[0]
    positions = np.array(full.position_ids)[:, :, columns]
    assert np.array_equal(np.array(pruned.position_ids), positions)
    top = int(positions.max())
    assert record.rope_deltas.tolist() == [[top + 1 - columns.shape[0]]]
    assert np.array(pruned.rope_deltas).tolist() == record.rope_deltas.tolist()
    # the unpatched language model, fed the pruned sequence and explicit positions
    cache = make_prompt_cache(model.language_model)
    embeds = full.inputs_embeds[:, mx.array(columns)]
    out = model.language_model(
        mx.array(record.input_ids), inputs_embeds=embeds, cache=cache, position_ids=mx.array(positions)
    ).logits
    token, direct = int(mx.argmax(out[0, -1]).item()), []
    for t in range(steps):
        direct.append(token)
        pos = mx.full((3, 1, 1), top + 1 + t, dtype=mx.int32)
        out = model.language_model(mx.array([[token]]), cache=cache, position_ids=pos).logits
        token = int(mx.argmax(out[0, -1]).item())
    assert got == direct


def test_chunked_prefill_gets_the_pruned_ids_in_step(case):
    model, ids, pixels, extra = case
    inner = model.language_model.model
    plain = type(inner)
    seen = []

    def spy(self, inputs, *args, **kwargs):
        seen.append(np.array(inputs))
        return plain.__call__(self, inputs, *args, **kwargs)

    with enable(model, keep=5) as session:
        whole = tokens(model, ids, pixels, extra, 4)
        inner.__class__ = type("Spy", (plain,), {"__call__": spy})
        try:
            chunked = tokens(model, ids, pixels, extra, 4, prefill_step_size=3)
        finally:
            inner.__class__ = plain
    pruned = session.history[0].input_ids
    assert pruned.shape[1] == ids.shape[1] - N + 5
    assert [x.shape[1] for x in seen[:3]] == [3, 3, 3]  # chunked for real
    prompt, total = [], 0
    for x in seen:
        if total == pruned.shape[1]:
            break
        prompt.append(x)
        total += x.shape[1]
    assert np.array_equal(np.concatenate(prompt, axis=1), pruned)
    assert chunked == whole


def test_disable_restores_the_original_model(case):
    model, ids, pixels, extra = case
    ref = prefill_logits(model, ids, pixels, extra)
    before = type(model.language_model)
    with enable(model, keep=4):
        assert prefill_logits(model, ids, pixels, extra).shape[1] == ids.shape[1] - N + 4
        assert type(model.language_model) is not before
    assert type(model.language_model) is before
    assert "get_input_embeddings" not in vars(model)
    assert mx.array_equal(prefill_logits(model, ids, pixels, extra), ref).item()


def test_cached_image_features_fall_back_to_the_instruction(llava_model):
    model, ids, pixels, _ = llava_model
    *_, hidden = model.vision_tower(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
    cached = model.multi_modal_projector(hidden[-2][:, 1:])
    with enable(model, keep=4) as session:
        model.get_input_embeddings(ids, pixels, cached_image_features=cached)
    assert session.history[0].source == "instruction"
    with enable(model, keep=4, relevance="cls"), pytest.raises(InvalidInputError, match="cached image"):
        model.get_input_embeddings(ids, pixels, cached_image_features=cached)


def test_bad_arguments_are_rejected(qwen_model):
    model = qwen_model[0]
    with pytest.raises(InvalidInputError, match="exactly one of schedule, keep= or ratio="):
        enable(model)
    with pytest.raises(InvalidInputError, match="relevance='cls' needs a vision encoder with a CLS token"):
        enable(model, keep=4, relevance="cls")
    with enable(model, keep=4), pytest.raises(InvalidInputError, match="already enabled"):
        enable(model, keep=4)


def test_llava_objective_is_position_aware_by_default_and_spatial_false_turns_it_off(llava_model):
    model, ids, pixels, _ = llava_model
    objective = tops_core.Objective()
    with enable(model, keep=5, objective=objective, spatial=False) as plain:
        model.get_input_embeddings(ids, pixels)
    with enable(model, keep=5, objective=objective) as session:
        model.get_input_embeddings(ids, pixels)
    *_, hidden = model.vision_tower(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
    features = np.array(model.multi_modal_projector(hidden[-2][:, 1:]))[0]
    cls = plain.history[0].relevance[0]
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    for record, sim in (
        (plain.history[0], tops_core.cosine(features)),
        (session.history[0], tops_core.spatial(tops_core.cosine(features), (side, side))),
    ):
        want = tops_core.select(cls, sim, 5, objective=objective)
        assert record.kept[0].tolist() == want.indices.tolist()


def test_qwen_without_its_grid_is_refused_rather_than_selected_plain(qwen_model):
    model, *_, extra = qwen_model
    with enable(model, keep=5, objective=tops_core.Objective()) as session:
        with pytest.raises(InvalidInputError, match=r"lays the tokens out on image_grid_thw.*spatial=False"):
            session._stage1_layouts(1, N, {})
        assert session._stage1_layouts(1, N, extra) == [[(1, 4, 4)]]
    with enable(model, keep=5, objective=tops_core.Objective(), spatial=False) as session:
        assert session._stage1_layouts(1, N, {}) is None
