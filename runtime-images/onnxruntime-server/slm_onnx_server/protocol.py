"""Validation of OpenAI request bodies and the shapes of OpenAI responses and stream chunks."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import invalid

MAX_STOP_STRINGS = 4
# Parameters OpenAI defines that this server cannot honour: refusing is clearer than ignoring.
_UNSUPPORTED_TRUTHY = ("logprobs", "top_logprobs", "tools", "functions", "logit_bias", "echo", "suffix")


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # vLLM extension: generate exactly max_tokens (benchmarks, load tests).
    ignore_eos: bool = False


@dataclass(frozen=True)
class ParsedRequest:
    kind: str  # "chat" or "completion"
    model: str
    stream: bool
    include_usage: bool
    sampling: SamplingParams
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: str | None = None
    prompt_ids: list[int] | None = None


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


def _common(body: Any, kind: str) -> tuple[str, bool, bool, SamplingParams]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a string.", param="model")
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise invalid("Only n=1 is supported by this server.", param="n")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise invalid("Only best_of=1 is supported by this server.", param="best_of")
    for name in _UNSUPPORTED_TRUTHY:
        if body.get(name):
            raise invalid(f"'{name}' is not supported by this server.", param=name)
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise invalid(f"'{name}' is not supported by this server; use 0.", param=name)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("'stream_options' must be an object.", param="stream_options")
    include_usage = bool((options or {}).get("include_usage", False))
    # max_completion_tokens is the newer chat name; both mean the same here.
    max_tokens = _int(body, "max_completion_tokens", 1) if kind == "chat" else None
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    if kind == "completion" and max_tokens is None:
        max_tokens = 16  # OpenAI's documented default for the legacy completions endpoint
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise invalid("'ignore_eos' must be a boolean.", param="ignore_eos")
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        stop=_stop(body),
        seed=_int(body, "seed", -(2**63)),
        ignore_eos=ignore_eos,
    )
    return model, stream, include_usage, sampling


def _message_text(content: Any, index: int) -> str:
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


def parse_chat(body: Any) -> ParsedRequest:
    model, stream, include_usage, sampling = _common(body, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list.", param="messages")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid("Each message must be an object.", param=f"messages.[{i}]")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise invalid(f"Invalid role {role!r}.", param=f"messages.[{i}].role")
        # "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
        parsed.append({"role": "system" if role == "developer" else role,
                       "content": _message_text(message.get("content", ""), i)})
    return ParsedRequest("chat", model, stream, include_usage, sampling, messages=parsed)


def parse_completion(body: Any) -> ParsedRequest:
    model, stream, include_usage, sampling = _common(body, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return ParsedRequest("completion", model, stream, include_usage, sampling, prompt=prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return ParsedRequest("completion", model, stream, include_usage, sampling, prompt_ids=list(prompt))
    raise invalid(
        "'prompt' must be a string or a list of token ids (one prompt per request).", param="prompt"
    )


# ---- responses ---------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def full_response(
    req: ParsedRequest, rid: str, created: int, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict:
    if req.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
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
) -> dict:
    """One streamed chunk, shaped exactly like OpenAI's (chat.completion.chunk / text_completion)."""
    if req.kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
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
