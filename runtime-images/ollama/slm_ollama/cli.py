"""Command line: `python -m slm_ollama {import,serve}`.

The API key check in front of Ollama is the gateway (runtime-images/gateway, `python -m slm_gateway
--engine ollama`), in the pod, in `slmctl up` and in `slmctl compose`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from slm_ollama.modelfile import parse_params


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slm_ollama", allow_abbrev=False,
                                description="Ollama importer and supervisor.")
    sub = p.add_subparsers(dest="cmd", required=True)

    imp = sub.add_parser("import", allow_abbrev=False, help="create an Ollama model from a GGUF file")
    imp.add_argument("--gguf", required=True, type=Path, help="the GGUF file")
    imp.add_argument("--name", required=True, help="Ollama model name (the served model id)")
    tmpl = imp.add_mutually_exclusive_group()
    tmpl.add_argument("--template-from", type=Path,
                      help="folder with tokenizer_config.json: its chat template picks the Go template "
                           "(default: the chat template inside the GGUF)")
    tmpl.add_argument("--template-file", type=Path, help="a Go template file to use as TEMPLATE")
    imp.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="Modelfile PARAMETER, repeatable (num_ctx=4096, temperature=0.7, stop=...)")
    imp.add_argument("--ollama-url", default="http://127.0.0.1:11434", help="the local Ollama server")
    imp.add_argument("--modelfile-out", type=Path, help="also write the equivalent Modelfile here")
    imp.add_argument("--dry-run", action="store_true", help="print the Modelfile; create nothing")
    imp.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server")

    srv = sub.add_parser("serve", allow_abbrev=False,
                         help="run `ollama serve`, import the artifact's GGUF, then supervise")
    srv.add_argument("--gguf-dir", required=True, type=Path, help="artifact folder with one .gguf file")
    srv.add_argument("--name", required=True)
    srv.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    srv.add_argument("--ollama-bin", default="ollama")
    srv.add_argument("--wait", type=float, default=120.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = _parser().parse_args(argv)
    try:
        params = parse_params(getattr(ns, "param", []))
    except ValueError as err:
        print(f"slm_ollama: {err}", file=sys.stderr)
        return 2
    if ns.cmd == "import":
        from slm_ollama.importer import ModelImportError, plan_import, run_import

        try:
            plan = plan_import(ns.name, ns.gguf, template_from=ns.template_from, template_file=ns.template_file,
                               params=params)
            if ns.modelfile_out:
                ns.modelfile_out.write_text(plan.modelfile(), encoding="utf-8")
            if ns.dry_run:
                print(plan.modelfile(), end="")
                return 0
            status = run_import(ns.ollama_url, plan, wait_s=ns.wait)
        except (ModelImportError, ValueError, OSError) as err:
            print(f"slm_ollama: {err}", file=sys.stderr)
            return 1
        caps = ", ".join(sorted(plan.capabilities)) or "none"
        print(f"slm_ollama: created {ns.name} (template {plan.family or 'chosen by Ollama'}; capabilities: {caps}): "
              f"{status}")
        return 0
    from slm_ollama.importer import ModelImportError  # serve
    from slm_ollama.supervisor import run

    try:
        return run(ns.ollama_bin, ns.gguf_dir, ns.name, params, ns.wait)
    except (ModelImportError, ValueError) as err:
        print(f"slm_ollama: {err}", file=sys.stderr)
        return 1
