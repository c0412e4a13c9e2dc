"""Structured output and tool calls through the real server, on the tiny story-trained model.

That model has never seen JSON or a tool call: without guidance it writes prose (asserted below),
so JSON that parses and validates can only come from onnxruntime-genai's guided decoding.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from onnx_server_harness import API_KEY, MODEL_NAME, Server, start_server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Tell me about the river."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now."}},
]
QWEN3_TEMPLATE = Path(__file__).parents[1] / "engines" / "data" / "chat_templates" / "Qwen-Qwen3-0.6B.jinja"


def chat(server: Server, **kw):
    return server.client().chat.completions.create(model=MODEL_NAME, messages=MESSAGES, temperature=0, **kw)


def test_unguided_output_is_not_json(server: Server) -> None:
    """The control: the same request without response_format does not produce JSON."""
    text = chat(server, max_tokens=40).choices[0].message.content
    with pytest.raises(ValueError):
        json.loads(text)


def test_json_object(server: Server) -> None:
    resp = chat(server, max_tokens=200, response_format={"type": "json_object"})
    assert resp.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_validates(server: Server, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    if stream:
        chunks = list(chat(server, max_tokens=120, response_format=fmt, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        resp = chat(server, max_tokens=120, response_format=fmt)
        text, finish = resp.choices[0].message.content, resp.choices[0].finish_reason
    assert finish == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_structured_outputs_choice_and_completions(server: Server) -> None:
    resp = chat(server, max_tokens=10, extra_body={"structured_outputs": {"choice": ["yes", "no", "maybe"]}})
    assert resp.choices[0].message.content in ("yes", "no", "maybe")
    comp = server.client().completions.create(model=MODEL_NAME, prompt="The river", max_tokens=120, temperature=0,
                                              extra_body={"response_format": {"type": "json_schema", "json_schema": {
                                                  "name": "p", "schema": PERSON}}})
    jsonschema.validate(json.loads(comp.choices[0].text), PERSON)


def test_guided_and_free_requests_share_a_batch(server: Server) -> None:
    """Guidance is per request: in one og.Engine batch a free request stays free."""
    async def both():
        client = server.async_client()
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        return await asyncio.gather(
            *[client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, temperature=0, max_tokens=120,
                                             response_format=fmt) for _ in range(2)],
            *[client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, temperature=0, max_tokens=40)
              for _ in range(2)])

    guided_a, guided_b, free_a, free_b = asyncio.run(both())
    for resp in (guided_a, guided_b):
        jsonschema.validate(json.loads(resp.choices[0].message.content), PERSON)
    alone = chat(server, max_tokens=40).choices[0].message.content
    assert free_a.choices[0].message.content == free_b.choices[0].message.content == alone


def test_refused_grammar_is_a_400_naming_the_field(server: Server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            chat(server, max_tokens=10, response_format=fmt, stream=stream)
        assert info.value.body["param"] == "response_format.json_schema.schema"
    assert chat(server, max_tokens=3).choices[0].message.content  # the server is fine afterwards


def _check_call(call, name: str, schema: dict) -> None:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == name
    jsonschema.validate(json.loads(call.function.arguments), schema)


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice(server: Server, stream: bool) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    if stream:
        chunks = list(chat(server, max_tokens=60, tools=TOOLS, tool_choice=choice, stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert [tc.index for tc in calls] == [0]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
        assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        resp = chat(server, max_tokens=60, tools=TOOLS, tool_choice=choice)
        assert resp.choices[0].finish_reason == "tool_calls" and resp.choices[0].message.content is None
        calls = resp.choices[0].message.tool_calls
    assert len(calls) == 1
    _check_call(calls[0], "get_weather", WEATHER)


@pytest.mark.parametrize("stream", [False, True])
def test_required_tool_choice(server: Server, stream: bool) -> None:
    kw = {"max_tokens": 80, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    if stream:
        chunks = list(chat(server, stream=True, **kw))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        resp = chat(server, **kw)
        calls, finish = resp.choices[0].message.tool_calls, resp.choices[0].finish_reason
    assert finish == "tool_calls" and len(calls) == 1
    name = calls[0].function.name
    params = WEATHER if name == "get_weather" else {"type": "object", "maxProperties": 0}
    _check_call(calls[0], name, params)


def test_tool_choice_none_and_tool_history(server: Server) -> None:
    """tool_choice none answers in text; an earlier call and its result go through the template."""
    history = [*MESSAGES,
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_weather", "arguments": "{\"city\": \"Oslo\", \"unit\": \"c\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "3 degrees"}]
    resp = server.client().chat.completions.create(model=MODEL_NAME, messages=history, temperature=0,
                                                   max_tokens=20, tools=TOOLS, tool_choice="none")
    assert resp.choices[0].message.tool_calls is None and resp.choices[0].message.content


def test_auto_needs_a_hermes_template(server: Server) -> None:
    """The tiny model's own template has no tool format: auto (the default with tools) is refused by name."""
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, max_tokens=10, tools=TOOLS)
    assert info.value.body["param"] == "tool_choice" and "'auto'" in info.value.body["message"]


@pytest.fixture(scope="module")
def hermes_server(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same weights with Qwen3's real chat template, which writes Hermes <tool_call> blocks."""
    from slm_onnx_server.model import find_model_folder

    src = find_model_folder(onnx_model_dir)
    folder = tmp_path_factory.mktemp("hermes") / "model"
    folder.mkdir()
    for item in src.iterdir():
        if item.name != "chat_template.jinja":
            (folder / item.name).symlink_to(item)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(QWEN3_TEMPLATE.read_text())
    srv = start_server(folder, tmp_path_factory.mktemp("hermes-server"))
    yield srv
    assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.mark.parametrize("stream", [False, True])
def test_auto_tool_choice_with_hermes_template(hermes_server: Server, stream: bool) -> None:
    """auto: free text or calls, each well formed, over many sampled answers; some of each appear."""
    body = {"model": MODEL_NAME, "messages": MESSAGES, "tools": TOOLS, "max_tokens": 60, "temperature": 1.0,
            "stream": stream}
    kinds = set()
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        for _ in range(12):
            r = client.post(hermes_server.v1 + "/chat/completions", json=body)
            assert r.status_code == 200, r.text
            if stream:
                chunks = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
                deltas = [c["choices"][0] for c in chunks if c["choices"]]
                calls = [tc for d in deltas for tc in d["delta"].get("tool_calls") or []]
                content = "".join(d["delta"].get("content") or "" for d in deltas)
                finish = deltas[-1]["finish_reason"]
            else:
                msg = r.json()["choices"][0]["message"]
                calls, content, finish = msg.get("tool_calls") or [], msg["content"] or "", \
                    r.json()["choices"][0]["finish_reason"]
            if calls:
                kinds.add("calls")
                assert finish == "tool_calls" and "<tool_call>" not in content
                for call in calls:
                    schema = WEATHER if call["function"]["name"] == "get_weather" else {"maxProperties": 0}
                    assert call["function"]["name"] in ("get_weather", "get_time")
                    jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
            elif finish == "stop" or not content.lstrip().startswith("<"):
                kinds.add("text")
                assert not content.lstrip().startswith("<tool_call>")
    print("auto answers seen:", sorted(kinds))
    assert kinds, "no answer was either text or a complete tool call"


def test_auto_grammar_call_branch_reads_back_as_tool_calls(onnx_model_dir: Path) -> None:
    """The tiny model never picks the call branch of auto by itself (the test above sees text), so the
    same grammar with the text branch taken out makes it: the Hermes blocks it writes read back as
    schema-valid tool_calls."""
    import numpy as np
    import onnxruntime_genai as og

    from slm_onnx_server import guidance as G

    grammar = G.auto_tools(TOOLS, parallel=False).data
    calls_only = grammar.replace("start: think? (TEXT | calls)?", "start: calls")
    assert calls_only != grammar
    model = og.Model(str(onnx_model_dir))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=400, do_sample=False)
    params.set_guidance("lark_grammar", calls_only)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(tokenizer.encode("The river"), dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    text = tokenizer.decode(np.asarray(out, dtype=np.int32))
    assert text.startswith("<tool_call>\n{") and text.rstrip().endswith("</tool_call>"), text
    content, calls = G.parse_tool_calls(G.ToolMode("auto"), text)
    assert content is None and calls
    for call in calls:
        schema = WEATHER if call["function"]["name"] == "get_weather" else {"maxProperties": 0}
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema)


def test_chat_template_kwargs_reach_the_template(hermes_server: Server) -> None:
    """Qwen3's template writes an empty think block for enable_thinking=false: the prompt grows."""
    client = hermes_server.client()
    plain = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=1, temperature=0)
    no_think = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=1, temperature=0,
                                              extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert no_think.usage.prompt_tokens > plain.usage.prompt_tokens
