"""Validation of OpenAI request bodies and the shapes of OpenAI responses and stream chunks.

Every request field of the pinned vLLM's ChatCompletionRequest and CompletionRequest is
classified in ``CHAT_FIELDS`` / ``COMPLETION_FIELDS``: honoured, ignored with a stated reason
(it changes nothing a client can observe here), or refused with a 400 whose ``param`` names the
field whenever it is set to anything but its neutral value. tests/onnx_server holds the list
to vLLM's own (vllm_request_fields.json).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from . import guidance as G
from .errors import invalid

log = logging.getLogger(__name__)

MAX_STOP_STRINGS = 4
HONOURED, IGNORED, REFUSED = "honoured", "ignored", "refused"


@dataclass(frozen=True)
class FieldRule:
    """How the server treats one request field.

    status: HONOURED, IGNORED (reason says why that is harmless) or REFUSED (reason says why,
    and the 400 repeats it). ``neutral`` lists the values that mean "not used" and are accepted
    even for a refused field (vLLM's default, null, an empty list).
    """

    status: str
    reason: str = ""
    neutral: tuple[Any, ...] = (None,)

    def is_neutral(self, value: Any) -> bool:
        # Compared with the types kept apart: True == 1 in Python, but {"n": true} is not n=1.
        return any(type(value) is type(n) and value == n for n in self.neutral) or value is None


def _refused(reason: str, *neutral: Any) -> FieldRule:
    return FieldRule(REFUSED, reason, (None, *neutral))


_NO_LOGPROBS = "log probabilities are not returned by onnxruntime-genai's generation API"
_NO_MM = "this server serves text-only models"
_VLLM_ONLY = "a vLLM engine feature this server does not have"

# Fields of both endpoints (vLLM 0.33.0; see tests/onnx_server/vllm_request_fields.json).
_COMMON_FIELDS: dict[str, FieldRule] = {
    "model": FieldRule(HONOURED),
    "max_tokens": FieldRule(HONOURED),
    "n": _refused("only n=1 is supported", 1),
    "stop": FieldRule(HONOURED),
    "stream": FieldRule(HONOURED),
    "stream_options": FieldRule(HONOURED),
    "temperature": FieldRule(HONOURED),
    "top_p": FieldRule(HONOURED),
    "top_k": FieldRule(HONOURED),
    "seed": FieldRule(HONOURED, "with --scheduler engine on a model without paged attention (CPU) only "
                                "at temperature 0, where it changes nothing; otherwise refused"),
    "repetition_penalty": FieldRule(HONOURED),
    "ignore_eos": FieldRule(HONOURED),
    "min_tokens": FieldRule(HONOURED),
    "stop_token_ids": FieldRule(HONOURED),
    "include_stop_str_in_output": FieldRule(HONOURED),
    "response_format": FieldRule(HONOURED),
    "structured_outputs": FieldRule(HONOURED, "json, json_object, regex and choice; the rest is refused"),
    "request_id": FieldRule(HONOURED, "becomes the response id, after the chatcmpl-/cmpl- prefix"),
    "truncate_prompt_tokens": FieldRule(HONOURED),
    "truncation_side": FieldRule(HONOURED),
    "user": FieldRule(IGNORED, "an end-user id for the provider's abuse monitoring; nothing to monitor here"),
    "session_id": FieldRule(IGNORED, "routing affinity between vLLM instances; one process serves here"),
    "cache_salt": FieldRule(IGNORED, "salts vLLM's shared prefix cache; requests share no cache here"),
    "stream_interval": FieldRule(IGNORED, "tokens per streamed chunk in vLLM; here chunks leave as tokens "
                                          "arrive and pieces that pile up are merged"),
    "mm_payload": FieldRule(IGNORED, f"how multimodal inputs are carried; {_NO_MM}"),
    "spaces_between_special_tokens": FieldRule(
        IGNORED, "only matters when special tokens are decoded, and skip_special_tokens=false is refused"),
    "frequency_penalty": _refused("onnxruntime-genai has no frequency penalty; use repetition_penalty", 0, 0.0),
    "presence_penalty": _refused("onnxruntime-genai has no presence penalty; use repetition_penalty", 0, 0.0),
    "logit_bias": _refused("onnxruntime-genai cannot bias single tokens", {}),
    "use_beam_search": _refused("the server samples or decodes greedily, one sequence per request", False),
    "length_penalty": _refused("it only applies to beam search, which is not supported", 1, 1.0),
    "min_p": _refused("onnxruntime-genai has no min-p sampling", 0, 0.0),
    "watermarking": _refused(_VLLM_ONLY, False),
    "skip_special_tokens": _refused("special tokens are always left out of the text", True),
    "prompt_logprobs": _refused(_NO_LOGPROBS),
    "logprob_token_ids": _refused(_NO_LOGPROBS, []),
    "allowed_token_ids": _refused("onnxruntime-genai cannot mask single tokens; use structured_outputs.regex"),
    "bad_words": _refused("onnxruntime-genai cannot ban words", []),
    "priority": _refused("requests are served strictly in arrival order", 0),
    "return_tokens_as_token_ids": _refused(_NO_LOGPROBS, False),
    "return_token_ids": _refused("token ids are not returned", False),
    "return_weight_versions": _refused(_VLLM_ONLY, False),
    "routed_experts_prompt_start": _refused(_VLLM_ONLY, 0),
    "return_token_offsets": _refused("token offsets are not returned", False),
    "return_mm_kwargs": _refused(_NO_MM, False),
    "kv_transfer_params": _refused("disaggregated prefill is a vLLM engine feature", {}),
    "ec_transfer_params": _refused("disaggregated encoding is a vLLM engine feature", {}),
    "vllm_xargs": _refused("extra arguments for vLLM plugins", {}),
    "repetition_detection": _refused(_VLLM_ONLY),
    "thinking_token_budget": _refused("no reasoning parser: thinking is not told apart from the answer"),
}

CHAT_FIELDS: dict[str, FieldRule] = {
    **_COMMON_FIELDS,
    "messages": FieldRule(HONOURED),
    "max_completion_tokens": FieldRule(HONOURED),
    "tools": FieldRule(HONOURED),
    "tool_choice": FieldRule(HONOURED, "auto only for chat templates with Hermes <tool_call> blocks"),
    "parallel_tool_calls": FieldRule(HONOURED),
    "add_generation_prompt": FieldRule(HONOURED),
    "chat_template_kwargs": FieldRule(HONOURED, "extra variables for the chat template"),
    "documents": FieldRule(HONOURED, "passed to the chat template as `documents`"),
    "reasoning_effort": FieldRule(HONOURED, "passed to the chat template as `reasoning_effort`, as vLLM does"),
    "include_reasoning": FieldRule(IGNORED, "no reasoning parser: reasoning text stays in content, as in vLLM "
                                            "without --reasoning-parser"),
    "logprobs": _refused(_NO_LOGPROBS, False),
    "top_logprobs": _refused(_NO_LOGPROBS, 0),
    "echo": _refused("echoing the last message is not supported", False),
    "continue_final_message": _refused("continuing the final message is not supported", False),
    "add_special_tokens": _refused("the chat template writes the special tokens", False),
    "chat_template": _refused("a per-request chat template is refused, as vLLM does without "
                              "--trust-request-chat-template"),
    "media_io_kwargs": _refused(_NO_MM, {}),
    "mm_processor_kwargs": _refused(_NO_MM, {}),
    "return_prompt_text": _refused("the prompt text is not returned", False),
}

COMPLETION_FIELDS: dict[str, FieldRule] = {
    **_COMMON_FIELDS,
    "prompt": FieldRule(HONOURED),
    "logprobs": _refused(_NO_LOGPROBS),
    "echo": _refused("echoing the prompt is not supported", False),
    "suffix": _refused("fill-in-the-middle is not supported", ""),
    "prompt_embeds": _refused("prompts are text or token ids"),
    "add_special_tokens": _refused("the tokenizer's own setting is used", True),
}

# OpenAI fields vLLM does not know (deprecated function calling): refused, not dropped.
_OPENAI_ONLY = {"functions": "use tools", "function_call": "use tool_choice"}


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # vLLM extension: generate exactly max_tokens (benchmarks, load tests).
    ignore_eos: bool = False
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stop_token_ids: frozenset[int] = frozenset()
    include_stop_str_in_output: bool = False
    guidance: G.Guidance | None = None

    @property
    def sampled(self) -> bool:
        """False for greedy decoding: temperature 0, or top_k 1 (onnxruntime-genai refuses a temperature then)."""
        return self.temperature > 0 and self.top_k != 1


@dataclass(frozen=True)
class ParsedRequest:
    kind: str  # "chat" or "completion"
    model: str
    stream: bool
    include_usage: bool
    sampling: SamplingParams
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    request_id: str | None = None
    truncate: int | None = None  # keep this many prompt tokens (-1: the context length)
    truncation_side: str = "left"
    tools: list[dict[str, Any]] | None = None  # for the chat template
    tool_mode: G.ToolMode | None = None  # how the output is read back into tool_calls
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    add_generation_prompt: bool = True


def _number(body: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"'{name}' must be a number.", param=name)
    if value < lo or value > hi or (lo_open and value == lo):
        bound = f"greater than {lo}" if lo_open else f"at least {lo}"
        raise invalid(f"'{name}' must be {bound} and at most {hi}; got {value}.", param=name)
    return float(value)


def _int(body: dict, name: str, lo: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer.", param=name)
    if value < lo:
        raise invalid(f"'{name}' must be at least {lo}; got {value}.", param=name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("'stop' must be a string or a list of strings.", param="stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise invalid(f"'stop' takes at most {MAX_STOP_STRINGS} strings.", param="stop")
    if any(s == "" for s in stop):
        raise invalid("'stop' strings must not be empty.", param="stop")
    return tuple(stop)


def _check_fields(body: dict, rules: dict[str, FieldRule]) -> None:
    """400 for a refused field set to a non-neutral value; a log line names unknown fields."""
    for name, fix in _OPENAI_ONLY.items():
        if body.get(name):
            raise invalid(f"'{name}' is not supported by this server; {fix}.", param=name)
    for name, value in body.items():
        rule = rules.get(name)
        if rule is not None and rule.status == REFUSED and not rule.is_neutral(value):
            raise invalid(f"'{name}' is not supported by this server: {rule.reason}.", param=name)
    unknown = sorted(set(body) - set(rules) - set(_OPENAI_ONLY))
    if unknown:
        # vLLM accepts unknown fields with a warning too; they are not part of its API.
        log.warning("request fields ignored: not fields of the OpenAI API served here", extra={"fields": unknown})


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean.", param=name)
    return value


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(f"'{param}' must be an object.", param=param)
    return value


def _schema(value: Any, param: str) -> dict | bool:
    if isinstance(value, str):  # vLLM's structured_outputs.json also takes the schema as a string
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid(f"'{param}' is not valid JSON.", param=param) from None
    if not isinstance(value, dict | bool):
        raise invalid(f"'{param}' must be a JSON schema (an object).", param=param)
    return value


def _response_format(body: dict) -> G.Guidance | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    fmt = _object(fmt, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return G.json_object("response_format")
    if kind == "json_schema":
        spec = _object(fmt.get("json_schema"), "response_format.json_schema")
        if "schema" not in spec:
            raise invalid("'response_format.json_schema.schema' is required: the JSON schema the output must match.",
                          param="response_format.json_schema.schema")
        return G.json_schema(_schema(spec["schema"], "response_format.json_schema.schema"),
                             "response_format.json_schema.schema")
    raise invalid(f"'response_format.type' must be 'text', 'json_object' or 'json_schema'; got {kind!r}.",
                  param="response_format.type")


_STRUCTURED_KINDS = ("json", "json_object", "regex", "choice")


def _structured_outputs(body: dict) -> G.Guidance | None:
    spec = body.get("structured_outputs")
    if spec is None:
        return None
    spec = _object(spec, "structured_outputs")
    for name, value in spec.items():
        if name not in _STRUCTURED_KINDS and value not in (None, False, "", [], {}):
            raise invalid(f"'structured_outputs.{name}' is not supported by this server; use one of "
                          f"{', '.join(_STRUCTURED_KINDS)}.", param=f"structured_outputs.{name}")
    given = [k for k in _STRUCTURED_KINDS if spec.get(k) not in (None, False)]
    if len(given) > 1:
        raise invalid(f"'structured_outputs' takes one of {', '.join(_STRUCTURED_KINDS)}; got {given}.",
                      param="structured_outputs")
    if not given:
        return None
    kind, value, param = given[0], spec[given[0]], f"structured_outputs.{given[0]}"
    if kind == "json":
        return G.json_schema(_schema(value, param), param)
    if kind == "json_object":
        return G.json_object(param)
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise invalid(f"'{param}' must be a non-empty string.", param=param)
        return G.regex(value, param)
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise invalid(f"'{param}' must be a non-empty list of non-empty strings.", param=param)
    return G.choice(value, param)


def _common(body: Any, kind: str) -> tuple[str, bool, bool, SamplingParams, dict[str, Any]]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    _check_fields(body, CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a string.", param="model")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise invalid("Only best_of=1 is supported by this server.", param="best_of")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("'stream_options' must be an object.", param="stream_options")
    include_usage = _bool(options or {}, "include_usage", False)
    if (options or {}).get("continuous_usage_stats"):
        raise invalid("'stream_options.continuous_usage_stats' is not supported by this server: usage comes in the "
                      "last chunk (include_usage).", param="stream_options.continuous_usage_stats")
    unknown_options = sorted(set(options or {}) - {"include_usage", "continuous_usage_stats"})
    if unknown_options:
        raise invalid(f"'stream_options' takes include_usage; got {unknown_options}.", param="stream_options")
    # max_completion_tokens is the newer chat name; both mean the same here.
    max_tokens = _int(body, "max_completion_tokens", 1) if kind == "chat" else None
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    if kind == "completion" and max_tokens is None:
        max_tokens = 16  # OpenAI's documented default for the legacy completions endpoint
    ignore_eos = _bool(body, "ignore_eos", False)
    min_tokens = _int(body, "min_tokens", 0) or 0
    if max_tokens is not None and min_tokens > max_tokens:
        raise invalid(f"'min_tokens' ({min_tokens}) must not exceed 'max_tokens' ({max_tokens}).",
                      param="min_tokens")
    top_k = _int(body, "top_k", -1)
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in stop_ids):
        raise invalid("'stop_token_ids' must be a list of token ids.", param="stop_token_ids")
    fmt, structured = _response_format(body), _structured_outputs(body)
    if fmt is not None and structured is not None:
        raise invalid("Give either 'response_format' or 'structured_outputs', not both.", param="structured_outputs")
    guided = fmt or structured
    if guided is not None and (ignore_eos or min_tokens):
        name = "ignore_eos" if ignore_eos else "min_tokens"
        raise invalid(f"'{name}' cannot be combined with structured output: the grammar decides where the "
                      "output ends.", param=name)
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=max(top_k or 0, 0),  # vLLM: -1 and 0 both mean off
        stop=_stop(body),
        seed=_int(body, "seed", -(2**63)),
        ignore_eos=ignore_eos,
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 2.0, lo_open=True),
        min_tokens=min_tokens,
        stop_token_ids=frozenset(stop_ids),
        include_stop_str_in_output=_bool(body, "include_stop_str_in_output", False),
        guidance=guided,
    )
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id.isprintable() or not request_id):
        raise invalid("'request_id' must be a non-empty printable string.", param="request_id")
    truncate = body.get("truncate_prompt_tokens")
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int)
                                 or (truncate < 1 and truncate != -1)):
        raise invalid("'truncate_prompt_tokens' must be -1 (the context length) or at least 1.",
                      param="truncate_prompt_tokens")
    side = body.get("truncation_side") or "left"
    if side not in ("left", "right"):
        raise invalid("'truncation_side' must be 'left' or 'right'.", param="truncation_side")
    extra = {"request_id": request_id, "truncate": truncate, "truncation_side": side}
    return model, stream, include_usage, sampling, extra


def _message_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text can be served by a text model
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(
                    "Only text content parts are supported.", param=f"messages.[{index}].content"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise invalid("Message content must be a string or a list of text parts.", param=f"messages.[{index}].content")


def _history_tool_calls(calls: Any, index: int) -> list[dict[str, Any]]:
    """An assistant message's earlier tool_calls, arguments parsed as chat templates expect them."""
    param = f"messages.[{index}].tool_calls"
    if not isinstance(calls, list):
        raise invalid(f"'{param}' must be a list.", param=param)
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid(f"Each of '{param}' needs function.name.", param=param)
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args else {}
            except ValueError:
                raise invalid(f"'{param}' function.arguments must be a JSON string.", param=param) from None
        out.append({"id": call.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def _tools(body: dict) -> tuple[list[dict[str, Any]] | None, G.ToolMode | None, G.Guidance | None]:
    """(tools for the template, how to read the output, the grammar) for a chat request."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools:
        if choice not in (None, "none"):
            raise invalid("'tool_choice' needs 'tools'.", param="tool_choice")
        return None, None, None
    if not isinstance(tools, list):
        raise invalid("'tools' must be a list.", param="tools")
    names = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise invalid("Each tool must be {\"type\": \"function\", \"function\": {...}}.", param=f"tools.[{i}]")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid("A function needs a name.", param=f"tools.[{i}].function.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid("'parameters' must be a JSON schema object.", param=f"tools.[{i}].function.parameters")
        names.append(fn["name"])
    parallel = _bool(body, "parallel_tool_calls", True)
    if choice is None:
        choice = "auto"  # OpenAI's default when tools are given
    if choice == "none":
        return tools, None, None
    if choice == "required":
        return tools, G.ToolMode("required"), G.required_tools(tools, parallel)
    if choice == "auto":
        return tools, G.ToolMode("auto"), G.auto_tools(tools, parallel)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type", "function") != "function" or not isinstance(name, str):
        raise invalid("'tool_choice' must be 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}.", param="tool_choice")
    if name not in names:
        raise invalid(f"'tool_choice' names the function {name!r}, which is not in 'tools'.", param="tool_choice")
    tool = tools[names.index(name)]
    return tools, G.ToolMode("named", name), G.named_tool(tool)


def parse_chat(body: Any) -> ParsedRequest:
    model, stream, include_usage, sampling, extra = _common(body, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list.", param="messages")
    parsed: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid("Each message must be an object.", param=f"messages.[{i}]")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise invalid(f"Invalid role {role!r}.", param=f"messages.[{i}].role")
        # "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
        out: dict[str, Any] = {"role": "system" if role == "developer" else role,
                               "content": _message_text(message.get("content", ""), i)}
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = _history_tool_calls(message["tool_calls"], i)
        # Templates may read a participant's name and a tool result's call id.
        for key in ("tool_call_id", "name") if role == "tool" else ("name",):
            if isinstance(message.get(key), str):
                out[key] = message[key]
        parsed.append(out)
    tools, mode, tool_grammar = _tools(body)
    if tool_grammar is not None:
        if sampling.guidance is not None:
            raise invalid("'response_format' cannot be combined with tools unless tool_choice is 'none'.",
                          param="response_format")
        if sampling.ignore_eos or sampling.min_tokens:
            name = "ignore_eos" if sampling.ignore_eos else "min_tokens"
            raise invalid(f"'{name}' cannot be combined with tool calls.", param=name)
        sampling = _with_guidance(sampling, tool_grammar)
    kwargs = body.get("chat_template_kwargs") or {}
    kwargs = dict(_object(kwargs, "chat_template_kwargs"))
    for name in ("documents", "reasoning_effort"):
        if body.get(name) is not None:
            kwargs[name] = body[name]
    return ParsedRequest("chat", model, stream, include_usage, sampling, messages=parsed, tools=tools,
                         tool_mode=mode, template_kwargs=kwargs,
                         add_generation_prompt=_bool(body, "add_generation_prompt", True), **extra)


def _with_guidance(sampling: SamplingParams, guided: G.Guidance) -> SamplingParams:
    return replace(sampling, guidance=guided)


def parse_completion(body: Any) -> ParsedRequest:
    model, stream, include_usage, sampling, extra = _common(body, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return ParsedRequest("completion", model, stream, include_usage, sampling, prompt=prompt, **extra)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return ParsedRequest("completion", model, stream, include_usage, sampling, prompt_ids=list(prompt), **extra)
    raise invalid(
        "'prompt' must be a string or a list of token ids (one prompt per request).", param="prompt"
    )


# ---- responses ---------------------------------------------------------------------------


def new_id(kind: str, request_id: str | None = None) -> str:
    """The response id: vLLM's prefix and the client's request_id, or a random one."""
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + (request_id or uuid.uuid4().hex)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def full_response(
    req: ParsedRequest, rid: str, created: int, text: str | None, finish: str, prompt_tokens: int,
    completion_tokens: int, tool_calls: list[dict[str, Any]] | None = None,
) -> dict:
    """A whole chat.completion / text_completion; with tool_calls, content may be null."""
    if req.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": req.model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    req: ParsedRequest, rid: str, created: int, *, text: str | None = None, role: bool = False,
    finish: str | None = None, usage_block: dict | None = None, usage_only: bool = False,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict:
    """One streamed chunk, shaped exactly like OpenAI's (chat.completion.chunk / text_completion).

    tool_calls are sent whole, each with its ``index`` (OpenAI clients join deltas by index).
    """
    if req.kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if tool_calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    out: dict[str, Any] = {
        "id": rid,
        "object": obj,
        "created": created,
        "model": req.model,
        "system_fingerprint": None,
        "choices": [] if usage_only else [choice],
    }
    if req.include_usage:
        out["usage"] = usage_block  # null on every chunk but the last, as OpenAI does
    return out


def now() -> int:
    return int(time.time())
