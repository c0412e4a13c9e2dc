"""`slmctl up / status / down / compose`: registered onto the main CLI (slm_operator.cli).

Exit status: 0 done; 1 refused or failed (the reason on stderr, naming the field or file and
the fix); 2 bad command-line input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True, highlight=False)


def _one(load: Any, path: Path) -> dict[str, Any]:
    docs = [d for d in load(path) if isinstance(d, dict)]
    if len(docs) != 1:
        err.print(f"error: {path}: expected exactly one SLMDeployment, found {len(docs)} documents; "
                  "split the file (one `slmctl up` per model)", markup=False)
        raise typer.Exit(2)
    return docs[0]


def register(app: typer.Typer, load: Any) -> None:
    """Add up, status, down and compose to app; load(path) -> documents (the CLI's _load)."""

    @app.command("up")
    def up_cmd(
        file: Annotated[Path, typer.Option("--file", "-f", help="SLMDeployment manifest (- for stdin).")],
        port: Annotated[int | None, typer.Option(
            help="Port on 127.0.0.1 (default: the previous run's, else 8000, else any free one; 0: any).")] = None,
        runtime: Annotated[str, typer.Option(
            help="Where the quantizer runs: auto | process | podman.")] = "auto",
        node_memory: Annotated[float | None, typer.Option(
            "--node-memory", help="Size against this much RAM in GiB instead of this machine's.")] = None,
    ) -> None:
        """Serve the SLMDeployment on this machine (no cluster): quantize, start the engine, print the endpoint."""
        from slm_operator.local.run import LocalError, up

        if runtime not in ("auto", "process", "podman"):
            err.print("error: --runtime takes auto, process or podman", markup=False)
            raise typer.Exit(2)
        try:
            up(_one(load, file), port=port, runtime=runtime, node_memory_gib=node_memory,
               say=lambda s: print(s, flush=True))
        except LocalError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(1) from None

    @app.command("status")
    def status_cmd(
        name: Annotated[str | None, typer.Argument(help="Deployment name (default: all local ones).")] = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    ) -> None:
        """Local deployments: running, ready, endpoint, engine, where the key is."""
        from slm_operator.local.run import status

        rows = status(name)
        if output == "json":
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            err.print("no local deployments (slmctl up -f model.yaml starts one)")
            return
        t = Table()
        for col in ("Name", "State", "Endpoint", "Engine", "Model", "API key"):
            t.add_column(col)
        for r in rows:
            state = "ready" if r["ready"] else ("starting" if r["running"] else "stopped")
            t.add_row(r["name"], state, r["url"] or "-", r["engine"] or "-", r["model"] or "-",
                      f"cat {r['apiKeyFile']}" if r["apiKeyFile"] else "-")
        Console(width=160).print(t)

    @app.command("down")
    def down_cmd(
        name: Annotated[str, typer.Argument(help="Deployment name (metadata.name).")],
        purge: Annotated[bool, typer.Option(help="Also delete its state: artifacts, API key, logs.")] = False,
    ) -> None:
        """Stop a local deployment (its state stays for the next `up`, unless --purge)."""
        from slm_operator.local.run import down

        was = down(name, purge=purge)
        print(f"{name}: {'stopped' if was else 'was not running'}{' and purged' if purge else ''}")

    @app.command("compose")
    def compose_cmd(
        file: Annotated[Path, typer.Option("--file", "-f", help="SLMDeployment manifest (- for stdin).")],
        webui: Annotated[bool, typer.Option(help="Add Open WebUI, pointed at the endpoint with the key.")] = False,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="Write here (and the secret files beside it); default stdout.")] = None,
        port: Annotated[int, typer.Option(help="Host port of the API on 127.0.0.1.")] = 8000,
        webui_port: Annotated[int, typer.Option(help="Host port of Open WebUI on 127.0.0.1.")] = 3000,
    ) -> None:
        """Write a Compose file for one host: quantize once, then serve behind the API key."""
        from slm_operator.local.compose import ComposeError, build, write

        try:
            doc = build(_one(load, file), webui=webui, port=port, webui_port=webui_port)
        except ComposeError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(1) from None
        if output is None:
            sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
            return
        made = write(doc, output)
        print(f"wrote {output}" + (f"; secrets: {', '.join(str(m) for m in made)}" if made else ""))
        print(f"run it: podman-compose -f {output} up -d   (or docker compose -f {output} up -d)")
