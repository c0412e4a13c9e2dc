"""Command line: ``python -m slm_gateway --engine vllm --upstream http://127.0.0.1:8001 --keys-dir DIR``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from slm_gateway.routes import PROFILES


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slm_gateway", description=__doc__)
    p.add_argument("--engine", required=True, choices=sorted(PROFILES), help="the engine behind the gateway")
    p.add_argument("--upstream", required=True, help="the engine's loopback URL, e.g. http://127.0.0.1:8001")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--keys-dir", type=Path, help="the mounted per-consumer Secret (one file per consumer)")
    keys.add_argument("--api-key-file", type=Path, help="one shared key (every line of the file is a key)")
    p.add_argument("--listen", default="0.0.0.0:8000", help="the Service port (default %(default)s)")
    p.add_argument("--metrics-listen", default="0.0.0.0:9090",
                   help="/metrics and /gateway/consumers (default %(default)s)")
    p.add_argument("--redis-url", default=os.environ.get("SLM_GATEWAY_REDIS_URL"),
                   help="shared limit store, redis://host:6379/0 (env SLM_GATEWAY_REDIS_URL); the password comes "
                        "from --redis-password-file, never from the command line")
    p.add_argument("--redis-password-file", type=Path, help="file holding the store's password (a mounted Secret)")
    p.add_argument("--scope", default="default", help="limit counter namespace: one per model, e.g. ns/name")
    p.add_argument("--fail-open", action="store_true",
                   help="let requests through when the limit store is down (default: refuse with 503)")
    p.add_argument("--upstream-key-file", type=Path,
                   help="the engine's own key (first line), sent to it as Bearer; the client's key never is")
    p.add_argument("--model", help="Ollama: the model that must be loaded before /ready answers 200")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    p.add_argument("--recheck-s", type=float, default=1.0, help="how often the key files are checked for changes")
    return p


async def serve(ns: argparse.Namespace) -> None:
    from aiohttp import web

    from slm_gateway.app import Gateway, GatewayConfig, build_app, build_metrics_app

    password = ns.redis_password_file.read_text(encoding="utf-8").strip() if ns.redis_password_file else None
    cfg = GatewayConfig(engine=ns.engine, upstream=ns.upstream, keys_dir=ns.keys_dir, api_key_file=ns.api_key_file,
                        redis_url=ns.redis_url, redis_password=password, scope=ns.scope, fail_open=ns.fail_open,
                        recheck_s=ns.recheck_s, model=ns.model, max_body_bytes=ns.max_body_bytes,
                        upstream_key_file=ns.upstream_key_file)
    gw = Gateway(cfg)
    runners = []
    for app, listen in ((build_app(gw), ns.listen), (build_metrics_app(gw), ns.metrics_listen)):
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        host, port = _host_port(listen)
        await web.TCPSite(runner, host, port, backlog=1024).start()
        runners.append(runner)
    logging.getLogger("slm_gateway").info("gateway for %s on %s (metrics %s)", ns.engine, ns.listen,
                                          ns.metrics_listen)
    # As PID 1 in a container, SIGTERM has no default action: stop on it (the kubelet sends it,
    # then waits terminationGracePeriodSeconds); cleanup lets in-flight streams finish first.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ns.api_key_file is not None and not ns.api_key_file.is_file():
        print(f"slm_gateway: API key file {ns.api_key_file} not found: refusing to start", file=sys.stderr)
        return 2
    if ns.keys_dir is not None and not ns.keys_dir.is_dir():
        print(f"slm_gateway: consumer Secret folder {ns.keys_dir} not found: refusing to start", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
