"""TOPS Stage I in every supported mlx-vlm family, on tiny random models (no hub, no downloads)."""

import inspect
import types

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm.generate import ar
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models.cache import make_prompt_cache
from mlx_vlm.utils import StoppingCriteria
from tiny_mlx_vlm import BUILDERS, N, available, build
from tops_adapters import mlx_vlm_compat as compat
from tops_adapters.layouts import anyres_positions, mixed
from tops_adapters.mlx_vlm import enable

import tops_core
from tops_core import InvalidInputError

K = 5


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request):
    name = request.param
    if not available(name):
        family = compat.FAMILIES[name]
        pytest.skip(
            f"mlx-vlm {compat.MLX_VLM_VERSION} has no {name} model; the family needs mlx-vlm "
            f">= {family.min_version}"
        )
    return (name, *build(name))


def features(model, ids, pixels, extra):
    return model.get_input_embeddings(ids, pixels, mask=mx.ones(ids.shape, dtype=mx.int32), **extra)


def prefill_logits(model, ids, pixels, extra):
    emb = features(model, ids, pixels, extra)
    meta = {k: v for k, v in emb.to_dict().items() if k != "inputs_embeds" and v is not None}
    return model.language_model(ids, inputs_embeds=emb.inputs_embeds, **meta).logits


def tokens(model, ids, pixels, extra, steps=4):
    mask = mx.ones(ids.shape, dtype=mx.int32)
    stream = generate_step(ids, model, pixels, mask, max_tokens=steps, **extra)
    return [tok for (tok, _), _ in zip(stream, range(steps))]


def onevision_frame(model, image):
    """One OneVision image's anyres layout, (rows, columns) read off its newline tokens."""
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    newline = (image == np.array(model.image_newline)).all(axis=-1)
    rows = int(newline.sum())
    columns = (image.shape[0] - side * side) // rows - 1
    assert newline[side * side + columns :: columns + 1].all()
    return anyres_positions(side, side * side, rows, columns)


def expanded(model, ids, length):
    """Token ids aligned with the embeddings (LLaVA-NeXT's single placeholder spans the image)."""
    ids = np.array(ids)
    if ids.shape[1] == length:
        return ids
    image = compat.image_token_id(model)
    return np.repeat(ids[0], np.where(ids[0] == image, length - ids.shape[1] + 1, 1))[None]


def test_keeping_every_token_gives_the_unpruned_logits_exactly(case):
    name, model, ids, pixels, extra = case
    ref, ref_tokens = prefill_logits(model, ids, pixels, extra), tokens(model, ids, pixels, extra)
    with enable(model, keep=10_000) as session:
        assert mx.array_equal(prefill_logits(model, ids, pixels, extra), ref).item()
        assert tokens(model, ids, pixels, extra) == ref_tokens
    assert session.history[0].kept.shape[1] == N if name != "llava_onevision" else True


def test_auto_relevance_is_cls_attention_only_where_a_cls_token_exists(case):
    name, model, ids, pixels, extra = case
    with enable(model, keep=K) as session:
        features(model, ids, pixels, extra)
    assert session.history[0].source == ("cls" if compat.FAMILIES[name].cls else "instruction")
    if compat.FAMILIES[name].cls is None:
        with pytest.raises(InvalidInputError, match=f"relevance='cls' needs .* {name} has none"):
            enable(model, keep=K, relevance="cls")


def test_llava_next_relevance_is_the_base_crops_cls_attention():
    from tops_adapters.mlx_vlm import cls_attention

    model, ids, pixels, extra = build("llava_next")
    *_, hidden = model.vision_tower(pixels[0].transpose(0, 2, 3, 1), output_hidden_states=True)
    layer = model.vision_tower.vision_model.encoder.layers[-2]  # produces hidden[-2], the chosen layer
    expected = np.array(cls_attention(layer, hidden[-3]))[0, 1:]  # base crop, CLS column dropped
    with enable(model, keep=K) as session:
        model.get_input_embeddings(ids, pixels, **extra)
    assert session.history[0].source == "cls"
    np.testing.assert_allclose(session.history[0].relevance[0], expected, rtol=1e-5, atol=1e-7)


def test_the_kept_tokens_are_the_selectors_answer_for_instruction_relevance(case):
    _, model, ids, pixels, extra = case
    full = np.array(features(model, ids, pixels, extra).inputs_embeds)[0].astype(np.float32)
    row = expanded(model, ids, full.shape[0])[0]
    visual = row == compat.image_token_id(model)
    v, t = full[visual], full[~visual]
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    relevance = ((1 + np.clip(v @ t.T, -1, 1)) / 2).mean(-1)
    expected = tops_core.select(relevance, tops_core.cosine(full[visual]), K, objective=tops_core.TOPSRule())
    with enable(model, keep=K, relevance="instruction") as session:
        pruned = np.array(features(model, ids, pixels, extra).inputs_embeds)[0]
    record = session.history[0]
    np.testing.assert_allclose(record.relevance[0], relevance, rtol=1e-4, atol=1e-5)
    assert record.kept[0].tolist() == expected.indices.tolist()
    columns = np.concatenate([np.nonzero(~visual)[0], np.nonzero(visual)[0][expected.indices]])
    assert record.columns[0].tolist() == sorted(columns.tolist())
    np.testing.assert_array_equal(pruned, full[record.columns[0]])


def test_the_objective_is_position_aware_where_the_grid_is_known(case):
    """Where the layout is known: tops_core.spatial on it.

    LLaVA's patch grid, Gemma 3's pooled grid, the M-RoPE families' and Mistral 3's merged
    grids, Idefics3's and SmolVLM's tiles, OneVision's anyres frame. mlx-vlm's LLaVA-NeXT (crops
    not packed on the image): the plain cosine.
    """
    name, model, ids, pixels, extra = case
    objective = tops_core.Objective()
    full = np.array(features(model, ids, pixels, extra).inputs_embeds)[0].astype(np.float32)
    visual = expanded(model, ids, full.shape[0])[0] == compat.image_token_id(model)
    sim = tops_core.cosine(full[visual])
    vision = model.config.vision_config
    if name == "llava":
        sim = tops_core.spatial(sim, (vision.image_size // vision.patch_size,) * 2)
    elif compat.FAMILIES[name].positions == "mrope":
        t, h, w = np.array(extra["image_grid_thw"])[0].tolist()
        merge = vision.spatial_merge_size
        sim = tops_core.spatial(sim, (t, h // merge, w // merge))
    elif name == "llava_onevision":
        sim = mixed(sim, onevision_frame(model, full[visual]))
    elif name == "gemma3":  # 8 x 8 patches average-pooled to mm_tokens_per_image = 4 x 4
        sim = tops_core.spatial(sim, (4, 4))
    elif name == "mistral3":  # 16 x 16 pixels: 8 x 8 patches of 2, merged 2 x 2
        sim = tops_core.spatial(sim, (4, 4))
    elif name in ("idefics3", "smolvlm"):  # each tile's patches pixel-shuffled to a square grid
        side = compat.tile_side(model)
        sim = tops_core.spatial(sim, [(side, side)] * (sim.shape[0] // side**2))
    with enable(model, keep=K, relevance="instruction", objective=objective) as session:
        features(model, ids, pixels, extra)
    record = session.history[0]
    want = tops_core.select(record.relevance[0], sim, K, objective=objective)
    assert record.kept[0].tolist() == want.indices.tolist()
    with enable(model, keep=K, relevance="instruction", objective=objective, spatial=False) as plain:
        features(model, ids, pixels, extra)
    cosine = tops_core.cosine(full[visual])
    want = tops_core.select(plain.history[0].relevance[0], cosine, K, objective=objective)
    assert plain.history[0].kept[0].tolist() == want.indices.tolist()


def test_generation_equals_the_plain_language_model_on_the_pruned_sequence(case):
    """Stage I generate vs the unpatched language model fed the pruned sequence (positions included)."""
    name, model, ids, pixels, extra = case
    family, steps = compat.FAMILIES[name], 4
    full = features(model, ids, pixels, extra)
    with enable(model, keep=K) as session:
        got = tokens(model, ids, pixels, extra, steps)
    record = session.history[0]
    columns = record.columns[0]
    assert columns.shape[0] == full.inputs_embeds.shape[1] - N * 0 - (record.visual_positions.shape[1] - K)
    cols = mx.array(columns)
    meta = {}
    if family.positions == "mrope":
        positions = np.array(full.position_ids)[:, :, columns]
        top = int(positions.max())
        assert record.rope_deltas.tolist() == [[top + 1 - columns.shape[0]]]
        meta["position_ids"] = mx.array(positions)
    if family.deepstack:
        kept_visual = mx.array(record.kept[0])
        meta["visual_pos_masks"] = full.visual_pos_masks[:, cols]
        meta["deepstack_visual_embeds"] = [layer[kept_visual] for layer in full.deepstack_visual_embeds]
    if family.square_mask:
        meta["mask"] = None  # Gemma 3's language model builds its own causal/sliding masks
    cache = make_prompt_cache(model.language_model)
    out = model.language_model(
        mx.array(record.input_ids), inputs_embeds=full.inputs_embeds[:, cols], cache=cache, **meta
    ).logits
    token, direct = int(mx.argmax(out[0, -1]).item()), []
    for t in range(steps):
        direct.append(token)
        step = {}
        if family.positions == "mrope":
            step["position_ids"] = mx.full((3, 1, 1), top + 1 + t, dtype=mx.int32)
        out = model.language_model(mx.array([[token]]), cache=cache, **step).logits
        token = int(mx.argmax(out[0, -1]).item())
    assert got == direct


_INSERT_TAKES_MASK = "attention_mask" in inspect.signature(ar.BatchGenerator.insert).parameters  # 0.7.x


def _batch_tokens(model, ids, pixels, extra, mask, steps=4):
    """What ``batch_generate`` does after tokenising: embeddings, then ``BatchGenerator``."""
    emb = model.get_input_embeddings(ids, pixels, mask=mask, **extra)
    kwargs = {**extra, **{k: v for k, v in emb.to_dict().items() if v is not None}}
    tokenizer = types.SimpleNamespace(stopping_criteria=StoppingCriteria([], None))
    gen = ar.BatchGenerator(
        model.language_model,
        tokenizer,
        prefill_batch_size=ids.shape[0],
        completion_batch_size=ids.shape[0],
        compute_logprobs=False,
    )
    uids = gen.insert(
        ids if _INSERT_TAKES_MASK else ids.tolist(),
        steps,
        prompt_kwargs=ar._split_prompt_kwargs_per_row(kwargs, ids.shape[0]),
        **({"attention_mask": mask} if _INSERT_TAKES_MASK else {}),
    )
    out = {uid: [] for uid in uids}
    while gen.has_work:
        for response in gen.next()[1]:
            out[response.uid].append(response.token)
    gen.close()
    return [out[uid] for uid in uids]


def test_a_pruned_batch_equals_each_prompt_alone(case):
    name, model, ids, pixels, extra = case
    family = compat.FAMILIES[name]
    if not family.batches:
        # mlx-vlm's own model merges a batch wrongly (LLaVA-NeXT: one image per call; SmolVLM in
        # 0.6.8: images into the wrong rows): an error, never a silently wrong pruned batch
        two_rows = mx.concatenate([ids, ids]), mx.concatenate([pixels, pixels])
        with enable(model, keep=K), pytest.raises((ValueError, InvalidInputError)):
            model.get_input_embeddings(
                *two_rows,
                mask=mx.ones(two_rows[0].shape, dtype=mx.int32),
                **{k: mx.concatenate([v, v]) for k, v in extra.items()},
            )
        return
    row = ids[0].tolist()
    if _INSERT_TAKES_MASK:
        # two more text tokens before the image: the image sits at the same columns in both padded
        # rows, as mlx-vlm's LLaVA merge (one position list for the batch) needs
        longer = [*row[:1], 11, 12, *row[1:]]
        first = [0, 0, *row]
        mask = mx.array([[0, 0] + [1] * len(row), [1] * len(longer)])
    else:  # mlx-vlm 0.6.8's BatchGenerator takes no attention mask: padding would be attended
        longer = [*row[:1], 11, *row[2:]]
        first = row
        mask = mx.ones((2, len(row)), dtype=mx.int32)
    batch = mx.array([first, longer])
    two = {k: mx.concatenate([v, v]) for k, v in extra.items()}
    both = mx.concatenate([pixels, pixels])  # same image twice: mlx-vlm's LLaVA merges as for one row
    with enable(model, keep=K) as session:
        batched = _batch_tokens(model, batch, both, two, mask)
        kept = session.history[0].kept
        alone = []
        for prompt in (first if not _INSERT_TAKES_MASK else row, longer):
            p = mx.array([prompt])
            alone.append(_batch_tokens(model, p, pixels, extra, mx.ones(p.shape, dtype=mx.int32))[0])
            assert session.history[0].kept[0].tolist() == kept[len(alone) - 1].tolist()
    assert batched == alone


def test_disable_restores_the_original_model(case):
    _, model, ids, pixels, extra = case
    ref = prefill_logits(model, ids, pixels, extra)
    before = type(model.language_model)
    insert = ar.BatchGenerator.insert
    with enable(model, keep=K):
        assert type(model.language_model) is not before
        assert ar.BatchGenerator.insert is not insert
    assert type(model.language_model) is before
    assert ar.BatchGenerator.insert is insert
    assert "get_input_embeddings" not in vars(model)
    assert mx.array_equal(prefill_logits(model, ids, pixels, extra), ref).item()


def test_an_unsupported_model_type_is_named_with_the_supported_ones():
    model = types.SimpleNamespace(
        config=types.SimpleNamespace(model_type="paligemma"), get_input_embeddings=None
    )
    with pytest.raises(InvalidInputError, match=r"model_type 'paligemma'.*") as err:
        enable(model, keep=4)
    for name in ("gemma3", "qwen3_vl", "smolvlm", "mistral3", "llava_onevision"):
        assert name in str(err.value)


def test_the_docs_support_matrix_is_generated_from_the_family_table():
    from pathlib import Path

    committed = (Path(__file__).parents[1] / compat.SUPPORT_MATRIX_PATH).read_text(encoding="utf-8")
    assert committed.split("\n", 2)[2] == compat.support_matrix(), (
        "stale: run `python -m tops_adapters.mlx_vlm_compat` to regenerate " + compat.SUPPORT_MATRIX_PATH
    )
    for name in BUILDERS:  # every family the tests build is in the table, and the other way round
        assert f"| `{name}` |" in committed
    assert set(BUILDERS) == set(compat.FAMILIES)


def test_instruction_relevance_without_text_raises_instead_of_scoring_uniformly():
    model, _, pixels, extra = build("gemma3")
    only_image = mx.array([[compat.image_token_id(model)] * N])
    with enable(model, keep=K), pytest.raises(InvalidInputError, match="row 0 has none"):
        features(model, only_image, pixels, extra)


@pytest.mark.skipif(not available("llava_onevision"), reason="mlx-vlm < 0.7.10 has no llava_onevision")
def test_onevision_frame_follows_the_models_token_cap_and_needs_its_packing():
    """A 16 x 32 image's 1 x 2 tiles (4 x 8 tokens) shrunk by anyres_max_1 to 2 x 5 before packing."""
    model, ids, pixels, extra = build("llava_onevision", pinpoints=((16, 32),), size=(16, 32))
    objective = tops_core.Objective()
    full = np.array(features(model, ids, pixels, extra).inputs_embeds)[0].astype(np.float32)
    image = full[np.array(ids)[0] == compat.image_token_id(model)]
    assert image.shape[0] == 16 + 2 * (5 + 1)
    sim = mixed(tops_core.cosine(image), onevision_frame(model, image))
    with enable(model, keep=K, relevance="instruction", objective=objective) as session:
        features(model, ids, pixels, extra)
        cached = model.get_image_features(pixels, extra["image_sizes"])
        with pytest.raises(InvalidInputError, match=r"anyres packing .*cached image features.*spatial=False"):
            features(model, ids, pixels, {**extra, "cached_image_features": cached})
    want = tops_core.select(session.history[0].relevance[0], sim, K, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    with enable(model, keep=K, relevance="instruction", objective=objective, spatial=False) as plain:
        features(model, ids, pixels, {**extra, "cached_image_features": cached})
    assert plain.history[0].kept[0].tolist() != want.indices.tolist()
    assert "pack_image_features" not in vars(model)  # disabled: the model's own method again


def test_mistral3_grids_follow_the_images_size():
    """A 16 x 8 image: 8 x 4 patches merged 2 x 2, the row-major 4 x 2 grid (not its transpose)."""
    model, _, _, _ = build("mistral3")
    mx.random.seed(3)
    pixels, extra = mx.random.normal((1, 3, 16, 8)), {"image_sizes": mx.array([[16, 8]])}
    image = compat.image_token_id(model)
    ids = mx.array([[1, 5, 6] + [image] * 8 + [7, 8]])
    objective = tops_core.Objective()
    full = np.array(features(model, ids, pixels, extra).inputs_embeds)[0].astype(np.float32)
    cosine = tops_core.cosine(full[np.array(ids)[0] == image])
    with enable(model, keep=3, relevance="instruction", objective=objective) as session:
        features(model, ids, pixels, extra)
        with pytest.raises(InvalidInputError, match=r"lays the tokens out on image_sizes.*spatial=False"):
            session._stage1_layouts(1, 8, {})
    rel = session.history[0].relevance[0]
    want = tops_core.select(rel, tops_core.spatial(cosine, (4, 2)), 3, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    transposed = tops_core.select(rel, tops_core.spatial(cosine, (2, 4)), 3, objective=objective)
    assert transposed.indices.tolist() != want.indices.tolist()  # the orientation is what is tested
    with enable(model, keep=3, relevance="instruction", objective=objective, spatial=False) as plain:
        features(model, ids, pixels, extra)
    assert plain.history[0].kept[0].tolist() != want.indices.tolist()
