"""Pure parts of the server: stop-string streaming and request validation (no model needed)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("jinja2", reason="jinja2 is not installed")

from slm_onnx_server.errors import APIError
from slm_onnx_server.protocol import parse_chat, parse_completion
from slm_onnx_server.stops import StopMatcher


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[list[str], bool]:
    m = StopMatcher(stops)
    out = [m.feed(p) for p in pieces]
    out.append(m.flush())
    return out, m.stopped


def test_stop_split_across_pieces_is_held_back_then_trimmed() -> None:
    out, stopped = run(("END",), ["hello E", "N", "D and more"])
    assert stopped
    assert "".join(out) == "hello "
    assert out[0] == "hello "  # "E" might start "END": not shown until decided


def test_held_text_released_when_it_is_not_a_stop() -> None:
    out, stopped = run(("END",), ["abc E", "Nx", "yz"])
    assert not stopped
    assert "".join(out) == "abc ENxyz"
    assert out[0] == "abc "


def test_earliest_of_several_stops_wins_and_flush_after_stop_is_empty() -> None:
    out, stopped = run(("zz", "b"), ["aaa bzz", "ccc"])
    assert stopped and "".join(out) == "aaa "


def test_no_stops_passes_through() -> None:
    out, stopped = run((), ["a", "b"])
    assert out == ["a", "b", ""] and not stopped


def _err(fn, body) -> APIError:
    with pytest.raises(APIError) as info:
        fn(body)
    return info.value


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 2.5}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.[0].role"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_chat_validation_names_the_parameter(body: dict, param: str) -> None:
    err = _err(parse_chat, body)
    assert err.status == 400 and err.param == param
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


def test_chat_parse_defaults_and_content_parts() -> None:
    req = parse_chat({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "stop": "x", "max_completion_tokens": 9, "stream": True, "stream_options": {"include_usage": True}})
    assert req.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert req.sampling.stop == ("x",) and req.sampling.max_tokens == 9
    assert req.stream and req.include_usage and req.sampling.temperature == 1.0


def test_completion_prompt_forms() -> None:
    assert parse_completion({"model": "m", "prompt": "hi"}).sampling.max_tokens == 16
    assert parse_completion({"model": "m", "prompt": ["hi"]}).prompt == "hi"
    assert parse_completion({"model": "m", "prompt": [1, 2, 3]}).prompt_ids == [1, 2, 3]
    assert _err(parse_completion, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"


def test_include_stop_str_in_output_keeps_the_stop() -> None:
    m = StopMatcher(("END",), include=True)
    assert m.feed("abc E") + m.feed("ND more") == "abc END" and m.stopped


def test_tool_call_read_back() -> None:
    from slm_onnx_server.guidance import ToolMode, parse_tool_calls

    content, calls = parse_tool_calls(ToolMode("auto"), '<think>hm</think>\n\n<tool_call>\n{"name": "f", '
                                      '"arguments": {"a": 1}}\n</tool_call>\n<tool_call>\n{"name": "g", '
                                      '"arguments": {}}\n</tool_call>')
    assert content == "<think>hm</think>" and [c["function"]["name"] for c in calls] == ["f", "g"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1} and calls[0]["id"] != calls[1]["id"]
    assert parse_tool_calls(ToolMode("auto"), "plain words") == ("plain words", [])
    cut = '<tool_call>\n{"name": "f", "argu'
    assert parse_tool_calls(ToolMode("auto"), cut) == (cut, [])  # cut off by max_tokens: kept as text
    two = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n' + cut
    assert parse_tool_calls(ToolMode("auto"), two) == (two, [])  # the complete one is not split off
    content, calls = parse_tool_calls(ToolMode("required"), '[{"name": "f", "parameters": {"x": 2}}]')
    assert content is None and calls[0]["function"] == {"name": "f", "arguments": '{"x": 2}'}
    content, calls = parse_tool_calls(ToolMode("named", "f"), '{"x": 3}')
    assert calls[0]["function"] == {"name": "f", "arguments": '{"x": 3}'}
    assert parse_tool_calls(ToolMode("named", "f"), '{"x": ') == ('{"x": ', [])
