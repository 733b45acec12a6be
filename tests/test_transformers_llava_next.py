"""TOPS pruning inside a tiny random LLaVA-NeXT: anyres crops and image_newline tokens."""

import pytest
import torch
from tiny_hf import llava_next_prompt, tiny_llava_next
from tops_adapters.hf.budget import split_budget
from tops_adapters.transformers import Schedule, enable

SIDE = 4  # 16 / 4 patches per side: 16 tokens per crop


@pytest.fixture(scope="module")
def model():
    return tiny_llava_next()


@pytest.fixture(scope="module")
def inputs(model):
    return llava_next_prompt(model)


def newline_rows(model, features):
    return (features == model.model.image_newline).all(dim=-1)


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
    # crop index of every packed token, through the model's own packing (newlines -> NaN)
    crops = batch["pixel_values"].shape[1]
    index = torch.arange(crops, dtype=torch.float)[:, None, None].expand(crops, SIDE * SIDE, 1)
    packed, _ = model.model.pack_image_features(
        [index], batch["image_sizes"], "default", image_newline=torch.full((1,), float("nan"))
    )
    crop = packed[0][:, 0]
    assert torch.equal(torch.isnan(crop), newline)
    sizes = [int((crop == c).sum()) for c in range(crops)]
    counts = [int((crop[kept] == c).sum()) for c in range(crops)]
    assert counts == split_budget(k, sizes)
    assert sum(counts) == k
    with enable(model, Schedule(stage1=k, stage2=((2, 6),)), crops="crop") as session:
        seq = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seq.shape[1] == batch["input_ids"].shape[1] + 4
