"""TOPS pruning inside a tiny random LLaVA-NeXT: anyres crops and image_newline tokens."""

import pytest
import torch
from tiny_hf import llava_next_prompt, tiny_llava_next
from tops_adapters.hf.budget import split_budget
from tops_adapters.hf.families import packed_images
from tops_adapters.layouts import anyres_positions, mixed
from tops_adapters.transformers import Schedule, enable

import tops_core
from tops_core import InvalidInputError

SIDE = 4  # 16 / 4 patches per side: 16 tokens per crop


@pytest.fixture(scope="module")
def model():
    return tiny_llava_next()


@pytest.fixture(scope="module")
def inputs(model):
    return llava_next_prompt(model)


def newline_rows(model, features):
    return (features == model.model.image_newline).all(dim=-1)


def crop_of(model, batch):
    """The crop index of every packed token, through the model's own packing (newlines: NaN)."""
    crops = batch["pixel_values"].shape[1]
    index = torch.arange(crops, dtype=torch.float)[:, None, None].expand(crops, SIDE * SIDE, 1)
    packed, _ = model.model.pack_image_features(
        [index], batch["image_sizes"], "default", image_newline=torch.full((1,), float("nan"))
    )
    return packed[0][:, 0]


@torch.no_grad()
def test_keeping_every_token_gives_the_unpruned_logits_exactly(model, inputs):
    batch, _ = inputs
    ref = model(**batch).logits
    ref_seq = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    for options in ({"keep": 10**6}, {"keep": 10**6, "crops": "crop", "newlines": "select"}):
        with enable(model, **options):
            assert torch.equal(model(**batch).logits, ref)
            assert torch.equal(
                model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False), ref_seq
            )


@torch.no_grad()
def test_newline_tokens_are_kept_outside_the_budget(model, inputs):
    batch, features = inputs
    newline = newline_rows(model, features)
    assert 0 < int(newline.sum()) < features.shape[0]
    with enable(model, keep=12) as session:
        model(**batch)
    kept = session.history[0].kept[0]
    assert kept.shape[0] == 12 + int(newline.sum())
    assert set(newline.nonzero()[:, 0].tolist()) <= set(kept.tolist())
    with enable(model, keep=12, newlines="select") as session:
        model(**batch)
    assert session.history[0].kept.shape[1] == 12


@torch.no_grad()
def test_cls_relevance_follows_the_anyres_packing(model, inputs):
    batch, features = inputs
    model.model.vision_tower.set_attn_implementation("eager")
    try:
        pixels = batch["pixel_values"][0]
        cls = model.model.vision_tower(pixels, output_attentions=True).attentions[-2].mean(dim=1)[:, 0, 1:]
    finally:
        model.model.vision_tower.set_attn_implementation("sdpa")
    with enable(model, keep=12) as session:
        model(**batch)
    relevance = session.history[0].relevance[0]
    base = SIDE * SIDE
    torch.testing.assert_close(relevance[:base], cls[0], rtol=1e-5, atol=1e-7)  # base image first
    grid = relevance[base:][~newline_rows(model, features)[base:]]
    pool = cls[1:].flatten()
    assert all(torch.isclose(pool, value, rtol=1e-5, atol=1e-7).any() for value in grid)


@torch.no_grad()
def test_per_crop_budget_splits_in_proportion(model, inputs):
    batch, features = inputs
    newline = newline_rows(model, features)
    k = 12
    with enable(model, keep=k, crops="crop") as session:
        model(**batch)
    kept = session.history[0].kept[0]
    crops = batch["pixel_values"].shape[1]
    crop = crop_of(model, batch)
    assert torch.equal(torch.isnan(crop), newline)
    sizes = [int((crop == c).sum()) for c in range(crops)]
    counts = [int((crop[kept] == c).sum()) for c in range(crops)]
    assert counts == split_budget(k, sizes)
    assert sum(counts) == k
    with enable(model, Schedule(stage1=k, stage2=((2, 6),)), crops="crop") as session:
        seq = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seq.shape[1] == batch["input_ids"].shape[1] + 4


def packed_frame(model, features):
    """The prompt's anyres layout, its (rows, columns) read off the newline tokens the model packed."""
    newline = newline_rows(model, features)
    base = SIDE * SIDE
    rows = int(newline[base:].sum())
    columns = (features.shape[0] - base) // rows - 1
    assert torch.equal(newline[base + columns :: columns + 1], torch.ones(rows, dtype=torch.bool))
    return anyres_positions(SIDE, base, rows, columns)


def reference(relevance, features, where, placed, k, objective):
    """The kept indices among ``where``: the selector on the candidates' position-aware cosine."""
    sim = mixed(tops_core.cosine(features[where].numpy()), placed.subset(where.tolist()))
    sel = tops_core.select(relevance[where].numpy(), sim, k, objective=objective)
    return where[torch.as_tensor(sel.indices)]


@torch.no_grad()
def test_objective_is_position_aware_on_the_anyres_frame(model, inputs):
    """Base and crop tokens take their places in one frame; newlines, kept or selected, theirs."""
    batch, features = inputs
    newline, placed, k = newline_rows(model, features), packed_frame(model, features), 12
    objective = tops_core.Objective()
    assert placed.n == features.shape[0]
    for newlines, where in (
        ("keep", (~newline).nonzero()[:, 0]),
        ("select", torch.arange(features.shape[0])),
    ):
        with enable(model, keep=k, objective=objective, newlines=newlines) as session:
            model(**batch)
        rel = session.history[0].relevance[0]
        want = reference(rel, features, where, placed, k, objective)
        fixed = newline.nonzero()[:, 0] if newlines == "keep" else torch.tensor([], dtype=torch.long)
        assert session.history[0].kept[0].tolist() == torch.cat([fixed, want]).sort().values.tolist()
        with enable(model, keep=k, objective=objective, newlines=newlines, spatial=False) as plain:
            model(**batch)
        cosine = tops_core.select(
            rel[where].numpy(), tops_core.cosine(features[where].numpy()), k, objective=objective
        )
        assert (
            plain.history[0].kept[0].tolist()
            == torch.cat([fixed, where[cosine.indices]]).sort().values.tolist()
        )
        assert (
            plain.history[0].kept[0].tolist() != session.history[0].kept[0].tolist()
        )  # the frame changed it


@torch.no_grad()
def test_per_crop_budgets_select_on_each_crops_places(model, inputs):
    batch, features = inputs
    newline, placed, k = newline_rows(model, features), packed_frame(model, features), 12
    objective = tops_core.Objective()
    with enable(model, keep=k, objective=objective, crops="crop") as session:
        model(**batch)
    rel, crop = session.history[0].relevance[0], crop_of(model, batch).nan_to_num(-1)
    groups = [(crop == c).nonzero()[:, 0] for c in crop[crop >= 0].unique()]
    parts = split_budget(k, [g.shape[0] for g in groups])
    want = [newline.nonzero()[:, 0]] + [
        reference(rel, features, g, placed, part, objective) if part < g.shape[0] else g
        for g, part in zip(groups, parts)
    ]
    assert session.history[0].kept[0].tolist() == torch.cat(want).sort().values.tolist()


def test_the_anyres_frame_needs_the_models_packing(model, inputs):
    _, features = inputs
    with enable(model, keep=6, objective=tops_core.Objective()) as session:
        session._encoded = None  # what a forward on pre-encoded image features leaves
        with pytest.raises(InvalidInputError, match=r"model's anyres packing .*spatial=False"):
            session._stage1_layouts(1, features.shape[0])
    with enable(model, keep=6, objective=tops_core.Objective(), spatial=False) as session:
        session._encoded = None
        assert session._stage1_layouts(1, features.shape[0]) is None


def test_a_packing_not_laid_out_as_base_then_rows_is_refused(model, inputs):
    """A transformers change to pack_image_features is named, not read as some other frame."""
    batch, _ = inputs
    arguments = {"image_sizes": batch["image_sizes"], "vision_feature_select_strategy": "default"}
    crops = batch["pixel_values"].shape[1]
    assert packed_images(model.model.pack_image_features, [crops], SIDE * SIDE, arguments) == [(16, 8, 6)]

    def reversed_packing(*args, **kwargs):
        packed, lengths = model.model.pack_image_features(*args, **kwargs)
        return [image.flip(0) for image in packed], lengths

    with pytest.raises(
        InvalidInputError, match=r"packed an image of 72 tokens that is not its 16 base tokens"
    ):
        packed_images(reversed_packing, [crops], SIDE * SIDE, arguments)
