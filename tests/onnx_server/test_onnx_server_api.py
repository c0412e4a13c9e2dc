"""The server's OpenAI API, called with the official openai client against a real tiny int4 model."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from onnx_server_harness import API_KEY, MODEL_NAME, Server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Tell me about the river."}]


def greedy_chat(server: Server, **kw):
    return server.client().chat.completions.create(model=MODEL_NAME, messages=MESSAGES, temperature=0, **kw)


def test_models_list_and_retrieve(server: Server) -> None:
    client = server.client()
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_non_streaming(server: Server) -> None:
    resp = greedy_chat(server, max_tokens=24)
    assert resp.object == "chat.completion" and resp.model == MODEL_NAME and resp.id.startswith("chatcmpl-")
    choice = resp.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    u = resp.usage
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens <= 24
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_streaming_matches_non_streaming(server: Server) -> None:
    full = greedy_chat(server, max_tokens=24)
    stream = server.client().chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    assert with_choice[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in with_choice[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choice)
    assert text == full.choices[0].message.content  # greedy: same tokens either way
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_sse_wire_format(server: Server) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_completions_streaming_and_not(server: Server) -> None:
    client = server.client()
    resp = client.completions.create(model=MODEL_NAME, prompt="The river", max_tokens=12, temperature=0)
    assert resp.object == "text_completion" and resp.choices[0].text
    assert resp.usage.completion_tokens <= 12 and resp.usage.prompt_tokens >= 1
    chunks = list(client.completions.create(model=MODEL_NAME, prompt="The river", max_tokens=12,
                                            temperature=0, stream=True))
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks) == resp.choices[0].text
    assert chunks[-1].choices[0].finish_reason == resp.choices[0].finish_reason


def test_max_tokens_respected(server: Server) -> None:
    client = server.client()
    for n in (1, 5, 17):
        resp = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=n)
        assert resp.usage.completion_tokens <= n
    exact = client.completions.create(model=MODEL_NAME, prompt="The", max_tokens=9,
                                      extra_body={"ignore_eos": True})
    assert exact.usage.completion_tokens == 9 and exact.choices[0].finish_reason == "length"


def test_stop_strings_trimmed(server: Server) -> None:
    client = server.client()
    base = client.completions.create(model=MODEL_NAME, prompt="The river", max_tokens=40, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    words = re.findall(r"[a-z]{3,}", base[len(base) // 3:])
    assert words, f"the tiny model produced no word to stop on: {base!r}"
    stop = words[0]
    expected = base[: base.find(stop)]
    resp = client.completions.create(model=MODEL_NAME, prompt="The river", max_tokens=40, temperature=0,
                                     stop=[stop, "\u2603never"], extra_body={"ignore_eos": True})
    assert resp.choices[0].text == expected and resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens < 40
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_NAME, prompt="The river", max_tokens=40, temperature=0, stop=stop, stream=True,
        extra_body={"ignore_eos": True}))
    assert streamed == expected


def test_wrong_or_missing_key_rejected(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        server.client(key="wrong-key").chat.completions.create(model=MODEL_NAME, messages=MESSAGES)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    r = httpx.post(server.v1 + "/chat/completions", json={"model": MODEL_NAME, "messages": MESSAGES})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(server.v1 + "/models", headers={"Authorization": f"Basic {API_KEY}"})
    assert r.status_code == 401
    # probes and metrics stay open (kubelet and Prometheus carry no key)
    assert httpx.get(server.base + "/health").status_code == 200
    assert httpx.get(server.base + "/ready").status_code == 200
    assert httpx.get(server.base + "/metrics").status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"temperature": 3.0}, "temperature"), ({"n": 2}, "n"), ({"messages": []}, "messages"),
     ({"top_p": 1.5}, "top_p"), ({"max_tokens": 5000}, "messages")],
)
def test_validation_errors(server: Server, kwargs: dict, param: str) -> None:
    args = {"model": MODEL_NAME, "messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        server.client().chat.completions.create(**args)
    err = info.value
    assert err.status_code == 400 and err.param == param and err.type == "invalid_request_error"
    assert set(err.body) == {"message", "type", "param", "code"}


def test_unknown_model_and_bad_json(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        server.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.code == "model_not_found" and info.value.param == "model"
    r = httpx.post(server.v1 + "/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(server.v1 + "/nothing", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 404 and "error" in r.json()


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move(server: Server) -> None:
    before = httpx.get(server.ops + "/metrics").text
    server.client().chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=6)
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model=MODEL_NAME, messages=MESSAGES, n=3)
    after = httpx.get(server.ops + "/metrics").text
    ok = 'slm_onnx_requests_total{route="/v1/chat/completions",status="200"}'
    bad = 'slm_onnx_requests_total{route="/v1/chat/completions",status="400"}'
    assert _sample(after, ok) == _sample(before, ok) + 1
    assert _sample(after, bad) == _sample(before, bad) + 1
    for name in ("slm_onnx_generation_tokens_total", "slm_onnx_prompt_tokens_total",
                 "slm_onnx_time_to_first_token_seconds_count", "slm_onnx_e2e_request_latency_seconds_count"):
        assert _sample(after, name) > _sample(before, name), name
    for gauge in ("slm_onnx_queue_depth ", "slm_onnx_running_requests ", "slm_onnx_ready 1.0"):
        assert gauge in after
    assert 'slm_onnx_request_errors_total{route="/v1/chat/completions",type="invalid_request_error"}' in after


def test_native_chat_template_matches_jinja(onnx_model_dir) -> None:
    """onnxruntime-genai renders the model's template exactly as transformers' Jinja2 way does."""
    import onnxruntime_genai as og

    from slm_onnx_server.chat_template import ChatTemplate

    model = og.Model(str(onnx_model_dir))
    template = ChatTemplate(onnx_model_dir, og.Tokenizer(model))
    conversation = [*MESSAGES, {"role": "assistant", "content": "It flows."}, {"role": "user", "content": "More?"}]
    native = template.render(conversation)
    assert template._use_native  # the native renderer handled it
    assert native == template._render_jinja(conversation)
    assert native.count("More?") == 1
    assert native.endswith("<|im_start|>assistant\n")  # the generation prompt (ChatML template)
