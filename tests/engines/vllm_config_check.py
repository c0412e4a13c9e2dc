"""Feed `vllm serve` argument lists through vLLM's parser AND its model-config checks; run in the vLLM venv.

Reads {"cases": [[arg, ...], ...]} on stdin; the model path in each case is a local folder with a
config.json. For each case prints the quantization vLLM resolved, or the error vLLM raised
(e.g. "Quantization method specified in the model config (compressed-tensors) does not match
the quantization method specified in the `quantization` argument (awq_marlin)").
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# The PyPI wheel is a CUDA build: select vLLM's CPU platform before vLLM is imported.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm.engine.arg_utils import EngineArgs
from vllm_serve_cases import run_cases, serve_parser


def _model_config(ns: Any) -> dict[str, Any]:
    if getattr(ns, "model_tag", None):
        ns.model = ns.model_tag
    config = EngineArgs.from_cli_args(ns).create_model_config()
    return {"quantization": config.quantization, "dtype": str(config.dtype)}


def main() -> None:
    request = json.load(sys.stdin)
    results = run_cases(serve_parser(), request["cases"], _model_config)
    print(json.dumps({"vllm_version": vllm.__version__, "results": results}))


if __name__ == "__main__":
    main()
