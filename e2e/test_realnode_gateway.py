"""The gateway for real: per-consumer keys and limits across replicas, on the real node.

An ONNX SLMDeployment (the tiny Qwen3 from the local hub, as e2e/test_realnode.py) with three
replicas and `access.apiKeys` naming a Secret of two consumers: `metered` has a requests limit,
`open` has none. The operator renders the gateway in every pod and, because a consumer has a
limit, the limit store (Debian's redis-server from the gateway image). Each replica is reached
through its own `kubectl port-forward` (a port-forward to a Service picks one pod), so the
requests of one consumer really land on different gateways:

- `metered` gets exactly its limit spread over the three replicas, then 429 with Retry-After
  and OpenAI's error shape, on whichever replica; `open` is not throttled meanwhile;
- an unknown key gets 401, and every route without a key gets 401;
- a chat completion through the gateway answers (the gateway sends the engine its own key);
- the consumer's key rotated in the Secret works, and the old one stops, within about a minute
  (the kubelet's projected-volume sync; the figure is printed);
- a malformed entry added to the Secret gives Degraded InvalidApiKeyEntry naming the Secret and
  the entry, and the good consumers keep working.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from e2e.helpers import apply, condition_status, kubectl, kubectl_json, run_operator, wait_for
from e2e.realnode import REAL_NODE, RealNode, ensure_images, port_forward

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

HUB_REPO = "slm-e2e/tiny-qwen3"
NAME = "tiny-gw"
MODEL = "tiny-qwen3"
# Three replicas of the tiny model (about 0.3 GiB each) fit the real node's memory; CPU is the
# tight resource on its two cores (each pod requests 100m for the engine and 100m for the gateway).
REPLICAS = int(os.environ.get("SLM_GATEWAY_E2E_REPLICAS", "3"))
METERED_RPM = 5
READY_TIMEOUT = 900


@pytest.fixture(scope="module")
def images(real_node: RealNode) -> dict[str, str]:
    return ensure_images(["quantizer", "onnxruntime-server", "gateway"])


@pytest.fixture(scope="module")
def hub(real_node: RealNode) -> Iterator[Any]:
    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    steps = int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50"))  # shares the cached model with the others
    with HubServer(host=real_node.address, port=0) as server:
        server.add_repo(HUB_REPO, tiny_model("qwen3", train_steps=steps))
        yield server


def deployment(hub_url: str, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "slm.ai/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"source": f"hf://{HUB_REPO}", "revision": revision, "hub": {"endpoint": hub_url},
                      "contextLength": 512},
            "quantization": {"format": "onnx", "type": "int4"},
            "engine": {"name": "onnxruntime"},
            "replicas": REPLICAS,
            "resources": {"cpu": "100m", "memory": "1Gi"},
            "storage": {"size": "1Gi"},
            "access": {"apiKeys": {"secretRef": {"name": "consumers"}}},
            **REAL_NODE,
        },
    }


def consumers_secret(metered: str, open_key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "consumers"}, "type": "Opaque",
        "stringData": {
            "metered": f"key: {metered}\nrequestsPerMinute: {METERED_RPM}\n",
            "open": open_key,
        },
    }


def get(port: int, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30)


def serving_pods(kubeconfig: str, ns: str) -> list[str]:
    pods = kubectl_json(kubeconfig, "-n", ns, "get", "pods", "-l",
                        f"slm.ai/deployment={NAME},app.kubernetes.io/component=server")["items"]
    return sorted(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"
                  and all(cs.get("ready") for cs in p["status"].get("containerStatuses", [])))


def test_two_consumers_on_replicas_limits_401s_and_rotation(kubeconfig: str, namespace: str, real_node: RealNode,
                                                             images: dict[str, str], hub: Any) -> None:
    ns = namespace
    metered, open_key = secrets.token_hex(24), secrets.token_hex(24)
    figures: dict[str, float] = {}
    with run_operator(kubeconfig, [ns]) as op:
        t0 = time.monotonic()
        apply(kubeconfig, consumers_secret(metered, open_key), namespace=ns)
        apply(kubeconfig, deployment(hub.url, hub.revision(HUB_REPO)), namespace=ns)

        def ready() -> dict[str, Any] | None:
            obj = kubectl_json(kubeconfig, "-n", ns, "get", "slmdeployment", NAME)
            if condition_status(obj, "Degraded") == "True":
                pytest.fail(f"Degraded: {json.dumps(obj.get('status'), indent=1)}\n{op.output()[-3000:]}\n"
                            f"{kubectl(kubeconfig, '-n', ns, 'get', 'pods,events', '-o', 'wide')}")
            return obj if condition_status(obj, "Ready") == "True" and len(serving_pods(kubeconfig, ns)) == REPLICAS \
                else None

        try:
            wait_for(ready, READY_TIMEOUT, interval=3, what=f"{NAME} Ready with {REPLICAS} replicas")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{kubectl(kubeconfig, '-n', ns, 'get', 'pods,events', '-o', 'wide')}") from None
        figures["apply_to_ready_s"] = time.monotonic() - t0

        # The limit store is there because a consumer has a limit, hardened like the rest.
        store = kubectl_json(kubeconfig, "-n", ns, "get", "deployment", f"{NAME}-limits")
        assert store["status"].get("readyReplicas") == 1
        assert store["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]

        pods = serving_pods(kubeconfig, ns)
        with ExitStack() as stack:
            ports = [stack.enter_context(port_forward(kubeconfig, ns, f"pod/{p}", 8000)) for p in pods]

            # A chat completion through the gateway: the engine gets its own key from it.
            chat = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/chat/completions", timeout=120,
                              headers={"Authorization": f"Bearer {open_key}"},
                              json={"model": MODEL, "max_tokens": 4, "temperature": 0,
                                    "messages": [{"role": "user", "content": "Say hello."}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["usage"]["completion_tokens"] >= 1

            # No key, anywhere: 401 (the engine is on loopback, the gateway is the only listener).
            for path in ("/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics", "/ready-not"):
                r = get(ports[-1], path, None)
                assert r.status_code == 401, (path, r.status_code, r.text)
                assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
            r = get(ports[0], "/v1/models", "sk-" + secrets.token_hex(16))
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

            # `metered` spreads its limit over every replica, then 429 on whichever one.
            codes = [get(ports[i % len(ports)], "/v1/models", metered).status_code for i in range(METERED_RPM)]
            assert codes == [200] * METERED_RPM, (codes, kubectl(kubeconfig, "-n", ns, "logs", pods[0], "-c", "gateway",
                                                                 "--tail", "20"))
            over = [get(port, "/v1/models", metered) for port in ports]
            for r in over:
                assert r.status_code == 429, (r.status_code, r.text)
                # The sliding-window counter: a full window weighs on the next one until enough of it
                # has passed, so the wait can pass 60 s (at most 60 s + 60 s x (limit-1)/limit).
                assert 1 <= int(r.headers["Retry-After"]) <= 120
                err = r.json()["error"]
                assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded"), err
            # `open` is not throttled meanwhile, on any replica.
            assert [get(port, "/v1/models", open_key).status_code for port in ports * 3] == [200] * 3 * len(ports)

            # Rotate `open`'s key in the Secret: the new one works and the old one stops, no restart.
            rotated = secrets.token_hex(24)
            t_rot = time.monotonic()
            kubectl(kubeconfig, "-n", ns, "patch", "secret", "consumers", "--type", "merge", "-p", json.dumps(
                {"data": {"open": base64.b64encode(rotated.encode()).decode()}}))

            def took_effect() -> bool:
                return all(get(p, "/v1/models", rotated).status_code == 200
                           and get(p, "/v1/models", open_key).status_code == 401 for p in ports)

            wait_for(took_effect, timeout=150, interval=2, what="the rotated key on every replica")
            figures["rotation_s"] = time.monotonic() - t_rot
            restarts = [cs["restartCount"] for p in kubectl_json(kubeconfig, "-n", ns, "get", "pods")["items"]
                        for cs in p["status"].get("containerStatuses", [])]
            assert not any(restarts), restarts

            # A malformed entry: Degraded InvalidApiKeyEntry naming the Secret and the entry; the good
            # consumers keep working.
            t_bad = time.monotonic()
            kubectl(kubeconfig, "-n", ns, "patch", "secret", "consumers", "--type", "merge", "-p", json.dumps(
                {"stringData": {"broken": "requestsPerMinute: -1\n"}}))

            def degraded() -> str | None:
                obj = kubectl_json(kubeconfig, "-n", ns, "get", "slmdeployment", NAME)
                cond = next((x for x in obj["status"].get("conditions", []) if x["type"] == "Degraded"), {})
                return cond.get("message") if cond.get("reason") == "InvalidApiKeyEntry" else None

            message = wait_for(degraded, timeout=150, interval=3, what="Degraded InvalidApiKeyEntry")
            figures["invalid_entry_to_status_s"] = time.monotonic() - t_bad
            assert "Secret consumers" in message and "broken (MissingKey)" in message, message
            assert rotated not in message and metered not in message, "no key in status"
            assert all(get(p, "/v1/models", rotated).status_code == 200 for p in ports)

            # The gateway's usage series, per consumer, on its metrics port (what Prometheus scrapes).
            with port_forward(kubeconfig, ns, f"pod/{pods[0]}", 9090) as mport:
                text = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=30).text
            assert 'slm_gateway_rate_limited_total{consumer="metered",limit="requests"}' in text
            assert "slm_gateway_auth_failures_total" in text
            assert "slm_onnx_queue_depth" in text, "the engine's own series follow the gateway's"
    print(f"\nreal-node gateway figures ({REPLICAS} replicas): "
          f"{json.dumps({k: round(v, 1) for k, v in figures.items()})}")
