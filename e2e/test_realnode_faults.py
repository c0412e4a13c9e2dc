"""Node and pod faults on the real node (issue 18 item 5): one SLMDeployment through three faults.

A tiny Qwen3 model (31 MB: larger than huggingface_hub's 10 MiB write unit) from the local hub,
quantized to GGUF Q4_K_M by the project's quantizer image and served by llama.cpp behind the
gateway, on the real node (containerd + runc). One CR goes through all three faults in turn, to keep the file near four
minutes:

1. Kill the quantizer pod mid-download. The hub serves file bodies slowly (HubServer.throttle_bps);
   once the first 10 MiB of model.safetensors sit on the claim as huggingface_hub's `.incomplete` file,
   every process of the Job's pod is SIGKILLed on the node (what the OOM killer or a crash does).
   The Job's next pod must not fetch again the files that were complete before the kill. It
   should resume the weights (a `Range: bytes=N-` request with N > 0, the file requested from
   byte 0 only once): today it does not (huggingface_hub 1.x+ writes each download to a
   process-unique `.incomplete` file from byte 0, PR 4228 there), so the test ends as xfail
   naming the gap, once every other check has passed; it passes by itself once the quantizer
   resumes.
2. Delete the node's pods while the Job runs. Once the weights are complete on the claim, every pod of
   the namespace on the node is deleted. The Job's next pod must not fetch any file again (the
   snapshot on the claim is complete), the Job must succeed and the CR reach Ready.
3. Kill the engine mid-stream. A streaming chat completion through the Service (kubectl
   port-forward, as a user would) with `ignore_eos`; at its first token the llama-server process
   is SIGKILLed on the node. The client's stream must end, not hang (within 60 s), without a
   normal finish. Then the pod is deleted: the Deployment brings a new one up, and it answers.

Needs the real node (skips without it) and the quantizer, llamacpp and gateway images
(`hack/images.sh`, imported by e2e.realnode.ensure_images; SLM_E2E_REUSE_IMAGES=1 imports the
images podman has without rebuilding stale ones, for local iteration).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.helpers import apply, kubectl, kubectl_json, run_operator, wait_for
from e2e.realnode import (
    RealNode,
    ensure_images,
    pod_pids,
    port_forward,
    process_cmdline,
)
from e2e.test_realnode import api_key, pods_summary, slm, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

HUB_REPO = "slm-e2e/tiny-qwen3-31mb"
# huggingface_hub writes a download to its `.incomplete` file in 10 MiB pieces
# (constants.DOWNLOAD_CHUNK_SIZE): the weights must be larger than that for a part to be on the
# claim before the file is complete. This shape gives 31 MB of float32 weights (the other
# real-node tests' model has 7 MB); its rows are multiples of 256, as Q4_K_M's blocks need.
MODEL_SHAPE = {"hidden": 512, "intermediate": 1024, "layers": 3, "heads": 8, "kv_heads": 2, "head_dim": 64}
NAME = "tiny-faults"
WEIGHTS = "model.safetensors"
GATE_PERCENT = 50  # the quality gate is not under test here; a 50-step model's Q4_K_M loss varies
DOWNLOAD_S = 30  # how long the throttled first download of the weights would take
IMAGE_NAMES = ["quantizer", "llamacpp", "gateway"]


@pytest.fixture(scope="module")
def images(real_node: RealNode) -> dict[str, str]:
    """The quantizer, llamacpp and gateway images in the node's containerd (see the module docstring)."""
    return ensure_images(IMAGE_NAMES, build=os.environ.get("SLM_E2E_REUSE_IMAGES") != "1")


@pytest.fixture(scope="module")
def hub(real_node: RealNode) -> Iterator[Any]:
    """The local hub on the node's address with a tiny Qwen3 model of MODEL_SHAPE (trained once, cached)."""
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))
    with HubServer(host=real_node.address, port=0) as server:
        model = tiny_model("qwen3", train_steps=steps, **MODEL_SHAPE)
        server.add_repo(HUB_REPO, model)
        server.weights_size = (Path(model) / WEIGHTS).stat().st_size
        yield server


def _claim_dir(kc: str, ns: str) -> Path:
    """The host directory behind the CR's model claim (the fake provisioner's hostPath PV)."""
    def bound() -> str | None:
        pvcs = kubectl_json(kc, "-n", ns, "get", "pvc")["items"]
        return next((p["spec"].get("volumeName") for p in pvcs if p["status"].get("phase") == "Bound"), None)

    pv = wait_for(bound, timeout=180, interval=1, what="the model claim bound")
    return Path(kubectl_json(kc, "get", "pv", pv)["spec"]["hostPath"]["path"])


def _partial_bytes(claim: Path) -> int:
    """Bytes of the largest part of a download under the claim (0: none): the quantizer's own
    resumable part (`.slm-part`, slm_quantizer.fetch) or huggingface_hub's `.incomplete`."""
    sizes = []
    for pattern in ("*.slm-part", "*.incomplete"):
        for p in claim.rglob(pattern):
            with contextlib.suppress(OSError):
                sizes.append(p.stat().st_size)
    return max(sizes, default=0)


def _job_pods(kc: str, ns: str) -> list[dict[str, Any]]:
    pods = kubectl_json(kc, "-n", ns, "get", "pods")["items"]
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name")]


def _kill_pod(uid: str, match: str = "") -> list[int]:
    """SIGKILL the pod's processes on the node (only those whose command line contains `match`)."""
    pids = [p for p in pod_pids(uid) if match in process_cmdline(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _weights_gets(hub: Any) -> list[str | None]:
    """The Range header (None: from byte 0) of every GET of the weights' body so far."""
    return [rng for path, rng in list(hub.file_gets) if path == WEIGHTS]


def _serving_pod(kc: str, ns: str, not_uid: str = "") -> dict[str, Any] | None:
    """A Ready serving pod of NAME (not the Job's), other than `not_uid`."""
    for pod in kubectl_json(kc, "-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]:
        meta = pod["metadata"]
        if (meta.get("labels") or {}).get("job-name") or meta["uid"] == not_uid or meta.get("deletionTimestamp"):
            continue
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or []):
            return pod
    return None


def _stream_and_kill(port: int, key: str, model: str, engine_pid: int) -> dict[str, Any]:
    """Stream a long chat completion and SIGKILL the engine at its first token; what the client saw."""
    body = {"model": model, "stream": True, "max_tokens": 400, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Tell a long story."}]}
    seen: dict[str, Any] = {"chunks": 0, "done": False, "finish": None, "error": None, "killed_at": None}
    started = time.monotonic()
    try:
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(60)) as resp:
            seen["status"] = resp.status_code
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    seen["done"] = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    seen["error"] = f"error event: {json.dumps(event['error'])[:300]}"
                    continue
                seen["chunks"] += 1
                choice = (event.get("choices") or [{}])[0]
                seen["finish"] = choice.get("finish_reason") or seen["finish"]
                if seen["killed_at"] is None and (choice.get("delta") or {}).get("content"):
                    os.kill(engine_pid, signal.SIGKILL)
                    seen["killed_at"] = time.monotonic()
    except httpx.TimeoutException as e:
        seen["hang"] = f"{type(e).__name__} after {time.monotonic() - started:.0f}s"
    except httpx.HTTPError as e:  # the connection cut mid-body: an error the client sees at once
        seen["error"] = f"{type(e).__name__}: {e}"[:300]
    seen["ended_after_kill_s"] = round(time.monotonic() - seen["killed_at"], 2) if seen["killed_at"] else None
    return seen


def test_quantizer_kill_resume_node_pods_deleted_engine_kill_mid_stream(
        kubeconfig: str, namespace: str, real_node: RealNode, images: dict[str, str], hub: Any) -> None:
    kc, ns = kubeconfig, namespace
    figures: dict[str, Any] = {}
    hub.throttle_bps = hub.weights_size / DOWNLOAD_S
    with run_operator(kubeconfig, [ns]) as op:
        started = time.monotonic()
        apply(kc, slm(NAME, hub.url, hub.revision(HUB_REPO), fmt="gguf", qtype="Q4_K_M", engine="llamacpp",
                      repo=HUB_REPO, gate=GATE_PERCENT),
              namespace=ns)
        claim = _claim_dir(kc, ns)

        # 1. The quantizer pod killed with a quarter of the weights on the claim.
        def partial() -> tuple[dict[str, Any], int] | None:
            size = _partial_bytes(claim)
            pods = [p for p in _job_pods(kc, ns) if p["status"].get("phase") == "Running"]
            return (pods[0], size) if pods and size > 0 else None

        first_pod, on_disk = wait_for(partial, timeout=300, interval=0.5,
                                      what=f"a part of {WEIGHTS} written to the claim")
        killed = _kill_pod(first_pod["metadata"]["uid"])
        assert killed, f"no process of the quantizer pod {first_pod['metadata']['name']} found on the node"
        figures["bytes_on_claim_at_kill"] = on_disk
        figures["weights_bytes"] = hub.weights_size
        hub.throttle_bps = 0.0

        # 2. The next pod resumes; once the weights are complete, every pod of the namespace on the node goes.
        done_before_kill = {path for path, _ in list(hub.file_gets) if path != WEIGHTS}

        def complete() -> dict[str, Any] | None:
            if not [b for b in claim.rglob("blobs/*") if b.is_file() and b.stat().st_size == hub.weights_size]:
                return None
            pods = [p for p in _job_pods(kc, ns) if p["metadata"]["uid"] != first_pod["metadata"]["uid"]
                    and p["status"].get("phase") in ("Pending", "Running")]
            return pods[0] if pods else None

        second_pod = wait_for(complete, timeout=300, interval=0.5,
                              what=f"the next quantizer pod to finish downloading {WEIGHTS}")
        gets_before_delete = len(hub.file_gets)
        job = kubectl_json(kc, "-n", ns, "get", "job", second_pod["metadata"]["labels"]["job-name"])
        assert not job["status"].get("succeeded"), "the Job finished before the node's pods could be deleted"
        deleted = kubectl(kc, "-n", ns, "delete", "pods", "--wait=false",
                          f"--field-selector=spec.nodeName={real_node.name}").split("\n")
        figures["pods_deleted_while_job_ran"] = len([d for d in deleted if d.strip()])

        ready = wait_ready(kc, ns, NAME, op, fail_on_degraded=False)
        figures["ready_s"] = round(time.monotonic() - started, 1)
        assert ready["status"]["artifact"]["ready"] is True, ready["status"]["artifact"]
        job = kubectl_json(kc, "-n", ns, "get", "job", second_pod["metadata"]["labels"]["job-name"])
        assert job["status"].get("succeeded") == 1, job["status"]
        figures["job_failed_pods"] = job["status"].get("failed", 0)

        weights = _weights_gets(hub)
        figures["weights_gets"] = weights
        offsets = [int(m.group(1)) for r in weights if r and (m := re.match(r"bytes=(\d+)-", r))]
        resumed = bool(offsets) and max(offsets) > 0 and weights.count(None) == 1
        figures["weights_resumed_from_byte"] = max(offsets) if resumed else None
        figures["stale_incomplete_bytes_on_claim"] = _partial_bytes(claim)
        again = sorted({path for path, _ in hub.file_gets if path in done_before_kill
                        and sum(1 for q, _ in hub.file_gets if q == path) > 1})
        assert not again, f"files complete before the kill were fetched again by the next pod: {again}"
        refetched = [p for p, _ in hub.file_gets[gets_before_delete:]]
        assert not refetched, f"files fetched again after the pods were deleted with the download complete: {refetched}"

        # 3. The engine killed mid-stream.
        pod = wait_for(lambda: _serving_pod(kc, ns), timeout=300, interval=1, what="a Ready serving pod")
        uid = pod["metadata"]["uid"]
        engines = [p for p in pod_pids(uid) if "llama-server" in process_cmdline(p)]
        assert len(engines) == 1, f"llama-server processes of pod {pod['metadata']['name']}: {engines}"
        key = api_key(kc, ns, f"{NAME}-api-key")
        with port_forward(kc, ns, f"service/{NAME}", 8000) as port:
            model = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"},
                              timeout=60).json()["data"][0]["id"]
            seen = _stream_and_kill(port, key, model, engines[0])
        figures["stream"] = seen
        assert seen["killed_at"], f"no token came before the stream ended: {seen}"
        assert "hang" not in seen, f"the stream hung after the engine was killed: {seen}"
        assert not (seen["done"] and seen["finish"] in ("stop", "length") and not seen["error"]), \
            f"the stream finished normally before the kill landed (too fast: raise max_tokens): {seen}"
        # A clean error, not a cut answer that looks whole: the gateway's error event (SSE).
        assert seen["error"] and "upstream_unavailable" in seen["error"], seen

        kubectl(kc, "-n", ns, "delete", "pod", pod["metadata"]["name"], "--wait=false")
        back = time.monotonic()
        new = wait_for(lambda: _serving_pod(kc, ns, not_uid=uid), timeout=300, interval=1,
                       what="the Deployment's new serving pod Ready")
        with port_forward(kc, ns, f"service/{NAME}", 8000) as port:
            def answer() -> str | None:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                               headers={"Authorization": f"Bearer {key}"},
                               json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
                return r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None

            text = wait_for(answer, timeout=120, interval=2, what="an answer from the new pod")
        figures["new_pod_answers_s"] = round(time.monotonic() - back, 1)
        assert new["metadata"]["uid"] != uid and text is not None
    print(f"\nreal-node faults: {json.dumps(figures)}")
    if not resumed:
        # The known gap (issue 18 item 5): huggingface_hub 1.x+ downloads each file to a
        # process-unique `<etag>.<random>.incomplete` opened for writing from byte 0, so a new
        # pod cannot resume a file the killed one left half-way (and the part stays on the claim).
        pytest.xfail(f"the rerun fetched {WEIGHTS} from byte 0 again ({weights}); "
                     f"{figures['stale_incomplete_bytes_on_claim']} bytes of the killed pod's part left on the claim")
    if os.environ.get("SLM_E2E_DEBUG"):
        print(pods_summary(kc, ns))
