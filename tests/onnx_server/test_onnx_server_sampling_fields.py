"""vLLM's sampling and prompt fields that the server honours, checked through the real server."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from onnx_server_harness import MODEL_NAME, Server, start_server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Tell me about the river."}]


def chat(server: Server, **kw):
    return server.client().chat.completions.create(model=MODEL_NAME, messages=MESSAGES, **kw)


def test_request_id_becomes_the_response_id(server: Server) -> None:
    resp = chat(server, max_tokens=2, temperature=0, extra_body={"request_id": "trace-42"})
    assert resp.id == "chatcmpl-trace-42"


def test_top_k_one_samples_the_greedy_answer(server: Server) -> None:
    greedy = chat(server, max_tokens=30, temperature=0).choices[0].message.content
    assert chat(server, max_tokens=30, temperature=1.5, extra_body={"top_k": 1}).choices[0].message.content == greedy


def test_repetition_penalty_changes_the_greedy_answer(server: Server) -> None:
    plain = chat(server, max_tokens=60, temperature=0).choices[0].message.content
    penalised = chat(server, max_tokens=60, temperature=0, extra_body={"repetition_penalty": 1.8})
    assert penalised.choices[0].message.content != plain


def test_stop_token_ids_and_include_stop_str(server: Server, onnx_model_dir: Path) -> None:
    import onnxruntime_genai as og

    from slm_onnx_server.model import find_model_folder

    client = server.client()
    prompt = [1, 2, 3, 4]
    full = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0)
    text = full.choices[0].text
    tokenizer = og.Tokenizer(og.Model(str(find_model_folder(onnx_model_dir))))
    generated = [int(t) for t in tokenizer.encode(text)]
    stop_at = next(i for i in range(2, len(generated)) if generated[i] not in generated[:i])
    cut = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0,
                                    extra_body={"stop_token_ids": [generated[stop_at]]})
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens == stop_at
    assert text.startswith(cut.choices[0].text) and len(cut.choices[0].text) < len(text)
    stop = text.strip().split()[1]
    kept = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=12, temperature=0, stop=[stop],
                                     extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text.endswith(stop) and text.startswith(kept.choices[0].text)


def test_prompt_truncation_and_generation_prompt(server: Server) -> None:
    whole = chat(server, max_tokens=1, temperature=0).usage.prompt_tokens
    assert chat(server, max_tokens=1, temperature=0,
                extra_body={"truncate_prompt_tokens": 5}).usage.prompt_tokens == 5 < whole
    bare = chat(server, max_tokens=1, temperature=0, extra_body={"add_generation_prompt": False})
    assert bare.usage.prompt_tokens < whole


def test_seed_on_a_static_engine_batch(server: Server) -> None:
    """og.Engine takes a per-request seed only with paged attention: refused by name when sampling."""
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, max_tokens=3, temperature=0.8, seed=7)
    assert info.value.body["param"] == "seed" and "--scheduler threads" in info.value.body["message"]
    assert chat(server, max_tokens=3, temperature=0, seed=7).choices[0].message.content  # greedy: no seed needed


@pytest.fixture(scope="module")
def threads_server(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One og.Generator per request: seeds and guidance go through GeneratorParams."""
    srv = start_server(onnx_model_dir, tmp_path_factory.mktemp("threads"), "--scheduler", "threads")
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


def test_threads_scheduler_seed_and_guidance(threads_server: Server) -> None:
    import json

    kw = {"max_tokens": 30, "temperature": 1.0}
    first, again = (chat(threads_server, seed=11, **kw).choices[0].message.content for _ in range(2))
    other = chat(threads_server, seed=12, **kw).choices[0].message.content
    assert first == again != other
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    resp = chat(threads_server, max_tokens=30, temperature=0,
                response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert isinstance(json.loads(resp.choices[0].message.content)["n"], int)
    with pytest.raises(openai.BadRequestError) as info:
        chat(threads_server, max_tokens=5, response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "no-such-type"}}})
    assert info.value.body["param"] == "response_format.json_schema.schema"
