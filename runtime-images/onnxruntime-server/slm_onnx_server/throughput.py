"""Tokens/s of the server next to in-process onnxruntime-genai on the same model.

    python -m slm_onnx_server.throughput --model-dir DIR [--clients 1 4] [--max-tokens 128]

Every request generates exactly --max-tokens tokens (EOS ignored), so the numbers compare
the same work. "direct" runs og.Generator in this process, one thread per client (the
plain API); "direct-engine" runs one og.Engine batch of all clients; "server-*" starts the
real server on 127.0.0.1 and sends the clients' completions concurrently over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PROMPT = "The river runs through the valley and"


def _direct_generator(model, ids: np.ndarray, clients: int, max_tokens: int) -> float:
    import onnxruntime_genai as og

    def one() -> None:
        params = og.GeneratorParams(model)
        total = len(ids) + max_tokens
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()

    threads = [threading.Thread(target=one) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * max_tokens / (time.perf_counter() - start)


def _direct_engine(model, ids: np.ndarray, clients: int, max_tokens: int) -> float:
    import onnxruntime_genai as og

    engine = og.Engine(model)
    buffer = engine.create_event_buffer(256)
    keep = []
    start = time.perf_counter()
    for _ in range(clients):
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(max_tokens)
        options.set_min_generated_tokens(max_tokens)
        options.set_do_sample(False)
        request.begin_turn(ids, options)
        keep.append(request)
    tokens = 0
    while engine.has_pending_requests():
        engine.run(buffer)
        tokens += sum(1 for i in range(len(buffer)) if int(buffer[i].flags) & int(og.EngineEventFlags.TOKEN))
    return tokens / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _clients(base: str, key: str, clients: int, max_tokens: int) -> float:
    import httpx

    body = {"model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
        start = time.perf_counter()
        replies = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    tokens = 0
    for reply in replies:
        reply.raise_for_status()
        tokens += reply.json()["usage"]["completion_tokens"]
    return tokens / elapsed


def _server(model_dir: Path, scheduler: str, client_counts: list[int], max_tokens: int) -> dict[int, float]:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key"
        key_file.write_text("bench-key\n")
        port = _free_port()
        cmd = [sys.executable, "-m", "slm_onnx_server", "--model-dir", str(model_dir), "--served-model-name",
               "bench", "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(key_file),
               "--scheduler", scheduler, "--max-concurrency", str(max(client_counts)), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(base + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            asyncio.run(_clients(base, "bench-key", 1, 8))  # warm-up
            return {n: asyncio.run(_clients(base, "bench-key", n, max_tokens)) for n in client_counts}
        finally:
            proc.terminate()
            proc.wait(30)


def compare(model_dir: Path, client_counts: list[int], max_tokens: int) -> dict[str, dict[int, float]]:
    """Aggregate generated tokens/s for each way of serving and each number of clients."""
    import onnxruntime_genai as og

    from .model import find_model_folder

    model = og.Model(str(find_model_folder(model_dir)))
    ids = np.asarray(og.Tokenizer(model).encode(PROMPT), dtype=np.int32)
    _direct_generator(model, ids, 1, 8)  # warm-up
    results = {
        "direct": {n: _direct_generator(model, ids, n, max_tokens) for n in client_counts},
        "direct-engine": {n: _direct_engine(model, ids, n, max_tokens) for n in client_counts},
    }
    del model
    for scheduler in ("engine", "threads"):
        results[f"server-{scheduler}"] = _server(model_dir, scheduler, client_counts, max_tokens)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m slm_onnx_server.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    p.add_argument("--max-tokens", type=int, default=128)
    a = p.parse_args(argv)
    results = compare(a.model_dir, a.clients, a.max_tokens)
    rates = {k: {str(n): round(v, 1) for n, v in r.items()} for k, r in results.items()}
    print(json.dumps({"cpus": os.cpu_count(), "max_tokens": a.max_tokens, "tokens_per_second": rates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
