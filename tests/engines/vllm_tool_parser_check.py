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

import contextlib
import io
import json
import os
import sys

# The PyPI wheel is a CUDA build; without a GPU select vLLM's CPU platform (see vllm_parser_check.py).
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm.entrypoints.common.cli_args import (
    make_arg_parser,
    validate_api_server_args,
    validate_parsed_serve_args,
)
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
from vllm.utils.argparse_utils import FlexibleArgumentParser


def main() -> None:
    request = json.load(sys.stdin)
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    results = []
    for case in request["cases"]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(case)
            validate_parsed_serve_args(ns)
            # EngineArgs.__post_init__ copies --reasoning-parser here before `vllm serve` validates.
            if ns.reasoning_parser:
                ns.structured_outputs_config.reasoning_parser = ns.reasoning_parser
            validate_api_server_args(ns)
            results.append({"ok": True, "enable_auto_tool_choice": ns.enable_auto_tool_choice,
                            "tool_call_parser": ns.tool_call_parser, "reasoning_parser": ns.reasoning_parser})
        except (SystemExit, Exception) as exc:
            results.append({"ok": False, "error": err.getvalue().strip() or repr(exc)})
    print(json.dumps({"vllm_version": vllm.__version__,
                      "tool_call_parsers": sorted(ToolParserManager.list_registered()),
                      "reasoning_parsers": sorted(ReasoningParserManager.list_registered()),
                      "results": results}))


if __name__ == "__main__":
    main()
