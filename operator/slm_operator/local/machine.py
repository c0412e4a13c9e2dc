"""This machine's memory and GPUs, and the fit check `slmctl up` makes with them.

The check is `slmctl estimate` itself: the same autoconfigure() call with the same inputs the
operator's sizing uses (engine, format/type, context, the engine's concurrency) plus this
machine's RAM as --node-memory, so a refusal quotes the numbers estimate prints and names the
command that reproduces them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from slm_operator import api
from slm_operator.resolve import Resolved
from slm_operator.sizing.autoconfig import autoconfigure
from slm_operator.sizing.catalog import GIB, lookup_model
from slm_operator.sizing.errors import SizingError


@dataclass(frozen=True)
class Machine:
    """memory_bytes: MemTotal from /proc/meminfo; gpus: (name, memory bytes) from nvidia-smi."""

    memory_bytes: int
    gpus: tuple[tuple[str, int], ...] = ()


def detect() -> Machine:
    """This machine's RAM (MemTotal) and NVIDIA GPUs (none when nvidia-smi is absent or fails)."""
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024  # kB in /proc/meminfo
                break
    gpus: list[tuple[str, int]] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            for row in out.strip().splitlines():
                name, _, mib = row.rpartition(",")
                gpus.append((name.strip(), int(float(mib)) << 20))
        except (subprocess.SubprocessError, ValueError, OSError):
            gpus = []
    return Machine(mem, tuple(gpus))


def concurrency(spec: api.SLMDeploymentSpec, engine: str) -> int:
    """What the engine allocates up front (the operator's sizing uses the same numbers)."""
    e = spec.engine
    if engine == "ollama":
        return e.ollama.num_parallel if e.ollama else 4
    if engine == "onnxruntime":
        return e.onnxruntime.workers if e.onnxruntime else 4
    return 1


def estimate_command(spec: api.SLMDeploymentSpec, r: Resolved, node_memory_gib: float) -> str:
    """The `slmctl estimate` line that gives the same numbers as fit_problem()."""
    return (f"slmctl estimate {spec.model.source} --quant {r.format}:{r.qtype} --engine {r.engine} --cpu "
            f"--context {r.context_length} --concurrency {concurrency(spec, r.engine)} "
            f"--node-memory {node_memory_gib:g}")


def fit_problem(spec: api.SLMDeploymentSpec, r: Resolved, machine: Machine) -> str | None:
    """Why this resolved deployment cannot run on this machine, or None.

    GPU deployments need an NVIDIA GPU here; CPU deployments of catalog models must fit the
    machine's RAM by the sizing estimate (models outside the catalog are not sized, as in the
    cluster: the caller prints r.reason)."""
    if r.gpu_count > 0 and len(machine.gpus) < r.gpu_count:
        have = f"{len(machine.gpus)} ({', '.join(g[0] for g in machine.gpus)})" if machine.gpus else \
            "none (nvidia-smi not found or it lists no GPU)"
        return (f"resources.gpu.count: {r.gpu_count} GPU(s) asked, this machine has {have}; set "
                "resources.gpu.count: 0 (and engine.name onnxruntime or ollama) to serve on CPU here")
    facts = lookup_model(spec.model.source)
    if facts is None or r.gpu_count > 0:
        return None
    node_gib = round(machine.memory_bytes / GIB, 1)
    try:
        d = autoconfigure(facts, engine=r.engine, quant_format=r.format, quant_type=r.qtype, cpu_only=True,
                          context=r.context_length, concurrency=concurrency(spec, r.engine),
                          node_memory_bytes=int(node_gib * GIB))
    except SizingError as e:
        return f"{e.field}: {e}"
    if d.fits:
        return None
    return (f"spec: does not fit this machine ({node_gib:g} GiB RAM): {d.reason} "
            f"Same numbers: {estimate_command(spec, r, node_gib)}")
