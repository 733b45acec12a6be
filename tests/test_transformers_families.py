"""TOPS pruning in the 2026 transformers families, each a tiny random model built from its config.

LLaVA-OneVision, Mistral 3, InternVL, Qwen3-VL (deepstack), Gemma 3 (mask mapping built before
the language model), Idefics3 / SmolVLM (``text_model``), GLM-4V (partial rotary) and Qwen3.5
(hybrid linear-attention layers). Every reference is computed without the session: the plain
model, the selector on directly computed scores, or ``get_rope_index`` on the full prompt.
"""

import functools

import pytest
import torch
from tiny_hf import IMAGE_N as N
from tiny_hf import LLAVA_IMAGE, MROPE_FAMILIES, NEW_FAMILIES, family_prompt, tiny_family
from tops_adapters.hf.families import FAMILIES
from tops_adapters.layouts import anyres_positions, joined, mixed
from tops_adapters.transformers import Schedule, enable

import tops_core
from tops_core import InvalidInputError

#: the first layer each family can prune at in Stage II (Qwen3-VL: after its 2 deepstack layers;
#: Qwen3.5: a full-attention layer after the first); Gemma 3 has no Stage II (see its table entry)
STAGE2_LAYER = {"qwen3_vl": 2, "qwen3_5": 3, "gemma3": None}


@functools.cache
def built(kind):
    model = tiny_family(kind)
    return model, family_prompt(kind, model)


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def case(request):
    model, prompt = built(request.param)
    return request.param, model, prompt


def image_count(model, prompt):
    return int((prompt["input_ids"] == model.config.image_token_id).sum())


def schedule_for(kind, stage1, stage2):
    layer = STAGE2_LAYER.get(kind, 1)
    return Schedule(stage1=stage1, stage2=() if layer is None else ((layer, stage2),))


def greedy(model, prompt, steps=3):
    out = model.generate(
        **prompt,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.logits)


def language_model(model):
    return getattr(model.model, FAMILIES[model.config.model_type].language_model)


def first_layer_inputs(model):
    """Record (hidden, kwargs) of every call of the first decoder layer; returns (records, handle)."""
    records = []
    handle = (
        language_model(model)
        .layers[0]
        .register_forward_pre_hook(
            lambda module, args, kwargs: records.append(
                (args[0] if args else kwargs["hidden_states"], kwargs)
            ),
            with_kwargs=True,
        )
    )
    return records, handle


def onevision_frame(model, features, side=4):
    """One OneVision image's anyres layout, (rows, columns) read off its newline tokens."""
    newline = (features == model.model.image_newline).all(dim=-1)
    base = side * side
    rows = int(newline[base:].sum()) if features.shape[0] > base + 1 else 0
    columns = (features.shape[0] - base) // rows - 1 if rows else 0
    assert int(newline.sum()) == max(rows, 1) and bool(newline[-1])
    return anyres_positions(side, base, rows, columns)


@torch.no_grad()
def test_keeping_every_token_gives_the_unpruned_logits_exactly(case):
    kind, model, prompt = case
    n = image_count(model, prompt)
    ref = model(**prompt).logits
    ref_seq, ref_logits = greedy(model, prompt)
    for schedule in (Schedule(stage1=n), schedule_for(kind, n, 10**6)):
        with enable(model, schedule):
            assert torch.equal(model(**prompt).logits, ref)
            seq, logits = greedy(model, prompt)
        assert torch.equal(seq, ref_seq)
        assert torch.equal(logits, ref_logits)


@torch.no_grad()
def test_stage1_keeps_the_selectors_answer_on_instruction_relevance(case):
    """SigLIP, Pixtral, Qwen and GLM encoders have no CLS token: "auto" is the instruction."""
    kind, model, prompt = case
    k = 5
    with enable(model, keep=k) as session:
        assert session.relevance == ("cls" if kind == "internvl" else "instruction")
    records, handle = first_layer_inputs(model)
    try:
        model(**prompt)  # the plain model: the sequence of embeddings the LLM reads
        with enable(model, keep=k, relevance="instruction") as session:
            model(**prompt)
    finally:
        handle.remove()
    full, pruned = records[0][0][0], records[1][0][0]
    image = prompt["input_ids"][0] == model.config.image_token_id
    features, text = full[image], full[~image]
    if kind == "gemma3":  # the LLM reads embeddings scaled by sqrt(hidden); relevance is scale-free
        text = text / language_model(model).embed_tokens.embed_scale
    cos = torch.nn.functional.cosine_similarity(features[:, None].float(), text[None].float(), dim=-1)
    relevance = ((1 + cos) / 2).mean(dim=1)
    torch.testing.assert_close(session.history[0].relevance[0], relevance, rtol=1e-5, atol=1e-6)
    expected = tops_core.select(
        relevance.numpy(), tops_core.cosine(features.float().numpy()), k, objective=tops_core.TOPSRule()
    )
    assert session.history[0].kept[0].tolist() == expected.indices.tolist()
    start = int(image.nonzero()[0])
    assert pruned.shape[0] == full.shape[0] - image_count(model, prompt) + k
    assert torch.equal(pruned[start : start + k], features[expected.indices])


@torch.no_grad()
def test_the_objective_is_position_aware_where_the_grid_is_known(case):
    """M-RoPE families and Mistral 3: the merged grid; Gemma 3: the pooled grid; OneVision: its frame.

    The pixel-shuffled InternVL, Idefics3, SmolVLM: the merged grid of their one tile.
    """
    kind, model, prompt = case
    k, objective = 5, tops_core.Objective()
    records, handle = first_layer_inputs(model)
    try:
        model(**prompt)
        with enable(model, keep=k, relevance="instruction", objective=objective) as session:
            model(**prompt)
    finally:
        handle.remove()
    full = records[0][0][0]
    features = full[prompt["input_ids"][0] == model.config.image_token_id].float().numpy()
    sim = tops_core.cosine(features)
    side = int(N**0.5)
    if kind in MROPE_FAMILIES:
        sim = tops_core.spatial(sim, (1, side, side))  # the 8 x 8 patches merged 2 x 2
    if kind in (
        "gemma3",
        "mistral3",
        "internvl",
        "idefics3",
        "smolvlm",
    ):  # 8 x 8 patches pooled or merged 2 x 2
        sim = tops_core.spatial(sim, (side, side))
    if kind == "llava_onevision":
        sim = mixed(sim, onevision_frame(model, torch.as_tensor(features)))
    expected = tops_core.select(session.history[0].relevance[0].numpy(), sim, k, objective=objective)
    assert session.history[0].kept[0].tolist() == expected.indices.tolist()


@torch.no_grad()
def test_stage1_and_stage2_generate_keep_the_scheduled_counts(case):
    kind, model, prompt = case
    schedule = schedule_for(kind, 8, 4)
    with enable(model, schedule) as session:
        seq = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seq.shape[1] == prompt["input_ids"].shape[1] + 4
    expected = [8] if STAGE2_LAYER.get(kind, 1) is None else [8, 4]
    assert [record.kept.shape[1] for record in session.history] == expected
    if len(expected) > 1:
        assert session.history[1].layer == STAGE2_LAYER.get(kind, 1)


def padded_batch(model, prompt):
    """The prompt left-padded by two tokens, batched with a second prompt of longer text."""
    ids = prompt["input_ids"][0].tolist()
    other = [11, 12, 13, *ids[3:-4], 14, 15, 16, 17, 18, 19]
    pad = len(other) - len(ids)
    rows = torch.tensor([[0] * pad + ids, other])
    mask = (torch.arange(rows.shape[1]) >= pad).long()
    batch = {"input_ids": rows, "attention_mask": torch.stack([mask, torch.ones_like(mask)])}
    for name, value in prompt.items():
        if name in ("pixel_values", "image_sizes", "image_grid_thw"):
            batch[name] = torch.cat([value, value])
    image = rows == model.config.image_token_id
    if "mm_token_type_ids" in prompt:
        batch["mm_token_type_ids"] = image.int()
    if "token_type_ids" in prompt:
        batch["token_type_ids"] = image.long()
    return batch


@torch.no_grad()
def test_a_left_padded_batch_equals_each_prompt_alone(case):
    kind, model, prompt = case
    batch = padded_batch(model, prompt)
    offset = batch["input_ids"].shape[1] - prompt["input_ids"].shape[1]
    schedule = schedule_for(kind, 6, 3)
    with enable(model, schedule):
        seq, logits = greedy(model, batch)
        seq_alone, logits_alone = greedy(model, prompt)
    assert seq[0, offset:].tolist() == seq_alone[0].tolist()
    torch.testing.assert_close(logits[:, 0], logits_alone[:, 0], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_positions_equal_a_direct_computation(case):
    """1-D: contiguous from 0. M-RoPE: get_rope_index on the full prompt, gathered; rope_deltas from them."""
    kind, model, prompt = case
    k = 6
    records, handle = first_layer_inputs(model)
    try:
        with enable(model, keep=k) as session:
            model(**prompt, use_cache=True)
            deltas = getattr(model.model, "rope_deltas", None)
    finally:
        handle.remove()
    columns = session.history[0].columns[0]
    kwargs = records[0][1]
    cos, _ = kwargs["position_embeddings"]
    lm = language_model(model)
    if kind in MROPE_FAMILIES:
        assert session.positions == "original"
        full, _ = model.model.get_rope_index(
            prompt["input_ids"], prompt["mm_token_type_ids"], image_grid_thw=prompt["image_grid_thw"]
        )
        kept = full[:, :, columns]
        assert deltas.tolist() == [[int(kept.max()) + 1 - columns.shape[0]]]
        direct, _ = lm.rotary_emb(cos, kept)
    else:
        assert session.positions == "contiguous"
        kept = torch.arange(columns.shape[0])[None]
        if kind == "gemma3":  # layer 0 is a sliding-window layer: its own (local) RoPE
            direct, _ = lm.rotary_emb(cos, kept, lm.config.layer_types[0])
        else:
            direct, _ = lm.rotary_emb(cos, kept)
    torch.testing.assert_close(cos, direct, rtol=0, atol=0)


@torch.no_grad()
def test_internvl_cls_relevance_is_the_attention_mass_of_each_tokens_patches():
    model, prompt = built("internvl")
    tower = model.model.vision_tower
    tower.set_attn_implementation("eager")
    try:
        vision = tower(prompt["pixel_values"], output_attentions=True)
    finally:
        tower.set_attn_implementation("sdpa")
    cls = vision.attentions[-1].mean(dim=1)[0, 0, 1:]  # the layer the projector reads, CLS row, patches
    side = int(cls.shape[0] ** 0.5)
    # the projector's pixel shuffle (downsample 0.5) merges each 2 x 2 block of patches into one token,
    # tokens in row-major order of the block grid (near-uniform random attention: a wrong order is off
    # by ~1e-4, far above the tolerance)
    blocks = cls.view(side // 2, 2, side // 2, 2).sum(dim=(1, 3)).reshape(-1)
    k = 6
    with enable(model, keep=k) as session:
        model(**prompt)
    record = session.history[0]
    torch.testing.assert_close(record.relevance[0], blocks, rtol=1e-5, atol=1e-6)
    features = model.model.get_image_features(prompt["pixel_values"]).pooler_output[0]
    expected = tops_core.select(
        blocks.numpy(), tops_core.cosine(features.numpy()), k, objective=tops_core.TOPSRule()
    )
    assert record.kept[0].tolist() == expected.indices.tolist()


@torch.no_grad()
def test_qwen3_vl_deepstack_features_follow_the_kept_tokens():
    model, prompt = built("qwen3_vl")
    lm = model.model.language_model
    seen = []

    def record(hidden, visual_pos_masks, visual_embeds):
        seen.append((visual_pos_masks, visual_embeds))
        return type(lm)._deepstack_process(lm, hidden, visual_pos_masks, visual_embeds)

    lm._deepstack_process = record
    try:
        model(**prompt)
        with enable(model, keep=5) as session:
            model(**prompt)
    finally:
        del lm._deepstack_process
    levels = len(model.config.vision_config.deepstack_visual_indexes)
    full, pruned = seen[:levels], seen[levels:]
    assert len(pruned) == levels
    columns, kept = session.history[0].columns[0], session.history[0].kept[0]
    for (full_mask, full_embeds), (mask, embeds) in zip(full, pruned):
        assert torch.equal(mask[0], full_mask[0, columns])
        assert torch.equal(embeds, full_embeds[kept])


def test_stage2_restrictions_are_stated():
    """Gemma 3: Stage I only; Qwen3.5: full-attention layers only; Qwen3-VL: after its deepstack layers."""
    gemma, _ = built("gemma3")
    with pytest.raises(InvalidInputError, match=r"Gemma 3 \(gemma3\) supports Stage I only: sliding-window"):
        enable(gemma, Schedule(stage1=8, stage2=((1, 4),)))
    hybrid, _ = built("qwen3_5")
    with pytest.raises(
        InvalidInputError,
        match=r"only at full-attention layers after the first .*: \[3\]; "
        r"got Stage II layers \[1, 2\], of which \[1, 2\] are not",
    ):
        enable(hybrid, Schedule(stage1=8, stage2=((1, 4), (2, 2))))
    deep, _ = built("qwen3_vl")
    with pytest.raises(InvalidInputError, match="Stage II layers must be >= 2; got"):
        enable(deep, Schedule(stage1=8, stage2=((1, 4),)))
    for model in (gemma, hybrid, deep):
        assert "forward" not in vars(model.model)


@torch.no_grad()
def test_disable_restores_the_original_model(case):
    kind, model, prompt = case
    ref = model(**prompt).logits
    ref_seq, ref_logits = greedy(model, prompt)
    schedule = schedule_for(kind, 4, 2)
    with enable(model, schedule):  # Stage II shortens the sequence inside the LLM too
        kept = 2 if schedule.stage2 else 4
        assert model(**prompt).logits.shape[1] == ref.shape[1] - image_count(model, prompt) + kept
        greedy(model, prompt)
    if kind in MROPE_FAMILIES:  # the pruned prompt's rope_deltas are dropped
        assert model.model.rope_deltas is None
    assert torch.equal(model(**prompt).logits, ref)
    seq, logits = greedy(model, prompt)
    assert torch.equal(seq, ref_seq) and torch.equal(logits, ref_logits)
    lm = language_model(model)
    patched = [m for m in (model.model, lm, *lm.layers) if "forward" in vars(m)]
    assert patched == []


def test_an_unsupported_model_type_names_itself_and_the_supported_ones():
    import transformers

    config = transformers.PaliGemmaConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
        ),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=64,
        ),
    )
    model = transformers.PaliGemmaForConditionalGeneration(config)
    with pytest.raises(
        InvalidInputError,
        match=r"does not support model_type 'paligemma' "
        r"\(PaliGemmaForConditionalGeneration\); supported model "
        r"types: llava \(LLaVA-1.5\).*qwen3_vl.*gemma3",
    ):
        enable(model, keep=4)


def test_a_family_newer_than_the_installed_transformers_names_the_version_it_needs(monkeypatch):
    from tops_adapters.hf import compat

    model, _ = built("mistral3")
    monkeypatch.setattr(compat, "installed_transformers", lambda: "5.16.1")
    with pytest.raises(
        InvalidInputError,
        match=r"model_type 'mistral3' needs transformers >= 5\.17\.0; got "
        r"transformers 5\.16\.1",
    ):
        enable(model, keep=4)


@torch.no_grad()
def test_instruction_relevance_refuses_a_prompt_without_text_rather_than_scoring_uniformly():
    model, prompt = built("mistral3")
    image_only = dict(prompt, input_ids=prompt["input_ids"][:, 3:-4])
    with (
        enable(model, keep=4),
        pytest.raises(
            InvalidInputError,
            match=r"got rows \[0\] without text tokens. "
            r"Pass relevance='uniform'",
        ),
    ):
        model(**image_only)
    with enable(model, keep=4, relevance="uniform") as session:  # the explicit choice
        model(**image_only)
    assert torch.equal(session.history[0].relevance, torch.ones(1, N))
    with pytest.raises(InvalidInputError, match="relevance='cls' needs a vision encoder with a CLS token"):
        enable(model, keep=4, relevance="cls")


def test_anyres_options_are_refused_where_there_is_no_llava_next_layout():
    model, _ = built("llava_onevision")
    with pytest.raises(
        InvalidInputError,
        match=r"LLaVA-OneVision \(llava_onevision\) has no such layout .*"
        r"got crops='crop', newlines='keep'",
    ):
        enable(model, keep=4, crops="crop")
    assert "forward" not in vars(model.model)


@torch.no_grad()
def test_onevision_multi_image_prompts_place_each_base_image_apart():
    """batch_num_images > 1: each image is its base grid and one newline, unrelated to the other's."""
    model, _ = built("llava_onevision")
    torch.manual_seed(2)
    pixels, sizes = torch.randn(2, 2, 3, 16, 16), torch.tensor([[16, 16], [16, 16]])
    images = model.model.get_image_features(pixels, sizes, batch_num_images=torch.tensor([2])).pooler_output
    assert [f.shape[0] for f in images] == [17, 17]
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * 34 + [7, 8, 9, 10]])
    prompt = {
        "input_ids": ids,
        "pixel_values": pixels,
        "image_sizes": sizes,
        "batch_num_images": torch.tensor([2]),
    }
    k, objective = 6, tops_core.Objective()
    with enable(model, keep=k, objective=objective) as session:
        model(**prompt)
    features = torch.cat(images).float()
    sim = mixed(tops_core.cosine(features.numpy()), joined([onevision_frame(model, f) for f in images]))
    want = tops_core.select(session.history[0].relevance[0].numpy(), sim, k, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    with enable(model, keep=k, objective=objective, spatial=False) as plain:
        model(**prompt)
    assert plain.history[0].kept[0].tolist() != want.indices.tolist()  # the frame changed the choice


@torch.no_grad()
def test_onevision_frame_follows_the_models_token_cap():
    """vision_aspect_ratio="anyres_max_1": a 16 x 32 image's 4 x 8 crop tokens shrunk to 2 x 5."""
    model = tiny_family("llava_onevision")
    model.config.vision_aspect_ratio = "anyres_max_1"
    torch.manual_seed(3)
    pixels, sizes = torch.randn(1, 3, 3, 16, 16), torch.tensor([[16, 32]])
    options = {"image_sizes": sizes}
    [image] = model.model.get_image_features(pixels, **options).pooler_output
    assert image.shape[0] == 16 + 2 * (5 + 1)
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * image.shape[0] + [7, 8, 9, 10]])
    k, objective = 8, tops_core.Objective()
    with enable(model, keep=k, objective=objective) as session:
        model(input_ids=ids, pixel_values=pixels, **options)
    sim = mixed(tops_core.cosine(image.float().numpy()), onevision_frame(model, image))
    want = tops_core.select(session.history[0].relevance[0].numpy(), sim, k, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    with enable(model, keep=k, objective=objective, spatial=False) as plain:
        model(input_ids=ids, pixel_values=pixels, **options)
    assert plain.history[0].kept[0].tolist() != want.indices.tolist()


@torch.no_grad()
def test_mistral3_grids_follow_each_images_size():
    """A 32 x 16 and a 16 x 32 image: 8 x 4 and 4 x 8 patches merged 2 x 2, row-major 4 x 2 and 2 x 4."""
    model, _ = built("mistral3")
    torch.manual_seed(4)
    pixels, sizes = torch.randn(2, 3, 32, 32), torch.tensor([[32, 16], [16, 32]])
    images = model.model.get_image_features(pixels, sizes).pooler_output
    assert [f.shape[0] for f in images] == [8, 8]
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * 16 + [7, 8, 9, 10]])
    k, objective = 5, tops_core.Objective()
    with enable(model, keep=k, objective=objective) as session:
        model(input_ids=ids, pixel_values=pixels, image_sizes=sizes)
    cosine, rel = tops_core.cosine(torch.cat(images).float().numpy()), session.history[0].relevance[0].numpy()
    want = tops_core.select(rel, tops_core.spatial(cosine, [(4, 2), (2, 4)]), k, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    transposed = tops_core.select(rel, tops_core.spatial(cosine, [(2, 4), (4, 2)]), k, objective=objective)
    assert transposed.indices.tolist() != want.indices.tolist()  # the orientation is what is tested
    with enable(model, keep=k, objective=objective, spatial=False) as plain:
        model(input_ids=ids, pixel_values=pixels, image_sizes=sizes)
    assert plain.history[0].kept[0].tolist() != want.indices.tolist()
    with enable(model, keep=k, objective=objective) as session:
        session._encoded = None  # what a forward on pre-encoded image features leaves
        with pytest.raises(InvalidInputError, match=r"lays the tokens out on image_sizes.*spatial=False"):
            session._stage1_layouts(1, 16)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["idefics3", "smolvlm"])
def test_pixel_shuffled_tiles_are_each_their_own_grid(kind):
    """Two tiles of one image (Idefics3's split): two 4 x 4 grids, unrelated to each other."""
    model, _ = built(kind)
    torch.manual_seed(5)
    pixels = torch.randn(1, 2, 3, 32, 32)
    tiles = model.model.get_image_features(pixels).pooler_output
    features = torch.cat([tile.reshape(-1, tile.shape[-1]) for tile in tiles])
    assert features.shape[0] == 2 * N
    ids = torch.tensor([[1, 5, 6] + [LLAVA_IMAGE] * 2 * N + [7, 8, 9, 10]])
    k, objective = 6, tops_core.Objective()
    with enable(model, keep=k, objective=objective) as session:
        model(input_ids=ids, pixel_values=pixels)
    side = int(N**0.5)
    cosine, rel = tops_core.cosine(features.float().numpy()), session.history[0].relevance[0].numpy()
    want = tops_core.select(rel, tops_core.spatial(cosine, [(side, side)] * 2), k, objective=objective)
    assert session.history[0].kept[0].tolist() == want.indices.tolist()
    plain = tops_core.select(rel, cosine, k, objective=objective)
    assert plain.indices.tolist() != want.indices.tolist()
