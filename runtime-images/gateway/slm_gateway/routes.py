"""Which routes of each engine the gateway forwards, which it refuses, and how it names them.

Every route needs a key (the gateway answers /health and /ready itself, for the kubelet). Then:
REFUSED routes (model management, server administration, debugging) answer 403 even with a key;
SERVED routes are forwarded; anything else answers 404. Labels are the route templates, so the
``route`` label of the metrics is bounded.

Sources: vLLM's routes come from vLLM itself (``data/vllm-routes.json``, written by
tests/gateway/vllm_routes.py; a test fails when a route there is neither served nor refused nor
listed as not served); Ollama's from its API docs (docs/api.md, v0.13.5) and the former
Ollama proxy; llama.cpp's from llama-server's README (tools/server); ONNX from this project's
server (runtime-images/onnxruntime-server/slm_onnx_server/app.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROBES = ("/health", "/ready")

# Routes whose body carries max_tokens-like fields and whose answers carry token usage.
GENERATION = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/api/chat",
              "/api/generate", "/completion", "/completions", "/infill", "/v1/chat/completions/batch",
              "/inference/v1/generate"}


@dataclass(frozen=True)
class Profile:
    """An engine's route policy: ``served`` and ``refused`` are (method or "*", path regex, label)."""

    engine: str
    served: tuple[tuple[str, re.Pattern[str], str], ...]
    refused: tuple[tuple[str, re.Pattern[str], str], ...]
    # Routes of the engine deliberately neither served nor refused (404): docs, websockets, metrics
    # (the gateway serves the engine's metrics on its metrics port).
    not_served: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Templates without parameters are looked up in a dict (one hash per request instead of
        # trying ~40 regexes); refused ones take precedence, as in the scan below.
        exact: dict[tuple[str, str], tuple[str, str]] = {}
        for verdict, table in (("served", self.served), ("refused", self.refused)):
            for m, pattern, label in table:
                if "{" not in label and pattern.pattern == "^" + re.escape(label) + "$":
                    for method in ((m,) if m != "*" else ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")):
                        exact[(method, label)] = (verdict, label)
        object.__setattr__(self, "_exact", exact)

    def classify(self, method: str, path: str) -> tuple[str, str]:
        """("served"|"refused"|"unknown", label) for a request."""
        hit = self._exact.get((method, path))  # type: ignore[attr-defined]
        if hit is not None:
            return hit
        for m, pattern, label in self.refused:
            if (m == "*" or m == method) and pattern.match(path):
                return "refused", label
        for m, pattern, label in self.served:
            if (m == "*" or m == method) and pattern.match(path):
                return "served", label
        return "unknown", "other"


def _table(rows: tuple[tuple[str, str], ...]) -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """(method, template) rows; ``{name}`` in a template matches one path segment."""
    out = []
    for method, template in rows:
        regex = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
        out.append((method, re.compile(regex), template))
    return tuple(out)


OPENAI_COMMON = (
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model}"),
)

VLLM = Profile(
    "vllm",
    served=_table((
        *OPENAI_COMMON,
        ("POST", "/v1/responses"), ("GET", "/v1/responses/{response_id}"),
        ("POST", "/v1/responses/{response_id}/cancel"), ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"), ("POST", "/v1/chat/completions/batch"),
        ("POST", "/v1/chat/completions/render"), ("POST", "/v1/chat/completions/derender"),
        ("POST", "/v1/completions/render"), ("POST", "/v1/completions/derender"), ("POST", "/v1/messages/render"),
        ("POST", "/v1/responses/render"), ("POST", "/tokenize"), ("POST", "/detokenize"), ("POST", "/pooling"),
        ("POST", "/classify"), ("POST", "/score"), ("POST", "/v1/score"), ("POST", "/rerank"), ("POST", "/v1/rerank"),
        ("POST", "/v2/rerank"), ("POST", "/v2/embed"), ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/translations"), ("POST", "/invocations"), ("GET", "/ping"), ("POST", "/ping"),
        ("GET", "/version"), ("GET", "/load"), ("POST", "/v1/decisions"), ("POST", "/v1/systemone"),
        ("POST", "/generative_scoring"), ("POST", "/inference/v1/generate"),
    )),
    # Server control (dev mode, RL weight sync, elastic EP, fault tolerance, sleep, cache resets,
    # aborting other callers' requests) and introspection of the server's internals.
    refused=_table(tuple(("*", p) for p in (
        "/abort_requests", "/inference/v1/abort_requests", "/collective_rpc", "/pause", "/resume", "/is_paused",
        "/sleep", "/wake_up", "/is_sleeping", "/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache",
        "/release_kv_cache_memory", "/scale_elastic_ep", "/is_scaling_elastic_ep", "/server_info",
        "/get_world_size", "/weight_info", "/weight_checker", "/update_weights", "/update_weight_version",
        "/start_weight_update", "/finish_weight_update", "/start_draft_weight_update",
        "/init_weight_transfer_engine", "/shutdown_weight_transfer_engine", "/fault_tolerance/status",
        "/fault_tolerance/apply", "/kv_event_sources", "/start_profile", "/stop_profile",
        "/v1/load_lora_adapter", "/v1/unload_lora_adapter",
    ))),
    not_served=("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/metrics", "/v1/realtime", "/health"),
)

OLLAMA = Profile(
    "ollama",
    served=_table((
        *OPENAI_COMMON,
        ("POST", "/api/chat"), ("POST", "/api/generate"), ("POST", "/api/embed"), ("GET", "/api/tags"),
        ("POST", "/api/show"), ("GET", "/api/version"),
    )),
    refused=tuple(("*", re.compile(p), "management") for p in (
        r"^/api/(pull|push|delete|create|copy)$", r"^/api/blobs(/.*)?$")),
)

ONNX = Profile(
    "onnx",
    served=_table(OPENAI_COMMON),
    refused=(),
    not_served=("/metrics",),
)

LLAMACPP = Profile(
    "llamacpp",
    served=_table((
        *OPENAI_COMMON,
        ("POST", "/completion"), ("POST", "/completions"), ("POST", "/tokenize"), ("POST", "/detokenize"),
        ("POST", "/embedding"), ("POST", "/embeddings"), ("POST", "/infill"), ("POST", "/rerank"),
        ("POST", "/reranking"), ("POST", "/v1/rerank"), ("POST", "/apply-template"), ("GET", "/props"),
        ("GET", "/models"),
    )),
    # Slot save/restore/erase writes files and drops others' caches; POST /props and LoRA scaling
    # change the server for every caller.
    refused=_table((("*", "/slots"), ("*", "/slots/{id_slot}"), ("POST", "/props"), ("*", "/lora-adapters"))),
    not_served=("/metrics",),
)

PROFILES = {p.engine: p for p in (VLLM, OLLAMA, ONNX, LLAMACPP)}
