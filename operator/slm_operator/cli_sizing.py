"""`slmctl estimate` and `slmctl models`: the sizing commands, registered onto the main CLI.

    from slm_operator.cli_sizing import register
    register(app)   # app: typer.Typer

Exit status: 0 when an estimate was made (whether or not it fits: read "fits"), 1 when the
inputs cannot be sized (unknown model or GPU, invalid quantization), with the reason on
stderr.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from slm_operator import engines
from slm_operator.engines.table import ENGINE_NAMES
from slm_operator.sizing import catalog, formats
from slm_operator.sizing.autoconfig import SizingDecision, autoconfigure
from slm_operator.sizing.errors import SizingError
from slm_operator.sizing.estimate import gib
from slm_operator.sizing.quant import parse_quant

GIB = catalog.GIB


def _parse_gpu(value: str) -> tuple[str, int | None]:
    product, _, count = value.partition(":")
    if count and not count.isdigit():
        raise SizingError(f"--gpu takes PRODUCT[:COUNT], e.g. NVIDIA-L4:2; got {value!r}.")
    return product, int(count) if count else None


def decision_json(d: SizingDecision) -> dict[str, Any]:
    """The flat JSON document `slmctl estimate -o json` prints."""
    e = d.estimate
    return {
        "model": d.model_id, "name": d.model_name, "tier": d.tier, "params": d.params,
        "engine": d.engine, "quantization": d.quantization_label,
        "quant_format": d.quant_format, "quant_type": d.quant_type,
        "device": d.device, "gpu_product": d.gpu_product, "gpu_count": d.gpu_count,
        "context": d.context, "concurrency": d.concurrency,
        "weights_bytes": e.weights_bytes, "kv_cache_bytes": e.kv_cache_bytes,
        "overhead_bytes": e.overhead_bytes, "total_bytes": e.total_bytes,
        "per_device_bytes": e.per_device_bytes, "capacity_bytes": d.capacity_bytes,
        "overheads": e.overheads, "kv_bytes_per_token": e.kv_bytes_per_token,
        "fits": d.fits, "checked": d.checked, "reason": d.reason,
        "recommendation": d.recommendation,
        "alternative": (None if d.alternative is None else
                        {"quant_format": d.alternative[0], "quant_type": d.alternative[1],
                         "gpu_count": d.alternative[2]}),
        # A section per engine that takes a GPU memory budget (vLLM): its flags, when it was chosen.
        **{e.row.name: ({"max_model_len": d.vllm_max_model_len,
                         "gpu_memory_utilization": d.vllm_gpu_memory_utilization}
                        if d.engine == e.row.name else None)
           for e in engines.all_engines() if e.gpu_memory_utilization},
        "resources": d.resources.to_kubernetes(),
        "storage_bytes": d.storage_bytes,
    }


def _estimate_table(d: SizingDecision) -> Table:
    e = d.estimate
    t = Table(title=f"{d.model_name} — will it fit?", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    hw = "CPU" if d.device == "cpu" else f"{d.gpu_count} x {d.gpu_product or 'GPU (product not named)'}"
    t.add_row("Model", f"{d.model_id} ({d.params / 1e9:.2f}B parameters, tier {d.tier})")
    t.add_row("Engine", d.engine)
    t.add_row("Quantization", d.quantization_label)
    t.add_row("Hardware", hw)
    t.add_row("Context", f"{d.context} tokens x {d.concurrency} concurrent sequence(s)")
    t.add_row("Weights", gib(e.weights_bytes))
    t.add_row("KV cache", gib(e.kv_cache_bytes))
    parts = ", ".join(f"{k.replace('_', ' ')} {gib(v)}" for k, v in e.overheads.items())
    t.add_row("Engine overhead", f"{gib(e.overhead_bytes)} ({parts}{' per GPU' if e.tensor_parallel > 1 else ''})")
    per = " per GPU" if d.device == "gpu" else ""
    t.add_row("Total", f"{gib(e.per_device_bytes)}{per}")
    if d.capacity_bytes is not None:
        t.add_row("Usable", f"{gib(d.capacity_bytes)}{per}")
    fits = "[green]yes[/green]" if d.fits else "[red]no[/red]"
    t.add_row("Fits", fits if d.checked else "not checked (name --gpu PRODUCT or --node-memory)")
    if d.vllm_max_model_len is not None:
        t.add_row("vLLM", f"--max-model-len {d.vllm_max_model_len} "
                          f"--gpu-memory-utilization {d.vllm_gpu_memory_utilization}")
    k8s = d.resources.to_kubernetes()
    t.add_row("Requests", ", ".join(f"{k}={v}" for k, v in k8s["requests"].items()))
    t.add_row("Limits", ", ".join(f"{k}={v}" for k, v in k8s["limits"].items()))
    t.add_row("Recommendation", d.recommendation)
    return t


def register(app: typer.Typer) -> None:
    """Add the `estimate` and `models` commands to a Typer app."""

    @app.command("estimate")
    def estimate_cmd(
        model: Annotated[str, typer.Argument(help="hf://Org/Name, Org/Name, or a catalog name (slmctl models).")],
        quant: Annotated[str | None, typer.Option(
            "--quant", "-q", help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, TQ1_0, TQ2_0, awq, gptq, int4, fp8, bf16, fp16 "
                                  "(or FORMAT:TYPE). Omit to let sizing choose.")] = None,
        context: Annotated[int | None, typer.Option(help="Tokens per sequence. Omit to let sizing choose.")] = None,
        concurrency: Annotated[int, typer.Option(help="Sequences held at full context at once.")] = 1,
        gpu: Annotated[str | None, typer.Option(
            help="GPU product (nvidia.com/gpu.product value or alias such as L4, T4, H100) [:COUNT].")] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="CPU only (no GPU).")] = False,
        engine: Annotated[str, typer.Option(help="auto | " + " | ".join(ENGINE_NAMES))] = "auto",
        node_memory: Annotated[float | None, typer.Option(
            "--node-memory", help="CPU: the node's allocatable RAM in GiB, to check the fit.")] = None,
        revision: Annotated[str | None, typer.Option(help="Hub revision for models read from config.json.")] = None,
        offline: Annotated[bool, typer.Option(help="Never read config.json from the hub.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    ) -> None:
        """Estimate memory for a model and say whether it fits the hardware."""
        err = Console(stderr=True)
        if output not in ("table", "json"):
            err.print("error: -o takes table or json")
            raise typer.Exit(2)
        try:
            if gpu and cpu:
                raise SizingError("--gpu and --cpu exclude each other.")
            fmt, qtype = parse_quant(quant) if quant else (None, None)
            product, count = _parse_gpu(gpu) if gpu else (None, None)
            facts = catalog.resolve_model(model, revision=revision, fetch=not offline)
            decision = autoconfigure(
                facts, engine=engine, quant_format=fmt, quant_type=qtype, gpu_product=product,
                gpu_count=count, cpu_only=cpu, context=context, concurrency=concurrency,
                node_memory_bytes=int(node_memory * GIB) if node_memory else None)
        except SizingError as e:
            err.print(f"error: {e}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        if output == "json":
            typer.echo(json.dumps(decision_json(decision), indent=2, sort_keys=True))
            return
        console = Console(width=120)
        console.print(_estimate_table(decision))
        console.print(decision.reason, markup=False, highlight=False)

    def _formats_cell(support: dict[str, list[str]]) -> str:
        """"gguf, onnx (builder|olive), mlx" from sizing.formats.support()."""
        return ", ".join(f if len(tools) == 1 else f"{f} ({'|'.join(tools)})" for f, tools in support.items())

    @app.command("models")
    def models_cmd(
        gpus: Annotated[bool, typer.Option("--gpus", help="List the GPU products instead.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    ) -> None:
        """List the models (or GPU products) the sizing catalog knows."""
        if gpus:
            rows = [{"product": g.product, "name": g.name, "memory_bytes": g.memory_bytes,
                     "bandwidth_gbps": g.bandwidth_gbps, "fp8": g.fp8,
                     "compute_capability": g.compute_capability, "aliases": list(g.aliases)}
                    for g in catalog.list_gpus()]
        else:
            rows = [{"id": m.id, "name": m.name, "params": m.params, "tier": m.tier,
                     "architecture": m.architecture, "layers": m.layers, "hidden_size": m.hidden_size,
                     "attention_heads": m.attention_heads, "kv_heads": m.kv_heads, "head_dim": m.head_dim,
                     "vocab_size": m.vocab_size, "max_context": m.max_context,
                     "sliding_window": m.sliding_window, "gated": m.gated,
                     "formats": {f: list(tools) for f, tools in formats.support(m.architecture).items()}}
                    for m in catalog.list_models()]
        if output == "json":
            typer.echo(json.dumps(rows, indent=2))
            return
        if output != "table":
            Console(stderr=True).print("error: -o takes table or json")
            raise typer.Exit(2)
        t = Table()
        if gpus:
            for col in ("Product label", "Memory", "Bandwidth", "FP8", "CC", "Aliases"):
                t.add_column(col)
            for r in rows:
                t.add_row(r["product"], gib(r["memory_bytes"]), f"{r['bandwidth_gbps']} GB/s",
                          "yes" if r["fp8"] else "no", r["compute_capability"], ", ".join(r["aliases"]))
        else:
            for col in ("Model", "Params", "Tier", "Architecture", "Layers", "Heads q/kv", "Context",
                        "Window", "Gated", "Converts to (tools)"):
                t.add_column(col)
            for r in rows:
                window = str(r["sliding_window"]) if r["sliding_window"] else "-"
                t.add_row(r["id"], f"{r['params'] / 1e9:.2f}B", r["tier"], r["architecture"], str(r["layers"]),
                          f"{r['attention_heads']}/{r['kv_heads']}", str(r["max_context"]), window,
                          "yes" if r["gated"] else "no", _formats_cell(r["formats"]))
        Console(width=200).print(t)
