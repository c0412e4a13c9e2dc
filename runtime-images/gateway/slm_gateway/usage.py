"""Token accounting: caps max_tokens in requests and reads token usage from responses as they pass.

Request side (``prepare_body``): on generation routes, a consumer's ``maxTokens`` becomes the
request's max_tokens when absent or larger (OpenAI ``max_tokens``/``max_completion_tokens``,
Responses ``max_output_tokens``, Ollama ``options.num_predict``); a streamed OpenAI chat or
completion request gets ``stream_options.include_usage`` so the engine reports usage in a last
chunk, which the gateway removes again when the client did not ask for it.

Response side (``UsageMeter``): SSE streams (``data: {...}`` events), NDJSON streams (Ollama) and
plain JSON bodies. Usage is read from ``usage.{prompt,completion}_tokens`` (OpenAI),
``usage.{input,output}_tokens`` (Responses, Anthropic Messages; also nested under ``response``)
and ``prompt_eval_count``/``eval_count`` (Ollama). When a stream carries no usage, each content
chunk counts as one completion token (vLLM, Ollama and llama.cpp send one token per chunk).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

MAX_SCAN_BYTES = 4 * 1024 * 1024  # a non-streamed body larger than this is passed on without accounting


def prepare_body(route: str, body: bytes, max_tokens: int | None) -> tuple[bytes, bool]:
    """(new body, usage_injected) for a request to ``route``; the body is returned as is when untouched."""
    if not body:
        return body, False
    try:
        req = json.loads(body)
    except ValueError:
        return body, False  # the engine answers the client's malformed JSON itself
    if not isinstance(req, dict):
        return body, False
    changed = injected = False
    if max_tokens is not None:
        if route in ("/api/chat", "/api/generate"):
            options = req.get("options") if isinstance(req.get("options"), dict) else {}
            n = options.get("num_predict")
            if not isinstance(n, int) or n < 0 or n > max_tokens:  # -1/-2: unlimited in Ollama
                options["num_predict"] = max_tokens
                req["options"] = options
                changed = True
        else:
            fields = ("max_output_tokens",) if route == "/v1/responses" else ("max_tokens", "max_completion_tokens")
            present = [f for f in fields if req.get(f) is not None]
            for f in present:
                if not isinstance(req[f], int) or req[f] > max_tokens:
                    req[f] = max_tokens
                    changed = True
            if not present:
                req[fields[0]] = max_tokens
                changed = True
    if route in ("/v1/chat/completions", "/v1/completions") and req.get("stream") is True:
        opts = req.get("stream_options")
        if opts is None or (isinstance(opts, dict) and not opts.get("include_usage")):
            req["stream_options"] = {**(opts or {}), "include_usage": True}
            changed = injected = True
    return (json.dumps(req, separators=(",", ":")).encode() if changed else body), injected


def _usage_of(obj: Any) -> tuple[int, int] | None:
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict) and isinstance(obj.get("response"), dict):
        u = obj["response"].get("usage")
    if isinstance(u, dict):
        p = u.get("prompt_tokens", u.get("input_tokens")) or 0
        c = u.get("completion_tokens", u.get("output_tokens")) or 0
        if isinstance(p, int) and isinstance(c, int):
            return p, c
    if "eval_count" in obj or "prompt_eval_count" in obj:
        p, c = obj.get("prompt_eval_count") or 0, obj.get("eval_count") or 0
        if isinstance(p, int) and isinstance(c, int):
            return p, c
    return None


class UsageMeter:
    """Feeds on response bytes; ``feed`` returns the bytes to send on (usage chunk removed if injected).

    ``kind`` is "sse", "ndjson" or "json" (from the response's Content-Type). Only complete SSE
    events are sent on when an injected usage chunk has to be removed; engines flush whole events,
    so nothing waits in practice.
    """

    def __init__(self, kind: str, strip_usage_chunk: bool) -> None:
        self.kind = kind
        self.strip = strip_usage_chunk and kind == "sse"
        self.prompt = 0
        self.completion = 0
        self.reported = False
        self.chunks = 0
        self._pending = b""
        self._size = 0

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion): reported usage, or counted content chunks when none was reported."""
        return (self.prompt, self.completion) if self.reported else (0, self.chunks)

    def _record(self, usage: tuple[int, int] | None) -> None:
        if usage is not None:
            self.prompt, self.completion, self.reported = usage[0], usage[1], True

    def _event(self, event: bytes) -> bool:
        """Account one SSE event; False when it is the injected usage-only chunk (dropped)."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return True
            if b'"usage"' not in data and b"eval_count" not in data:
                self.chunks += 1
                return True
            try:
                obj = json.loads(data)
            except ValueError:
                return True
            self._record(_usage_of(obj))
            if isinstance(obj, dict) and obj.get("choices"):
                self.chunks += 1
            elif self.strip and isinstance(obj, dict) and obj.get("choices") == [] and obj.get("usage"):
                return False
        return True

    def feed(self, chunk: bytes) -> bytes:
        if self.kind == "json":
            if self._size <= MAX_SCAN_BYTES:
                self._pending += chunk
            self._size += len(chunk)
            return chunk
        data = self._pending + chunk
        sep = b"\n\n" if self.kind == "sse" else b"\n"
        cut = data.rfind(sep)
        if cut < 0:
            if len(data) > MAX_SCAN_BYTES:  # no boundary in sight: pass it on, stop accounting it
                self._pending = b""
                return data if self.strip else chunk
            self._pending = data
            return b"" if self.strip else chunk
        complete, self._pending = data[:cut + len(sep)], data[cut + len(sep):]
        if self.kind == "ndjson":
            for line in complete.split(b"\n"):
                if b"eval_count" in line or b'"usage"' in line:
                    with contextlib.suppress(ValueError):
                        self._record(_usage_of(json.loads(line)))
                elif line.strip():
                    self.chunks += 1
            return chunk
        if not self.strip:
            for event in complete.split(b"\n\n"):
                if event:
                    self._event(event)
            return chunk
        kept = [e for e in complete.split(b"\n\n") if e and self._event(e)]
        return b"".join(e + b"\n\n" for e in kept)

    def finish(self) -> bytes:
        """Account what is left at the end of the body; returns bytes still to send (held SSE tail)."""
        rest, self._pending = self._pending, b""
        if self.kind == "json":
            if self._size <= MAX_SCAN_BYTES and rest:
                with contextlib.suppress(ValueError):
                    self._record(_usage_of(json.loads(rest)))
            return b""
        if rest.strip():
            if self.kind == "ndjson":
                with contextlib.suppress(ValueError):
                    self._record(_usage_of(json.loads(rest)))
            elif self._event(rest) and self.strip:
                return rest
        return b""
