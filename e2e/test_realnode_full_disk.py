"""A full disk on the real node (issue 18 item 6): a quantization that does not fit its volume.

The model-cache claim uses the test bed's `fixed-capacity` StorageClass (e2e/cluster/provisioner/
sized.go): an ext4 filesystem of exactly the requested size, loop-mounted, so the quantizer pod
on the real node gets ENOSPC as on a cluster's block storage, and the claim grows offline when
its request grows. A quantize-only SLMDeployment (gguf Q4_K_M of the tiny Qwen3, about 7 MB of
weights) on a 12Mi claim:

- fits the download but not llama.cpp's F16 reference GGUF: the Job fails at once (exit 7,
  permanent) and the CR is Degraded InsufficientStorage, naming the claim, the size to ask for
  and what happens next, with a Warning Event;
- leaves no half-written artifact on the volume (no staging folder, no artifact folder), only the
  download for the rerun;
- after `spec.storage.size` is raised (what the message says to do), the claim grows, the Job
  runs again and the CR becomes Ready with the artifact in status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import apply, condition_status, kubectl, kubectl_json, run_operator, wait_for
from e2e.realnode import REAL_NODE, RealNode, ensure_images
from e2e.test_realnode import get_slm, pods_summary

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

REPO = "slm-e2e/tiny-qwen3"
NAME = "full-disk"
SMALL, LARGE = "12Mi", "64Mi"


@pytest.fixture(scope="module")
def images(real_node: RealNode) -> dict[str, str]:
    missing = [t for t in ("mount", "mkfs.ext4", "e2fsck", "resize2fs") if shutil.which(t) is None]
    if missing or not Path("/dev/loop-control").exists():
        pytest.skip(f"fixed-capacity volumes need loop devices and {missing or 'e2fsprogs'} on this host "
                    "(e2e/cluster/provisioner/sized.go)")
    return ensure_images(["quantizer"])


@pytest.fixture(scope="module")
def hub(real_node: RealNode) -> Iterator[Any]:
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # the cached model the other real-node tests use
    with HubServer(host=real_node.address, port=0) as server:
        server.add_repo(REPO, tiny_model("qwen3", train_steps=steps))
        yield server


def quantize_only(hub_url: str, revision: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": NAME},
        "spec": {
            "model": {"source": f"hf://{REPO}", "revision": revision, "hub": {"endpoint": hub_url}},
            "quantization": {"format": "gguf", "type": "Q4_K_M"},
            "engine": {"name": "llamacpp"},
            "serving": {"enabled": False},
            "storage": {"size": size, "storageClassName": "fixed-capacity"},
            **REAL_NODE,
        },
    }


def volume_dir(kubeconfig: str, ns: str, claim: str) -> Path:
    """The claim's volume on this host (the fixed-capacity volume's mount point)."""
    pvc = kubectl_json(kubeconfig, "-n", ns, "get", "pvc", claim)
    pv = kubectl_json(kubeconfig, "get", "pv", pvc["spec"]["volumeName"])
    return Path(pv["spec"]["hostPath"]["path"])


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_quantization_that_does_not_fit_is_degraded_then_finishes_after_growing(
        kubeconfig: str, namespace: str, real_node: RealNode, images: dict[str, str], hub: Any) -> None:
    ns, claim = namespace, f"{NAME}-model-cache"
    with run_operator(kubeconfig, [ns]) as op:
        apply(kubeconfig, quantize_only(hub.url, hub.revision(REPO), SMALL), namespace=ns)

        def degraded() -> dict[str, Any] | None:
            obj = get_slm(kubeconfig, ns, NAME)
            if condition_status(obj, "Ready") == "True":
                pytest.fail(f"{NAME} became Ready on a {SMALL} volume: {json.dumps(obj['status'], indent=1)}")
            cond = next((x for x in obj.get("status", {}).get("conditions", []) if x["type"] == "Degraded"), {})
            return cond if cond.get("status") == "True" else None

        try:
            cond = wait_for(degraded, 600, interval=3, what=f"{NAME} Degraded on its {SMALL} claim")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{json.dumps(get_slm(kubeconfig, ns, NAME).get('status'), indent=1)}\n"
                                 f"{pods_summary(kubeconfig, ns)}\noperator:\n{op.output()[-3000:]}") from None
        msg = cond["message"]
        assert cond["reason"] == "InsufficientStorage", msg
        assert claim in msg and "volume is full" in msg, msg
        asked = re.search(r"Raise spec\.storage\.size to at least (\d+)(Mi|Gi)", msg)
        assert asked, msg
        assert int(asked.group(1)) * (1024 if asked.group(2) == "Gi" else 1) > 12, msg  # more than it has
        events = kubectl(kubeconfig, "-n", ns, "get", "events", "--field-selector",
                         f"involvedObject.name={NAME},type=Warning", "-o", "json")
        assert any(e["reason"] == "InsufficientStorage" for e in json.loads(events)["items"]), events[:2000]

        # Nothing half-written: no staging or artifact folder, only the download for the rerun.
        root = volume_dir(kubeconfig, ns, claim)
        left = tree(root)
        assert not [p for p in left if ".staging-" in p or p.endswith("manifest.json")], left
        assert any(".hf-cache/" in p and p.endswith(".safetensors") for p in left), left  # the download stays

        # What the message says to do: raise spec.storage.size.
        kubectl(kubeconfig, "-n", ns, "patch", "slmdeployment", NAME, "--type", "merge",
                "-p", json.dumps({"spec": {"storage": {"size": LARGE}}}))

        def ready() -> dict[str, Any] | None:
            obj = get_slm(kubeconfig, ns, NAME)
            return obj if condition_status(obj, "Ready") == "True" else None

        try:
            obj = wait_for(ready, 600, interval=3, what=f"{NAME} Ready after its claim grew to {LARGE}")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{json.dumps(get_slm(kubeconfig, ns, NAME).get('status'), indent=1)}\n"
                                 f"{pods_summary(kubeconfig, ns)}\noperator:\n{op.output()[-3000:]}") from None
    art = obj["status"]["artifact"]
    assert art["ready"] is True and (art["format"], art["type"]) == ("gguf", "Q4_K_M"), art
    pvc = kubectl_json(kubeconfig, "-n", ns, "get", "pvc", claim)
    assert pvc["status"]["capacity"]["storage"] == LARGE, pvc["status"]
    job = kubectl_json(kubeconfig, "-n", ns, "get", "jobs", "-l", "app.kubernetes.io/instance=" + NAME)["items"]
    assert [j["metadata"]["annotations"]["slm.ai/claim-size"] for j in job] == [LARGE], job
    print(f"\nfull disk: Degraded on {SMALL} ({msg[:160]}...); Ready after growing to {LARGE}")
