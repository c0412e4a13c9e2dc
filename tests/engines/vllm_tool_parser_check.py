"""vLLM's own tool-call / reasoning parser registries, and its own checks of serve flags;
run inside the vLLM venv.

Reads {"cases": [[arg, ...], ...]} as JSON on stdin and prints JSON: the names registered in
ToolParserManager and ReasoningParserManager, and for each case what `vllm serve`'s parser made
of it after vLLM's own validation (validate_parsed_serve_args, then validate_api_server_args,
which looks the parser names up in the registries), or the error.
Used by test_vllm_tool_parsers.py; by hand:
  echo '{"cases": [["/m", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]]}' | \
    "$(tests/engines/vllm_env.sh | tail -1)/bin/python" tests/engines/vllm_tool_parser_check.py
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# The PyPI wheel is a CUDA build: select vLLM's CPU platform before vLLM is imported.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm.entrypoints.common.cli_args import validate_api_server_args
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
from vllm_serve_cases import run_cases, serve_parser


def _parsers(ns: Any) -> dict[str, Any]:
    # EngineArgs.__post_init__ copies --reasoning-parser here before `vllm serve` validates.
    if ns.reasoning_parser:
        ns.structured_outputs_config.reasoning_parser = ns.reasoning_parser
    validate_api_server_args(ns)
    return {"enable_auto_tool_choice": ns.enable_auto_tool_choice, "tool_call_parser": ns.tool_call_parser,
            "reasoning_parser": ns.reasoning_parser}


def main() -> None:
    request = json.load(sys.stdin)
    results = run_cases(serve_parser(), request["cases"], _parsers)
    print(json.dumps({"vllm_version": vllm.__version__,
                      "tool_call_parsers": sorted(ToolParserManager.list_registered()),
                      "reasoning_parsers": sorted(ReasoningParserManager.list_registered()),
                      "results": results}))


if __name__ == "__main__":
    main()
