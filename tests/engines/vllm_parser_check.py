"""Parse argument lists with vLLM's own `vllm serve` parser; run inside the vLLM venv.

Reads {"cases": [[arg, ...], ...], "flags": [name, ...]} as JSON on stdin and prints JSON:
for each case the parsed values (or the parser's error), and which of `flags` the parser lacks.
Used by test_vllm_parser_compat.py; by hand:
  echo '{"cases": [["/m", "--port", "8000"]], "flags": ["port"]}' | \
    "$(tests/engines/vllm_env.sh | tail -1)/bin/python" tests/engines/vllm_parser_check.py
"""

from __future__ import annotations

import json
import os
import sys

# The PyPI wheel is a CUDA build: select vLLM's CPU platform before vLLM is imported.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm_serve_cases import run_cases, serve_parser

FIELDS = ("model_tag", "served_model_name", "host", "port", "max_model_len", "gpu_memory_utilization",
          "max_num_seqs", "tensor_parallel_size", "enable_prefix_caching", "quantization", "dtype",
          "kv_cache_dtype", "trust_remote_code", "disable_fastapi_docs", "api_key")


def main() -> None:
    request = json.load(sys.stdin)
    parser = serve_parser()
    results = run_cases(parser, request["cases"], lambda ns: {"values": {f: getattr(ns, f, None) for f in FIELDS}})
    options = set(parser._option_string_actions)
    missing = [f for f in request["flags"] if f"--{f}" not in options]
    print(json.dumps({"vllm_version": vllm.__version__, "results": results, "missing_flags": missing}))


if __name__ == "__main__":
    main()
