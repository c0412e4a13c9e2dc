"""The llama.cpp engine on the real node: hub -> the real quantizer's GGUF -> llama-server -> an answer.

Two SLMDeployments with `engine: llamacpp` on the real node (containerd + runc, e2e/cluster/up):

- Q4_K_M of the tiny Qwen3 model (the model of e2e/test_realnode.py);
- TQ2_0 of a tiny BitNet b1.58 model (BitNetForCausalLM trained ternary at test time,
  slm_runtime.tiny_bitnet): llama.cpp's ternary type, which only this engine serves.

Each goes through the project's quantizer image (convert -> quantize -> perplexity gate ->
artifact on the claim) and the llamacpp image (llama-server built from the pinned
llama-cpp-python sdist's llama.cpp), both built by hack/images.sh on the Debian base and
imported into the node. Through `kubectl port-forward` to the Service, as a user would: /health
answers without a key (the probes), the OpenAI API only with the Secret's key, an answer comes
back from the official `openai` client, and the queue metric the HPA reads is on the metrics port.
Pods run under Pod Security "restricted" with a read-only root filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from e2e.helpers import apply, kubectl_json, run_operator, wait_for
from e2e.realnode import RealNode, ensure_images, port_forward
from e2e.test_realnode import api_key, assert_restricted_and_read_only, slm, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

QWEN_REPO = "slm-e2e/tiny-qwen3"
BITNET_REPO = "slm-e2e/tiny-bitnet"
QUEUE_METRIC = "llamacpp:requests_deferred"  # the HPA's queue signal for this engine


@pytest.fixture(scope="module")
def images(real_node: RealNode) -> dict[str, str]:
    """The quantizer, llamacpp and gateway images (every engine pod has the gateway in front), built
    (cached; llama-server once per version) and imported."""
    return ensure_images(["quantizer", "llamacpp", "gateway"])


@pytest.fixture(scope="module")
def hub(real_node: RealNode) -> Iterator[Any]:
    """The local hub on the node's address with the tiny Qwen3 and the tiny BitNet b1.58 model."""
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_bitnet import tiny_bitnet_model
    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # the quantizer tests' budget: cached models shared
    with HubServer(host=real_node.address, port=0) as server:
        server.add_repo(QWEN_REPO, tiny_model("qwen3", train_steps=steps))
        server.add_repo(BITNET_REPO, tiny_bitnet_model(train_steps=steps))
        yield server


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def check_served(kubeconfig: str, ns: str, name: str) -> str:
    """Through the Service: the probes' route without a key, every API route only with it, an answer
    from the openai client, and llama-server's queue metric on the metrics port (the gateway appends
    the engine's series to its own). Returns the answer."""
    key = api_key(kubeconfig, ns, f"{name}-api-key")
    with port_forward(kubeconfig, ns, f"service/{name}", 8000) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200
        assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401
        models = httpx.get(f"{base}/v1/models", headers=_auth(key), timeout=30).json()
        model = models["data"][0]["id"]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)

        def answer() -> str | None:
            out = client.chat.completions.create(model=model, max_tokens=8, temperature=0,
                                                 messages=[{"role": "user", "content": "Say hello."}])
            return out.choices[0].message.content or None

        text = wait_for(answer, timeout=120, interval=2, what=f"a first answer from {name}")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="not-the-key", max_retries=0, timeout=60) \
                .chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    with port_forward(kubeconfig, ns, f"service/{name}", 9090) as port:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert metrics.status_code == 200 and QUEUE_METRIC in metrics.text, metrics.text[:2000]
    return text


def check_pod(kubeconfig: str, ns: str, name: str, image: str, qtype: str) -> None:
    """The serving pod runs the llamacpp image with the key as a file, never as an argument."""
    key = api_key(kubeconfig, ns, f"{name}-api-key")
    pods = kubectl_json(kubeconfig, "-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    serving = [p for p in pods if not p["metadata"].get("labels", {}).get("job-name")]
    assert serving, [p["metadata"]["name"] for p in pods]
    for pod in serving:
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "llama-server"]
        assert container["image"] == image
        args = container.get("command", []) + container.get("args", [])
        assert "--api-key-file" in args and key not in " ".join(args)
        assert "--model" in args and "--metrics" in args


def test_llamacpp_serves_q4_k_m_and_bitnet_ternary(kubeconfig: str, namespace: str, real_node: RealNode,
                                                   images: dict[str, str], hub: Any) -> None:
    ns = namespace
    cases = [("tiny-llamacpp", QWEN_REPO, "Q4_K_M"), ("tiny-bitnet", BITNET_REPO, "TQ2_0")]
    with run_operator(kubeconfig, [ns]) as op:
        for name, repo, qtype in cases:
            apply(kubeconfig, slm(name, hub.url, hub.revision(repo), fmt="gguf", qtype=qtype, engine="llamacpp",
                                  repo=repo), namespace=ns)
        answers = {}
        for name, _, qtype in cases:
            obj = wait_ready(kubeconfig, ns, name, op)
            art = obj["status"]["artifact"]
            assert art["ready"] is True and (art["format"], art["type"]) == ("gguf", qtype), art
            assert float(art["perplexityIncreasePercent"]) <= float(art.get("gatePercent", 10)), art
            check_pod(kubeconfig, ns, name, images["llamacpp"], qtype)
            answers[name] = check_served(kubeconfig, ns, name)
        assert all(answers.values()), answers
        assert_restricted_and_read_only(kubeconfig, ns)
    print(f"\nllama.cpp on the real node: {answers}")
