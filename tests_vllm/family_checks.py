"""The checks every supported family passes, against stock vLLM and a transformers reference.

A test file per family subclasses :class:`FamilyChecks` with its family name:
one pytest process per file (see the Makefile's ``test-vllm``), five engines
per family, all started before any selection runs (vLLM 0.32's CPU engine
start-up fails once numba is loaded, and a CPU selection loads it):

* ``stock``: vLLM's own class and processor for the architecture;
* ``keep_all``: the plugin at ratio 1.0;
* ``chunked``: the plugin at ratio 0.5, the paper's rule, chunked prefill in
  steps of ``CHUNK`` tokens (every prompt here is longer);
* ``whole``: the plugin at ratio 0.5, the certified objective (so the
  position-aware similarity, on by default), chunked prefill off;
* ``plain``: as ``whole`` with the position-aware similarity switched off.

Log-probabilities, not greedy tokens, catch position errors on a tiny random
model (two steps: the prompt's positions, then the decode delta). The transformers reference is
the integration
(:func:`tops_adapters.transformers.enable`) keeping the very tokens vLLM kept
(``tops_core.select`` answers with them), so the embeddings, sequence and
positions it builds are compared, while the kept set itself is checked
against ``tops_core.select`` on the recorded features.
"""

from __future__ import annotations

import gc
import shutil
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tiny_models import FAMILIES
from tops_adapters.hf.scores import cosine_similarity
from tops_adapters.layouts import mixed
from tops_adapters.transformers import enable

import tops_core

RATIO = 0.5
CHUNK = 16  # max_num_batched_tokens of the chunked engine
TOP = 5
STEPS = 2
RECORD = 8  # selections each pruning engine keeps for inspection
KV_CACHE = 32 << 20  # bytes: ample for 4 sequences of 1024 tokens of the tiny models (1 KiB a token)
KINDS = ("square", "tall", "wide")


def image(family: str, kind: str, seed: int = 0) -> Image.Image:
    width, height = FAMILIES[family].sizes[kind]
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def prompt(family: str, images: int = 1) -> str:
    spec = FAMILIES[family]
    return spec.prompt.format(images=spec.image * images)


def request(family: str, pictures: list) -> dict:
    data = pictures[0] if len(pictures) == 1 else pictures
    return {"prompt": prompt(family, len(pictures)), "multi_modal_data": {"image": data}}


def start(model_dir, tops=None, *, chunk=None, family="qwen2_5_vl"):
    """Start an in-process engine on the tiny model.

    ``tops``: the ``hf_overrides`` entry; ``chunk``: the prefill step.
    """
    from vllm import LLM

    limits = {"image": 2} if family.startswith("llava") else {"image": 2, "video": 0}
    scheduling = (
        dict(max_num_batched_tokens=chunk, enable_chunked_prefill=True)
        if chunk
        else dict(max_num_batched_tokens=1024, enable_chunked_prefill=False)
    )
    overrides = {"tops_pruning": tops} if tops is not None else None
    return LLM(
        model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=4,
        seed=0,
        kv_cache_memory_bytes=KV_CACHE,
        limit_mm_per_prompt=limits,
        hf_overrides=overrides,
        **scheduling,
    )


@contextmanager
def stock_vllm(architecture: str, model_dir: str):
    """A copy of ``model_dir`` that engines started here load with vLLM's own class (and processor).

    vLLM caches the class per model path, so the stock engine reads a copy of the model.
    """
    from tops_adapters.vllm import ARCHITECTURES
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # now, or the first engine's start-up would load the plugin over the swap
    pruned = ModelRegistry._try_load_model_cls(architecture)
    stock = next(c for c in pruned.__mro__ if c.__module__.startswith("vllm."))
    copy = shutil.copytree(model_dir, f"{model_dir}-stock", dirs_exist_ok=True)
    ModelRegistry.register_model(architecture, stock)
    try:
        yield copy
    finally:
        ModelRegistry.register_model(architecture, ARCHITECTURES[architecture])


def generated(llm, requests):
    """``(prompt length, [{token: logprob} per step])`` of ``STEPS`` greedy tokens of each request.

    The first step reads the prompt's positions, the second the decode delta after it.
    """
    from vllm import SamplingParams

    outs = llm.generate(requests, SamplingParams(max_tokens=STEPS, temperature=0.0, logprobs=TOP))
    return [
        (
            len(o.prompt_token_ids),
            [{t: lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs],
        )
        for o in outs
    ]


def pruned_generated(llm, pictures: list, family: str):
    """``generated`` for one prompt and the engine's records of the selections it made (its images')."""
    llm.apply_model(lambda model: model.tops_records.clear())
    [(length, steps)] = generated(llm, [request(family, pictures)])
    [kept] = llm.apply_model(lambda model: list(model.tops_records))
    assert len(kept) == len(pictures)  # each image selected once (no encoder-cache hit)
    return length, steps, kept


@contextmanager
def selecting(kept_per_image: list[torch.Tensor], candidates: list[int]):
    """``tops_core.select`` answering with ``kept_per_image`` (indices into each image's candidates).

    The integration selects over all images of a sequence at once; the answer
    is the images' kept sets, offset by the candidates before them.
    """
    offsets = np.cumsum([0, *candidates[:-1]])
    answer = torch.cat([kept + int(o) for kept, o in zip(kept_per_image, offsets)])
    original, calls = tops_core.select, []

    def select(scores, sim, k, **_):
        assert scores.shape[-1] == sum(candidates) and k == answer.shape[0], (scores.shape, k, candidates)
        calls.append(k)
        return SimpleNamespace(indices=answer[None] if scores.ndim == 2 else answer)

    tops_core.select = select
    try:
        yield calls
    finally:
        tops_core.select = original


@torch.no_grad()
def reference(hf, family: str, pictures: list, kept: list[dict] | None = None):
    """transformers' greedy ``STEPS`` log-probabilities (one tensor per step) and its prompt length.

    ``kept``: vLLM's records of the prompt's images, in order, whose kept sets
    the integration keeps (``None``: the unpruned model).
    """
    model, processor = hf
    inputs = processor(text=[prompt(family, len(pictures))], images=pictures, return_tensors="pt")
    options = dict(max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True)
    if kept is None:
        out = model.generate(**inputs, **options)
        return [step[0].log_softmax(-1) for step in out.logits], inputs["input_ids"].shape[1]
    with (
        selecting([r["kept"] for r in kept], [r["features"].shape[0] for r in kept]) as calls,
        enable(model, ratio=RATIO, relevance="uniform") as session,
    ):
        out = model.generate(**inputs, **options)
    assert calls, "the reference never selected"
    return [step[0].log_softmax(-1) for step in out.logits], int(session.history[0].columns.shape[1])


def assert_close(steps: list[dict], ref: list[torch.Tensor]) -> None:
    assert len(steps) == len(ref) == STEPS
    for step, (top, logprobs) in enumerate(zip(steps, ref)):
        for token, logprob in top.items():
            assert abs(logprob - float(logprobs[token])) < 1e-4, (
                step,
                token,
                logprob,
                float(logprobs[token]),
            )


def expected_kept(record: dict, grid, objective: str, spatial: bool) -> list[int]:
    """``tops_core.select`` on a record's features and relevance, on the layout ``grid`` if ``spatial``.

    The similarity is the integrations' ``(1 + cos) / 2`` in float32 torch (NumPy's rounding can
    flip near-ties of a tiny random model's tokens).
    """
    sim = cosine_similarity(record["features"][None])[0]
    if spatial:
        sim = mixed(sim, grid)
    selector = tops_core.TOPSRule() if objective == "tops" else tops_core.Objective()
    k = round(RATIO * record["features"].shape[0])
    return torch.as_tensor(tops_core.select(record["relevance"], sim, k, objective=selector).indices).tolist()


class FamilyChecks:
    """The checks; a subclass sets ``family`` (a key of ``tiny_models.FAMILIES``) and ``grids``.

    ``grids`` maps an image kind to the candidates' layout the selection must
    use, worked out by hand from the family's image processing.
    """

    family: str
    grids: dict

    @pytest.fixture(scope="class")
    @classmethod
    def engines(cls, model_dir):
        family = cls.family
        with stock_vllm(FAMILIES[family].transformers_class, model_dir) as copy:
            stock = start(copy, family=family)
        started = {
            "stock": stock,
            "keep_all": start(model_dir, {"ratio": 1.0}, family=family),
            "chunked": start(model_dir, {"ratio": RATIO, "record": RECORD}, chunk=CHUNK, family=family),
            "whole": start(
                model_dir, {"ratio": RATIO, "objective": "coverage", "record": RECORD}, family=family
            ),
            "plain": start(
                model_dir,
                {"ratio": RATIO, "objective": "coverage", "spatial": False, "record": RECORD},
                family=family,
            ),
        }
        yield started
        started.clear()
        gc.collect()

    @pytest.fixture(scope="class")
    @classmethod
    def hf(cls, model_dir):
        model = getattr(transformers, FAMILIES[cls.family].transformers_class).from_pretrained(
            model_dir, dtype=torch.float32
        )
        return model.eval(), transformers.AutoProcessor.from_pretrained(model_dir)

    def test_keep_all_is_stock_vllm(self, engines):
        [stock] = engines["stock"].apply_model(lambda model: type(model).__module__)
        [plugin] = engines["keep_all"].apply_model(lambda model: type(model).__module__)
        assert (stock.split(".")[0], plugin) == ("vllm", "tops_adapters.vllm." + plugin.rsplit(".", 1)[-1])
        requests = [request(self.family, [image(self.family, kind, seed=20)]) for kind in KINDS]
        requests.append(
            request(self.family, [image(self.family, "square", 21), image(self.family, "wide", 22)])
        )
        assert generated(engines["keep_all"], requests) == generated(engines["stock"], requests)

    @pytest.mark.parametrize("engine", ["chunked", "whole"])
    @pytest.mark.parametrize("kind", KINDS)
    def test_pruned_generated_matches_transformers(self, engines, hf, engine, kind):
        picture = image(self.family, kind, seed=1)
        length, steps, kept = pruned_generated(engines[engine], [picture], self.family)
        ref, ref_length = reference(hf, self.family, [picture], kept)
        full = reference(hf, self.family, [picture])[1]
        n = kept[0]["features"].shape[0]
        assert length == ref_length
        assert full - length == n - round(RATIO * n)  # the placeholders: k = round(ratio * N) candidates
        if engine == "chunked":
            assert length > CHUNK  # prefilled in several steps
        assert_close(steps, ref)

    @pytest.mark.parametrize(
        "engine, objective, spatial",
        [("chunked", "tops", False), ("whole", "coverage", True), ("plain", "coverage", False)],
    )
    def test_kept_set_is_tops_core_select(self, engines, engine, objective, spatial):
        for seed, kind in enumerate(KINDS):
            picture = image(self.family, kind, seed=40 + seed)
            _, _, [record] = pruned_generated(engines[engine], [picture], self.family)
            grid = self.grids[kind]
            assert record["grid"] == grid
            expected = expected_kept(record, grid, objective, spatial)
            assert record["kept"].tolist() == expected, (kind, record["kept"].tolist(), expected)

    def test_position_aware_default_is_live_and_switches_off(self, engines):
        changed = []
        for seed, kind in enumerate(KINDS):
            picture = image(self.family, kind, seed=50 + seed)  # images no engine has seen (encoder cache)
            _, _, [default] = pruned_generated(engines["whole"], [picture], self.family)
            _, _, [plain] = pruned_generated(engines["plain"], [picture], self.family)
            assert torch.equal(default["features"], plain["features"])
            changed.append(default["kept"].tolist() != plain["kept"].tolist())
        assert any(changed), "spatial=False selected what the default selected on every image"

    def test_a_batch_of_different_sizes_matches_transformers(self, engines, hf):
        llm = engines["chunked"]
        pictures = [image(self.family, kind, seed=10 + i) for i, kind in enumerate(KINDS)]
        llm.apply_model(lambda model: model.tops_records.clear())
        results = generated(llm, [request(self.family, [p]) for p in pictures])
        [batch] = llm.apply_model(lambda model: list(model.tops_records))
        # one selection per image, in request order (the grids tell the sizes apart where they differ)
        assert [r["grid"] for r in batch] == [self.grids[kind] for kind in KINDS]
        for picture, record, (_, steps) in zip(pictures, batch, results):
            ref, _ = reference(hf, self.family, [picture], [record])
            assert_close(steps, ref)

    def test_two_images_in_one_prompt_match_transformers(self, engines, hf):
        pictures = [image(self.family, "square", seed=7), image(self.family, "tall", seed=8)]
        for engine in ("chunked", "whole"):
            length, steps, kept = pruned_generated(engines[engine], pictures, self.family)
            ref, ref_length = reference(hf, self.family, pictures, kept)
            assert length == ref_length
            assert [r["kept"].shape[0] for r in kept] == [round(RATIO * r["features"].shape[0]) for r in kept]
            assert_close(steps, ref)
