"""`slmctl`: the user CLI (render, validate, export, estimate, models)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from slm_operator import api

app = typer.Typer(help="slmctl: render, validate and size SLMDeployments offline; serve one on this machine.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True, soft_wrap=True)


def _load(path: Path) -> list[dict]:
    """Documents from a file, a folder of *.yaml/*.yml files, or stdin (-)."""
    if str(path) == "-":
        texts = [sys.stdin.read()]
    elif path.is_dir():
        texts = [p.read_text() for p in sorted(path.iterdir()) if p.suffix in (".yaml", ".yml")]
    elif path.exists():
        texts = [path.read_text()]
    else:
        err.print(f"[red]error[/red] {path}: no such file or folder")
        raise typer.Exit(2)
    return [d for text in texts for d in yaml.safe_load_all(text) if d]


@app.command()
def render(
    file: Annotated[Path, typer.Option("--file", "-f", help="SLMDeployment manifest (- for stdin).")],
    service_monitor: Annotated[bool, typer.Option(help="Render as if the ServiceMonitor CRD exists.")] = False,
) -> None:
    """Print the child manifests the operator would apply (what a GitOps reviewer diffs)."""
    from slm_operator.render import render as render_children
    from slm_operator.settings import OperatorConfig
    from slm_operator.validate import defaulted, validate

    docs = []
    for obj in _load(file):
        problems = validate(obj, check_fit=False)
        if problems:
            for p in problems:
                err.print(f"[red]error[/red] {obj.get('metadata', {}).get('name')}: {p}")
            raise typer.Exit(1)
        cr = api.SLMDeployment.model_validate(defaulted(obj))
        ctx = OperatorConfig.from_env().render_context(service_monitor_crd=service_monitor)
        docs += render_children(cr, ctx)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


@app.command()
def validate(
    file: Annotated[Path, typer.Option("--file", "-f", help="SLMDeployment manifest (- for stdin).")],
) -> None:
    """Check manifests offline with the admission rules; exit 1 on any error."""
    from slm_operator.validate import validate as check

    failed = False
    for obj in _load(file):
        name = (obj.get("metadata") or {}).get("name", "<unnamed>")
        problems = check(obj)
        for p in problems:
            err.print(f"[red]error[/red] {name}: {p}")
        if problems:
            failed = True
        else:
            err.print(f"[green]ok[/green] {name}")
    if failed:
        raise typer.Exit(1)


@app.command()
def export(
    artifact: Annotated[Path, typer.Option("--artifact", "-a", help="A finished ONNX artifact folder "
                                           "(manifest.json inside), e.g. copied from the model volume.")],
    foundry_local: Annotated[Path | None, typer.Option(
        "--foundry-local", help="Foundry Local's model cache folder (its ModelCacheDir; `foundry cache "
                                "ls` shows it): write the artifact there in the layout its cache expects.")] = None,
    name: Annotated[str | None, typer.Option(help="Model name in Foundry Local (default: the artifact "
                                                  "folder's name).")] = None,
    publisher: Annotated[str, typer.Option(help="Publisher folder under the cache.")] = "slm-operator",
    version: Annotated[int, typer.Option(help="Model version: the id is NAME:VERSION.")] = 1,
) -> None:
    """Export a finished artifact to where it runs (today: a Foundry Local model cache)."""
    from slm_operator.export_local import ExportError, export_foundry_local

    if foundry_local is None:
        err.print("[red]error[/red] name a target: --foundry-local CACHE_DIR")
        raise typer.Exit(2)
    try:
        out = export_foundry_local(artifact, foundry_local, name or artifact.resolve().name,
                                   publisher=publisher, version=version)
    except ExportError as e:
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(1) from None
    state = "already exported" if out.already else "exported"
    err.print(f"[green]{state}[/green] {out.model_id} -> {out.path} (manifest sha256 {out.manifest_sha256})")


def _register_sizing() -> None:
    try:
        from slm_operator.cli_sizing import register
    except ImportError:  # sizing commands ship with the sizing package
        return
    register(app)


_register_sizing()


def _register_local() -> None:
    from slm_operator.local.cli import register

    register(app, _load)


_register_local()
