"""The loop the vLLM check scripts share: parse each argument list with vLLM's own `vllm serve`
parser, validate it, and let the script read what it needs; run inside the vLLM venv.

Imported as a sibling module by vllm_parser_check.py, vllm_config_check.py and
vllm_tool_parser_check.py (they run as scripts, so their folder is on sys.path).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from typing import Any

# The PyPI wheel is a CUDA build; on a machine without a GPU the parser's device default
# cannot be inferred, so select vLLM's CPU platform. The serve flags we render do not depend on it.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser


def serve_parser() -> FlexibleArgumentParser:
    """vLLM's own `vllm serve` argument parser."""
    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))


def run_cases(parser: FlexibleArgumentParser, cases: list[list[str]],
              read: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Parse and validate each case; `read(namespace)` gives the fields reported for a good one.

    Returns one dict per case: {"ok": True, **read(ns)}, or {"ok": False, "error": text}, where
    text is what the parser printed (argparse errors) or the exception raised by `read` or by
    vLLM's validation.
    """
    results: list[dict[str, Any]] = []
    for case in cases:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(case)
            validate_parsed_serve_args(ns)
            results.append({"ok": True, **read(ns)})
        except (SystemExit, Exception) as exc:
            results.append({"ok": False, "error": err.getvalue().strip() or repr(exc)})
    return results
