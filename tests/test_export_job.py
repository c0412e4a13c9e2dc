"""spec.export on the operator side: the export Job (pure builder: restricted, secrets only as
read-only volumes, the claim read-only) and the export stage over the fake API (Job created once
the artifact passed the gate, status.artifact.exports from its termination message, Degraded
ExportFailed with the Warning Event when a target refuses, a new Job when the Secret changes).
About 5 s."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_reconcile_stages import NAME, NS, SPEC, World, _pod, _secret

from slm_operator import api, export
from slm_operator import constants as c
from slm_operator.render import RenderContext, plan
from slm_operator.resolve import resolution
from slm_operator.validate import validate

EXPORTS = [{"target": "s3://models/exports", "credentialsSecret": {"name": "s3-creds"}},
           {"target": "oci://registry.local:5000/models/qwen3", "credentialsSecret": {"name": "oci-creds"},
            "plainHttp": True}]
QSPEC = {**copy.deepcopy(SPEC), "serving": {"enabled": False}, "export": EXPORTS}


def _cr(spec: dict[str, Any]) -> api.SLMDeployment:
    return api.SLMDeployment.model_validate({"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
                                             "metadata": {"name": NAME, "namespace": NS, "uid": "u"},
                                             "spec": spec})


def _job() -> dict[str, Any]:
    cr = _cr(QSPEC)
    p = plan(cr, RenderContext(), resolution(cr.spec))
    name = export.job_name(NAME, p.artifact_path, cr.spec, {"s3-creds": "1"})
    return export.export_job(p.target, "quantizer:1", p.artifact_path, name)


def test_export_job_is_restricted_and_mounts_secrets_only_as_files() -> None:
    job = _job()
    pod = job["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert ctr["args"][:1] == ["export"] and ctr["terminationMessagePolicy"] == "FallbackToLogsOnError"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"]["readOnly"] is True
    assert next(m for m in ctr["volumeMounts"] if m["name"] == "model-cache")["readOnly"] is True
    assert volumes["export-credentials-0"]["secret"] == {"secretName": "s3-creds", "defaultMode": 0o440}
    assert volumes["export-credentials-1"]["secret"]["secretName"] == "oci-creds"
    assert {m["mountPath"] for m in ctr["volumeMounts"] if m["name"].startswith("export-credentials")} == {
        f"{c.EXPORT_CREDENTIALS_DIR}/0", f"{c.EXPORT_CREDENTIALS_DIR}/1"}
    assert "secretKeyRef" not in json.dumps(ctr.get("env")) and "envFrom" not in ctr
    targets = json.loads(ctr["args"][ctr["args"].index("--targets") + 1])
    assert targets == [{"target": "s3://models/exports", "credentialsDir": f"{c.EXPORT_CREDENTIALS_DIR}/0",
                        "plainHTTP": False},
                       {"target": "oci://registry.local:5000/models/qwen3",
                        "credentialsDir": f"{c.EXPORT_CREDENTIALS_DIR}/1", "plainHTTP": True}]
    key = ctr["args"][ctr["args"].index("--key") + 1]
    assert key.startswith("onnx-int4-") and ctr["args"][ctr["args"].index("--artifact") + 1].endswith(key)
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert job["metadata"]["labels"][c.L_COMPONENT] == c.C_EXPORTER
    assert len(job["metadata"]["name"]) <= 63


def test_job_name_changes_with_targets_and_secret_versions() -> None:
    cr = _cr(QSPEC)
    loc = "/models/artifacts/onnx-int4-12345678"
    a = export.job_name(NAME, loc, cr.spec, {"s3-creds": "1"})
    assert a == export.job_name(NAME, loc, cr.spec, {"s3-creds": "1"})
    assert a != export.job_name(NAME, loc, cr.spec, {"s3-creds": "2"})  # an edited Secret: a new Job
    other = _cr({**QSPEC, "export": EXPORTS[:1]})
    assert a != export.job_name(NAME, loc, other.spec, {"s3-creds": "1"})


@pytest.mark.parametrize("target,field_words", [
    ("ftp://host/x", "must be s3://BUCKET/PREFIX"),
    ("s3://", "must be s3://BUCKET/PREFIX"),
    ("hf://acme", "hf://ORG/NAME"),
    ("oci://registry.local/Models:tag", "no tag"),
])
def test_bad_targets_are_refused_naming_the_field(target: str, field_words: str) -> None:
    doc = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "x"},
           "spec": {**QSPEC, "export": [{"target": target, "credentialsSecret": {"name": "s"}}]}}
    errors = validate(doc)
    assert any(e.startswith("spec.export[0].target: ") and field_words in e for e in errors), errors


def _world() -> World:
    w = World(QSPEC)
    w.kube.put(_secret("s3-creds", AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="s3cr3t-value"))
    w.kube.put(_secret("oci-creds", username="u", password="oci-password-value"))
    return w


def _export_job(w: World) -> dict[str, Any]:
    return next(o for (k, _, _), o in w.kube.objects.items()
                if k == "Job" and o["metadata"]["labels"][c.L_COMPONENT] == c.C_EXPORTER)


def _gate_passed(w: World) -> None:
    w.run()
    job = next(o for (k, _, _), o in w.kube.objects.items() if k == "Job")["metadata"]["name"]
    w.set_status("Job", job, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})


def _finish(w: World, summary: dict[str, Any], ok: bool) -> str:
    name = _export_job(w)["metadata"]["name"]
    w.kube.pods.append(_pod(f"{name}-p", job=name, component=c.C_EXPORTER, phase="Succeeded" if ok else "Failed",
                            state={"terminated": {"exitCode": 0 if ok else 2, "reason": "Completed" if ok else "Error",
                                                  "message": json.dumps(summary)}}))
    cond = {"type": "Complete" if ok else "Failed", "status": "True"}
    w.set_status("Job", name, {"succeeded" if ok else "failed": 1, "conditions": [cond]})
    return name


def test_quantize_only_with_exports_waits_for_the_export_then_is_ready_with_status_exports() -> None:
    w = _world()
    _gate_passed(w)
    w.run()
    job = _export_job(w)
    assert w.cond(c.AVAILABLE)["reason"] == c.R_EXPORTING and w.cond(c.READY)["status"] == "False"
    assert [e["result"] for e in w.body["status"]["artifact"]["exports"]] == ["Pending", "Pending"]
    pushed = {"target": "s3://models/exports", "result": "Pushed", "url": "s3://models/exports/k/",
              "revision": "v1", "checksum": "sha256:" + "a" * 64, "pushedAt": "2026-11-30T12:00:00Z", "files": 3,
              "bytes": 10, "message": "pushed"}
    present = {"target": EXPORTS[1]["target"], "result": "AlreadyPresent", "url": "registry.local:5000/m:k",
               "digest": "sha256:" + "b" * 64, "checksum": "sha256:" + "a" * 64, "pushedAt": "2026-11-30T12:00:00Z"}
    _finish(w, {"result": "Exported", "message": "ok", "exports": [pushed, present]}, ok=True)
    w.run()
    assert w.cond(c.READY)["status"] == "True", w.body["status"]["conditions"]
    assert w.cond(c.AVAILABLE)["reason"] == c.R_QUANTIZE_ONLY
    exports = w.body["status"]["artifact"]["exports"]
    assert [e["result"] for e in exports] == ["Pushed", "AlreadyPresent"]
    assert exports[0]["revision"] == "v1" and exports[1]["digest"] == "sha256:" + "b" * 64
    assert w.body["status"]["artifact"]["exportJob"] == job["metadata"]["name"]
    writes = w.kube.writes("Job")
    out = w.run()
    assert out.writes == 0 and w.kube.writes("Job") == writes, "a settled export pushes nothing again"


def test_a_refused_target_is_degraded_export_failed_with_a_warning_event_and_no_secret() -> None:
    w = _world()
    _gate_passed(w)
    w.run()
    failed = {"target": "s3://models/exports", "result": "Failed", "checksum": "sha256:" + "a" * 64,
              "message": "S3 checking s3://models/exports/k/ failed: InvalidAccessKeyId: the access key is not "
                         "known to the server; check the credentials Secret"}
    _finish(w, {"result": "ExportFailed", "message": "x", "exports": [failed, {"target": EXPORTS[1]["target"],
                                                                              "result": "Pushed"}]}, ok=False)
    out = w.run()
    assert out.requeue_after is not None and out.requeue_after <= 60, "a fixed Secret is seen within a minute"
    deg = w.cond(c.DEGRADED)
    assert deg["status"] == "True" and deg["reason"] == c.R_EXPORT_FAILED
    assert "export to s3://models/exports failed: S3 checking" in deg["message"]
    assert "InvalidAccessKeyId" in deg["message"]
    assert "stays on the volume at /models/artifacts/onnx-int4-" in deg["message"]
    assert w.cond(c.READY)["status"] == "False"
    events = [e for e in w.kube.events if e.get("reason") == c.R_EXPORT_FAILED]
    assert events and events[-1]["type"] == "Warning" and "s3://models/exports" in events[-1]["message"]
    assert "s3cr3t-value" not in json.dumps(w.body["status"]) + json.dumps(w.kube.events)
    old = _export_job(w)["metadata"]["name"]
    # The user fixes the Secret: a new export Job, the failed one deleted.
    w.kube.objects[("Secret", NS, "s3-creds")]["metadata"]["resourceVersion"] = "99"
    w.run()
    assert ("delete", "Job", old) in w.kube.calls
    assert _export_job(w)["metadata"]["name"] != old


def test_a_missing_credentials_secret_names_the_field() -> None:
    w = World(QSPEC)
    _gate_passed(w)
    w.run()
    deg = w.cond(c.DEGRADED)
    assert deg["reason"] == "SecretNotFound" and "spec.export[0].credentialsSecret" in deg["message"]
    assert not [o for (k, _, _), o in w.kube.objects.items()
                if k == "Job" and o["metadata"]["labels"][c.L_COMPONENT] == c.C_EXPORTER]


def test_export_waits_for_the_gate_and_removing_the_targets_removes_the_job() -> None:
    w = _world()
    w.run()
    assert not [k for (k, _, _), o in w.kube.objects.items()
                if k == "Job" and o["metadata"]["labels"][c.L_COMPONENT] == c.C_EXPORTER], "no export before the gate"
    _gate_passed(w)
    w.run()
    name = _export_job(w)["metadata"]["name"]
    w.watch()
    w.body["spec"].pop("export")
    w.run()
    assert ("delete", "Job", name) in w.kube.calls
    assert "exports" not in (w.body["status"].get("artifact") or {})


def test_the_export_example_validates_and_its_job_renders() -> None:
    import yaml

    path = Path(__file__).resolve().parents[1] / "examples/export/qwen3-0.6b-gguf-export.yaml"
    doc = yaml.safe_load(path.read_text())
    assert validate(doc) == []
    cr = api.SLMDeployment.model_validate({**doc, "metadata": {**doc["metadata"], "namespace": NS}})
    p = plan(cr, RenderContext(), resolution(cr.spec))
    job = export.export_job(p.target, "q:1", p.artifact_path, export.job_name(cr.metadata.name, p.artifact_path,
                                                                              cr.spec))
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [t["target"] for t in json.loads(args[args.index("--targets") + 1])] == [
        "s3://models/exports", "hf://acme/qwen3-gguf", "oci://registry.example.com/models/qwen3"]
    assert not [o for o in p.all() if o["kind"] in ("Deployment", "Service")]
