"""Every request field of the pinned vLLM is honoured, ignored with a reason, or refused by name.

vllm_request_fields.json is vLLM's own field list (vllm_request_fields.py writes it; the vLLM-venv
test test_vllm_request_fields.py proves it current). No model is needed: these are the server's
request parser and its field table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")

from slm_onnx_server.errors import APIError
from slm_onnx_server.protocol import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    HONOURED,
    IGNORED,
    REFUSED,
    parse_chat,
    parse_completion,
)

VLLM_FIELDS = json.loads((Path(__file__).parent / "vllm_request_fields.json").read_text())
BASE = {
    "chat": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "completion": {"model": "m", "prompt": "hi"},
}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

# A value that asks for something for each refused field (neutral values are accepted).
REFUSED_SAMPLES: dict[str, Any] = {
    "n": 2, "frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": {"1": 5}, "logprobs": True,
    "top_logprobs": 2, "use_beam_search": True, "length_penalty": 0.5, "min_p": 0.1, "watermarking": True,
    "skip_special_tokens": False, "prompt_logprobs": 1, "logprob_token_ids": [1], "allowed_token_ids": [1, 2],
    "bad_words": ["x"], "priority": 1, "return_tokens_as_token_ids": True, "return_token_ids": True,
    "return_weight_versions": True, "routed_experts_prompt_start": 3, "return_token_offsets": True,
    "return_mm_kwargs": True, "kv_transfer_params": {"do_remote_decode": True}, "ec_transfer_params": {"a": 1},
    "vllm_xargs": {"k": 1}, "repetition_detection": {"max_pattern_size": 3}, "thinking_token_budget": 10,
    "echo": True, "continue_final_message": True, "add_special_tokens": "flip", "chat_template": "{{ x }}",
    "media_io_kwargs": {"image": {}}, "mm_processor_kwargs": {"a": 1}, "return_prompt_text": True,
    "suffix": "end", "prompt_embeds": "AAAA",
}
# (value, companions): the field set to value with the companions must parse differently from the
# companions alone: an honoured field changes what the server does.
HONOURED_SAMPLES: dict[str, tuple[Any, dict[str, Any]]] = {
    "model": ("other", {}),
    "messages": ([{"role": "user", "content": "bye"}], {}),
    "prompt": ("bye", {}),
    "max_tokens": (5, {}),
    "max_completion_tokens": (5, {}),
    "stop": ("x", {}),
    "stream": (True, {}),
    "stream_options": ({"include_usage": True}, {}),
    "temperature": (0.0, {}),
    "top_p": (0.5, {}),
    "top_k": (5, {}),
    "seed": (7, {}),
    "repetition_penalty": (1.2, {}),
    "ignore_eos": (True, {"max_tokens": 8}),
    "min_tokens": (3, {"max_tokens": 8}),
    "stop_token_ids": ([5], {}),
    "include_stop_str_in_output": (True, {}),
    "response_format": ({"type": "json_object"}, {}),
    "structured_outputs": ({"choice": ["a", "b"]}, {}),
    "request_id": ("abc", {}),
    "truncate_prompt_tokens": (3, {}),
    "truncation_side": ("right", {"truncate_prompt_tokens": 3}),
    "tools": (TOOLS, {}),
    "tool_choice": ("required", {"tools": TOOLS}),
    "parallel_tool_calls": (False, {"tools": TOOLS, "tool_choice": "required"}),
    "add_generation_prompt": (False, {}),
    "chat_template_kwargs": ({"enable_thinking": False}, {}),
    "documents": ([{"title": "t", "text": "x"}], {}),
    "reasoning_effort": ("low", {}),
}
IGNORED_SAMPLES: dict[str, Any] = {
    "user": "u-1", "session_id": "s", "cache_salt": "salt", "stream_interval": 4, "mm_payload": "none",
    "spaces_between_special_tokens": False, "include_reasoning": False,
}
PARSE = {"chat": parse_chat, "completion": parse_completion}
RULES = {"chat": CHAT_FIELDS, "completion": COMPLETION_FIELDS}
CASES = [(kind, name) for kind in ("chat", "completion") for name in VLLM_FIELDS[kind]]


def test_field_table_is_vllms_list() -> None:
    """Nothing unclassified, and nothing classified that vLLM does not have."""
    for kind in ("chat", "completion"):
        assert sorted(RULES[kind]) == sorted(VLLM_FIELDS[kind]), kind


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_every_vllm_field_is_classified_and_behaves_so(kind: str, name: str) -> None:
    rule = RULES[kind].get(name)
    assert rule is not None, f"{kind} field {name!r} of vLLM {VLLM_FIELDS['vllm_version']} is not classified"
    parse, base = PARSE[kind], BASE[kind]
    default = VLLM_FIELDS[kind][name]
    if rule.status == REFUSED:
        assert rule.reason
        with pytest.raises(APIError) as info:
            parse({**base, name: REFUSED_SAMPLES[name]})
        err = info.value.body()["error"]
        assert info.value.status == 400 and err["param"] == name and f"'{name}'" in err["message"]
        assert err["type"] == "invalid_request_error" and set(err) == {"message", "type", "param", "code"}
        if default not in ("<required>", "<factory>"):
            parse({**base, name: default})  # vLLM's default asks for nothing: accepted
    elif rule.status == IGNORED:
        assert rule.reason, f"{name} is ignored without a reason"
        assert parse({**base, name: IGNORED_SAMPLES[name]}) == parse(base)
    else:
        assert rule.status == HONOURED
        value, companions = HONOURED_SAMPLES[name]
        with_field = parse({**base, **companions, name: value})
        assert with_field != parse({**base, **companions}), f"{name} changed nothing"


def test_deprecated_openai_function_fields_are_refused() -> None:
    for name in ("functions", "function_call"):
        with pytest.raises(APIError) as info:
            parse_chat({**BASE["chat"], name: [{"name": "f"}]})
        assert info.value.param == name


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "structural_tag"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
         "response_format.json_schema.schema"),
        ({"structured_outputs": {"grammar": "start: x"}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "structured_outputs"),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools.[0].function.name"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
         "response_format"),
        ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
        ({"min_tokens": 9, "max_tokens": 3}, "min_tokens"),
        ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options.continuous_usage_stats"),
        ({"stream": True, "stream_options": {"include_usage": True, "other": 1}}, "stream_options"),
    ],
)
def test_structured_output_and_tools_validation_names_the_field(extra: dict, param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_chat({**BASE["chat"], **extra})
    assert info.value.status == 400 and info.value.param == param


def test_grammars_for_each_mode() -> None:
    req = parse_chat({**BASE["chat"], "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}})
    g = req.sampling.guidance
    assert g.kind == "json_schema" and json.loads(g.data)["x-guidance"] == {"whitespace_flexible": False}
    named = parse_chat({**BASE["chat"], "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}})
    assert named.tool_mode.mode == "named" and named.tool_mode.name == "f"
    required = parse_chat({**BASE["chat"], "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False})
    schema = json.loads(required.sampling.guidance.data)
    assert schema["minItems"] == 1 and schema["maxItems"] == 1
    auto = parse_chat({**BASE["chat"], "tools": TOOLS})
    assert auto.tool_mode.mode == "auto" and auto.sampling.guidance.kind == "lark_grammar"
    none = parse_chat({**BASE["chat"], "tools": TOOLS, "tool_choice": "none"})
    assert none.tools == TOOLS and none.tool_mode is None and none.sampling.guidance is None
