"""Gateway benchmark: the same requests straight to an engine and through slm_gateway, in one run.

Processes (all on 127.0.0.1): a synthetic engine speaking vLLM's OpenAI wire format (a chat
completion of ``max_tokens`` chunks, one token per SSE event, ``x-bench-delay-ms`` between chunks,
usage in a last chunk when asked), a real redis-server, and ``python -m slm_gateway`` pinned to one
CPU core (``--gateway-cpu``), with one consumer that has requests and tokens limits high enough
never to refuse, so every request pays the limit check in Redis and the token debit.

Figures (direct vs gateway, interleaved rounds, medians over ``--repeat``):

- ``request``: one client, non-streamed chat completions (1 token) back to back: p50 latency;
  overhead = gateway p50 - direct p50 (goal <= 1 ms).
- ``chunk``: one client, streamed, 64 chunks, no delay: p50 of (last chunk - first chunk) / 63,
  the time the gateway adds per streamed chunk; and time to first chunk p50 (goal <= 10 ms more).
- ``tokens_16``: 16 clients, streamed, 64 tokens at ``--token-ms`` ms per token (a real engine's
  pace): aggregate tokens/s; ratio gateway/direct (goal >= 0.95).
- ``ceiling``: ``--ceiling-clients`` (16) clients as fast as they go, no delay, non-streamed (1 token) and streamed (64
  chunks): the wall rate, and the CPU time the serving process spends per request and per chunk
  (the engine's for direct, the gateway's alone for gateway; from /proc). 1 / CPU-per-request is
  the one-core ceiling, a figure the neighbours on a shared machine do not move.

Run: bench/gateway [--repeat 3] [--requests 500]. Prints one JSON line per figure, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

KEY = "sk-bench-0123456789abcdef"  # a consumer with requests and tokens limits (Redis on every request)
KEY_NO_LIMITS = "sk-bench-nolimits-0123456789"  # a consumer without limits (no Redis round trip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the synthetic engine (run in its own process: `gateway.py _engine PORT`) -------------------
def engine_main(port: int) -> None:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        delay = float(request.headers.get("x-bench-delay-ms", "0")) / 1000
        usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
        if not body.get("stream"):
            return web.json_response({"id": "c", "object": "chat.completion", "created": 0, "model": "bench",
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * n},
                                                   "finish_reason": "length"}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(n):
            await resp.write(b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench",'
                             b'"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n')
            if delay:
                await asyncio.sleep(delay)
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + json.dumps({"id": "c", "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", models)
    app.router.add_post("/v1/chat/completions", chat)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- clients ------------------------------------------------------------------------------------
async def one_request(session: aiohttp.ClientSession, url: str) -> float:
    t = time.perf_counter()
    async with session.post(url, json={"model": "bench", "messages": [], "max_tokens": 1}) as r:
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t


async def one_stream(session: aiohttp.ClientSession, url: str, tokens: int,
                     delay_ms: float) -> tuple[float, float, int]:
    """(time to first chunk, time from first to last chunk, content chunks)."""
    t = time.perf_counter()
    first = last = 0.0
    chunks = 0
    async with session.post(url, json={"model": "bench", "messages": [], "max_tokens": tokens, "stream": True},
                            headers={"x-bench-delay-ms": str(delay_ms)}) as r:
        assert r.status == 200, r.status
        buf = b""
        async for data in r.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if event.startswith(b"data: {") and b'"choices":[{' in event:
                    now = time.perf_counter()
                    if not chunks:
                        first = now
                    last = now
                    chunks += 1
    return first - t, last - first, chunks


def session(base: str, clients: int) -> aiohttp.ClientSession:
    """``base`` may carry the key to send after a '#': http://host:port#key."""
    base, _, key = base.partition("#")
    return aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {key or KEY}"},
                                 connector=aiohttp.TCPConnector(limit=clients, force_close=False))


async def fig_request(base: str, n: int) -> float:
    async with session(base, 1) as s:
        for _ in range(20):
            await one_request(s, "/v1/chat/completions")
        lat = [await one_request(s, "/v1/chat/completions") for _ in range(n)]
    return statistics.median(lat) * 1000


async def fig_chunk(base: str, n: int) -> tuple[float, float]:
    async with session(base, 1) as s:
        out = [await one_stream(s, "/v1/chat/completions", 64, 0) for _ in range(max(20, n // 10))]
    assert all(c == 64 for _, _, c in out), {c for _, _, c in out}
    return (statistics.median(t for t, _, _ in out) * 1000, statistics.median(d / 63 for _, d, _ in out) * 1e6)


async def fig_tokens(base: str, clients: int, token_ms: float, rounds: int) -> float:
    async with session(base, clients) as s:
        async def client() -> int:
            total = 0
            for _ in range(rounds):
                total += (await one_stream(s, "/v1/chat/completions", 64, token_ms))[2]
            return total

        t = time.perf_counter()
        total = sum(await asyncio.gather(*(client() for _ in range(clients))))
    return total / (time.perf_counter() - t)


async def fig_ceiling(base: str, clients: int, seconds: float, stream: bool) -> tuple[float, int]:
    async with session(base, clients) as s:
        deadline = time.perf_counter() + seconds
        count = 0

        async def client() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                if stream:
                    count += (await one_stream(s, "/v1/chat/completions", 64, 0))[2]
                else:
                    await one_request(s, "/v1/chat/completions")
                    count += 1

        t = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return count / (time.perf_counter() - t), count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the run ------------------------------------------------------------------------------------
def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=500, help="sequential requests per latency round")
    ap.add_argument("--token-ms", type=float, default=10.0, help="engine pace for the 16-client figure")
    ap.add_argument("--ceiling-s", type=float, default=5.0)
    ap.add_argument("--ceiling-clients", type=int, default=16)
    ap.add_argument("--gateway-cpu", type=int, default=0, help="the one core the gateway may use")
    ap.add_argument("--engine-cpus", default="", help="cores for the engine, e.g. 1 (default: any)")
    ns = ap.parse_args()
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(redis_bin):
        raise SystemExit("redis-server is not installed (hack/host-deps.sh installs Debian's redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="slm-bench-gw-"))
    keys = tmp / "consumers"
    keys.mkdir()
    (keys / "bench").write_text(f"key: {KEY}\nrequestsPerMinute: 100000000\ntokensPerMinute: 1000000000\n")
    (keys / "bench-no-limits").write_text(KEY_NO_LIMITS)
    eport, gport, mport, rport = free_port(), free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL))
        engine_cpus = {int(c) for c in ns.engine_cpus.split(",") if c}
        procs.append(subprocess.Popen([sys.executable, __file__, "_engine", str(eport)],
                                      preexec_fn=(lambda: os.sched_setaffinity(0, engine_cpus)) if engine_cpus
                                      else None))
        gw = subprocess.Popen([sys.executable, "-m", "slm_gateway", "--engine", "vllm", "--upstream",
                               f"http://127.0.0.1:{eport}", "--keys-dir", str(keys), "--redis-url",
                               f"redis://127.0.0.1:{rport}/0", "--scope", "bench/gw", "--listen",
                               f"127.0.0.1:{gport}", "--metrics-listen", f"127.0.0.1:{mport}"],
                              preexec_fn=lambda: os.sched_setaffinity(0, {ns.gateway_cpu}),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{eport}/health", procs[1])
        wait_http(f"http://127.0.0.1:{gport}/health", gw)
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        return asyncio.run(run(ns, f"http://127.0.0.1:{eport}", f"http://127.0.0.1:{gport}",
                               f"http://127.0.0.1:{mport}", {"direct": procs[1].pid, "gateway": gw.pid}))
    finally:
        for p in reversed(procs):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


async def run(ns: argparse.Namespace, direct: str, gateway: str, metrics: str, pids: dict[str, int]) -> int:
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, side: str, value: float) -> None:
        rows.setdefault(name, {}).setdefault(side, []).append(value)

    sides = [("direct", direct), ("gateway", f"{gateway}#{KEY_NO_LIMITS}"), ("gateway+limits", f"{gateway}#{KEY}")]
    for rnd in range(ns.repeat):
        for side, base in sides if rnd % 2 == 0 else sides[::-1]:
            add("request p50 ms", side, await fig_request(base, ns.requests))
            ttft, per_chunk = await fig_chunk(base, ns.requests)
            add("first chunk p50 ms", side, ttft)
            add("per chunk p50 us", side, per_chunk)
            add(f"tokens/s 16 clients ({ns.token_ms:g} ms/token)", side,
                await fig_tokens(base, 16, ns.token_ms, rounds=3))
            # CPU time of the serving process (engine alone, or the gateway alone) per request and per
            # chunk: on a shared machine wall-clock rates depend on the neighbours, CPU time does not;
            # 1 / (CPU s per request) is the ceiling of one core.
            for stream, unit in ((False, "request"), (True, "chunk")):
                pid = pids["direct" if side == "direct" else "gateway"]
                cpu0 = cpu_seconds(pid)
                rate, count = await fig_ceiling(base, ns.ceiling_clients, ns.ceiling_s, stream=stream)
                cpu = cpu_seconds(pid) - cpu0
                add(f"{unit}s/s, {ns.ceiling_clients} clients (wall)", side, rate)
                add(f"CPU us per {unit} (engine, or gateway alone)", side, cpu / count * 1e6)
                add(f"one-core ceiling {unit}s/s", side, count / cpu if cpu else float("nan"))
            print(json.dumps({"round": rnd, "side": side, "load1": os.getloadavg()[0],
                              **{k: round(v[side][-1], 3) for k, v in rows.items()}}), flush=True)
    async with aiohttp.ClientSession() as s, s.get(f"{metrics}/metrics") as r:
        text = await r.text()
    store_errors = [ln for ln in text.splitlines() if ln.startswith("slm_gateway_limit_store_errors_total{")]
    print("\n| figure | direct | gateway | gateway+limits | gateway - direct | gateway+limits - direct |"
          " gateway+limits / direct |\n|---|---|---|---|---|---|---|")
    for name, by_side in rows.items():
        d, g, gl = (statistics.median(by_side[s]) for s in ("direct", "gateway", "gateway+limits"))
        print(f"| {name} | {d:.3f} | {g:.3f} | {gl:.3f} | {g - d:+.3f} | {gl - d:+.3f} | {gl / d:.3f} |")
        print(json.dumps({"figure": name, "direct": round(d, 3), "gateway": round(g, 3),
                          "gateway+limits": round(gl, 3)}), file=sys.stderr)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}; gateway pinned to "
          f"core {ns.gateway_cpu}; limit store errors: {store_errors or 'none'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_engine":
        engine_main(int(sys.argv[2]))
    else:
        raise SystemExit(main())
