"""Process lifecycle: model loading in the background, the listeners, graceful SIGTERM.

On SIGTERM: /ready turns 503 at once; after --drain-delay-s the listener closes (no new
connections) while in-flight requests, streams included, run to completion for up to
--grace-period-s; then anything left is cancelled and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from .app import ServerState, build_app
from .config import ServerConfig

log = logging.getLogger("slm_onnx_server")


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by ``serve`` (two listeners share one process)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _uvicorn_config(app, host: str, port: int, grace: float) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_config=None, access_log=False,
        timeout_graceful_shutdown=max(1, int(grace)), timeout_keep_alive=5,
    )


async def serve(cfg: ServerConfig) -> None:
    state = ServerState(cfg)
    main = _Server(_uvicorn_config(build_app(state), cfg.host, cfg.port, cfg.grace_period_s))
    side = None
    if cfg.metrics_port:
        side = _Server(_uvicorn_config(build_app(state, ops_only=True), cfg.host, cfg.metrics_port, 1))
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if state.draining:
            log.warning("second signal: exiting without waiting", extra={"signal": sig.name})
            main.force_exit = True
            main.should_exit = True
            return
        log.info("shutting down: draining", extra={"signal": sig.name, "drain_delay_s": cfg.drain_delay_s,
                                                   "grace_period_s": cfg.grace_period_s,
                                                   "pending": state.scheduler.pending() if state.scheduler else 0})
        state.start_draining()
        loop.call_later(cfg.drain_delay_s, setattr, main, "should_exit", True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    loader = asyncio.create_task(asyncio.to_thread(state.load))
    tasks = [asyncio.create_task(main.serve())]
    if side is not None:
        tasks.append(asyncio.create_task(side.serve()))
    try:
        await tasks[0]  # returns once in-flight requests finished or the grace period ran out
    finally:
        if side is not None:
            side.should_exit = True
            await tasks[1]
        if state.scheduler is not None:
            state.scheduler.stop()
        if not loader.done():
            log.info("exiting while the model was still loading")
        log.info("stopped")
