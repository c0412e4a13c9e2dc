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
    read_gguf_chat_template,
    read_tokenizer_config,
)
from slm_ollama.templates import choose_template

log = logging.getLogger("slm_ollama.import")
_CHUNK = 1 << 20


class ModelImportError(RuntimeError):
    """The model could not be created; the message says which step failed."""


@dataclass(frozen=True)
class ImportPlan:
    """What will be created: Ollama model `name` from `gguf`, with Go `template` (None: Ollama's own
    detection), stop strings, PARAMETERs, the template `family` ("file" for --template-file), the
    capabilities the template gives Ollama (`capabilities`: "tools", "thinking") and those of the
    model's own chat template that it does not carry (`dropped`)."""

    name: str
    gguf: Path
    template: str | None
    stops: list[str]
    params: list[tuple[str, str]]
    family: str | None
    capabilities: frozenset[str] = frozenset()
    dropped: frozenset[str] = frozenset()

    def modelfile(self) -> str:
        return build_modelfile(str(self.gguf), template=self.template, stops=self.stops, params=self.params)


def plan_import(name: str, gguf: Path, *, template_from: Path | None, template_file: Path | None,
                params: list[tuple[str, str]]) -> ImportPlan:
    """Decide the TEMPLATE and stops. The chat template is read from `template_from`
    (tokenizer_config.json / chat_template.jinja) or, when that folder has none, from the GGUF's
    own metadata; `template_file` (a Go template) overrides both.

    Capabilities of the model's template that the chosen Go template cannot carry are logged as a
    WARNING (the model is still served; Ollama then refuses those requests), never dropped in
    silence. Leaving TEMPLATE out would not keep them: Ollama's fallback matches the GGUF's template
    against its own library, whose templates have neither .Tools nor .Thinking.
    Raises ModelImportError (no GGUF file) or ValueError (bad name, unreadable GGUF metadata).
    """
    check_model_name(name)
    if not gguf.is_file():
        raise ModelImportError(f"GGUF file not found: {gguf}")
    stops: list[str] = []
    if template_file is not None:
        template = template_file.read_text(encoding="utf-8")
        caps = frozenset(c for c, var in (("tools", ".Tools"), ("thinking", ".Thinking")) if var in template)
        return ImportPlan(name, gguf, template, stops, params, "file", caps)
    jinja, eos, origin = None, None, "the GGUF"
    if template_from is not None:
        jinja, eos = read_tokenizer_config(template_from)
        origin = str(template_from)
    if jinja is None:
        jinja, gguf_eos = read_gguf_chat_template(gguf)
        eos = eos or gguf_eos
        origin = f"{gguf.name} (tokenizer.chat_template)"
    choice = choose_template(jinja)
    template = family = None
    caps: frozenset[str] = frozenset()
    if choice.format is not None:
        template, family, caps = choice.format.template, choice.format.family, choice.format.capabilities
        stops = list(choice.format.stops)
    elif jinja:
        log.warning("chat template of %s not recognised: no TEMPLATE, Ollama picks one from its library", origin)
    else:
        log.warning("no chat template in %s: no TEMPLATE, Ollama uses a plain prompt", origin)
    if choice.dropped:
        log.warning("the model's chat template supports %s, but the %s template cannot carry it: Ollama will "
                    "refuse such requests (\"does not support ...\"). To keep it, pass a Go template that uses "
                    "%s with --template-file.", " and ".join(sorted(choice.dropped)), family or "fallback",
                    " and ".join(f".{c.capitalize()}" for c in sorted(choice.dropped)))
    if eos and eos not in stops:
        stops.append(eos)
    return ImportPlan(name, gguf, template, stops, params, family, caps, choice.dropped)


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
