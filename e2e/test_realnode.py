"""The product's main job, for real: hub -> quantization Job -> serving pod -> an answer.

Everything a container does runs in a container on the real node (containerd + runc, started
by e2e/cluster/up): the project's quantizer, ONNX Runtime server and Ollama images, built by
`hack/images.sh` on a Debian base and imported into the node. The model comes from a local
Hugging Face hub (e2e/hubserver.py) on the node's address, with real commits and checksums;
it is a tiny Qwen3-architecture model trained at test time. The operator runs as a process
against the local control plane. Clients reach the Service through `kubectl port-forward`,
as a user would, with the official `openai` client.

Each namespace enforces Pod Security "restricted", and every container runs with a read-only
root filesystem: an engine that writes outside its volumes fails these tests.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from e2e.helpers import (
    apply,
    condition_status,
    kubectl,
    kubectl_json,
    run_operator,
    wait_for,
    wait_for_object,
)
from e2e.realnode import REAL_NODE, RealNode, ensure_images, fragile_copy, port_forward

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

HUB_REPO = "slm-e2e/tiny-qwen3"
# The same model with int4-hostile outliers (e2e.realnode.fragile_copy): any gate fails.
FRAGILE_REPO = "slm-e2e/tiny-qwen3-fragile"
# The same model with Qwen3's real chat template (tools, thinking): the GGUF carries it to Ollama.
TOOLS_REPO = "slm-e2e/tiny-qwen3-tools"
QWEN3_TEMPLATE = Path(__file__).resolve().parents[1] / "tests/engines/data/chat_templates/Qwen-Qwen3-0.6B.jinja"
READY_TIMEOUT = 600  # a cold quantization of the tiny model plus image start on 2 busy cores


@pytest.fixture(scope="session")
def images(real_node: RealNode) -> dict[str, str]:
    """Built before the first test (conftest.pytest_collection_finish); imported here."""
    return ensure_images(["quantizer", "onnxruntime-server", "ollama", "gateway"])


@pytest.fixture(scope="session")
def hub(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local hub on the node's address (pods reach it through the bridge's gateway)."""
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    # The same training budget as the quantizer tests (tests/quantizer/quantizer_helpers.py),
    # so the cached model is shared.
    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))
    with HubServer(host=real_node.address, port=0) as server:
        model = tiny_model("qwen3", train_steps=steps)
        server.add_repo(HUB_REPO, model)
        fragile = fragile_copy(model, tmp_path_factory.mktemp("fragile"))
        server.add_repo(FRAGILE_REPO, fragile)
        tools = Path(shutil.copytree(model, tmp_path_factory.mktemp("tools") / "m"))
        cfg = json.loads((tools / "tokenizer_config.json").read_text())
        (tools / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": QWEN3_TEMPLATE.read_text()}))
        (tools / "chat_template.jinja").write_text(QWEN3_TEMPLATE.read_text())
        server.add_repo(TOOLS_REPO, tools)
        yield server


def slm(name: str, hub_url: str, revision: str, *, fmt: str, qtype: str, engine: str,
        gate: int | None = None, repo: str = HUB_REPO) -> dict[str, Any]:
    """A small SLMDeployment for the real node: one replica, explicit resources."""
    quant: dict[str, Any] = {"format": fmt, "type": qtype}
    if gate is not None:
        quant["maxPerplexityIncreasePercent"] = gate
    return {
        "apiVersion": "slm.ai/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": f"hf://{repo}", "revision": revision, "hub": {"endpoint": hub_url},
                      "contextLength": 512},
            "quantization": quant,
            "engine": {"name": engine},
            "replicas": 1,
            "resources": {"cpu": "500m", "memory": "2Gi"},
            "storage": {"size": "1Gi"},
            **REAL_NODE,
        },
    }


def get_slm(kubeconfig: str, ns: str, name: str) -> dict[str, Any]:
    return kubectl_json(kubeconfig, "-n", ns, "get", "slmdeployment", name)


def wait_ready(kubeconfig: str, ns: str, name: str, op: Any, timeout: float = READY_TIMEOUT,
               fail_on_degraded: bool = True) -> dict[str, Any]:
    """Wait for Ready=True; on Degraded fail at once with the status (and the operator's log),
    unless a fault is expected to clear (fail_on_degraded=False)."""

    def check() -> dict[str, Any] | None:
        obj = get_slm(kubeconfig, ns, name)
        if fail_on_degraded and condition_status(obj, "Degraded") == "True":
            pytest.fail(f"{name} is Degraded: {json.dumps(obj.get('status'), indent=1)}\n"
                        f"operator log:\n{op.output()[-3000:]}\npods:\n{pods_summary(kubeconfig, ns)}")
        return obj if condition_status(obj, "Ready") == "True" else None

    try:
        return wait_for(check, timeout, interval=2, what=f"{name} Ready")
    except TimeoutError as e:
        raise AssertionError(f"{e}\nstatus: {json.dumps(get_slm(kubeconfig, ns, name).get('status'), indent=1)}\n"
                             f"pods:\n{pods_summary(kubeconfig, ns)}") from None


def pods_summary(kubeconfig: str, ns: str) -> str:
    try:
        return kubectl(kubeconfig, "-n", ns, "get", "pods,jobs,events", "-o", "wide")
    except Exception as e:  # only for failure messages
        return repr(e)


def api_key(kubeconfig: str, ns: str, secret: str) -> str:
    data = kubectl_json(kubeconfig, "-n", ns, "get", "secret", secret)["data"]
    return base64.b64decode(data["api-key"]).decode()


def assert_restricted_and_read_only(kubeconfig: str, ns: str) -> None:
    """Every pod of the namespace is admitted under "restricted" with a read-only root, and a
    write to the root filesystem of a running serving container really fails."""
    labels = kubectl_json(kubeconfig, "get", "namespace", ns)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    pods = kubectl_json(kubeconfig, "-n", ns, "get", "pods")["items"]
    assert pods
    for pod in pods:
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, (pod["metadata"]["name"],
                                                                                   container["name"])
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert running, "no running pod to check the root filesystem of"
    for pod in running:
        container = pod["spec"]["containers"][0]["name"]
        probe = "import errno\ntry:\n open('/probe','w')\nexcept OSError as e:\n print(errno.errorcode[e.errno])"
        proc = kubectl(kubeconfig, "-n", ns, "exec", pod["metadata"]["name"], "-c", container, "--",
                       "python3", "-c", probe)
        assert proc.strip() == "EROFS", f"{pod['metadata']['name']}: writing / gave {proc!r}"


def chat(port: int, key: str, model: str) -> str:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
    return out.choices[0].message.content or ""


def serve_and_answer(kubeconfig: str, ns: str, name: str, model: str) -> tuple[int, str]:
    """Through the Service: an answer with the key, 401 without or with a wrong one, and the
    new key (only) after the Secret is rotated. Returns the number of characters answered."""
    key = api_key(kubeconfig, ns, f"{name}-api-key")
    with port_forward(kubeconfig, ns, f"service/{name}", 8000) as port:
        text = wait_for(lambda: chat(port, key, model) or None, timeout=120, interval=2,
                        what="a first chat completion")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            chat(port, "not-the-key", model)

        new_key = secrets.token_urlsafe(24)
        kubectl(kubeconfig, "-n", ns, "patch", "secret", f"{name}-api-key", "--type", "merge", "-p",
                json.dumps({"data": {"api-key": base64.b64encode(new_key.encode()).decode()}}))

        def rotated() -> bool:
            try:
                chat(port, key, model)
                return False
            except openai.AuthenticationError:
                return bool(chat(port, new_key, model))

        wait_for(rotated, timeout=180, interval=3, what="the rotated key to take effect")
    return len(text), text


def test_onnx_hub_to_answer_then_delete_and_reuse(kubeconfig: str, namespace: str, real_node: RealNode,
                                                  images: dict[str, str], hub: Any) -> None:
    """(a) ONNX int4 end to end, (d) restricted + read-only root for real, (e) deletion keeps the
    model cache and a re-created SLMDeployment reuses the artifact without re-quantizing."""
    ns = namespace
    revision = hub.revision(HUB_REPO)
    figures: dict[str, float] = {}
    with run_operator(kubeconfig, [ns]) as op:
        t0 = time.monotonic()
        apply(kubeconfig, slm("tiny-onnx", hub.url, revision, fmt="onnx", qtype="int4", engine="onnxruntime"),
              namespace=ns)
        obj = wait_ready(kubeconfig, ns, "tiny-onnx", op)
        figures["apply_to_ready_s"] = time.monotonic() - t0

        art = obj["status"]["artifact"]
        assert art["ready"] is True and art["format"] == "onnx"
        before, after = float(art["perplexityBefore"]), float(art["perplexityAfter"])
        assert 1 < before < 5000 and 1 < after < 5000, art
        assert float(art["perplexityIncreasePercent"]) <= 10
        assert int(art["sizeBytes"]) > 0
        # The hub saw the pinned commit being fetched by the Job's pod (not from 127.0.0.1).
        assert any(revision in path for _, path, _ in hub.requests), hub.requests[-5:]

        n, text = serve_and_answer(kubeconfig, ns, "tiny-onnx", "tiny-qwen3")
        figures["apply_to_first_answer_s"] = time.monotonic() - t0
        assert n > 0, text
        assert_restricted_and_read_only(kubeconfig, ns)

        # (e) Delete: the pods go, the model cache stays (storage.retainPolicy Retain, the default).
        fetched = len(hub.requests)
        kubectl(kubeconfig, "-n", ns, "delete", "slmdeployment", "tiny-onnx", "--wait=true", timeout=180)
        wait_for(lambda: not kubectl_json(kubeconfig, "-n", ns, "get", "pods")["items"], timeout=180,
                 what="the pods to go")
        pvc = kubectl_json(kubeconfig, "-n", ns, "get", "pvc", "tiny-onnx-model-cache")
        assert pvc["status"]["phase"] == "Bound"

        apply(kubeconfig, slm("tiny-onnx", hub.url, revision, fmt="onnx", qtype="int4", engine="onnxruntime"),
              namespace=ns)
        obj = wait_ready(kubeconfig, ns, "tiny-onnx", op)
        assert obj["status"]["artifact"]["ready"] is True
        job = obj["status"]["quantization"].get("job")
        if job:  # the Job found the artifact on the kept volume and did no work
            pods = kubectl_json(kubeconfig, "-n", ns, "get", "pods", "-l", f"job-name={job}")["items"]
            msgs = [json.loads(cs["state"]["terminated"]["message"]) for p in pods
                    for cs in p["status"].get("containerStatuses", []) if cs["state"].get("terminated")]
            assert msgs and all(m.get("result") == "AlreadyComplete" for m in msgs), msgs
        hub_files = [p for _, p, _ in hub.requests[fetched:] if "/resolve/" in p]
        assert not hub_files, f"re-quantized: downloaded again {hub_files}"
        n, _ = serve_and_answer(kubeconfig, ns, "tiny-onnx", "tiny-qwen3")
        assert n > 0
    print(f"\nreal-node figures (ONNX tiny qwen3): {json.dumps({k: round(v, 1) for k, v in figures.items()})}")


def test_gguf_through_ollama(kubeconfig: str, namespace: str, real_node: RealNode, images: dict[str, str],
                             hub: Any) -> None:
    """(b) GGUF Q8_0 through the real Ollama image: importer, authenticating proxy, ollama serve."""
    ns = namespace
    with run_operator(kubeconfig, [ns]) as op:
        apply(kubeconfig, slm("tiny-gguf", hub.url, hub.revision(TOOLS_REPO), fmt="gguf", qtype="Q8_0",
                              engine="ollama", repo=TOOLS_REPO), namespace=ns)
        obj = wait_ready(kubeconfig, ns, "tiny-gguf", op)
        assert obj["status"]["artifact"]["format"] == "gguf"
        served = TOOLS_REPO.rsplit("/", 1)[1]  # the served model id: the source's last part
        n, text = serve_and_answer(kubeconfig, ns, "tiny-gguf", served)
        assert n > 0, text
        # A tools request with the key: the model's own template takes tools, so Ollama must not
        # refuse it ("does not support tools", issue 12 item 8).
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        with port_forward(kubeconfig, ns, "service/tiny-gguf", 8000) as port:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=120,
                                   api_key=api_key(kubeconfig, ns, "tiny-gguf-api-key"))
            out = client.chat.completions.create(model=served, max_tokens=4, tools=[weather],
                                                 messages=[{"role": "user", "content": "Weather in Paris?"}])
            assert out.choices[0].finish_reason in ("length", "stop", "tool_calls"), out
        assert_restricted_and_read_only(kubeconfig, ns)


def test_quality_gate_fails_from_the_real_pod(kubeconfig: str, namespace: str, real_node: RealNode,
                                              images: dict[str, str], hub: Any) -> None:
    """(c) The default 10 % gate on a model int4 must damage: QualityGateFailed from the pod's
    termination message, with the measured perplexities, a Warning Event, no serving Deployment."""
    ns = namespace
    with run_operator(kubeconfig, [ns]):
        apply(kubeconfig, slm("tiny-gate", hub.url, hub.revision(FRAGILE_REPO), fmt="onnx", qtype="int4",
                              engine="onnxruntime", repo=FRAGILE_REPO), namespace=ns)
        obj = wait_for_object(
            kubeconfig, "-n", ns, "slmdeployment", "tiny-gate",
            predicate=lambda o: condition_status(o, "Degraded") == "True", timeout=READY_TIMEOUT,
            what="tiny-gate Degraded")
        deg = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
        assert deg["reason"] == "QualityGateFailed", (deg, kubectl(kubeconfig, "-n", ns, "get", "pods", "-o", "yaml"))
        assert "perplexity rose" in deg["message"] and "above the 10.0% gate" in deg["message"], deg
        assert condition_status(obj, "Ready") == "False"
        assert not kubectl_json(kubeconfig, "-n", ns, "get", "deployments")["items"]
        events = kubectl_json(kubeconfig, "-n", ns, "get", "events", "--field-selector",
                              "involvedObject.name=tiny-gate")["items"]
        assert any(e["type"] == "Warning" and e["reason"] == "QualityGateFailed" for e in events), events


def test_image_faults_show_in_status_and_recover(kubeconfig: str, namespace: str, real_node: RealNode,
                                                 images: dict[str, str], hub: Any) -> None:
    """Faults only a real kubelet produces, each Degraded with a reason and a sentence naming the
    child: a server image that cannot be pulled, then one that crashes at start; with the right
    image the same SLMDeployment recovers (Degraded False, Ready True)."""
    ns = namespace
    body = slm("tiny-faults", hub.url, hub.revision(HUB_REPO), fmt="onnx", qtype="int4", engine="onnxruntime")

    def degraded(reason: str) -> dict[str, Any]:
        obj = wait_for_object(
            kubeconfig, "-n", ns, "slmdeployment", "tiny-faults", timeout=READY_TIMEOUT,
            predicate=lambda o: any(c["type"] == "Degraded" and c["status"] == "True" and c["reason"] == reason
                                    for c in o.get("status", {}).get("conditions", [])),
            what=f"Degraded {reason}")
        return next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")

    missing = "registry.invalid/slm-e2e/no-such-image:0"
    with run_operator(kubeconfig, [ns], env={"SLM_IMAGE_ONNXRUNTIME": missing}):
        apply(kubeconfig, body, namespace=ns)
        deg = degraded("ImagePullFailed")
        assert deg["message"].startswith("Deployment tiny-faults pod tiny-faults-"), deg
        assert missing in deg["message"], deg
    # The right image: the same SLMDeployment recovers.
    with run_operator(kubeconfig, [ns]) as op:
        wait_ready(kubeconfig, ns, "tiny-faults", op, fail_on_degraded=False)
        assert condition_status(get_slm(kubeconfig, ns, "tiny-faults"), "Degraded") == "False"
    # A new image without the server: the rollout's new pod exits at once, again and again
    # (the old pod keeps serving: maxUnavailable 0), and status says so.
    with run_operator(kubeconfig, [ns], env={"SLM_IMAGE_ONNXRUNTIME": images["quantizer"]}):
        deg = degraded("CrashLoopBackOff")
        assert deg["message"].startswith("Deployment tiny-faults pod tiny-faults-"), deg
        assert "keeps crashing" in deg["message"] and "exit" in deg["message"], deg
    events = kubectl_json(kubeconfig, "-n", ns, "get", "events", "--field-selector",
                          "involvedObject.name=tiny-faults")["items"]
    reasons = {(e["type"], e["reason"]) for e in events}
    assert {("Warning", "ImagePullFailed"), ("Warning", "CrashLoopBackOff")} <= reasons, reasons
    # The recovery in between was announced too (Recovered, or Ready when both flipped at once).
    assert reasons & {("Normal", "Recovered"), ("Normal", "Ready")}, reasons
