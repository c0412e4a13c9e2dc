"""ONNX int4: onnxruntime-genai's builder against Olive (its Gptq pass, then the builder).

For each model (--models) and tool (--tools), `python -m slm_quantizer --format onnx --type int4
--tool TOOL` on the same HF folder, with the quality gate out of the way (it is reported, not
enforced). Measured per run (bench/quantize.py's `measure`): wall time, peak RSS of the whole
process tree (sampled every 50 ms) and of the largest single process; from the manifest: the
ONNX size (model.onnx + model.onnx.data), perplexity of the source (HF float32) and of the
artifact (onnxruntime-genai) on the built-in held-out text, and the change in percent.
Medians of --repeat runs; one JSON line per run, then a Markdown table.

Models: tiny-qwen3 / tiny-phi3 (the test models: trained 50 steps, hidden 256, 2 layers) and
qwen3-0.6b (Qwen3-0.6B's shape with random weights, see bench/serving.py: the perplexity of
random weights means nothing, time and memory do) and qwen3-0.6b-2l (the same width and
vocabulary, 2 layers: per-layer cost at the real width without 28 layers of GPTQ).

Run: bench/quantization_onnx_tools [--models tiny-qwen3 tiny-phi3] [--tools builder olive] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize import _env, measure  # also puts the runtime packages on sys.path

TOOLS = ("builder", "olive")


def hf_model(name: str) -> Path:
    """The HF folder of a bench model."""
    if name.startswith("tiny-"):
        from slm_runtime.tiny_models import tiny_model

        return tiny_model(name.removeprefix("tiny-"), train_steps=50)
    if name.endswith("-2l"):  # the real width (and vocabulary) at 2 layers: cheaper, same per-layer work
        from slm_runtime.tiny_models import random_model

        out = Path.home() / ".cache" / "slm-operator" / "bench" / name
        if not (out / "config.json").is_file():
            random_model(name.removesuffix("-2l"), out, layers=2)
        return out
    from serving import hf_model as serving_model

    return serving_model(name)


def run_one(model: Path, tool: str, work: Path) -> dict[str, Any]:
    """One quantizer run; the figures of one JSON line."""
    out = work / "models" / "artifact"
    cmd = [sys.executable, "-m", "slm_quantizer", "--source", str(model), "--format", "onnx", "--type", "int4",
           "--tool", tool, "--target", "cpu", "--output", str(out), "--max-ppl-increase-pct", "1e9",
           "--termination-log", str(work / "termination-log")]
    figures = measure(cmd, _env())
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = sum(f["size"] for f in manifest["files"] if f["path"].startswith("model.onnx"))
    ppl = manifest["perplexity"]
    return {**figures, "onnx_bytes": onnx, "source_bytes": manifest["sourceBytes"],
            "ppl_source": ppl["reference"], "ppl_int4": ppl["quantized"], "ppl_change_pct": ppl["increasePct"],
            "timings": manifest["timings"]}


def bench(models: list[str], tools: list[str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        model = hf_model(name)
        for tool in tools:
            runs = []
            for i in range(repeat):
                with tempfile.TemporaryDirectory(prefix="slm-bench-onnx-") as tmp:
                    try:
                        r = run_one(model, tool, Path(tmp))
                    except RuntimeError as e:  # the tool refused the model: a row saying so
                        r = {"error": str(e).strip().splitlines()[-1][:300]}
                r.update(model=name, tool=tool, run=i, load1=round(os.getloadavg()[0], 2))
                print(json.dumps(r), flush=True)
                runs.append(r)
            if any("error" in r for r in runs):
                rows.append({"model": name, "tool": tool, "error": runs[0].get("error", "failed")})
                continue
            med = {k: round(statistics.median(r[k] for r in runs), 3)
                   for k in ("wall_s", "peak_tree_mib", "max_process_mib", "ppl_change_pct")}
            rows.append({"model": name, "tool": tool, **med, "onnx_bytes": runs[0]["onnx_bytes"],
                         "ppl_source": runs[0]["ppl_source"], "ppl_int4": runs[0]["ppl_int4"],
                         "load1": runs[-1]["load1"], "repeat": repeat})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| model | tool | wall s | peak tree MiB | ONNX MiB | ppl source | ppl int4 | change % | load1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['tool']} | failed: {r['error']} |||||||")
            continue
        print(f"| {r['model']} | {r['tool']} | {r['wall_s']:.1f} | {r['peak_tree_mib']:.0f} | "
              f"{r['onnx_bytes'] / 2**20:.2f} | {r['ppl_source']:.2f} | {r['ppl_int4']:.2f} | "
              f"{r['ppl_change_pct']:+.3f} | {r['load1']} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny-qwen3", "tiny-phi3"])
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    print_table(bench(args.models, args.tools, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
