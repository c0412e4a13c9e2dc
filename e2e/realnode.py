"""Support for tests on the real node that e2e/cluster/up starts beside the KWOK nodes.

- `node_state(kubeconfig)`: the real node (name, address) or why there is none.
- `ensure_images(names)`: the project's images built (`hack/images.sh`, Debian base) and
  imported into the node's containerd, once per image ID (a stamp per ID under the cache).
- `port_forward(kubeconfig, ns, target, port)`: `kubectl port-forward` to 127.0.0.1, the way
  a user reaches a Service from a laptop.
- `REAL_NODE`: the nodeSelector and toleration an SLMDeployment needs to land on the node.

Constants mirror e2e/cluster/node.sh (label, taint, address); tests read the node's address
from the Node object rather than assuming it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from e2e.helpers import CLUSTER_BIN_DIR, CLUSTER_DIR, kubectl_json
from slm_operator.render.common import Images

REPO = CLUSTER_DIR.parent.parent
CACHE = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator"))
STATE = Path(os.environ.get("SLM_CLUSTER_DIR", CACHE / "cluster"))
NODE_NAME = os.environ.get("SLM_NODE_NAME", "slm-node-0")
CONTAINERD_SOCK = "/run/slm-containerd/containerd.sock"
IMAGES_SCRIPT = REPO / "hack" / "images.sh"

# What an SLMDeployment (spec.nodeSelector, spec.tolerations) needs to run on the real node.
REAL_NODE = {
    "nodeSelector": {"slm.ai/node": "real"},
    "tolerations": [{"key": "slm.ai/real-node", "operator": "Exists", "effect": "NoSchedule"}],
}

# Image names as the operator defaults to them (the chart's defaults are tested equal).
_DEFAULTS = Images()
IMAGES = {
    "quantizer": _DEFAULTS.quantizer,
    "onnxruntime-server": _DEFAULTS.onnxruntime,
    "ollama": _DEFAULTS.ollama,
    "llamacpp": _DEFAULTS.llamacpp,
    "gateway": _DEFAULTS.gateway,
}


@dataclass(frozen=True)
class RealNode:
    """The real node: its name and InternalIP (pods reach host services on this address)."""

    name: str
    address: str


def node_state(kubeconfig: str) -> RealNode | str:
    """The real node when it is registered and Ready; else a one-line reason (for a skip)."""
    try:
        node = kubectl_json(kubeconfig, "get", "node", NODE_NAME)
    except Exception:
        why = STATE / "node-status"
        reason = why.read_text().strip() if why.exists() else "e2e/cluster/up started no real node"
        return f"no real node: {reason}"
    conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    if conds.get("Ready") != "True":
        return f"real node {NODE_NAME} is not Ready: {conds}"
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    return RealNode(NODE_NAME, address)


def _run(*argv: str, timeout: float = 3600, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def build_images(names: list[str]) -> None:
    """`hack/images.sh build` for these images on the Debian base (a no-op when cached)."""
    _run("bash", str(IMAGES_SCRIPT), "build", *names, env={"SLM_BASE": "debian"})


def ensure_images(names: list[str], build: bool = True) -> dict[str, str]:
    """Build the images (cached) and import each into the node's containerd once per image ID.

    build=False imports the images podman has as they are, even if their inputs changed since
    (for iterating on a test while another image is being rebuilt). Returns {short name: image
    reference}. Raises RuntimeError with the tool's output when a build or an import fails.
    """
    if build:
        build_images(names)
    ctr = [str(CLUSTER_BIN_DIR / "ctr"), "--address", CONTAINERD_SOCK, "-n", "k8s.io"]
    present = set(_run(*ctr, "images", "ls", "-q").split())
    stamps = CACHE / "node-images"
    stamps.mkdir(parents=True, exist_ok=True)
    for name in names:
        ref = IMAGES[name]
        image_id = _run("podman", "image", "inspect", "--format", "{{.Id}}", ref).strip()
        stamp = stamps / f"{name}-{image_id[:24]}"
        if stamp.exists() and ref in present:
            continue
        archive = stamps / f"{name}.{os.getpid()}.oci.tar"  # parallel test sessions: one archive each
        try:
            archive.unlink(missing_ok=True)  # podman save refuses to overwrite
            _run("podman", "save", "-q", "--format", "oci-archive", "-o", str(archive), ref)
            _run(*ctr, "images", "import", "--no-unpack=false", str(archive))
        finally:
            archive.unlink(missing_ok=True)
        for old in stamps.glob(f"{name}-*"):
            old.unlink()
        stamp.touch()
    return {n: IMAGES[n] for n in names}


@contextmanager
def port_forward(kubeconfig: str, namespace: str, target: str, port: int, timeout: float = 60) -> Iterator[int]:
    """`kubectl port-forward <target> :<port>`; yields the local port on 127.0.0.1."""
    proc = subprocess.Popen(
        ["kubectl", "--kubeconfig", kubeconfig, "-n", namespace, "port-forward", "--address", "127.0.0.1",
         target, f":{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if m:
                yield int(m.group(1))
                return
            if proc.poll() is not None:
                break
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"kubectl port-forward {target} did not start: {line!r} {err}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def fragile_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], outlier: float = 1000.0) -> Path:
    """A copy of a tiny Qwen3/Llama-layout model that int4 block quantization must damage.

    In every layer, one input feature per 32-wide quantization block is switched off in the
    RMSNorm before q/k/v and gate/up (its norm weight set to 0), and the weights reading that
    feature are set to `outlier`. The source model ignores those weights (their input is always
    0), but a block's int4 scale follows its largest weight, so the other 31 weights of every
    block round to zero once quantized: attention and MLP inputs vanish and perplexity rises
    far above any sane quality gate. Returns `dst`.
    """
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    layers = {k.split(".")[2] for k in tensors if k.startswith("model.layers.")}
    for i in sorted(layers):
        pre = f"model.layers.{i}"
        hidden = tensors[f"{pre}.input_layernorm.weight"].shape[0]
        cols = np.arange(0, hidden, 32)
        for norm, projs in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                            ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            tensors[f"{pre}.{norm}.weight"] = tensors[f"{pre}.{norm}.weight"].copy()
            tensors[f"{pre}.{norm}.weight"][cols] = 0.0
            for proj in projs:
                w = tensors[f"{pre}.{proj}.weight"].copy()
                w[:, cols] = outlier
                tensors[f"{pre}.{proj}.weight"] = w
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def pod_pids(pod_uid: str) -> list[int]:
    """Host PIDs of every process of the pod with this UID on the real node (found by the pod's
    cgroup, cgroupfs or systemd naming: pod<uid> or pod<uid with '_'>). [] when none runs."""
    marks = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if any(m in cgroup for m in marks):
            pids.append(int(entry.name))
    return pids


def process_cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ('' once it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
