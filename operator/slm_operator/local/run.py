"""`slmctl up / status / down`: one SLMDeployment served on this machine, no cluster.

up(): the manifest goes through `slmctl validate`'s checks (admission rules, catalog refusals),
then resolve() (the operator's sizing) and the machine fit check (machine.fit_problem). The
quantizer runs as a local process (`python -m slm_quantizer`, the same arguments as the
operator's Job) or, with runtime "podman", in the quantizer image; a complete artifact with the
same artifact key is reused (warm start: no quantizer at all). The engine starts detached in
its own session, listening on 127.0.0.1 only:

- onnxruntime: `python -m slm_onnx_server --api-key-file <state>/api-key ...`;
- ollama: `python -m slm_ollama serve` (the cached Ollama binary, on a private 127.0.0.1 port)
  plus `python -m slm_gateway --engine ollama` (the gateway the cluster's pods run: the API key
  check, Ollama's model-management routes refused) on the public port, its /metrics on another
  free 127.0.0.1 port;
- vllm: refused (local mode serves CPU engines; vLLM needs an NVIDIA GPU and its image).

The API key is read from a file by the engine: never in arguments, environment or logs.
Errors are LocalError with a message naming the field or the file and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_operator import api, engines
from slm_operator.diff import parse_quantity
from slm_operator.engines import llamacpp as llamacpp_engine
from slm_operator.engines.base import ServeInput
from slm_operator.local import machine as mach
from slm_operator.local.state import StateDir
from slm_operator.resolve import Resolved, artifact_key, execution_target, resolve

DEFAULT_PORT = 8000
QUANTIZER_IMAGE = "ghcr.io/slm-operator/quantizer:0.1.0"
IMAGE_USER = "65532:65532"  # the runtime images' USER (runtime-images/*/Dockerfile)
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0
OLLAMA_VERSION = "0.13.5"  # hack/images.sh OLLAMA_VERSION: the binary it caches
LLAMA_CPP_VERSION = "0.3.36"  # runtime-images/install-ml-deps.sh: hack/images.sh caches llama-server by it
Say = Callable[[str], None]


class LocalError(RuntimeError):
    """A refusal or failure with a message for the user (field or file, and the fix)."""


@dataclass
class Plan:
    """Everything `up` decided before starting anything."""

    name: str
    spec: api.SLMDeploymentSpec
    r: Resolved
    key: str
    state: StateDir
    artifact: Path
    api_key_file: Path
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- planning (no side effects)

def plan(obj: dict[str, Any], *, node_memory_gib: float | None = None) -> Plan:
    """Validate, resolve and size one SLMDeployment manifest for this machine.

    Raises LocalError with every validation problem, or the fit refusal."""
    from slm_operator.validate import defaulted, validate

    name = (obj.get("metadata") or {}).get("name", "<unnamed>")
    problems = validate(obj)
    if problems:
        raise LocalError("\n".join(f"{name}: {p}" for p in problems))
    spec = api.SLMDeployment.model_validate(defaulted(obj)).spec
    if not api.serving_enabled(spec):
        raise LocalError(f"{name}: serving.enabled: false (quantize-only) has nothing for slmctl up to serve; "
                         "apply it to a cluster (the artifact's location, size and checksum land in "
                         "status.artifact), or run the quantizer alone: python -m slm_quantizer --help")
    r = resolve(spec)
    m = mach.detect()
    if node_memory_gib is not None:
        m = mach.Machine(int(node_memory_gib * mach.GIB), m.gpus)
    problem = mach.fit_problem(spec, r, m)
    if problem:
        raise LocalError(f"{name}: {problem}")
    if r.engine == "vllm":
        raise LocalError(f"{name}: engine.name: vllm is not served in local mode (it needs an NVIDIA GPU and the "
                         "vLLM image); set engine.name: onnxruntime (quantization.format onnx) or ollama "
                         "(quantization.format gguf), or deploy to the cluster")
    if r.format not in ("onnx", "gguf"):
        raise LocalError(f"{name}: quantization.format: {r.format} is served by vLLM only; local mode serves "
                         "onnx (engine onnxruntime) or gguf (engine ollama)")
    if spec.model.source.startswith("pvc://"):
        raise LocalError(f"{name}: model.source: pvc:// names a Kubernetes claim; locally use hf:// or s3://")
    state = StateDir.for_name(name)
    key = artifact_key(spec, r)
    ref = spec.access.api_key_secret_ref if spec.access else None
    api_key_file = state.secret_file(ref.name, ref.key) if ref else state.api_key
    notes = [] if mach.lookup_model(spec.model.source) else [r.reason]
    return Plan(name, spec, r, key, state, state.artifact(r.format, r.qtype, key), api_key_file, notes)


def _secret(p: Plan, field_name: str, secret: str, key: str) -> Path:
    path = p.state.secret_file(secret, key)
    if not path.is_file():
        raise LocalError(f"{p.name}: {field_name} names Secret {secret} (key {key}); locally it is read from "
                         f"{path}: write the value there (chmod 600)")
    return path


def quantizer_args(p: Plan, models: str, secrets_root: str | None) -> tuple[list[str], dict[str, str]]:
    """(arguments after `python -m slm_quantizer`, environment) as the operator's Job passes them.

    models: where the state's models folder is seen (the local path, or /models in a
    container); secrets_root: where state/secrets is seen (None: the local path)."""
    spec, r = p.spec, p.r
    q = spec.quantization
    rel = p.artifact.relative_to(p.state.models)
    args = ["--source", spec.model.source, "--format", r.format, "--type", r.qtype,
            "--target", execution_target(spec, r), "--output", f"{models}/{rel}",
            "--max-ppl-increase-pct", str(q.max_perplexity_increase_percent if q else 10),
            "--termination-log", f"{models}/.quantize-result.json"]
    sroot = secrets_root or str(p.state.root / "secrets")
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    env = {"HF_HOME": f"{models}/hf", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if spec.model.token_secret_ref:
        ref = spec.model.token_secret_ref
        _secret(p, "model.tokenSecretRef", ref.name, ref.key)
        args += ["--token-file", f"{sroot}/{ref.name}/{ref.key}"]
    if spec.model.s3_credentials_secret_ref:
        ref = spec.model.s3_credentials_secret_ref
        if not (p.state.root / "secrets" / ref.name).is_dir():
            raise LocalError(f"{p.name}: model.s3CredentialsSecretRef names Secret {ref.name}; locally its keys are "
                             f"files in {p.state.root / 'secrets' / ref.name}/ (AWS_ACCESS_KEY_ID, "
                             "AWS_SECRET_ACCESS_KEY): create them there")
        args += ["--s3-credentials-dir", f"{sroot}/{ref.name}"]
    hub = spec.model.hub
    if hub and hub.endpoint:
        env["HF_ENDPOINT"] = hub.endpoint
    if hub and hub.ca_bundle_secret_ref:
        ref = hub.ca_bundle_secret_ref
        _secret(p, "model.hub.caBundleSecretRef", ref.name, ref.key)
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = f"{sroot}/{ref.name}/{ref.key}"
    return args, env


def ollama_binary() -> str | None:
    """$SLM_OLLAMA_BIN, `ollama` on PATH, or the binary hack/images.sh caches."""
    env = os.environ.get("SLM_OLLAMA_BIN")
    if env:
        return env
    cached = Path.home() / ".cache" / "slm-operator" / "bin" / f"ollama-v{OLLAMA_VERSION}"
    return shutil.which("ollama") or (str(cached) if os.access(cached, os.X_OK) else None)


def llama_server_binary() -> str | None:
    """$SLM_LLAMA_SERVER_BIN, `llama-server` on PATH, or the build hack/images.sh caches."""
    env = os.environ.get("SLM_LLAMA_SERVER_BIN")
    if env:
        return env
    version = os.environ.get("LLAMA_CPP_VERSION", LLAMA_CPP_VERSION)
    cached = Path.home() / ".cache" / "slm-operator" / "bin" / f"llama-server-{version}" / "bin" / "llama-server"
    return shutil.which("llama-server") or (str(cached) if os.access(cached, os.X_OK) else None)


def engine_commands(p: Plan, port: int, private_port: int) -> list[dict[str, Any]]:
    """The processes that serve the model: [{role, argv, env}], the API on 127.0.0.1:port."""
    py = sys.executable
    base_env = {"HOME": str(p.state.root), "PYTHONUNBUFFERED": "1"}
    r = p.r
    engines.get(r.engine)  # an unknown engine is an error, never another engine's launcher
    if r.engine == "llamacpp":
        binary = llama_server_binary()
        if binary is None:
            raise LocalError(f"{p.name}: engine llamacpp needs llama.cpp's llama-server: put it on PATH, set "
                             "SLM_LLAMA_SERVER_BIN, or build it once with `bash hack/images.sh llama-server-bin`; "
                             "or set engine.name: ollama")
        inp = ServeInput(served_name=r.served_name, model_path=str(p.artifact), fmt=r.format, qtype=r.qtype,
                         context=r.context_length, gpu_count=r.gpu_count,
                         cpu_millicores=int((parse_quantity(r.cpu) or 1) * 1000),
                         target=execution_target(p.spec, r), options=p.spec.engine.llamacpp, resources={},
                         mounts=[], artifact_bytes=0, image="")
        return [{"role": "engine", "env": base_env, "argv": [binary, *llamacpp_engine.server_args(
            inp, host="127.0.0.1", port=port, key_file=str(p.api_key_file))]}]
    if r.engine == "onnxruntime":
        opts = p.spec.engine.onnxruntime
        return [{"role": "engine", "env": base_env, "argv": [
            py, "-m", "slm_onnx_server", "--model-dir", str(p.artifact), "--served-model-name", r.served_name,
            "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(p.api_key_file),
            "--device", execution_target(p.spec, r), "--max-concurrency", str(opts.workers if opts else 4),
            "--max-queue", str(opts.queue_size if opts else 64), "--max-model-len", str(r.context_length),
            "--grace-period-s", "10"]}]
    if r.engine != "ollama":
        raise LocalError(f"{p.name}: engine.name: {r.engine} is not served in local mode; use onnxruntime, ollama "
                         "or llamacpp")
    binary = ollama_binary()
    if binary is None:
        raise LocalError(f"{p.name}: engine ollama needs the Ollama binary: put `ollama` on PATH, set SLM_OLLAMA_BIN, "
                         f"or build it once with `bash hack/images.sh` (cached as ~/.cache/slm-operator/bin/"
                         f"ollama-v{OLLAMA_VERSION}); or use engine.name: onnxruntime")
    missing = [m for m in ("slm_ollama", "slm_gateway", "aiohttp") if importlib.util.find_spec(m) is None]
    if missing:
        raise LocalError(f"{p.name}: engine ollama runs `python -m slm_ollama serve` behind `python -m slm_gateway`; "
                         f"{', '.join(missing)} cannot be imported: pip install 'slm-operator[serve]'")
    opts = p.spec.engine.ollama
    num_ctx = opts.num_ctx if opts and opts.num_ctx else r.context_length
    ollama_env = {**base_env, "OLLAMA_HOST": f"127.0.0.1:{private_port}", "OLLAMA_MODELS": str(p.state.ollama_models),
                  "OLLAMA_NUM_PARALLEL": str(opts.num_parallel if opts else 4),
                  "OLLAMA_KEEP_ALIVE": opts.keep_alive if opts else "-1", "OLLAMA_NOPRUNE": "1"}
    return [
        {"role": "engine", "env": ollama_env, "argv": [
            py, "-m", "slm_ollama", "serve", "--gguf-dir", str(p.artifact), "--name", r.served_name,
            "--param", f"num_ctx={num_ctx}", "--ollama-bin", binary]},
        # The gateway's one-key mode: every line of the key file is a key (runtime-images/gateway).
        {"role": "gateway", "env": base_env, "argv": [
            py, "-m", "slm_gateway", "--engine", "ollama", "--upstream", f"http://127.0.0.1:{private_port}",
            "--api-key-file", str(p.api_key_file), "--listen", f"127.0.0.1:{port}",
            "--metrics-listen", f"127.0.0.1:{free_port()}", "--model", r.served_name]},
    ]


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int, marker: str) -> bool:
    """pid runs and is ours (its command line has marker): a reused pid is never signalled."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker in cmd and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def running(record: dict[str, Any] | None) -> bool:
    """True when every process of a run record is alive."""
    procs = (record or {}).get("processes") or []
    return bool(procs) and all(_alive(pr["pid"], pr["marker"]) for pr in procs)


def http_status(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status of GET url, None when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def artifact_complete(path: Path) -> bool:
    from slm_runtime.artifact import read_manifest

    return read_manifest(path) is not None


def quantize(p: Plan, runtime: str, say: Say) -> float:
    """Build the artifact unless a complete one with the same key exists. Seconds spent."""
    if artifact_complete(p.artifact):
        say(f"artifact {p.artifact.name} is complete: reusing it (no quantization)")
        return 0.0
    start = time.monotonic()
    log = p.state.logs / "quantize.log"
    if runtime == "podman":
        args, env = quantizer_args(p, "/models", "/secrets")
        cmd = ["podman", "run", "--rm", "--network", "host", "--read-only", "--user", IMAGE_USER,
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp",
               "-v", f"{p.state.models}:/models"]
        if (p.state.root / "secrets").is_dir():
            cmd += ["-v", f"{p.state.root / 'secrets'}:/secrets:ro"]
        for k, v in sorted({**env, "HOME": "/tmp"}.items()):
            cmd += ["-e", f"{k}={v}"]
        cmd += ["--entrypoint", '["python3", "-m", "slm_quantizer"]', QUANTIZER_IMAGE, *args]
        if os.geteuid() == 0:  # rootful podman: the image's user must own its output folder
            for path in (p.state.models, *p.state.models.rglob("*")):
                os.chown(path, 65532, 65532, follow_symlinks=False)
        run_env = dict(os.environ)
    else:
        args, env = quantizer_args(p, str(p.state.models), None)
        cmd = [sys.executable, "-m", "slm_quantizer", *args]
        run_env = {**os.environ, **env}
    say(f"quantizing {p.spec.model.source} to {p.r.format} {p.r.qtype} ({runtime}; log {log})")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, env=run_env, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for raw in proc.stdout:
            fh.write(raw)
            fh.flush()
            with contextlib.suppress(ValueError):
                ev = json.loads(raw)
                stage = ev.get("stage") if isinstance(ev, dict) else None
                # Stages as they start; a download only once it is whole (it reports often).
                if stage in ("convert", "quantize", "verify", "gate") or (
                        stage == "download" and ev.get("bytes") == ev.get("total")):
                    say(f"  {stage}")
        rc = proc.wait()
    if rc != 0:
        result: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            result = json.loads((p.state.models / ".quantize-result.json").read_text())
        raise LocalError(f"{p.name}: quantization failed (exit {rc}, {result.get('result', 'Failed')}): "
                         f"{result.get('message') or _tail(log, 8)} (log {log})")
    return time.monotonic() - start


def _spawn(p: Plan, role: str, argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], subprocess.Popen]:
    log = p.state.logs / f"{role}.log"
    with open(log, "ab") as fh:
        fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} start\n".encode())
        fh.flush()
        # Its own session: `up` returns, the engine stays; down signals the whole group.
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
                                cwd=p.state.root, start_new_session=True)
    return {"role": role, "pid": proc.pid, "marker": argv[2], "log": str(log)}, proc


def stop(record: dict[str, Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM each process group of a run record (gateway first), SIGKILL what is left after timeout."""
    procs = [pr for pr in reversed(record.get("processes") or []) if _alive(pr["pid"], pr["marker"])]
    for pr in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pr["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pr["pid"], pr["marker"]) for pr in procs):
        time.sleep(0.1)
    for pr in procs:
        if _alive(pr["pid"], pr["marker"]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pr["pid"], signal.SIGKILL)


def _choose_port(p: Plan, asked: int | None, previous: dict[str, Any] | None) -> int:
    if asked == 0:
        return free_port()
    if asked:
        if not port_free(asked):
            raise LocalError(f"--port {asked}: 127.0.0.1:{asked} is in use; pick another port (or --port 0 for any)")
        return asked
    for candidate in ((previous or {}).get("port"), DEFAULT_PORT):
        if candidate and port_free(candidate):
            return candidate
    return free_port()


def up(obj: dict[str, Any], *, port: int | None = None, runtime: str = "auto", node_memory_gib: float | None = None,
       say: Say = print, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """Serve one SLMDeployment here; returns the run record once the endpoint is ready.

    runtime: where the quantizer runs: process (this Python), podman (the quantizer image),
    auto (process when slm_quantizer is importable, else podman). Idempotent: a run of the
    same artifact and port that is alive is left as it is."""
    t0 = time.monotonic()
    p = plan(obj, node_memory_gib=node_memory_gib)
    for note in p.notes:
        say(f"note: {note}")
    if runtime == "auto":
        runtime = "process" if importlib.util.find_spec("slm_quantizer") else "podman"
    if runtime == "podman" and not shutil.which("podman"):
        raise LocalError("--runtime podman: podman is not installed; use --runtime process (pip install "
                         "'slm-operator[quantize]')")
    previous = p.state.read_run()
    if running(previous) and previous and previous.get("artifactKey") == p.key and port in (None, previous["port"]):
        say(f"{p.name} is already running on {previous['url']} (slmctl down {p.name} to stop it)")
        return previous
    if previous and running(previous):
        say(f"stopping the previous run of {p.name} (artifact {previous.get('artifactKey')})")
        stop(previous)
    p.state.ensure()
    if p.api_key_file == p.state.api_key:
        generated = p.state.ensure_api_key()
    else:
        _secret(p, "access.apiKeySecretRef", p.api_key_file.parent.name, p.api_key_file.name)
        generated = False
    quantize_s = quantize(p, runtime, say)
    port = _choose_port(p, port, previous)
    url = f"http://127.0.0.1:{port}/v1"
    procs = []
    children: list[subprocess.Popen] = []
    record: dict[str, Any] = {}
    try:
        for cmd in engine_commands(p, port, free_port()):
            entry, child = _spawn(p, cmd["role"], cmd["argv"], cmd["env"])
            procs.append(entry)
            children.append(child)
        record = {"name": p.name, "engine": p.r.engine, "model": p.r.served_name, "port": port, "url": url,
                  "artifact": str(p.artifact), "artifactKey": p.key, "apiKeyFile": str(p.api_key_file),
                  "processes": procs, "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "quantizeSeconds": round(quantize_s, 2)}
        p.state.write_run(record)
        deadline = time.monotonic() + timeout
        ready_path = engines.get(p.r.engine).ready_path
        while http_status(f"http://127.0.0.1:{port}{ready_path}") != 200:
            # poll(), not _alive(): until exec, a fresh child's command line is still ours.
            dead = [pr for pr, child in zip(procs, children, strict=True) if child.poll() is not None]
            if dead:
                raise LocalError(f"{p.name}: the {dead[0]['role']} exited while starting; last lines of "
                                 f"{dead[0]['log']}:\n{_tail(Path(dead[0]['log']))}")
            if time.monotonic() > deadline:
                raise LocalError(f"{p.name}: not ready after {timeout:.0f} s; logs in {p.state.logs}")
            time.sleep(0.1)
    except BaseException:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        raise
    record["readySeconds"] = round(time.monotonic() - t0, 2)
    p.state.write_run(record)
    say(f"{p.name} ready in {record['readySeconds']} s: {url} (model {p.r.served_name}, engine {p.r.engine})")
    if generated:
        key = p.api_key_file.read_text().strip()
        say(f"API key (shown once): {key}\n  read it again with: cat {p.api_key_file}")
    else:
        say(f"API key: cat {p.api_key_file}")
    return record


def status(name: str | None = None) -> list[dict[str, Any]]:
    """One row per local deployment (or the one named): name, running, ready, url, engine, model."""
    from slm_operator.local.state import all_states

    states = [StateDir.for_name(name)] if name else all_states()
    rows = []
    for st in states:
        rec = st.read_run() or {}
        alive = running(rec)
        path = engines.get(rec["engine"]).ready_path if rec.get("engine") in engines.ENGINE_NAMES else "/ready"
        ready = alive and http_status(f"http://127.0.0.1:{rec['port']}{path}") == 200
        rows.append({"name": st.root.name, "running": alive, "ready": bool(ready), "url": rec.get("url"),
                     "engine": rec.get("engine"), "model": rec.get("model"), "apiKeyFile": rec.get("apiKeyFile"),
                     "pids": [pr["pid"] for pr in rec.get("processes") or []], "state": str(st.root)})
    return rows


def down(name: str, *, purge: bool = False) -> bool:
    """Stop the named deployment's processes; True when something was running.

    purge also removes its state folder (artifacts, key, logs)."""
    st = StateDir.for_name(name)
    rec = st.read_run()
    was = running(rec)
    if rec:
        stop(rec)
        rec["processes"] = []
        rec["stoppedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        st.write_run(rec)
    if purge and st.root.is_dir():
        shutil.rmtree(st.root)
    return was
