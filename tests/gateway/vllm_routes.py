"""Lists the HTTP routes of the pinned vLLM's OpenAI API server, from vLLM itself.

Run inside the vLLM venv (it imports vllm): builds vLLM's FastAPI app with its own ``build_app``
for every task vLLM knows (plus every pooling router) and with the dev routes switched on
(VLLM_SERVER_DEV_MODE=1, the most routes it can serve), and prints
``{"vllm": version, "routes": [[METHOD, PATH], ...]}`` sorted.

Regenerate the checked-in table after a vLLM bump with:
    ~/.cache/slm-operator/venv-vllm-<v>/bin/python tests/gateway/vllm_routes.py \
        > runtime-images/gateway/slm_gateway/data/vllm-routes.json
"""

from __future__ import annotations

import json
import os
import sys
import typing
import warnings

os.environ["VLLM_SERVER_DEV_MODE"] = "1"
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main() -> int:
    warnings.simplefilter("ignore")
    import vllm
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.entrypoints.launchers.app import build_app
    from vllm.tasks import SupportedTask
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # Fault-tolerance routes too: every route this vLLM can put on its port.
    args = make_arg_parser(FlexibleArgumentParser()).parse_args([])
    args.enable_fault_tolerance = True
    tasks: list[str] = []

    def flatten(tp) -> None:
        for arg in typing.get_args(tp):
            if isinstance(arg, str):
                tasks.append(arg)
            else:
                flatten(arg)

    flatten(SupportedTask)
    app = build_app(args, tuple(tasks), None)
    # The pooling routers (embeddings, classify, score/rerank, pooling) are only attached for a
    # pooling model's config, which needs weights: attach every one of them directly.
    import importlib
    import pkgutil

    import vllm.entrypoints.pooling as pooling

    for mod in pkgutil.iter_modules(pooling.__path__):
        try:
            router = importlib.import_module(f"{pooling.__name__}.{mod.name}.api_router").router
        except (ImportError, AttributeError):
            continue
        app.include_router(router)
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if path and method != "HEAD":
                routes.add((method, path))
    json.dump({"vllm": vllm.__version__, "tasks": sorted(set(tasks)),
               "routes": sorted([list(r) for r in routes])}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
