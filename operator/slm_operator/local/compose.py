"""`slmctl compose`: the SLMDeployment as a Compose file for one host (Compose specification).

Services (pure build(): a dict, deterministic):

- quantize: one-shot (restart "no"), the quantizer image with the operator Job's arguments,
  writing the artifact to the named volume model-cache;
- api: the endpoint, published on 127.0.0.1:<port> only, started once quantize completed
  successfully. onnxruntime: the ONNX server with its own API key check. llamacpp:
  llama-server with its own key check. ollama: the gateway (gateway image, `python -m
  slm_gateway --engine ollama`, as in the cluster's pods: the key check, Ollama's
  model-management routes refused, /metrics on 127.0.0.1 inside its container), with Ollama
  itself in service "ollama" sharing the gateway's network namespace and listening on
  127.0.0.1:11434 only (no network of its own, no published port: the gateway is the only way
  in, as in the pod);
- webui (--webui): Open WebUI in the API's network namespace, pointed at
  http://127.0.0.1:8000/v1; the key reaches it from the Compose secret at start (never in the
  file, the command line or an image).

Hardening as in the cluster (Pod Security restricted): read_only root, user 65532 (the images'
USER), cap_drop ALL, no-new-privileges, /tmp as tmpfs, healthchecks on /ready. Secrets (the
API key, a hub token) are Compose secrets read from files next to the Compose file, never
environment literals. The output is checked against the Compose specification JSON schema
(data/compose-spec.json, see data/README.md) before it is returned.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from slm_operator import api, engines
from slm_operator.diff import parse_quantity
from slm_operator.engines import llamacpp as llamacpp_engine
from slm_operator.engines.base import ServeInput
from slm_operator.resolve import artifact_key, execution_target, resolve

IMAGES = {  # what `make images` tags (hack/images.sh), as the operator's defaults
    "quantizer": "ghcr.io/slm-operator/quantizer:0.1.0",
    "onnxruntime": "ghcr.io/slm-operator/onnxruntime-server:0.1.0",
    "ollama": "ghcr.io/slm-operator/ollama:0.1.0",
    "llamacpp": "ghcr.io/slm-operator/llamacpp:0.1.0",
    "gateway": "ghcr.io/slm-operator/gateway:0.1.0",
}
OLLAMA_PORT = 11434  # Ollama's default port, on the loopback the gateway shares with it
GATEWAY_METRICS = "127.0.0.1:9090"  # the gateway's /metrics: inside its container only (nothing scrapes it here)
# Open WebUI's own image, the same release as the PyPI package the browser test runs.
WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.12.4"
API_PORT = 8000
USER = "65532:65532"
SECRETS_DIR = "/run/secrets"  # where Compose mounts secrets


class ComposeError(ValueError):
    """A manifest that cannot become a Compose file; the message names the field and the fix."""


@cache
def schema() -> dict[str, Any]:
    """The Compose specification JSON schema shipped in data/ (draft 2019-09)."""
    return json.loads(resources.files("slm_operator.local").joinpath("data/compose-spec.json").read_text())


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Problems with doc by the Compose specification schema: 'path: message' each; [] when valid.

    Needs jsonschema (the dev extra; kubernetes-validate brings it too): without it, one line
    saying the check did not run."""
    try:
        import jsonschema
    except ImportError:
        return ["not checked against the Compose schema: pip install jsonschema==4.26.0"]

    v = jsonschema.Draft201909Validator(schema())
    return [f"{'/'.join(str(x) for x in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def _hardened(image: str, read_only: bool = True) -> dict[str, Any]:
    svc: dict[str, Any] = {"image": image, "user": USER, "cap_drop": ["ALL"],
                           "security_opt": ["no-new-privileges:true"], "tmpfs": ["/tmp"]}
    if read_only:
        svc["read_only"] = True
    return svc


def _ready_check(port: int, start_period: str, path: str = "/ready") -> dict[str, Any]:
    probe = ("import sys, urllib.request; "
             f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=4).status == 200 else 1)")
    return {"test": ["CMD", "python3", "-c", probe], "interval": "10s", "timeout": "5s", "retries": 3,
            "start_period": start_period}


def build(obj: dict[str, Any], *, webui: bool = False, port: int = API_PORT, webui_port: int = 3000,
          images: dict[str, str] | None = None) -> dict[str, Any]:
    """The Compose document for one SLMDeployment manifest.

    Raises ComposeError with the validation problems, an engine local Compose does not serve
    (vllm: GPU), or a schema violation (a bug here)."""
    from slm_operator.validate import defaulted, validate

    imgs = {**IMAGES, **(images or {})}
    name = (obj.get("metadata") or {}).get("name", "<unnamed>")
    problems = validate(obj)
    if problems:
        raise ComposeError("\n".join(f"{name}: {p}" for p in problems))
    spec = api.SLMDeployment.model_validate(defaulted(obj)).spec
    if not api.serving_enabled(spec):
        raise ComposeError(f"{name}: serving.enabled: false (quantize-only) has nothing for Compose to serve; "
                           "apply it to a cluster (the artifact lands in status.artifact), or run the quantizer "
                           "image alone")
    r = resolve(spec)
    if r.engine == "vllm" or r.format not in ("onnx", "gguf"):
        raise ComposeError(f"{name}: engine.name: {r.engine} ({r.format}) needs an NVIDIA GPU, which this Compose "
                           "file does not request; use engine.name onnxruntime (quantization.format onnx) or "
                           "ollama (gguf), or deploy to the cluster")
    if spec.model.source.startswith("pvc://"):
        raise ComposeError(f"{name}: model.source: pvc:// names a Kubernetes claim; use hf:// or s3:// here")
    key = artifact_key(spec, r)
    art = f"/models/artifacts/{r.format}-{r.qtype.lower()}-{key}"
    q = spec.quantization
    target = execution_target(spec, r)
    qargs = ["--source", spec.model.source, "--format", r.format, "--type", r.qtype, "--target", target,
             "--output", art, "--max-ppl-increase-pct", str(q.max_perplexity_increase_percent if q else 10),
             "--termination-log", "/models/.quantize-result.json"]
    if spec.model.revision:
        qargs += ["--revision", spec.model.revision]
    if spec.model.trust_remote_code:
        qargs.append("--trust-remote-code")
    qenv = {"HOME": "/tmp", "HF_HOME": "/models/hf", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if spec.model.hub and spec.model.hub.endpoint:
        qenv["HF_ENDPOINT"] = spec.model.hub.endpoint
    top_secrets: dict[str, Any] = {"api-key": {"file": "./secrets/api-key"}}
    quantize = {**_hardened(imgs["quantizer"]), "entrypoint": ["python3", "-m", "slm_quantizer"],
                "command": qargs,
                "environment": qenv, "volumes": ["model-cache:/models"], "restart": "no"}
    if spec.model.token_secret_ref:
        top_secrets["hf-token"] = {"file": "./secrets/hf-token"}
        quantize["secrets"] = ["hf-token"]
        quantize["command"] = [*qargs, "--token-file", f"{SECRETS_DIR}/hf-token"]
    if spec.model.s3_credentials_secret_ref or (spec.model.hub and spec.model.hub.ca_bundle_secret_ref):
        raise ComposeError(f"{name}: model.s3CredentialsSecretRef / model.hub.caBundleSecretRef are not carried into "
                           "Compose yet; use an hf:// source with a public or token-protected hub")
    after = {"depends_on": {"quantize": {"condition": "service_completed_successfully"}}}
    key_file = f"{SECRETS_DIR}/api-key"
    # Volume ownership without a root step: Podman gives a new named volume to the first
    # container's user (libpod fixVolumePermissions), and Docker copies the owner of the image's
    # mount point, which the quantizer (/models) and ollama (/ollama) images create as 65532. A
    # one-shot chown service in the chain raced podman's --requires check (podman-compose starts
    # every dependency again, and a step that exits in milliseconds reads as "not running").
    services: dict[str, Any] = {"quantize": quantize}
    volumes: dict[str, Any] = {"model-cache": {}}
    engines.get(r.engine)  # an unknown engine is an error, never another engine's services
    if r.engine == "llamacpp":
        inp = ServeInput(served_name=r.served_name, model_path=art, fmt=r.format, qtype=r.qtype,
                         context=r.context_length, gpu_count=r.gpu_count,
                         cpu_millicores=int((parse_quantity(r.cpu) or 1) * 1000), target=target,
                         options=spec.engine.llamacpp, resources={}, mounts=[], artifact_bytes=0, image="")
        # llama-server checks the key itself: one service, its API published on localhost only.
        services["api"] = {
            **_hardened(imgs["llamacpp"]), **after,
            "entrypoint": ["llama-server"],
            "command": llamacpp_engine.server_args(inp, key_file=key_file),
            "environment": {"HOME": "/tmp"}, "volumes": ["model-cache:/models:ro"], "secrets": ["api-key"],
            "ports": [f"127.0.0.1:{port}:{API_PORT}"],
            "healthcheck": _ready_check(API_PORT, "120s", llamacpp_engine.ENGINE.ready_path),
            "restart": "unless-stopped"}
    elif r.engine == "onnxruntime":
        opts = spec.engine.onnxruntime
        services["api"] = {
            **_hardened(imgs["onnxruntime"]), **after,
            "entrypoint": ["python3", "-m", "slm_onnx_server"],
            "command": ["--model-dir", art, "--served-model-name", r.served_name,
                        "--host", "0.0.0.0", "--port", str(API_PORT), "--api-key-file", key_file,
                        "--device", target, "--max-concurrency", str(opts.workers if opts else 4),
                        "--max-queue", str(opts.queue_size if opts else 64),
                        "--max-model-len", str(r.context_length), "--grace-period-s", "10"],
            "environment": {"HOME": "/tmp"}, "volumes": ["model-cache:/models:ro"], "secrets": ["api-key"],
            "ports": [f"127.0.0.1:{port}:{API_PORT}"], "healthcheck": _ready_check(API_PORT, "120s"),
            "restart": "unless-stopped"}
    elif r.engine == "ollama":
        opts_o = spec.engine.ollama
        num_ctx = opts_o.num_ctx if opts_o and opts_o.num_ctx else r.context_length
        # As in the pod: the gateway owns the network namespace and the published port; Ollama
        # joins that namespace and listens on 127.0.0.1 only, so nothing but the gateway reaches it.
        # (Not a second, internal network: that needs service-name DNS, which Podman's CNI backend
        # lacks without the dnsname plugin, and Podman's CNI backend forwards a published port to
        # the container's address on the first network by name, which an internal one can be.)
        # The gateway starts first and answers /ready 503 until Ollama lists the model; its
        # one-key mode reads every line of the secret as a key.
        services["api"] = {
            **_hardened(imgs["gateway"]),
            "entrypoint": ["python3", "-m", "slm_gateway"],
            "command": ["--engine", "ollama", "--upstream", f"http://127.0.0.1:{OLLAMA_PORT}",
                        "--api-key-file", key_file, "--listen", f"0.0.0.0:{API_PORT}",
                        "--metrics-listen", GATEWAY_METRICS, "--model", r.served_name],
            "environment": {"HOME": "/tmp"}, "secrets": ["api-key"],
            "ports": [f"127.0.0.1:{port}:{API_PORT}"], "healthcheck": _ready_check(API_PORT, "180s"),
            "restart": "unless-stopped"}
        services["ollama"] = {
            **_hardened(imgs["ollama"]),
            "depends_on": {**after["depends_on"], "api": {"condition": "service_started"}},
            "network_mode": "service:api",
            "entrypoint": ["python3", "-m", "slm_ollama"],
            "command": ["serve", "--gguf-dir", art, "--name", r.served_name,
                        "--param", f"num_ctx={num_ctx}"],
            "environment": {"HOME": "/tmp", "OLLAMA_HOST": f"127.0.0.1:{OLLAMA_PORT}", "OLLAMA_MODELS": "/ollama",
                            "OLLAMA_NUM_PARALLEL": str(opts_o.num_parallel if opts_o else 4),
                            "OLLAMA_KEEP_ALIVE": opts_o.keep_alive if opts_o else "-1", "OLLAMA_NOPRUNE": "1"},
            "volumes": ["model-cache:/models:ro", "ollama-models:/ollama"],
            "healthcheck": {"test": ["CMD", "ollama", "list"], "interval": "15s", "timeout": "10s", "retries": 3,
                            "start_period": "120s"},
            "restart": "unless-stopped"}
        volumes["ollama-models"] = {}
    else:
        raise ComposeError(f"{name}: engine.name: {r.engine} is not served by slmctl compose; use onnxruntime, "
                           "ollama or llamacpp")
    if webui:
        # Open WebUI writes under /app (its static files, caches) at start: not read-only; the
        # rest of the hardening holds. The key is read from the secret into its environment. It
        # joins the API's network namespace and dials 127.0.0.1 (no service-name DNS needed, which
        # Podman's CNI backend lacks); its published port is therefore the API service's.
        services["api"]["ports"].append(f"127.0.0.1:{webui_port}:8080")
        services["webui"] = {
            **_hardened(WEBUI_IMAGE, read_only=False),
            "depends_on": {"api": {"condition": "service_healthy"}},
            "network_mode": "service:api",
            "entrypoint": ["/bin/sh", "-c",
                           f'OPENAI_API_KEY="$$(cat {key_file})" exec bash start.sh'],
            "environment": {"OPENAI_API_BASE_URL": f"http://127.0.0.1:{API_PORT}/v1", "ENABLE_OLLAMA_API": "false",
                            "HOME": "/tmp", "DATA_DIR": "/webui-data"},
            # Not the image's /app/backend/data (root's): a mount point the image lacks is given
            # to the container's user by Podman.
            "volumes": ["webui-data:/webui-data"], "secrets": ["api-key"],
            "restart": "unless-stopped"}
        volumes["webui-data"] = {}
    doc: dict[str, Any] = {"services": services, "volumes": volumes, "secrets": top_secrets}
    problems = schema_errors(doc)
    if problems:  # a bug in build(), not the user's input
        raise ComposeError("the Compose file breaks the Compose specification schema: " + "; ".join(problems))
    return doc


def write(doc: dict[str, Any], path: Path) -> list[Path]:
    """Write doc to path and create the secret files it names that are missing (a generated API
    key; an empty hf-token file to fill). Returns the secret files created.

    The secrets folder is 0700 (only its owner reaches the files); the files are 0644 because the
    containers run as user 65532 and Compose bind-mounts secret files as they are."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    made = []
    for name, entry in (doc.get("secrets") or {}).items():
        f = (path.parent / entry["file"]).resolve()
        f.parent.mkdir(parents=True, exist_ok=True)
        f.parent.chmod(0o700)
        if f.exists():
            continue
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            if name == "api-key":
                fh.write(secrets.token_urlsafe(32) + "\n")
        f.chmod(0o644)
        made.append(f)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return made
