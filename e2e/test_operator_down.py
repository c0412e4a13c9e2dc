"""Operator down, world changes (issue 18 item 4).

With the operator stopped: children deleted and edited, the serving Deployment scaled by hand,
a quantization Job deleted mid-run, a Secret the CR needs deleted. On restart the operator's
first pass (it lists every SLMDeployment and child before reconciling: one resync) restores
every child to what it rendered before, recreates the Job, which then completes, and reports the
missing Secret as Degraded naming it and the field. The time from restart to all of that is
printed (a figure, not asserted).

KWOK completes a Job's pod within a second, so the Job is held "mid-run" by a ResourceQuota
that admits no pod in its namespace (the Job is active, its pod cannot be created); the quota is
lifted while the operator is down. About 1-2 minutes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.chaos import MANAGED, ensure_crd, operator
from e2e.helpers import (
    condition_status,
    kubectl,
    kubectl_json,
    wait_for,
    wait_for_condition,
    wait_for_object,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def _cr(name: str, **spec: Any) -> dict[str, Any]:
    cr = yaml.safe_load((ROOT / "examples/qwen3-0.6b-onnx-cpu.yaml").read_text())
    cr["metadata"] = {"name": name}
    cr["spec"].update(spec)
    return cr


def _children(kc: str, ns: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = kubectl_json(kc, "-n", ns, "get", "deployments,services,networkpolicies,pdb,jobs,pvc,secrets", "-l",
                         f"{MANAGED},slm.ai/deployment={name}")["items"]
    return {(o["kind"], o["metadata"]["name"]): o for o in items}


def _degraded_reason(cr: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (cr.get("status") or {}).get("conditions") or []
                 if c["type"] == "Degraded" and c["status"] == "True"), None)


def test_world_changes_while_the_operator_is_down(kubeconfig: str, make_namespace: Callable[..., str],
                                                   tmp_path: Path) -> None:
    kc = kubeconfig
    ensure_crd(kc)
    ns, held = make_namespace(), make_namespace()
    # `held`: no pod may start there, so its quantization Job stays active (mid-run) under KWOK.
    kubectl(kc, "-n", held, "create", "quota", "no-pods", "--hard=pods=0")
    kubectl(kc, "-n", ns, "create", "secret", "generic", "hf-token", "--from-literal=token=hf_e2e_dummy")
    serving = _cr("serving", replicas=2)
    needs_secret = _cr("needs-secret", replicas=1)
    needs_secret["spec"]["model"]["tokenSecretRef"] = {"name": "hf-token", "key": "token"}
    quantizing = _cr("quantizing", replicas=1)
    kubectl(kc, "-n", ns, "apply", "-f", "-", input=yaml.safe_dump_all([serving, needs_secret]))
    kubectl(kc, "-n", held, "apply", "-f", "-", input=yaml.safe_dump(quantizing))

    with operator(kc, [ns, held], log_path=tmp_path / "operator-1.log"):
        for name in ("serving", "needs-secret"):
            wait_for_condition(kc, "-n", ns, "slm", name, type_="Ready", timeout=180)
        job = wait_for(lambda: [o for (k, _), o in _children(kc, held, "quantizing").items() if k == "Job"],
                       timeout=120, what="the quantization Job of 'quantizing'")[0]
        assert not condition_status(job, "Complete"), "the Job completed although no pod can start"
        before = _children(kc, ns, "serving")
    kinds = {k for k, _ in before}
    assert {"Deployment", "Service", "NetworkPolicy"} <= kinds, kinds

    # --- the operator is down: the world changes -------------------------------------------------
    service = next(n for k, n in before if k == "Service")
    policy = next(n for k, n in before if k == "NetworkPolicy")
    deployment = next(n for k, n in before if k == "Deployment")
    kubectl(kc, "-n", ns, "delete", "service", service)
    kubectl(kc, "-n", ns, "patch", "networkpolicy", policy, "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/egress", "value": [{}]}]')
    kubectl(kc, "-n", ns, "scale", "deployment", deployment, "--replicas=5")
    kubectl(kc, "-n", ns, "label", "service,networkpolicy", "--all", "slm.ai/extra=hand-made", "--overwrite")
    kubectl(kc, "-n", held, "delete", "job", job["metadata"]["name"], "--wait=true", timeout=60)
    kubectl(kc, "-n", held, "delete", "quota", "no-pods")
    kubectl(kc, "-n", ns, "delete", "secret", "hf-token")
    assert kubectl_json(kc, "-n", ns, "get", "deployment", deployment)["spec"]["replicas"] == 5

    # --- restart: one pass restores or reports everything -------------------------------------------
    with operator(kc, [ns, held], log_path=tmp_path / "operator-2.log") as op:
        began = time.monotonic()
        op.wait_for_output("slm-operator started", timeout=180)  # imports, the lists: one resync begins
        restarted = time.monotonic()
        wait_for_object(kc, "-n", ns, "deployment", deployment, timeout=120, what="replicas back to 2",
                        predicate=lambda d: d["spec"]["replicas"] == 2)
        svc = wait_for(lambda: kubectl_json(kc, "-n", ns, "get", "service", service), timeout=120,
                       what="the deleted Service recreated")
        egress = before[("NetworkPolicy", policy)]["spec"]["egress"]
        np = wait_for_object(kc, "-n", ns, "networkpolicy", policy, timeout=120, what="egress restored",
                             predicate=lambda o: o["spec"]["egress"] == egress)
        bad = wait_for_object(kc, "-n", ns, "slm", "needs-secret", timeout=120, what="Degraded SecretNotFound",
                              predicate=lambda o: (_degraded_reason(o) or {}).get("reason") == "SecretNotFound")
        new_job = wait_for(lambda: [o for (k, _), o in _children(kc, held, "quantizing").items() if k == "Job"],
                           timeout=120, what="the deleted Job recreated")
        restored_s = time.monotonic() - restarted
        wait_for_condition(kc, "-n", held, "slm", "quantizing", type_="Ready", timeout=180)
        ready_s = time.monotonic() - restarted

    assert svc["spec"]["selector"] == before[("Service", service)]["spec"]["selector"]
    assert svc["spec"]["ports"] == before[("Service", service)]["spec"]["ports"]
    assert svc["metadata"]["ownerReferences"] == before[("Service", service)]["metadata"]["ownerReferences"]
    assert np["spec"] == before[("NetworkPolicy", policy)]["spec"]
    message = _degraded_reason(bad)["message"]
    assert "hf-token" in message and "spec.model.tokenSecretRef" in message, message
    assert condition_status(bad, "Ready") != "True", "Ready although its Secret is gone"
    assert [o["metadata"]["name"] for o in new_job] == [job["metadata"]["name"]], "one Job, the same name"
    after = _children(kc, ns, "serving")
    assert set(after) == set(before), f"children differ: {set(after) ^ set(before)}"
    for key, obj in before.items():
        if key[0] in ("Deployment", "NetworkPolicy", "PodDisruptionBudget"):
            want = copy.deepcopy(obj["spec"])
            got = after[key]["spec"]
            assert got == want, f"{key}: not restored"
    print(f"\noperator down: process start to 'started' {restarted - began:.1f}s; then children, Job and "
          f"Degraded restored within {restored_s:.1f}s; the recreated Job's CR Ready after {ready_s:.1f}s")
