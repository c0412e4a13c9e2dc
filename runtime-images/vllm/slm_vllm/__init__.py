"""vLLM launcher: typed options -> checked `vllm serve` arguments -> exec (see ../README.md)."""

from slm_vllm.args import FORBIDDEN_FLAGS, UnsafeArgsError, build_args, check_serve_args
from slm_vllm.options import VLLM_VERSION, OptionsError, VllmOptions, load_options, options_from_mapping

__all__ = [
    "FORBIDDEN_FLAGS",
    "VLLM_VERSION",
    "OptionsError",
    "UnsafeArgsError",
    "VllmOptions",
    "build_args",
    "check_serve_args",
    "load_options",
    "options_from_mapping",
]
