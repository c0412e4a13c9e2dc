"""Turn a GGUF artifact into an Ollama model through the local Ollama server's HTTP API.

This is what `ollama create -f Modelfile` does: upload the GGUF as a blob (skipped when the
server already has that digest), then POST /api/create with the template and parameters.
The Modelfile is also written next to nothing secret, for people to read and reuse.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from slm_ollama.modelfile import (
    build_modelfile,
    check_model_name,
    create_request,
    detect_chat_format,
    read_tokenizer_config,
)

log = logging.getLogger("slm_ollama.import")
_CHUNK = 1 << 20


class ModelImportError(RuntimeError):
    """The model could not be created; the message says which step failed."""


@dataclass(frozen=True)
class ImportPlan:
    name: str
    gguf: Path
    template: str | None
    stops: list[str]
    params: list[tuple[str, str]]
    family: str | None

    def modelfile(self) -> str:
        return build_modelfile(str(self.gguf), template=self.template, stops=self.stops, params=self.params)


def plan_import(name: str, gguf: Path, *, template_from: Path | None, template_file: Path | None,
                params: list[tuple[str, str]]) -> ImportPlan:
    check_model_name(name)
    if not gguf.is_file():
        raise ModelImportError(f"GGUF file not found: {gguf}")
    stops: list[str] = []
    template = None
    family = None
    if template_file is not None:
        template = template_file.read_text(encoding="utf-8")
        family = "file"
    elif template_from is not None:
        jinja, eos = read_tokenizer_config(template_from)
        fmt = detect_chat_format(jinja)
        if fmt is not None:
            template, family = fmt.template, fmt.family
            stops = list(fmt.stops)
        else:
            log.warning("chat template of %s not recognised: no TEMPLATE, Ollama uses the one in the GGUF",
                        template_from)
        if eos and eos not in stops:
            stops.append(eos)
    return ImportPlan(name, gguf, template, stops, params, family)


def find_gguf(directory: Path) -> Path:
    """The one .gguf file of an artifact folder (the quantizer writes exactly one)."""
    found = sorted(p for p in directory.glob("*.gguf") if p.is_file())
    if len(found) != 1:
        raise ModelImportError(f"expected exactly one .gguf file in {directory}, found {[p.name for p in found]}")
    return found[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _file_chunks(path: Path):
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def wait_for_server(client: httpx.Client, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = client.get("/api/version")
            if r.status_code == 200:
                return r.json().get("version", "")
            last = f"HTTP {r.status_code}"
        except httpx.TransportError as err:
            last = type(err).__name__
        time.sleep(0.2)
    raise ModelImportError(f"Ollama server not reachable after {timeout_s:.0f}s ({last})")


def create_model(client: httpx.Client, plan: ImportPlan) -> dict:
    """Upload the blob if needed and create the model; returns the server's final status."""
    digest = "sha256:" + sha256_file(plan.gguf)
    head = client.head(f"/api/blobs/{digest}")
    if head.status_code != 200:
        log.info("uploading %s (%d bytes) as %s", plan.gguf.name, plan.gguf.stat().st_size, digest)
        up = client.post(f"/api/blobs/{digest}", content=_file_chunks(plan.gguf),
                         headers={"Content-Length": str(plan.gguf.stat().st_size)})
        if up.status_code not in (200, 201):
            raise ModelImportError(f"blob upload failed: HTTP {up.status_code}: {up.text[:300]}")
    body = create_request(plan.name, {plan.gguf.name: digest}, template=plan.template, stops=plan.stops,
                          params=plan.params)
    r = client.post("/api/create", json=body)
    if r.status_code != 200:
        raise ModelImportError(f"/api/create failed: HTTP {r.status_code}: {r.text[:300]}")
    status = r.json()
    if status.get("error") or status.get("status") != "success":
        raise ModelImportError(f"/api/create did not succeed: {status}")
    return status


def run_import(base_url: str, plan: ImportPlan, *, wait_s: float = 60.0) -> dict:
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(600.0, connect=5.0)) as client:
        wait_for_server(client, wait_s)
        return create_model(client, plan)
