"""Kube's in-flight limit (max_in_flight) and the client whose pool fits it (kube.make_client)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from slm_operator.kube import WATCH_CONNECTIONS, Kube, make_client
from slm_operator.settings import OperatorConfig


class _SlowClient:
    """A lightkube client stand-in whose writes take 10 ms and count how many run at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.sent = 0

    async def _busy(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self.now -= 1
        self.sent += 1

    async def patch(self, res: Any, name: str, obj: Any, **_: Any) -> dict[str, Any]:
        await self._busy()
        return {"metadata": {"name": name, "resourceVersion": "1"}}

    async def create(self, obj: Any, **_: Any) -> None:
        await self._busy()


def _cm(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "ns"}}


def _burst(kube: Kube) -> None:
    async def go() -> None:
        await asyncio.gather(*(kube.apply(_cm(i)) for i in range(12)),
                             *(kube.post_event({"metadata": {"namespace": "ns"}}) for _ in range(4)))

    asyncio.run(go())


def test_no_more_requests_than_max_in_flight_are_sent_at_once() -> None:
    client = _SlowClient()
    _burst(Kube(client, max_in_flight=3))  # type: ignore[arg-type]
    assert client.sent == 16, "every request is sent, the rest wait their turn"
    assert client.most == 3


def test_without_a_limit_the_burst_goes_out_at_once() -> None:
    client = _SlowClient()
    _burst(Kube(client))  # type: ignore[arg-type]
    assert client.most == 16


def test_the_limit_comes_from_env_and_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLM_API_MAX_IN_FLIGHT", raising=False)
    assert OperatorConfig.from_env().api_max_in_flight == OperatorConfig.api_max_in_flight == 32
    monkeypatch.setenv("SLM_API_MAX_IN_FLIGHT", "8")
    assert OperatorConfig.from_env().api_max_in_flight == 8
    for raw in ("0", "-3", "eight", "2.5"):
        monkeypatch.setenv("SLM_API_MAX_IN_FLIGHT", raw)
        with pytest.raises(ValueError, match=r"SLM_API_MAX_IN_FLIGHT=.* is not a whole number of at least 1"):
            OperatorConfig.from_env()


def test_make_client_keeps_the_in_flight_limit_and_the_watches_alive(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool keeps max_in_flight + WATCH_CONNECTIONS idle connections (httpx keeps 20), so a
    burst never closes connections the next burst must open again with a TLS handshake."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    ca = base64.b64encode((tmp_path / "c.pem").read_bytes()).decode()
    (tmp_path / "kubeconfig").write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:6443", certificate-authority-data: {ca}}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    client = make_client(7)
    pool = client._client._client._transport._pool  # lightkube -> httpx client -> transport -> httpcore pool
    assert pool._max_keepalive_connections == 7 + WATCH_CONNECTIONS
    assert str(client._client._client.base_url).startswith("https://127.0.0.1:6443")
