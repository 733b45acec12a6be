"""Pruned Qwen2.5-VL in vLLM against the transformers integration on the same pruned sequence.

One engine (module-scoped): ratio 0.5 with chunked prefill forced by a small
``max_num_batched_tokens``, so prompts longer than it are prefilled in chunks.
Log-probabilities, not greedy tokens, catch position errors on a tiny random
model.
"""

import gc

import pytest
import torch
import transformers
from conftest import image, merged_tokens, prompt
from tops_adapters.hf.scores import cosine_similarity
from tops_adapters.transformers import enable

import tops_core

RATIO = 0.5
CHUNK = 32  # max_num_batched_tokens: prompts longer than this are prefilled in chunks
TOP = 5


def start(model_dir, **tops):
    from vllm import LLM

    return LLM(model_dir, dtype="float32", enforce_eager=True, max_model_len=1024, max_num_seqs=4,
               max_num_batched_tokens=CHUNK, enable_chunked_prefill=True, seed=0,
               limit_mm_per_prompt={"image": 2, "video": 0}, hf_overrides={"tops_pruning": tops})


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = start(model_dir, ratio=RATIO)
    yield engine
    del engine
    gc.collect()


@pytest.fixture(scope="module")
def hf(model_dir):
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), transformers.AutoProcessor.from_pretrained(model_dir)


def first_token(llm, requests):
    from vllm import SamplingParams

    outs = llm.generate(requests, SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP))
    return [(len(o.prompt_token_ids), o.outputs[0].logprobs[0]) for o in outs]


@torch.no_grad()
def reference(hf, images, ratio):
    """transformers' first-token log-probabilities with the integration keeping round(ratio * N) per image."""
    model, processor = hf
    inputs = processor(text=[prompt(len(images))], images=images, return_tensors="pt")
    if ratio is None:
        logits = model(**inputs).logits
        return logits[0, -1].log_softmax(-1), inputs["input_ids"].shape[1]
    per_image = [merged_tokens_of(grid) for grid in inputs["image_grid_thw"]]
    with enable(model, ratio=ratio, relevance="uniform", objective=tops_core.TOPSRule()) as session:
        assert len(images) == 1  # the integration's budget is per sequence: one image per prompt
        logits = model(**inputs).logits
        kept = session.history[0].kept[0]
    assert kept.shape[0] == round(ratio * per_image[0])
    return logits[0, -1].log_softmax(-1), int(session.history[0].columns.shape[1])


def merged_tokens_of(grid):
    return int(grid.prod()) // 4


def assert_matches(top, ref):
    for token, logprob in top.items():
        assert abs(logprob.logprob - float(ref[token])) < 1e-4, (token, logprob.logprob, float(ref[token]))


@pytest.mark.parametrize("kind", ["square", "tall", "wide"])
def test_placeholders_and_first_token_logprobs_match_transformers(llm, hf, kind):
    picture = image(kind)
    [(length, top)] = first_token(llm, [{"prompt": prompt(), "multi_modal_data": {"image": picture}}])
    ref, pruned_length = reference(hf, [picture], RATIO)
    assert length == pruned_length
    n = merged_tokens(kind)
    text = pruned_length - round(RATIO * n)
    assert length - text == round(RATIO * n)  # the placeholders: k = round(ratio * N)
    assert_matches(top, ref)


def test_chunked_prefill_is_exercised_and_matches(llm, hf):
    picture = image("wide", seed=3)  # 9 x 4 = 36 merged tokens, 18 kept: a prompt longer than CHUNK
    [(length, top)] = first_token(llm, [{"prompt": prompt(), "multi_modal_data": {"image": picture}}])
    assert length > CHUNK
    ref, _ = reference(hf, [picture], RATIO)
    assert_matches(top, ref)


def test_a_batch_of_different_sizes_matches_each_prompt_alone(llm, hf):
    kinds = ["tall", "square", "wide"]
    pictures = [image(kind, seed=10 + i) for i, kind in enumerate(kinds)]
    results = first_token(llm, [{"prompt": prompt(), "multi_modal_data": {"image": p}} for p in pictures])
    for picture, (_, top) in zip(pictures, results):
        ref, _ = reference(hf, [picture], RATIO)
        assert_matches(top, ref)


def test_kept_set_is_tops_core_select_on_the_same_features(llm):
    picture = image("square", seed=5)
    first_token(llm, [{"prompt": prompt(), "multi_modal_data": {"image": picture}}])
    [record] = llm.apply_model(lambda model: model.tops_records[-1])
    features, relevance = record["features"], record["relevance"]
    k = round(RATIO * features.shape[0])
    expected = tops_core.select(relevance.numpy(), tops_core.cosine(features.numpy()), k,
                                objective=tops_core.TOPSRule())
    assert record["kept"].tolist() == expected.indices.tolist()
    on_device = tops_core.select(relevance, cosine_similarity(features[None])[0], k,
                                 objective=tops_core.TOPSRule())
    assert record["kept"].tolist() == torch.as_tensor(on_device.indices).tolist()


def test_two_images_in_one_prompt_keep_k_of_each(llm):
    pictures = [image("square", seed=7), image("tall", seed=8)]
    [(length, top)] = first_token(llm, [{"prompt": prompt(2), "multi_modal_data": {"image": pictures}}])
    [records] = llm.apply_model(lambda model: model.tops_records[-2:])
    [(single, _)] = first_token(llm, [{"prompt": prompt(1), "multi_modal_data": {"image": pictures[0]}}])
    added = length - single  # one more image block: 2 markers + its kept tokens
    assert added == 2 + round(RATIO * merged_tokens("tall"))
    assert all(lp.logprob <= 0 for lp in top.values())
    expected = [round(RATIO * merged_tokens(kind)) for kind in ("square", "tall")]
    assert [r["kept"].shape[0] for r in records] == expected
