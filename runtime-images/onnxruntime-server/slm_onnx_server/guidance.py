"""Structured output and tool calls: OpenAI request fields turned into onnxruntime-genai guidance.

onnxruntime-genai 0.18 (the PyPI wheel is built with llguidance) constrains a generation to a
grammar given as ``(type, data)`` with type ``json_schema``, ``regex`` or ``lark_grammar``
(``og.GeneratorParams.set_guidance`` / ``og.TurnOptions.set_guidance``). The guidance is per
request: in an ``og.Engine`` batch each turn carries its own grammar, so guided and free
requests share a batch.

Choices, following vLLM where it has one:

- ``response_format: json_object`` is the JSON schema ``{"type": "object"}``.
- JSON is generated compact (llguidance ``whitespace_flexible: false``) unless the schema's own
  ``x-guidance`` says otherwise: with free whitespace a small model can emit newlines forever.
- ``tool_choice: required`` generates the JSON array vLLM uses,
  ``[{"name": <tool>, "parameters": {...}}, ...]``; a named ``tool_choice`` generates that
  function's arguments object. Both are returned as OpenAI ``tool_calls``.
- ``tool_choice: auto`` lets the model choose between free text and the Hermes format its chat
  template describes (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, used by
  Qwen2.5/Qwen3, SmolLM3 and Hermes templates): a lark grammar where text may not start with
  ``<`` and calls follow the tools' schemas. Templates without ``<tool_call>`` are refused.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

# llguidance's JSON option: no whitespace between tokens unless the schema asks for it.
_COMPACT = {"whitespace_flexible": False}
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_HERMES_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class Guidance:
    """One grammar for onnxruntime-genai: kind is its set_guidance type, data the grammar text.

    ``param`` names the request field the grammar came from, for a 400 when llguidance
    refuses it (e.g. a JSON schema keyword it does not support).
    """

    kind: str  # "json_schema" | "regex" | "lark_grammar"
    data: str
    param: str


@dataclass(frozen=True)
class ToolMode:
    """How the output of a chat request with tools is read back.

    mode: "required" (a JSON array of {"name", "parameters"}), "named" (the arguments of
    ``name``), "auto" (text or Hermes <tool_call> blocks).
    """

    mode: str
    name: str | None = None


def compact(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with llguidance's compact-JSON option, unless it sets x-guidance itself."""
    if "x-guidance" in schema:
        return schema
    return {**schema, "x-guidance": _COMPACT}


def json_schema(schema: dict[str, Any] | bool, param: str) -> Guidance:
    """Guidance that makes the output one JSON value valid against ``schema``."""
    if schema is True or schema == {}:
        schema = {}
    if not isinstance(schema, dict):
        schema = {"not": {}} if schema is False else schema
    return Guidance("json_schema", json.dumps(compact(schema)), param)


def json_object(param: str) -> Guidance:
    """Guidance for ``response_format: {"type": "json_object"}``: any JSON object."""
    return json_schema({"type": "object"}, param)


def regex(pattern: str, param: str) -> Guidance:
    return Guidance("regex", pattern, param)


def choice(options: list[str], param: str) -> Guidance:
    """Exactly one of the strings (vLLM's structured_outputs.choice)."""
    return Guidance("regex", "|".join("(" + re.escape(o) + ")" for o in options), param)


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    # A function without parameters takes no arguments (OpenAI's reading), not any object:
    # an open object lets a small model add properties until max_tokens.
    params = tool["function"].get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object", "properties": {},
                                                                 "additionalProperties": False}


def required_tools(tools: list[dict[str, Any]], parallel: bool) -> Guidance:
    """A JSON array of one or more calls (one when parallel_tool_calls is false), as vLLM builds it."""
    items = [
        {"type": "object", "properties": {"name": {"const": t["function"]["name"]}, "parameters": _parameters(t)},
         "required": ["name", "parameters"], "additionalProperties": False}
        for t in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": items}}
    if not parallel:
        schema["maxItems"] = 1
    return json_schema(schema, "tools")


def named_tool(tool: dict[str, Any]) -> Guidance:
    """The arguments object of one function."""
    return json_schema(_parameters(tool), "tools")


def auto_tools(tools: list[dict[str, Any]], parallel: bool) -> Guidance:
    """Free text (not starting with '<') or one or more Hermes <tool_call> blocks.

    Either may follow a ``<think>...</think>`` block (Qwen3 reasons first, then answers or calls).
    """
    items = [
        {"type": "object", "properties": {"name": {"const": t["function"]["name"]}, "arguments": _parameters(t)},
         "required": ["name", "arguments"], "additionalProperties": False}
        for t in tools
    ]
    call = json.dumps(compact({"anyOf": items}))
    repeat = ' ("\\n" call)*' if parallel else ""
    grammar = (
        "start: think? (TEXT | calls)?\n"
        'think: "<think>" think_body\n'
        'think_body[lazy]: /(.|\\n)*/ "</think>" /[ \\n]*/\n'
        f"calls: call{repeat}\n"
        f'call: "{HERMES_OPEN}\\n" %json {call} "\\n{HERMES_CLOSE}"\n'
        "TEXT: /[^<](.|\\n)*/\n"
    )
    return Guidance("lark_grammar", grammar, "tools")


def template_supports_hermes(template: str) -> bool:
    """True when the chat template describes Hermes-style <tool_call> blocks."""
    return HERMES_OPEN in template


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id(), "type": "function", "function": {"name": name, "arguments": text}}


def parse_tool_calls(mode: ToolMode, text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) read from the generated text.

    Text that does not hold the expected form (a generation cut off by max_tokens or a stop
    string) is returned as content with no calls, so nothing is silently lost.
    """
    try:
        if mode.mode == "named":
            assert mode.name is not None
            json.loads(text)
            return None, [_call(mode.name, text)]
        if mode.mode == "required":
            calls = json.loads(text)
            return None, [_call(c["name"], c["parameters"]) for c in calls]
    except (ValueError, KeyError, TypeError):
        return text, []
    think = ""
    if text.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in text:
        end = text.index(THINK_CLOSE) + len(THINK_CLOSE)
        think, text = text[:end], text[end:]
    if not text.lstrip().startswith(HERMES_OPEN):
        return think + text, []
    if _HERMES_RE.sub("", text).strip():  # a block cut off, or text between blocks
        return think + text, []
    calls = []
    for block in _HERMES_RE.findall(text):
        try:
            obj = json.loads(block)
            calls.append(_call(obj["name"], obj.get("arguments", {})))
        except (ValueError, KeyError, TypeError):
            return think + text, []
    return (think or None, calls) if calls else (think + text, [])
