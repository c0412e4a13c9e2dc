"""Feed `vllm serve` argument lists through vLLM's parser AND its model-config checks; run in the vLLM venv.

Reads {"cases": [[arg, ...], ...]} on stdin; the model path in each case is a local folder with a
config.json. For each case prints the quantization vLLM resolved, or the error vLLM raised
(e.g. "Quantization method specified in the model config (compressed-tensors) does not match
the quantization method specified in the `quantization` argument (awq_marlin)").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm.engine.arg_utils import EngineArgs
from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
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
            if getattr(ns, "model_tag", None):
                ns.model = ns.model_tag
            config = EngineArgs.from_cli_args(ns).create_model_config()
            results.append({"ok": True, "quantization": config.quantization, "dtype": str(config.dtype)})
        except (SystemExit, Exception) as exc:
            results.append({"ok": False, "error": err.getvalue().strip() or f"{type(exc).__name__}: {exc}"})
    print(json.dumps({"vllm_version": vllm.__version__, "results": results}))


if __name__ == "__main__":
    main()
