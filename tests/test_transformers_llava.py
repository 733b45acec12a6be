"""TOPS pruning inside a tiny random LLaVA-1.5 (no hub, no downloads)."""

import pytest
import torch
from tiny_hf import LLAVA_IMAGE as IMAGE
from tiny_hf import LLAVA_N as N
from tiny_hf import llava_prompt, tiny_llava
from tops_adapters.hf.compat import cache_argument, output_cache
from tops_adapters.transformers import Budget, Schedule, enable

import tops_core
from tops_core import InvalidInputError


@pytest.fixture(scope="module")
def model():
    return tiny_llava()


@pytest.fixture(scope="module")
def inputs():
    return llava_prompt()


def greedy(model, inputs, steps=4, **kw):
    out = model.generate(
        **inputs,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        **kw,
    )
    return out.sequences, torch.stack(out.logits)


@torch.no_grad()
def test_keeping_every_token_gives_the_unpruned_logits_exactly(model, inputs):
    ref = model(**inputs).logits
    ref_seq, ref_logits = greedy(model, inputs)
    schedule = Schedule(stage1=N, stage2=((1, 10**6), (3, 10**6)))
    for options in ({"keep": N}, {"schedule": schedule}, {"keep": N, "positions": "original"}):
        with enable(model, **options):
            assert torch.equal(model(**inputs).logits, ref)
            seq, logits = greedy(model, inputs)
        assert torch.equal(seq, ref_seq)
        assert torch.equal(logits, ref_logits)


@pytest.mark.parametrize(
    "objective", [tops_core.TOPSRule(), tops_core.Objective()], ids=["rule", "objective"]
)
@torch.no_grad()
def test_stage1_keeps_the_tokens_the_selector_chose(model, inputs, objective):
    k = 6
    model.model.vision_tower.set_attn_implementation("eager")
    try:
        vision = model.model.vision_tower(inputs["pixel_values"], output_attentions=True)
    finally:
        model.model.vision_tower.set_attn_implementation("sdpa")
    cls = vision.attentions[-2].mean(dim=1)[0, 0, 1:]  # penultimate layer, CLS row, patches
    features = model.model.get_image_features(inputs["pixel_values"]).pooler_output[0]
    # CPU tensors run the core on a zero-copy view: the same answer and method as NumPy input.
    sim = tops_core.cosine(features.numpy())
    if isinstance(objective, tops_core.Objective):  # position-aware by default on a known grid
        sim = tops_core.spatial(sim, (4, 4))
    expected = tops_core.select(cls.numpy(), sim, k, objective=objective)
    seen = {}

    def keep_input(module, args):
        seen["hidden"] = args[0]

    hook = model.model.language_model.layers[0].register_forward_pre_hook(keep_input)
    try:
        with enable(model, keep=k, objective=objective) as session:
            model(**inputs)
    finally:
        hook.remove()
    record = session.history[0]
    assert record.selection.method.startswith(expected.method)
    assert record.kept[0].tolist() == expected.indices.tolist()
    torch.testing.assert_close(record.relevance[0], cls, rtol=1e-5, atol=1e-6)
    hidden = seen["hidden"][0]
    assert hidden.shape[0] == inputs["input_ids"].shape[1] - N + k
    assert torch.equal(hidden[3 : 3 + k], features[expected.indices])  # gathered features equal


@torch.no_grad()
def test_spatial_false_keeps_the_plain_cosine(model, inputs):
    objective = tops_core.Objective()
    with enable(model, keep=6, objective=objective, spatial=False) as plain:
        model(**inputs)
    with enable(model, keep=6, objective=objective) as spatial:
        model(**inputs)
    cls = plain.history[0].relevance[0].numpy()
    features = model.model.get_image_features(inputs["pixel_values"]).pooler_output[0].numpy()
    want = tops_core.select(cls, tops_core.cosine(features), 6, objective=objective, method="greedy")
    assert plain.history[0].kept[0].tolist() == want.indices.tolist()
    want = tops_core.select(
        cls, tops_core.spatial(tops_core.cosine(features), (4, 4)), 6, objective=objective, method="greedy"
    )
    assert spatial.history[0].kept[0].tolist() == want.indices.tolist()


@pytest.mark.parametrize("positions", ["contiguous", "original"])
@torch.no_grad()
def test_pruned_generate_equals_a_direct_run_on_the_pruned_sequence(model, inputs, positions):
    steps = 4
    with enable(model, keep=5, positions=positions) as session:
        seq, logits = greedy(model, inputs, steps)
    columns = session.history[0].columns
    embeds = model.model.get_input_embeddings()(inputs["input_ids"])
    features = model.model.get_image_features(inputs["pixel_values"]).pooler_output[0]
    embeds[0, 3 : 3 + N] = features
    embeds = embeds[:, columns[0]]
    length = inputs["input_ids"].shape[1]
    pos = columns if positions == "original" else torch.arange(columns.shape[1])[None]
    shift = length - columns.shape[1] if positions == "original" else 0
    out = model(inputs_embeds=embeds, position_ids=pos, use_cache=True)
    cache, direct, token = output_cache(out), [out.logits[:, -1]], out.logits[:, -1].argmax(-1)
    tokens = [token]
    for t in range(steps - 1):
        p = torch.tensor([[columns.shape[1] + t + shift]])
        out = model(
            input_ids=token[:, None], position_ids=p, use_cache=True, **{cache_argument(model): cache}
        )
        cache, token = output_cache(out), out.logits[:, -1].argmax(-1)
        direct.append(out.logits[:, -1])
        tokens.append(token)
    assert seq[0, length:].tolist() == torch.cat(tokens).tolist()
    torch.testing.assert_close(logits[:, 0], torch.stack(direct)[:, 0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_stage2_prunes_inside_the_llm_and_generate_returns_every_token(model, inputs):
    schedule = Schedule(stage1=8, stage2=((1, 4), (3, Budget(ratio=0.5))))
    for raters in ("all_mean", "last", "threshold"):
        with enable(model, schedule, raters=raters) as session:
            logits = model(**inputs).logits
            assert logits.shape[1] == inputs["input_ids"].shape[1] - N + 2  # last stage kept 2
            assert [r.layer for r in session.history] == [0, 1, 3]
            assert [r.kept.shape[1] for r in session.history] == [8, 4, 2]
            assert all((r.relevance >= 0).all() for r in session.history)
            seq = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
            assert seq.shape[1] == inputs["input_ids"].shape[1] + 6
            assert torch.equal(seq[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


@torch.no_grad()
def test_stage2_relevance_is_the_rater_attention_of_the_layer(model, inputs):
    """Eager attention weights of the unpruned pruning layer, averaged over heads and raters."""
    captured = {}
    layer = model.model.language_model.layers[2]
    model.set_attn_implementation("eager")

    def keep_weights(module, args, out):
        captured["w"] = out[1]

    hook = layer.self_attn.register_forward_hook(keep_weights)
    try:
        model(**inputs)
    finally:
        hook.remove()
        model.set_attn_implementation("sdpa")
    with enable(model, Schedule(stage1=N, stage2=((2, 8),))) as session:
        model(**inputs)
    weights = captured["w"][0].float().mean(dim=0)  # (L, L)
    raters = torch.arange(3 + N, inputs["input_ids"].shape[1])
    expected = weights[raters][:, 3 : 3 + N].mean(dim=0)
    torch.testing.assert_close(session.history[1].relevance[0], expected, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_padded_batch_prunes_each_row(model):
    torch.manual_seed(3)
    ids = torch.tensor([[0, 0, 1, 5] + [IMAGE] * N + [7, 8], [1, 5, 6, 4] + [IMAGE] * N + [9, 8]])
    mask = torch.tensor([[0, 0, 1, 1] + [1] * N + [1, 1], [1] * (N + 6)])
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(2, 3, 16, 16)}
    ref = model(**inputs).logits
    with enable(model, keep=N):
        assert torch.equal(model(**inputs).logits, ref)
    with enable(model, Schedule(stage1=6, stage2=((2, 3),))) as session:
        seq = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert seq.shape == (2, N + 6 + 3)
    assert session.history[0].kept.shape == (2, 6)


@torch.no_grad()
def test_disable_restores_the_original_model(model, inputs):
    ref = model(**inputs).logits
    session = enable(model, Schedule.paper(4, layers=(1, 2)))
    assert model(**inputs).logits.shape[1] < ref.shape[1]
    session.disable()
    assert torch.equal(model(**inputs).logits, ref)
    assert "forward" not in vars(model.model) and "forward" not in vars(model.model.language_model)
    with enable(model, keep=4), pytest.raises(InvalidInputError, match="already enabled"):
        enable(model, keep=8)


def test_bad_configuration_is_rejected_with_the_argument_named(model):
    with pytest.raises(InvalidInputError, match="exactly one of schedule=, keep= or ratio="):
        enable(model)
    with pytest.raises(InvalidInputError, match="ratio must be a float in"):
        enable(model, ratio=1.5)
    with pytest.raises(InvalidInputError, match="stage2 layer must be < the LLM's 4 decoder layers"):
        enable(model, Schedule(stage1=8, stage2=((4, 2),)))
    with pytest.raises(InvalidInputError, match="positions must be one of"):
        enable(model, keep=4, positions="shifted")
    with pytest.raises(
        InvalidInputError, match=r"does not support model_type None \(Linear\); supported model types: llava"
    ):
        enable(torch.nn.Linear(2, 2), keep=4)
    assert "forward" not in vars(model.model)


def test_budget_depends_on_n_only():
    assert Budget(keep=640).tokens(2880) == 640
    assert Budget(keep=640).tokens(576) == 576
    assert Budget(ratio=0.25).tokens(576) == 144
    assert Budget(ratio=0.001).tokens(576) == 1
    paper = Schedule.paper(128)
    assert paper.stage1.keep == 256 and [(layer, b.keep) for layer, b in paper.stage2] == [(12, 64), (24, 32)]


@torch.no_grad()
def test_stage2_decoding_continues_from_the_per_layer_pruned_cache(model, inputs):
    """Original positions: the plain model, decoding from the pruned cache, gives generate's logits."""
    steps = 3
    schedule = Schedule(stage1=8, stage2=((1, 4), (3, 2)))
    with enable(model, schedule, positions="original"):
        seq, logits = greedy(model, inputs, steps)
        out = model(**inputs, use_cache=True)
    cache, length = output_cache(out), inputs["input_ids"].shape[1]
    assert [cache.layers[i].keys.shape[2] for i in range(4)] == [
        length - N + 8,
        length - N + 4,
        length - N + 4,
        length - N + 2,
    ]
    torch.testing.assert_close(out.logits[:, -1], logits[0], rtol=1e-5, atol=1e-5)
    token = out.logits[:, -1].argmax(-1)
    for t in range(1, steps):
        out = model(
            input_ids=token[:, None],
            **{cache_argument(model): cache},
            use_cache=True,
            position_ids=torch.tensor([[length + t - 1]]),
        )
        torch.testing.assert_close(out.logits[:, -1], logits[t], rtol=1e-5, atol=1e-5)
        token = out.logits[:, -1].argmax(-1)
        assert token.item() == seq[0, length + t].item()


@pytest.mark.parametrize("positions", ["contiguous", "original"])
@torch.no_grad()
def test_left_padding_does_not_change_a_rows_pruned_generation(model, positions):
    torch.manual_seed(4)
    pixels = torch.randn(2, 3, 16, 16)
    row = [1, 5, *[IMAGE] * N, 7, 8, 9]
    other = [1, 5, 6, 4, *[IMAGE] * N, 9, 8, 3]
    padded = {
        "input_ids": torch.tensor([[0, 0, *row], other]),
        "pixel_values": pixels,
        "attention_mask": torch.tensor([[0, 0, *[1] * len(row)], [1] * len(other)]),
    }
    alone = {"input_ids": torch.tensor([row]), "pixel_values": pixels[:1]}
    schedule = Schedule(stage1=8, stage2=((1, 4), (3, 2)))
    with enable(model, schedule, positions=positions) as session:
        seq, logits = greedy(model, padded, 3)
        kept_padded = [r.kept[0].tolist() for r in session.history]
        seq_alone, logits_alone = greedy(model, alone, 3)
        kept_alone = [r.kept[0].tolist() for r in session.history]
    assert kept_padded == kept_alone
    assert seq[0, 2:].tolist() == seq_alone[0].tolist()
    torch.testing.assert_close(logits[:, 0], logits_alone[:, 0], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_contiguous_positions_are_renumbered_after_every_stage(model, inputs):
    """Each layer group sees 0..L_s - 1 in prefill and L_s + t while decoding."""
    lm = model.model.language_model
    seen = {0: [], 1: [], 3: []}

    def recorder(index):
        def hook(module, args, kwargs):
            seen[index].append(kwargs["position_embeddings"][0][0])  # cos of row 0

        return hook

    hooks = [lm.layers[i].self_attn.register_forward_pre_hook(recorder(i), with_kwargs=True) for i in seen]
    try:
        with enable(model, Schedule(stage1=8, stage2=((1, 4), (3, 2)))):
            model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    finally:
        for hook in hooks:
            hook.remove()
    length = inputs["input_ids"].shape[1] - N + 8
    for index, removed in ((0, 0), (1, 4), (3, 6)):
        kept = length - removed
        expected = [torch.arange(kept)] + [torch.tensor([kept + t]) for t in range(2)]
        for cos, ids in zip(seen[index], expected, strict=True):
            torch.testing.assert_close(cos, lm.rotary_emb(cos, ids[None])[0][0])


@torch.no_grad()
def test_beam_search_and_several_sequences_reuse_the_encoded_image(model, inputs):
    schedule = Schedule(stage1=8, stage2=((1, 4), (3, 2)))
    with enable(model, schedule) as session:
        single = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        kept = session.history[0].kept
        beams = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, num_beams=2, do_sample=False)
        assert session.history[0].kept.shape[0] == 2
        assert torch.equal(session.history[0].kept, kept.expand(2, -1))
        several = model.generate(
            **inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2
        )
    assert beams.shape == single.shape
    assert several.shape == (2, single.shape[1])


@torch.no_grad()
def test_generate_without_cache_and_chunked_prefill(model, inputs):
    with enable(model, Schedule(stage1=8, stage2=((1, 4),))) as session:
        seq = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, use_cache=False)
        assert seq.shape[1] == inputs["input_ids"].shape[1] + 3
        assert [r.kept.shape[1] for r in session.history] == [8, 4]  # every step re-prunes the prompt
        with pytest.raises(InvalidInputError, match="chunked prefill, prefill_chunk_size, is not supported"):
            model.generate(**inputs, max_new_tokens=2, do_sample=False, prefill_chunk_size=8)


@torch.no_grad()
def test_the_grid_is_used_at_stage1_only(model, inputs, monkeypatch):
    """After a pruning point the kept tokens no longer form the image's grid: Stage II stays plain."""
    calls = []
    spatial = tops_core.spatial
    monkeypatch.setattr(tops_core, "spatial", lambda *a, **kw: calls.append(a[1]) or spatial(*a, **kw))
    with enable(model, Schedule(stage1=N, stage2=((1, 4),)), objective=tops_core.Objective()) as session:
        model(**inputs)  # Stage I keeps all N (no selection); Stage II selects among the same N tokens
    assert [r.kept.shape[1] for r in session.history] == [N, 4] and calls == []
    with enable(model, keep=8, objective=tops_core.Objective()):
        model(**inputs)
    assert calls == [[(4, 4)]]
