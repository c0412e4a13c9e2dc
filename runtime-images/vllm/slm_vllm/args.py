"""Pure mapping from VllmOptions to `vllm serve` arguments, and the checks on free-form flags.

`build_args` is what the operator may call to render a container's args; `check_serve_args`
is what the launcher runs on any argument list before it execs vLLM. Both are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from slm_vllm.options import VllmOptions


class UnsafeArgsError(ValueError):
    """An argument would weaken the deployment (dev endpoints, code loading, secrets in args...)."""


# Flags refused everywhere, with the reason shown to the user. Names are vLLM 0.33's long forms.
FORBIDDEN_FLAGS: dict[str, str] = {
    "api-key": "the API key must come from a Secret (VLLM_API_KEY or --api-key-file), never from args",
    "hf-token": "a hub token must come from a Secret, never from args",
    "config": "a vLLM config file would bypass these checks; use the typed options",
    "allowed-local-media-path": "lets API clients read files from the server's disk",
    "middleware": "imports arbitrary Python into the API server",
    "tool-parser-plugin": "imports an arbitrary Python file",
    "reasoning-parser-plugin": "imports an arbitrary Python file",
    "io-processor-plugin": "imports arbitrary Python",
    "logits-processors": "imports arbitrary Python classes",
    "worker-cls": "imports an arbitrary worker class",
    "worker-extension-cls": "imports an arbitrary worker class",
    "kv-transfer-config": "may import an arbitrary connector module",
    "ec-transfer-config": "may import an arbitrary connector module",
    "trust-request-chat-template": "lets API clients supply Jinja templates",
    "trust-request-mm-kwargs": "lets API clients change preprocessing resource use",
    "tool-server": "'demo' runs model-generated code",
    "enable-tokenizer-info-endpoint": "adds an endpoint outside vLLM's API-key check",
    "enable-scale-out": "adds /render and /derender outside vLLM's API-key check",
    "enable-fault-tolerance": "adds control endpoints",
    "profiler-config": "adds unauthenticated profiler endpoints and writes traces",
    "enable-log-requests": "logs request contents (prompts)",
    "enable-log-outputs": "logs generated text",
    "allow-credentials": "cross-origin credentials are not needed by API clients",
    "grpc": "serves a different protocol than the one the operator probes and exposes",
    "grpc-port": "opens gRPC control services next to the HTTP API",
    "headless": "starts no API server",
    "uds": "the Service expects a TCP port",
}

# Flags the typed options own: in extra_args they would silently override (or fight) them.
OWNED_FLAGS: dict[str, str] = {
    "model": "model_path",
    "served-model-name": "served_model_name",
    "host": "host",
    "port": "port",
    "max-model-len": "max_model_len",
    "gpu-memory-utilization": "gpu_memory_utilization",
    "max-num-seqs": "max_num_seqs",
    "tensor-parallel-size": "tensor_parallel_size",
    "enable-prefix-caching": "enable_prefix_caching",
    "quantization": "quantization",
    "dtype": "dtype",
    "kv-cache-dtype": "kv_cache_dtype",
    "trust-remote-code": "trust_remote_code",
    "disable-fastapi-docs": "(always set)",
    # Tool calling and reasoning come from the catalog or engine.vllm.toolCallParser /
    # reasoningParser; a second copy in extra_args would come last and win unseen.
    "tool-call-parser": "tool_call_parser",
    "enable-auto-tool-choice": "tool_call_parser",
    "reasoning-parser": "reasoning_parser",
}


def flag_name(arg: str) -> str | None:
    """The long option an argument names, as vLLM's parser reads it; None for a value.

    vLLM's FlexibleArgumentParser accepts `--a_b` for `--a-b`, `--a.b x` for nested JSON
    fields of `--a`, `--a+` for list appends, and argparse's `--no-a` for booleans.
    """
    if not arg.startswith("--") or arg == "--":
        return None
    name = arg[2:].split("=", 1)[0].split(".", 1)[0].rstrip("+").replace("_", "-").lower()
    return name.removeprefix("no-")


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


# vLLM flags that are also a prefix of a listed flag: argparse takes an exact match before any
# abbreviation, so `--reasoning-parser qwen3` names --reasoning-parser (the operator renders it
# for reasoning models), never --reasoning-parser-plugin.
EXACT_FLAGS = frozenset({"reasoning-parser"})


def _matches(name: str, table: Iterable[str]) -> str | None:
    # argparse accepts unambiguous prefixes (allow_abbrev), so `--trust-remote` is
    # `--trust-remote-code`: refuse any prefix of a listed flag, not only exact names.
    if name in table:
        return name
    if name in EXACT_FLAGS:
        return None
    for flag in table:
        if len(name) >= 2 and flag.startswith(name):
            return flag
    return None


def check_serve_args(args: Sequence[str], *, owned_allowed: bool) -> None:
    """Raise UnsafeArgsError for a forbidden flag (and, unless owned_allowed, a typed-option flag).

    owned_allowed=True is for a full argument list the operator rendered with build_args;
    False is for extra_args, which must not override typed options.
    """
    for arg in args:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            if arg.startswith("-O") or _is_number(arg):  # -O3 is --optimization-level; -1 a value
                continue
            raise UnsafeArgsError(f"{arg!r}: use the long form of the flag (short flags are not checked)")
        name = flag_name(arg)
        if name is None:
            continue
        if hit := _matches(name, FORBIDDEN_FLAGS):
            raise UnsafeArgsError(f"{arg!r} is refused: --{hit} {FORBIDDEN_FLAGS[hit]}")
        if not owned_allowed and (hit := _matches(name, OWNED_FLAGS)):
            raise UnsafeArgsError(
                f"{arg!r} is refused in extra_args: --{hit} is set by the typed option {OWNED_FLAGS[hit]}"
            )


def build_args(o: VllmOptions) -> list[str]:
    """`vllm serve` arguments (without the leading "serve") for the options; deterministic."""
    check_serve_args(o.extra_args, owned_allowed=False)
    args = [
        o.model_path,  # positional: vLLM 0.33 deprecates --model for `vllm serve`
        "--served-model-name", o.served_model_name,
        "--host", o.host,
        "--port", str(o.port),
        "--tensor-parallel-size", str(o.tensor_parallel_size),
        # /docs and /openapi.json sit outside vLLM's API-key check: nothing needs them in production.
        "--disable-fastapi-docs",
    ]
    if o.max_model_len is not None:
        args += ["--max-model-len", str(o.max_model_len)]
    if o.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{float(o.gpu_memory_utilization):.2f}"]
    if o.max_num_seqs is not None:
        args += ["--max-num-seqs", str(o.max_num_seqs)]
    if o.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if o.enable_prefix_caching else "--no-enable-prefix-caching")
    if o.quantization is not None:
        args += ["--quantization", o.quantization]
    if o.dtype is not None:
        args += ["--dtype", o.dtype]
    if o.kv_cache_dtype is not None:
        args += ["--kv-cache-dtype", o.kv_cache_dtype]
    if o.trust_remote_code:
        args.append("--trust-remote-code")
    args += list(o.extra_args)
    return args
