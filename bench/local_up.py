"""Time from `slmctl up` to the first answer on this machine, cold and warm.

A tiny Qwen3-architecture model (trained once, cached) is published on the local hub
(e2e/hubserver.py, 127.0.0.1). For each engine asked for, in a fresh $SLM_HOME:

- cold: `slmctl up` (a new process, as a user types it) with an empty state folder: download,
  quantize, verify, start the engine; then chat completions until one answers;
- warm (repeated): `slmctl down`, then `slmctl up` again: the artifact is reused (no
  quantizer), the engine starts and loads it; then the first answer.

Figures per run: up_s (the `slmctl up` process, until it printed ready and exited),
first_answer_s (`up` started -> first completion answered). Goal: warm under 10 s.
Prints one JSON line per run, then a Markdown table.

    bench/local_up [--engine onnxruntime ollama] [--warm 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from e2e.hubserver import HubServer  # noqa: E402

REPO = "slm-e2e/tiny-qwen3"
FORMATS = {"onnxruntime": ("onnx", "int4"), "ollama": ("gguf", "Q8_0")}
SLMCTL = [sys.executable, "-c", "from slm_operator.cli import app; app()"]


def manifest(name: str, engine: str, hub_url: str, revision: str) -> str:
    import yaml

    fmt, qtype = FORMATS[engine]
    return yaml.safe_dump({
        "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": name},
        "spec": {"model": {"source": f"hf://{REPO}", "revision": revision, "hub": {"endpoint": hub_url},
                           "contextLength": 512},
                 "quantization": {"format": fmt, "type": qtype}, "engine": {"name": engine},
                 "resources": {"cpu": "1", "memory": "2Gi"}}})


def first_answer(url: str, key: str, deadline_s: float = 120) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)
    end = time.monotonic() + deadline_s
    while True:
        try:
            client.chat.completions.create(model="tiny-qwen3", messages=[{"role": "user", "content": "The baker"}],
                                           max_tokens=8, temperature=0)
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def one_run(name: str, path: Path, env: dict[str, str], home: Path) -> dict[str, float]:
    t0 = time.monotonic()
    done = subprocess.run([*SLMCTL, "up", "-f", str(path), "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    up_s = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"slmctl up failed:\n{done.stdout}\n{done.stderr}")
    rec = json.loads((home / name / "run.json").read_text())
    first_answer(rec["url"], Path(rec["apiKeyFile"]).read_text().strip())
    return {"up_s": round(up_s, 2), "first_answer_s": round(time.monotonic() - t0, 2),
            "quantize_s": rec.get("quantizeSeconds", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", nargs="+", default=["onnxruntime"], choices=sorted(FORMATS))
    ap.add_argument("--warm", type=int, default=3, help="warm runs per engine")
    args = ap.parse_args()
    from slm_runtime.tiny_models import tiny_model

    rows: list[dict[str, Any]] = []
    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))
    with HubServer(host="127.0.0.1", port=0) as hub, tempfile.TemporaryDirectory(prefix="slm-bench-") as tmp:
        revision = hub.add_repo(REPO, tiny_model("qwen3", train_steps=steps))
        home = Path(tmp) / "home"
        env = {**os.environ, "SLM_HOME": str(home)}
        for engine in args.engine:
            name = f"bench-{engine}"
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(manifest(name, engine, hub.url, revision))
            for i in range(1 + args.warm):
                kind = "cold" if i == 0 else "warm"
                try:
                    fig = one_run(name, path, env, home)
                finally:
                    subprocess.run([*SLMCTL, "down", name], env=env, capture_output=True, timeout=120, check=False)
                row = {"engine": engine, "run": kind, **fig}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| engine | run | `slmctl up` s | up -> first answer s | quantize s |")
    print("| --- | --- | --- | --- | --- |")
    for engine in args.engine:
        for kind in ("cold", "warm"):
            rs = [r for r in rows if r["engine"] == engine and r["run"] == kind]
            if rs:
                med = {k: statistics.median(r[k] for r in rs) for k in ("up_s", "first_answer_s", "quantize_s")}
                label = kind if kind == "cold" else f"warm (median of {len(rs)})"
                print(f"| {engine} | {label} | {med['up_s']:.1f} | {med['first_answer_s']:.1f} "
                      f"| {med['quantize_s']:.1f} |")
    print(f"\nmachine: {os.cpu_count()} CPUs; goal: warm first answer under 10 s")


if __name__ == "__main__":
    main()
