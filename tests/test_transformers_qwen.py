"""TOPS pruning inside tiny random Qwen2-VL and Qwen2.5-VL models (M-RoPE, rope_deltas)."""

import pytest
import torch
from tiny_hf import QWEN_END as END
from tiny_hf import QWEN_IMAGE as IMAGE
from tiny_hf import QWEN_N as N
from tiny_hf import QWEN_START as START
from tiny_hf import qwen_prompt, tiny_qwen
from tops_adapters.hf.compat import cache_argument, output_cache
from tops_adapters.layouts import merged_grids, rows_of
from tops_adapters.transformers import Schedule, enable

import tops_core
from tops_core import InvalidInputError


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def model(request):
    return tiny_qwen(request.param)


@pytest.fixture(scope="module")
def inputs():
    return qwen_prompt()


def greedy(model, inputs, steps=4):
    out = model.generate(
        **inputs,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.logits)


@torch.no_grad()
def test_keeping_every_token_gives_the_unpruned_logits_exactly(model, inputs):
    ref = model(**inputs).logits
    ref_seq, ref_logits = greedy(model, inputs)
    for schedule in (Schedule(stage1=N), Schedule(stage1=N, stage2=((1, N), (2, 10**6)))):
        with enable(model, schedule, positions="original"):
            assert torch.equal(model(**inputs).logits, ref)
            seq, logits = greedy(model, inputs)
        assert torch.equal(seq, ref_seq)
        assert torch.equal(logits, ref_logits)


@torch.no_grad()
def test_instruction_relevance_picks_the_selectors_tokens(model, inputs):
    k = 5
    with enable(model, keep=k, positions="original") as session:
        model(**inputs)
    encoded = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    features = encoded.pooler_output[0]
    text = model.model.get_input_embeddings()(inputs["input_ids"][0, inputs["input_ids"][0] != IMAGE])
    cos = torch.nn.functional.cosine_similarity(features[:, None].float(), text[None].float(), dim=-1)
    relevance = ((1 + cos) / 2).mean(dim=1)
    torch.testing.assert_close(session.history[0].relevance[0], relevance, rtol=1e-5, atol=1e-6)
    expected = tops_core.select(
        relevance.numpy(), tops_core.cosine(features.numpy()), k, objective=tops_core.TOPSRule()
    )
    assert session.history[0].kept[0].tolist() == expected.indices.tolist()


@torch.no_grad()
def test_positions_and_rope_deltas_match_a_direct_computation(model, inputs):
    steps, k = 4, 6
    with enable(model, keep=k, positions="original") as session:
        seq, logits = greedy(model, inputs, steps)
        deltas = model.model.rope_deltas.clone()
    columns = session.history[0].columns[0]
    full, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    kept = full[:, :, columns]
    assert deltas.tolist() == [[int(kept.max()) + 1 - columns.shape[0]]]
    # the unpatched model on the pruned sequence with the gathered 3-D positions
    embeds = model.model.get_input_embeddings()(inputs["input_ids"])
    embeds[0, 3 : 3 + N] = model.model.get_image_features(
        inputs["pixel_values"], inputs["image_grid_thw"]
    ).pooler_output[0]
    out = model(inputs_embeds=embeds[:, columns], position_ids=kept, use_cache=True)
    direct, token = [out.logits[:, -1]], out.logits[:, -1].argmax(-1)
    tokens, cache = [token], output_cache(out)
    for t in range(steps - 1):
        p = torch.full((3, 1, 1), int(kept.max()) + 1 + t)
        out = model(
            input_ids=token[:, None], position_ids=p, use_cache=True, **{cache_argument(model): cache}
        )
        cache, token = output_cache(out), out.logits[:, -1].argmax(-1)
        direct.append(out.logits[:, -1])
        tokens.append(token)
    assert seq[0, inputs["input_ids"].shape[1] :].tolist() == torch.cat(tokens).tolist()
    torch.testing.assert_close(logits[:, 0], torch.stack(direct)[:, 0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_stage2_with_mrope_runs_prefill_and_decode(model, inputs):
    with enable(model, Schedule(stage1=8, stage2=((1, 4), (3, 2))), positions="original") as session:
        seq = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert seq.shape[1] == inputs["input_ids"].shape[1] + 5
    assert [r.kept.shape[1] for r in session.history] == [8, 4, 2]


@torch.no_grad()
def test_disable_restores_the_original_model(model, inputs):
    ref = model(**inputs).logits
    with enable(model, keep=4, positions="original"):
        assert model(**inputs).logits.shape[1] == ref.shape[1] - N + 4
    assert model.model.rope_deltas is None
    assert torch.equal(model(**inputs).logits, ref)


def test_mrope_needs_original_positions(model, inputs):
    with pytest.raises(InvalidInputError, match="positions must be 'original'"):
        enable(model, keep=4, positions="contiguous")
    with enable(model, keep=4) as session:  # "auto" resolves to the original M-RoPE positions
        assert session.positions == "original"
        assert model(**inputs).logits.shape[1] > 0
    with pytest.raises(InvalidInputError, match="relevance='cls' needs a vision encoder with a CLS token"):
        enable(model, keep=4, positions="original", relevance="cls")


@torch.no_grad()
def test_left_padding_keeps_each_rows_positions_and_rope_deltas(model, inputs):
    ids = inputs["input_ids"][0].tolist()
    other = [9, 10, 11, 3, 4, START, *[IMAGE] * N, END, 5, 6, 7]
    batch = torch.tensor([[0, 0, *ids], other])
    padded = {
        "input_ids": batch,
        "mm_token_type_ids": (batch == IMAGE).int(),
        "attention_mask": torch.tensor([[0, 0, *[1] * len(ids)], [1] * len(other)]),
        "pixel_values": torch.cat([inputs["pixel_values"]] * 2),
        "image_grid_thw": torch.tensor([[1, 8, 8], [1, 8, 8]]),
    }
    schedule = Schedule(stage1=6, stage2=((1, 3),))
    with enable(model, schedule, positions="original") as session:
        out = model.generate(
            **padded,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        deltas = model.model.rope_deltas.clone()
        columns = session.history[0].columns
        alone = model.generate(
            **inputs,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        delta_alone = model.model.rope_deltas.clone()
    full, _ = model.model.get_rope_index(
        padded["input_ids"],
        padded["mm_token_type_ids"],
        image_grid_thw=padded["image_grid_thw"],
        attention_mask=padded["attention_mask"],
    )
    valid = padded["attention_mask"].gather(1, columns).bool()
    for row in range(2):
        kept = full[:, row, columns[row]][:, valid[row]]
        assert deltas[row].item() == int(kept.max()) + 1 - int(valid[row].sum())
    assert deltas[0].item() == delta_alone[0].item()
    assert out.sequences[0, 2:].tolist() == alone.sequences[0].tolist()
    torch.testing.assert_close(
        torch.stack(out.logits)[:, 0], torch.stack(alone.logits)[:, 0], rtol=1e-4, atol=1e-4
    )


def _batch_of_two_grids():
    """Two rows of 16 merged tokens each: an 8 x 8 and a 4 x 16 patch image (4 x 4 and 2 x 8 merged)."""
    torch.manual_seed(2)
    row = [3, 4, START, *[IMAGE] * N, END, 5, 6, 7, 8]
    ids = torch.tensor([row, row])
    return {
        "input_ids": ids,
        "mm_token_type_ids": (ids == IMAGE).int(),
        "pixel_values": torch.randn(128, 3 * 2 * 2 * 2),
        "image_grid_thw": torch.tensor([[1, 8, 8], [1, 4, 16]]),
    }


@torch.no_grad()
def test_objective_is_position_aware_per_row_on_the_merged_grids(model):
    """Each row's similarity is tops_core.spatial on its own merged grid; spatial=False keeps the cosine."""
    batch, k, objective = _batch_of_two_grids(), 6, tops_core.Objective()
    with enable(model, keep=k, objective=objective) as spatial:
        model(**batch)
    with enable(model, keep=k, objective=objective, spatial=False) as plain:
        model(**batch)
    encoded = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
    for row, grid in enumerate([(1, 4, 4), (1, 2, 8)]):
        rel = spatial.history[0].relevance[row].numpy()
        sim = tops_core.cosine(encoded[row].numpy())
        want = tops_core.select(rel, tops_core.spatial(sim, grid), k, objective=objective)
        assert spatial.history[0].kept[row].tolist() == want.indices.tolist()
        cosine = tops_core.select(rel, sim, k, objective=objective)
        assert plain.history[0].kept[row].tolist() == cosine.indices.tolist()
    assert spatial.history[0].kept.tolist() != plain.history[0].kept.tolist()  # the grid changed the choice


@torch.no_grad()
def test_beams_repeat_each_rows_layout(model, inputs):
    with enable(model, keep=6, objective=tops_core.Objective()) as session:
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, num_beams=2)
    kept = session.history[0].kept
    assert kept.shape == (2, 6) and torch.equal(kept[0], kept[1])


@torch.no_grad()
def test_rules_and_stage2_keep_the_plain_cosine(model, inputs, monkeypatch):
    calls = []
    spatial = tops_core.spatial
    monkeypatch.setattr(tops_core, "spatial", lambda *a, **kw: calls.append(a[1]) or spatial(*a, **kw))
    with enable(model, keep=6):  # the TOPS rule: the study measured the objective only
        model(**inputs)
    assert calls == []
    with enable(model, Schedule(stage1=8, stage2=((1, 4),)), objective=tops_core.Objective()) as session:
        model(**inputs)
    assert [r.kept.shape[1] for r in session.history] == [8, 4]
    assert calls == [[(1, 4, 4)]]  # Stage I only: after it the kept tokens are no grid


def test_grids_split_into_rows_and_repeat_for_beams():
    assert merged_grids([(1, 8, 8), (1, 4, 16)], 2) == [(1, 4, 4), (1, 2, 8)]
    assert rows_of([(1, 4, 4), (1, 2, 8)], 2, 16) == [[(1, 4, 4)], [(1, 2, 8)]]
    assert rows_of([(1, 4, 4), (1, 2, 2)], 4, 20) == [[(1, 4, 4), (1, 2, 2)]] * 4  # two images a row, beams
    with pytest.raises(InvalidInputError, match=r"image_grid_thw\[0\] must be \(t, h, w\)"):
        merged_grids([(1, 8, 7)], 2)
    for grids, b in (([(1, 4, 4), (1, 2, 4)], 2), ([(1, 4, 4)] * 2, 3), ([(1, 4, 5)], 1), ([], 1)):
        with pytest.raises(InvalidInputError, match=r"must give each of the .* rows its 16 image tokens"):
            rows_of(grids, b, 16)


def test_a_known_layout_without_its_grid_is_refused(model, inputs):
    with enable(model, keep=6, objective=tops_core.Objective()) as session:
        session._encoded = None  # what a forward on pre-encoded image features leaves
        with pytest.raises(InvalidInputError, match=r"lays the tokens out on image_grid_thw.*spatial=False"):
            session._stage1_layouts(1, N)
    with enable(model, keep=6, objective=tops_core.Objective(), spatial=False) as session:
        session._encoded = None
        assert session._stage1_layouts(1, N) is None
