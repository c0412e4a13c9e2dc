"""Entry point: ``python -m slm_onnx_server --model-dir DIR --api-key-file FILE [...]``."""

from __future__ import annotations

import asyncio
import sys

from . import logs
from .config import parse_args
from .server import serve


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    logs.setup(cfg.log_level)
    try:
        asyncio.run(serve(cfg))
    except (OSError, ValueError) as exc:  # unreadable key file, port in use...
        print(f"slm_onnx_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
