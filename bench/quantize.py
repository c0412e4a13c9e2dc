"""Quantization benchmark: `python -m slm_quantizer` against the underlying tools run directly.

For each model (--models) and path (--paths: GGUF Q8_0, Q4_K_M, Q5_K_M; ONNX int4):

- ``quantizer``: ``python -m slm_quantizer --source <folder> --format ... --type ...`` (convert,
  quantize, verify with the perplexity gate, manifest with sha256 of every file, atomic rename);
  the gate is set out of the way (--max-ppl-increase-pct 1e9): this measures cost, not quality;
- ``direct``: only the tools on the same input: llama.cpp's convert_hf_to_gguf.py to F16
  (through the quantizer's 20-line tokenizer-name shim, without which the converter refuses
  the self-trained tokenizer) then llama_model_quantize (llama-cpp-python's ctypes binding, a
  second process); for ONNX, ``python -m onnxruntime_genai.models.builder -p int4 -e cpu``.

Measured per run: wall time, peak memory of the whole child process tree (sum of RSS of the
child and its descendants, sampled every 50 ms from /proc) and the largest single process's
peak (ru_maxrss from wait4), output size, and output size against the F16 GGUF of the same
model (the 16-bit size; the tiny model's own safetensors are float32). The quantizer's own
stage timings (convert / quantize / verify) come from its manifest. Medians of --repeat runs;
a table and one JSON line per configuration.

Models: ``tiny`` (the test Qwen3, hidden 256, 2 layers) and ``qwen3-0.6b`` (Qwen3-0.6B's shape,
random weights, 2,048-token vocabulary; see bench/serving.py).

Run: bench/quantize [--models tiny qwen3-0.6b] [--paths Q8_0 Q4_K_M Q5_K_M int4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import ROOT, hf_model  # also puts the runtime packages on sys.path

PATHS = {"Q8_0": "gguf", "Q4_K_M": "gguf", "Q5_K_M": "gguf", "int4": "onnx"}
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants now."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run cmd; wall seconds, peak tree RSS (MiB), largest single-process peak RSS (MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]}... exited {proc.returncode}:\n{err[-2000:]}")
    return {"wall_s": wall, "peak_tree_mib": peak / 2**20, "max_process_mib": usage.ru_maxrss / 1024}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _env() -> dict[str, str]:
    paths = [str(ROOT / p) for p in ("runtime-images/common", "runtime-images/quantizer")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))


def run_quantizer(model: Path, qtype: str, work: Path) -> tuple[dict[str, Any], int, dict[str, float]]:
    out = work / "models" / "artifact"
    cmd = [sys.executable, "-m", "slm_quantizer", "--source", str(model), "--format", PATHS[qtype], "--type", qtype,
           "--target", "cpu", "--output", str(out), "--max-ppl-increase-pct", "1e9",
           "--termination-log", str(work / "termination-log")]
    figures = measure(cmd, _env())
    manifest = json.loads((out / "manifest.json").read_text())
    main = [f["path"] for f in manifest["files"] if f["path"].endswith((".gguf", ".onnx.data", ".onnx"))]
    size = sum(f["size"] for f in manifest["files"] if f["path"] in main)
    return figures, size, manifest.get("timings", {})


_QUANTIZE = """
import sys, llama_cpp
from slm_quantizer.gguf import FTYPES
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = FTYPES[sys.argv[3]]
params.nthread = __import__("os").cpu_count() or 1
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def run_direct(model: Path, qtype: str, work: Path) -> tuple[dict[str, Any], int, int | None]:
    """The tools alone. Returns figures, output bytes, and the F16 GGUF's bytes (GGUF paths)."""
    if PATHS[qtype] == "onnx":
        out = work / "onnx"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out),
               "-p", "int4", "-e", "cpu", "-c", str(work / "cache")]
        figures = measure(cmd, _env())
        return figures, sum(_size(p) for p in out.glob("model.onnx*")), None
    from slm_quantizer.gguf import _CONVERT_WRAPPER, converter_dir

    f16, out = work / "f16.gguf", work / "model.gguf"
    convert = [sys.executable, "-c", _CONVERT_WRAPPER, str(converter_dir()), str(model), "--outfile", str(f16),
               "--outtype", "f16", "--model-name", "model"]
    quantize = [sys.executable, "-c", _QUANTIZE, str(f16), str(out), qtype]
    # One child (a shell) runs both steps, so the tree's peak covers the whole path.
    script = f"{shlex.join(convert)} >/dev/null && {shlex.join(quantize)}"
    figures = measure(["bash", "-c", script], _env())
    return figures, _size(out), _size(f16)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def bench(models: list[str], qtypes: list[str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        model = hf_model(name)
        source_bytes = sum(_size(p) for p in model.glob("*.safetensors"))
        f16_bytes: int | None = None
        for qtype in sorted(qtypes, key=lambda q: PATHS[q]):  # GGUF first: its F16 is the 16-bit reference
            runs: dict[str, list[dict[str, Any]]] = {"quantizer": [], "direct": []}
            sizes: dict[str, int] = {}
            stages: list[dict[str, float]] = []
            loads = []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory(prefix="slm-bench-quantize-") as tmp:
                    work = Path(tmp)
                    (work / "q").mkdir()
                    (work / "d").mkdir()
                    figures, sizes["quantizer"], timings = run_quantizer(model, qtype, work / "q")
                    runs["quantizer"].append(figures)
                    stages.append(timings)
                    figures, sizes["direct"], f16 = run_direct(model, qtype, work / "d")
                    runs["direct"].append(figures)
                    f16_bytes = f16 or f16_bytes
                    loads.append(os.getloadavg()[0])
            row: dict[str, Any] = {"bench": "quantize", "model": name, "path": f"{PATHS[qtype]} {qtype}",
                                   "repeat": repeat, "source_bytes": source_bytes, "f16_gguf_bytes": f16_bytes}
            for side, rs in runs.items():
                row[side] = {k: _median([r[k] for r in rs]) for k in rs[0]}
                row[side]["bytes"] = sizes[side]
                if f16_bytes:
                    row[side]["vs_f16"] = round(sizes[side] / f16_bytes, 3)
            row["quantizer_stages_s"] = {k: _median([s.get(k, 0.0) for s in stages]) for k in stages[0]}
            row["wall_ratio"] = round(row["quantizer"]["wall_s"] / row["direct"]["wall_s"], 2)
            row["loadavg_1m"] = round(statistics.median(loads), 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["model", "path", "quantizer s", "direct s", "ratio", "quantizer stages s (convert/quantize/verify)",
            "quantizer peak MiB (tree / process)", "direct peak MiB (tree / process)", "output MiB", "vs F16",
            "load"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        q, d, st = r["quantizer"], r["direct"], r["quantizer_stages_s"]
        vs = f"{d['vs_f16']:.3f}" if "vs_f16" in d else "-"
        print(f"| {r['model']} | {r['path']} | {q['wall_s']:.1f} | {d['wall_s']:.1f} | {r['wall_ratio']:.2f} | "
              f"{st.get('convert', 0):.1f} / {st.get('quantize', 0):.1f} / {st.get('verify', 0):.1f} | "
              f"{q['peak_tree_mib']:.0f} / {q['max_process_mib']:.0f} | "
              f"{d['peak_tree_mib']:.0f} / {d['max_process_mib']:.0f} | {d['bytes'] / 2**20:.1f} | {vs} | "
              f"{r['loadavg_1m']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "qwen3-0.6b"], choices=["tiny", "qwen3-0.6b"])
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    if shutil.which("bash") is None:
        raise SystemExit("bash is needed")
    print_table(bench(a.models, a.paths, a.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
