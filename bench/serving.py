"""Serving benchmark: the ONNX Runtime and llama.cpp OpenAI servers against their in-process libraries.

For each model and each way of generating (--modes):

- ``engine``: the server with ``--scheduler engine`` (og.Engine, one batch of up to
  --max-concurrency sequences) against one in-process og.Engine driven from one thread;
- ``threads``: the server with ``--scheduler threads`` (one og.Generator per request on
  worker threads) against in-process threads with one og.Generator each;

at 1, 4 and 16 concurrent clients (--clients). Every client sends --requests requests back
to back (closed loop); every request is the same prompt, greedy, EOS ignored, exactly
--max-tokens tokens, decoded to text with the tokenizer's stream decoder on both sides (the
server has to, so the in-process side does too). Server clients stream /v1/completions over
httpx (HTTP/1.1 keep-alive, SSE); time to first token (TTFT) is request send -> first chunk
with text. In-process TTFT is request start -> first token decoded. Both sides cap the context at
--max-model-len (default 512; the server flag, and the same search.max_length overlay in
process): og.Engine sizes every sequence's KV cache to it.

Figures per configuration, medians of --repeat runs (in-process and server runs interleaved
so that background load hits both alike): aggregate tokens/s, per-client tokens/s (median
client), TTFT p50/p95, and the ratio server/in-process of aggregate tokens/s. Prints a
table and one JSON line per configuration.

Models (--models): ``tiny`` is the tiny test Qwen3 (hidden 256, 2 layers); ``qwen3-0.6b`` has
Qwen3-0.6B's shape (hidden 1024, 28 layers, 16 heads, 8 KV heads, head dim 128, intermediate
3072) with random weights and the tiny 2,048-token tokenizer; its embedding keeps that
2,048-token vocabulary (not 151,936, see _VOCAB_NOTE). Both are converted with
``onnxruntime_genai.models.builder -p int4 -e cpu`` and cached under
~/.cache/slm-operator/bench-models/ (SLM_BENCH_MODEL_CACHE overrides).

llama.cpp (--engines llamacpp): llama.cpp's own server (llama-server, the llamacpp image's
binary from hack/images.sh llama-server-bin, with the flags the operator renders: API key file,
--parallel = max clients, --ctx-size = --max-model-len x slots, --threads = CPUs, --metrics)
against llama-cpp-python in this process on the same GGUF (Q4_K_M of the same two models, made
with the quantizer's converter and llama_model_quantize, cached beside the ONNX folders). The
high-level llama-cpp-python API runs one sequence at a time, so the in-process side serves the
clients' requests one after another from one Llama (a lock; what llama-cpp-python's own server
does) while llama-server batches its slots: the ratio shows what the server's continuous
batching buys. Both sides: the same prompt, greedy, end-of-generation tokens masked (the
server's ignore_eos; a logits processor in process), exactly --max-tokens tokens, both reuse the
cached prompt prefix (llama-server's cache_prompt, llama-cpp-python's prefix match). Tokens that
render no text (control tokens: the special and <|reserved_N|> ones, 86 of the 2,048) are masked
on both sides too (logit_bias false on the server, the same logits processor in process): the
random-weight qwen3-0.6b otherwise picks <|reserved_11|> from its first token on and streams empty
text, so no chunk carries text and there is no time to first token to measure. The ONNX side is
not masked: its int4 model's greedy tokens on this prompt render text (its server's reader would
stop with the same error otherwise).

Run: bench/serving [--engines onnxruntime llamacpp] [--models tiny qwen3-0.6b] [--clients 1 4 16]
     [--repeat 3] (bench/README.md)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in ("runtime-images/common", "runtime-images/onnxruntime-server", "runtime-images/quantizer"):
    if str(ROOT / _p) not in sys.path:
        sys.path.insert(0, str(ROOT / _p))

MODELS_VERSION = "1"  # bump to rebuild every cached bench model
PROMPT = ("The river runs through the valley and the town sits on its northern bank, where the old "
          "mill still turns when the water is high in spring and")
_VOCAB_NOTE = ("vocabulary 2,048 (the tiny tokenizer's) instead of Qwen3-0.6B's 151,936: a random model "
               "mostly picks ids the tokenizer cannot decode, so the server would stream no text; the "
               "smaller lm_head also makes each token ~25% cheaper than the real model's")


# -- models ----------------------------------------------------------------------------------

def cache_root() -> Path:
    env = os.environ.get("SLM_BENCH_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slm-operator" / "bench-models"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_threads(run: Run, client: Callable[[], None], clients: int) -> Run:
    """Run `client` on `clients` threads at once; sets run.wall (seconds from start to the last join)."""
    workers = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    run.wall = time.perf_counter() - started
    return run


def _build_once(name: str, build) -> Path:
    """Build `name` under the cache with build(tmp_dir) once per machine (locked, renamed into place)."""
    dest = cache_root() / name
    if dest.is_dir():
        return dest
    with _locked(name):
        if dest.is_dir():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_root()))
        try:
            build(tmp)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def qwen3_06b_hf(vocab: int = 2048) -> Path:
    """A random-weight HF folder of Qwen3-0.6B's shape (bf16), vocabulary `vocab`."""
    from slm_runtime import tiny_models as tm

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        spec = dict(tm.REAL_SHAPES["qwen3-0.6b"], vocab=vocab)
        arch = spec.pop("arch")
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tm.model_config(arch, max_positions=4096, **spec),
                                                 dtype=torch.bfloat16)
        model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=3)
        model.save_pretrained(tmp, safe_serialization=True)
        tm._save_tokenizer(tm.train_tokenizer(), tmp)

    return _build_once(f"qwen3-0.6b-v{vocab}-hf-{MODELS_VERSION}-{tm.BUILD_VERSION}", build)


def hf_model(name: str) -> Path:
    """The Hugging Face folder of a bench model: "tiny" or "qwen3-0.6b"."""
    if name == "tiny":
        from slm_runtime.tiny_models import tiny_model

        return tiny_model("qwen3", train_steps=100)  # the ONNX server tests' model
    if name == "qwen3-0.6b":
        return qwen3_06b_hf()
    raise ValueError(f"unknown bench model {name!r}")


def onnx_model(name: str) -> Path:
    """The int4 CPU ONNX folder of a bench model (built once with onnxruntime-genai's builder)."""
    hf = hf_model(name)

    def build(tmp: Path) -> None:
        out = tmp / "model"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                        "-p", "int4", "-e", "cpu", "-c", str(tmp / "cache")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        (tmp / "build-info.json").write_text(json.dumps({"source": str(hf), "seconds": round(
            time.monotonic() - started, 1)}) + "\n")

    return _build_once(f"{hf.name}-int4-cpu", build) / "model"


def gguf_model(name: str, qtype: str = "Q4_K_M") -> Path:
    """The GGUF of a bench model at qtype: llama.cpp's converter (F16) then llama_model_quantize,
    as the quantizer makes it (without its perplexity gate), built once."""
    hf = hf_model(name)

    def build(tmp: Path) -> None:
        from slm_quantizer import gguf

        started = time.monotonic()
        gguf.convert(hf, tmp / "f16.gguf", "f16")
        gguf.quantize(tmp / "f16.gguf", tmp / "model.gguf", qtype)
        (tmp / "f16.gguf").unlink()
        (tmp / "build-info.json").write_text(json.dumps({"source": str(hf), "type": qtype, "seconds": round(
            time.monotonic() - started, 1)}) + "\n")

    return _build_once(f"{hf.name}-gguf-{qtype}", build) / "model.gguf"


# -- measurements ----------------------------------------------------------------------------

@dataclass
class Run:
    """One run of one configuration: C clients x R requests."""
    wall: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    client_rates: list[float] = field(default_factory=list)  # tokens/s of each client
    tokens: int = 0

    def figures(self) -> dict[str, float]:
        ttft = sorted(self.ttfts)
        return {"tok_s": self.tokens / self.wall, "client_tok_s": statistics.median(self.client_rates),
                "ttft_p50_ms": 1000 * _pct(ttft, 50), "ttft_p95_ms": 1000 * _pct(ttft, 95)}


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


class InProcess:
    """onnxruntime-genai in this process, the way the server drives it (without HTTP)."""

    def __init__(self, model_dir: Path, max_model_len: int) -> None:
        import numpy as np
        import onnxruntime_genai as og

        from slm_onnx_server.model import find_model_folder

        self.og = og
        config = og.Config(str(find_model_folder(model_dir)))
        if max_model_len:  # what the server's --max-model-len does: the Engine's KV cache size
            config.overlay(json.dumps({"search": {"max_length": max_model_len}}))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.ids = np.asarray(self.tokenizer.encode(PROMPT), dtype=np.int32)

    def threads(self, clients: int, requests: int, max_tokens: int) -> Run:
        """One thread per client, one og.Generator per request (the server's threads scheduler)."""
        og, run, lock = self.og, Run(), threading.Lock()
        total = len(self.ids) + max_tokens

        def client() -> None:
            began, tokens = time.perf_counter(), 0
            for _ in range(requests):
                start, first = time.perf_counter(), None
                params = og.GeneratorParams(self.model)
                params.set_search_options(max_length=total, min_length=total, do_sample=False)
                gen = og.Generator(self.model, params)
                gen.append_tokens(self.ids)
                stream = self.tokenizer.create_stream()
                while not gen.is_done():
                    gen.generate_next_token()
                    stream.decode(int(gen.get_next_tokens()[0]))
                    tokens += 1
                    if first is None:
                        first = time.perf_counter() - start
                with lock:
                    run.ttfts.append(first or 0.0)
            with lock:
                run.tokens += tokens
                run.client_rates.append(tokens / (time.perf_counter() - began))

        return _run_threads(run, client, clients)

    def engine(self, clients: int, requests: int, max_tokens: int) -> Run:
        """One og.Engine driven from one thread; a client's next request begins when its last one
        finished (closed loop), as the server's engine scheduler sees them."""
        og, run = self.og, Run()
        engine = og.Engine(self.model)
        buffer = engine.create_event_buffer(max(64, 4 * clients))
        live: dict[int, dict[str, Any]] = {}
        left = dict.fromkeys(range(clients), requests)
        began = dict.fromkeys(range(clients), 0.0)
        counts = dict.fromkeys(range(clients), 0)

        def begin(c: int) -> None:
            request = engine.create_request()
            options = og.TurnOptions(request)
            options.set_max_generated_tokens(max_tokens)
            options.set_min_generated_tokens(max_tokens)
            options.set_do_sample(False)
            request.begin_turn(self.ids, options)
            left[c] -= 1
            live[id(request)] = {"client": c, "request": request, "start": time.perf_counter(), "first": None,
                                 "stream": self.tokenizer.create_stream()}

        started = time.perf_counter()
        for c in range(clients):
            began[c] = time.perf_counter()
            begin(c)
        token, finished = int(og.EngineEventFlags.TOKEN), int(og.EngineEventFlags.TURN_FINISHED)
        while live:
            engine.run(buffer)
            for i in range(len(buffer)):
                event = buffer[i]
                entry = live.get(id(event.request))
                if entry is None:
                    continue
                flags = int(event.flags)
                if flags & token:
                    entry["stream"].decode(int(event.token))
                    counts[entry["client"]] += 1
                    if entry["first"] is None:
                        entry["first"] = time.perf_counter() - entry["start"]
                if flags & finished:
                    c = entry["client"]
                    run.ttfts.append(entry["first"] or 0.0)
                    del live[id(event.request)]
                    if left[c]:
                        begin(c)
                    else:
                        run.client_rates.append(counts[c] / (time.perf_counter() - began[c]))
        run.wall = time.perf_counter() - started
        run.tokens = sum(counts.values())
        return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The real server as a subprocess on 127.0.0.1."""

    KEY = "bench-key-0123456789"

    def __init__(self, model_dir: Path, scheduler: str, slots: int, extra: list[str]) -> None:
        import httpx

        self.body_extra: dict[str, Any] = {}  # added to every request's JSON body
        self.tmp = Path(tempfile.mkdtemp(prefix="slm-bench-serving-"))
        key_file = self.tmp / "api-key"
        key_file.write_text(self.KEY + "\n")
        key_file.chmod(0o600)
        self.base = f"http://127.0.0.1:{_free_port()}"
        cmd = [sys.executable, "-m", "slm_onnx_server", "--model-dir", str(model_dir), "--served-model-name",
               "bench", "--host", "127.0.0.1", "--port", self.base.rsplit(":", 1)[1], "--api-key-file",
               str(key_file), "--scheduler", scheduler, "--max-concurrency", str(slots), "--max-queue", "256",
               "--log-level", "warning", *extra]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT / "runtime-images/onnxruntime-server"), str(ROOT / "runtime-images/common"),
             os.environ.get("PYTHONPATH", "")]))
        with open(self.tmp / "server.log", "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {(self.tmp / 'server.log').read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server not ready in 300 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, clients: int, requests: int, max_tokens: int) -> Run:
        return asyncio.run(self._run(clients, requests, max_tokens))

    async def _run(self, clients: int, requests: int, max_tokens: int) -> Run:
        import httpx

        body = {"model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, **self.body_extra}
        run = Run()
        limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

        async def one(c: httpx.AsyncClient) -> int:
            start, first, tokens, chunks, last = time.perf_counter(), None, None, 0, ""
            async with c.stream("POST", "/v1/completions", json=body) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    chunks, last = chunks + 1, data
                    # Parse only what is needed: the first chunk with text, and the usage chunk.
                    if first is None and '"text":"' in data and '"text":""' not in data:
                        first = time.perf_counter() - start
                    if '"usage":{' in data:
                        tokens = json.loads(data)["usage"]["completion_tokens"]
            if tokens is None or first is None:
                missing = " and ".join(m for m, gone in (("text", first is None), ("usage", tokens is None)) if gone)
                raise RuntimeError(
                    f"the server's /v1/completions stream ended without {missing} after {chunks} data chunks "
                    f"(last: {last[:300]!r}); a chunk with text is needed for the time to first token and the "
                    "usage chunk for the token count: if every chunk's text is empty the model generated only "
                    "tokens that render no text, mask them (body_extra logit_bias)")
            run.ttfts.append(first)
            return tokens

        async def client(c: httpx.AsyncClient) -> None:
            began, tokens = time.perf_counter(), 0
            for _ in range(requests):
                tokens += await one(c)
            run.tokens += tokens
            run.client_rates.append(tokens / (time.perf_counter() - began))

        async with httpx.AsyncClient(base_url=self.base, headers={"Authorization": f"Bearer {self.KEY}"},
                                     timeout=600, limits=limits) as c:
            await one(c)  # connection and first-request warm-up
            run.ttfts.clear()
            started = time.perf_counter()
            await asyncio.gather(*(client(c) for _ in range(clients)))
            run.wall = time.perf_counter() - started
        return run


class LlamaInProcess:
    """llama-cpp-python on the GGUF in this process: one Llama, requests one at a time.

    `masked` holds the token ids never generated, on this side and the server's: the vocabulary's
    tokens that render no text (detokenized without special tokens to b""; the end-of-generation
    ones are among them, which is ignore_eos).
    """

    def __init__(self, gguf: Path, max_model_len: int) -> None:
        import llama_cpp
        import numpy as np

        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=max_model_len, n_batch=max_model_len,
                                   n_threads=os.cpu_count() or 1, seed=0, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        eog = {t for t in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        silent = {t for t in range(self.llm.n_vocab()) if self.llm.detokenize([t]) == b""}
        self.masked = np.array(sorted(eog | silent), dtype=np.int64)
        if len(self.masked) >= self.llm.n_vocab():
            raise RuntimeError(f"{gguf}: every token of the vocabulary renders no text; nothing to benchmark")
        self.lock = threading.Lock()

    def run(self, clients: int, requests: int, max_tokens: int) -> Run:
        import llama_cpp

        run, counter = Run(), threading.Lock()

        def client() -> None:
            began, tokens = time.perf_counter(), 0
            for _ in range(requests):
                start, first, made = time.perf_counter(), None, [0]

                def mask(_ids, scores, made=made):  # the server's ignore_eos and logit_bias
                    scores[self.masked] = -float("inf")
                    made[0] += 1
                    return scores

                with self.lock:
                    for chunk in self.llm.create_completion(
                            PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True,
                            logits_processor=llama_cpp.LogitsProcessorList([mask])):
                        if first is None and chunk["choices"][0]["text"]:
                            first = time.perf_counter() - start
                tokens += made[0]
                if first is None:
                    raise RuntimeError(f"llama-cpp-python made {made[0]} tokens, none with text "
                                       "(see LlamaInProcess.masked)")
                with counter:
                    run.ttfts.append(first)
            with counter:
                run.tokens += tokens
                run.client_rates.append(tokens / (time.perf_counter() - began))

        return _run_threads(run, client, clients)


def llama_server_binary() -> Path:
    """hack/images.sh llama-server-bin: the llamacpp image's binary (built once per version)."""
    done = subprocess.run(["bash", str(ROOT / "hack" / "images.sh"), "llama-server-bin"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"hack/images.sh llama-server-bin failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "llama-server"


class LlamaServerProcess(ServerProcess):
    """llama-server as a subprocess on 127.0.0.1, flags as the operator's llamacpp engine renders."""

    def __init__(self, gguf: Path, slots: int, max_model_len: int, extra: list[str],
                 masked: list[int] | None = None) -> None:
        """`masked`: token ids the server never generates (logit_bias false on every request)."""
        import httpx

        self.body_extra = {"logit_bias": [[t, False] for t in masked]} if masked else {}
        self.tmp = Path(tempfile.mkdtemp(prefix="slm-bench-llama-server-"))
        key_file = self.tmp / "api-key"
        key_file.write_text(self.KEY + "\n")
        key_file.chmod(0o600)
        self.base = f"http://127.0.0.1:{_free_port()}"
        cmd = [str(llama_server_binary()), "--model", str(gguf), "--host", "127.0.0.1", "--port",
               self.base.rsplit(":", 1)[1], "--api-key-file", str(key_file), "--ctx-size", str(max_model_len * slots),
               "--parallel", str(slots), "--threads", str(os.cpu_count() or 1), "--metrics", "--alias", "bench",
               "--no-webui", *extra]
        with open(self.tmp / "server.log", "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {self.proc.returncode}: "
                                   f"{(self.tmp / 'server.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("llama-server not ready in 300 s")


def bench_llamacpp(name: str, clients: list[int], requests: int, max_tokens: int, repeat: int, max_model_len: int,
                   server_args: list[str]) -> list[dict[str, Any]]:
    gguf = gguf_model(name)
    local = LlamaInProcess(gguf, max_model_len)
    local.run(1, 1, 8)  # warm-up
    server = LlamaServerProcess(gguf, max(clients), max_model_len, server_args, [int(t) for t in local.masked])
    runs: dict[int, dict[str, list[Run]]] = {c: {"inproc": [], "server": []} for c in clients}
    loads = []
    try:
        for _ in range(repeat):
            for c in clients:  # interleaved, so that changes in background load hit both sides
                runs[c]["inproc"].append(local.run(c, requests, max_tokens))
                runs[c]["server"].append(server.run(c, requests, max_tokens))
                loads.append(os.getloadavg()[0])
    finally:
        server.stop()
    rows = []
    for c in clients:
        inproc, srv = _median_figures(runs[c]["inproc"]), _median_figures(runs[c]["server"])
        ratios = [s.tokens / s.wall / (i.tokens / i.wall) for s, i in zip(runs[c]["server"], runs[c]["inproc"],
                                                                          strict=True)]
        row = {"bench": "serving", "engine": "llamacpp", "model": name, "mode": "llama-server", "format": "Q4_K_M",
               "clients": c, "requests_per_client": requests, "max_tokens": max_tokens,
               "max_model_len": max_model_len, "repeat": repeat, "masked_tokens": len(local.masked),
               "inproc": inproc, "server": srv,
               "ratio": round(srv["tok_s"] / inproc["tok_s"], 3), "ratio_runs": [round(r, 3) for r in ratios],
               "loadavg_1m": round(statistics.median(loads), 2), "cpus": os.cpu_count()}
        if name == "qwen3-0.6b":
            row["note"] = _VOCAB_NOTE
        print(json.dumps(row), flush=True)
        rows.append(row)
    del local
    return rows


# -- driver ----------------------------------------------------------------------------------

def _median_figures(runs: list[Run]) -> dict[str, float]:
    figs = [r.figures() for r in runs]
    return {k: round(statistics.median(f[k] for f in figs), 2) for k in figs[0]}


# Per model: (max_tokens, requests per client); the tiny model needs more tokens to time anything.
DEFAULT_WORK = {"tiny": (256, 4), "qwen3-0.6b": (32, 1)}


def bench_model(name: str, modes: list[str], clients: list[int], requests: int, max_tokens: int, repeat: int,
                max_model_len: int, server_args: list[str]) -> list[dict[str, Any]]:
    model_dir = onnx_model(name)
    local = InProcess(model_dir, max_model_len)
    local.threads(1, 1, 8)  # warm-up: first session run allocates
    local.engine(1, 1, 8)
    rows = []
    for mode in modes:
        extra = [*(["--max-model-len", str(max_model_len)] if max_model_len else []), *server_args]
        server = ServerProcess(model_dir, mode, max(clients), extra)
        try:
            runs: dict[int, dict[str, list[Run]]] = {c: {"inproc": [], "server": []} for c in clients}
            loads = []
            for _ in range(repeat):
                for c in clients:  # interleaved, so that changes in background load hit both sides
                    runs[c]["inproc"].append(getattr(local, mode)(c, requests, max_tokens))
                    runs[c]["server"].append(server.run(c, requests, max_tokens))
                    loads.append(os.getloadavg()[0])
        finally:
            server.stop()
        for c in clients:
            inproc, srv = _median_figures(runs[c]["inproc"]), _median_figures(runs[c]["server"])
            ratios = [s.tokens / s.wall / (i.tokens / i.wall)
                      for s, i in zip(runs[c]["server"], runs[c]["inproc"], strict=True)]
            row = {"bench": "serving", "model": name, "mode": mode, "clients": c, "requests_per_client": requests,
                   "max_tokens": max_tokens, "max_model_len": max_model_len, "repeat": repeat,
                   "inproc": inproc, "server": srv, "ratio": round(srv["tok_s"] / inproc["tok_s"], 3),
                   "ratio_runs": [round(r, 3) for r in ratios],
                   "loadavg_1m": round(statistics.median(loads), 2), "cpus": os.cpu_count()}
            if name == "qwen3-0.6b":
                row["note"] = _VOCAB_NOTE
            print(json.dumps(row), flush=True)
            rows.append(row)
    del local
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["model", "engine mode", "clients", "in-proc tok/s", "server tok/s", "server/in-proc",
            "in-proc tok/s/client", "server tok/s/client", "in-proc TTFT p50/p95 ms", "server TTFT p50/p95 ms", "load"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        i, s = r["inproc"], r["server"]
        print(f"| {r['model']} | {r.get('engine', 'onnxruntime')} {r['mode']} | {r['clients']} | "
              f"{i['tok_s']:.1f} | {s['tok_s']:.1f} | "
              f"{r['ratio']:.2f} | {i['client_tok_s']:.1f} | {s['client_tok_s']:.1f} | "
              f"{i['ttft_p50_ms']:.0f} / {i['ttft_p95_ms']:.0f} | {s['ttft_p50_ms']:.0f} / {s['ttft_p95_ms']:.0f} | "
              f"{r['loadavg_1m']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "llamacpp"], choices=["onnxruntime", "llamacpp"])
    ap.add_argument("--models", nargs="+", default=["tiny", "qwen3-0.6b"], choices=sorted(DEFAULT_WORK))
    ap.add_argument("--modes", nargs="+", default=["engine", "threads"], choices=["engine", "threads"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, help="requests per client, back to back (default: per model)")
    ap.add_argument("--max-tokens", type=int, help="tokens per request (default: per model)")
    ap.add_argument("--max-model-len", type=int, default=512,
                    help="context cap for both sides (server --max-model-len; 0: the model's own)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra server flag (repeatable; given to every server of --engines)")
    a = ap.parse_args(argv)
    rows = []
    for name in a.models:
        tokens, requests = DEFAULT_WORK[name]
        if "onnxruntime" in a.engines:
            rows += bench_model(name, a.modes, a.clients, a.requests or requests, a.max_tokens or tokens, a.repeat,
                                a.max_model_len, a.server_arg)
        if "llamacpp" in a.engines:
            rows += bench_llamacpp(name, a.clients, a.requests or requests, a.max_tokens or tokens, a.repeat,
                                   a.max_model_len, a.server_arg)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
