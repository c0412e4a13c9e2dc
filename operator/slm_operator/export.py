"""spec.export: the export Job that pushes a gated artifact to its targets, and reading its result (pure).

One export Job per SLMDeployment and artifact (the quantization Job may be reused across
artifact keys; exports are per CR): it runs the quantizer image's ``python -m slm_quantizer
export`` with the model-cache claim mounted read-only and each target's credentials Secret
mounted as files under ``EXPORT_CREDENTIALS_DIR/<i>`` (never in args, env or status). Its
name carries a hash of the artifact, the targets and the Secrets' resourceVersions, so editing
the spec or a credentials Secret runs a new Job (the exporter skips what a target already
holds), and an unchanged spec never pushes twice.

The Job's JSON termination message (slm_quantizer.export) becomes ``status.artifact.exports[]``:
target, result (Pushed, AlreadyPresent, Failed, Pending), url, revision (hf: the commit; s3:
the manifest object's version or ETag), digest (oci: the manifest digest), checksum
(``sha256:`` of the artifact's manifest.json), pushedAt and message. A failed Job is
Degraded ExportFailed naming the target and the server's words; the artifact stays on the
volume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from slm_operator import api
from slm_operator import constants as c
from slm_operator.observe import job_condition, one_line, termination_summary
from slm_operator.podspec import container_security_context, empty_dir, resources
from slm_operator.render.common import (
    Target,
    child_names,
    metadata,
    pod_security_context,
    stable_hash,
)
from slm_operator.render.workloads import claim_placement, shares_one_node
from slm_operator.status import Cond

Obj = dict[str, Any]
TMP_BYTES = 1 << 30  # /tmp: the hub client's small downloads (the remote manifest.json)
# The exporter's exit codes (slm_quantizer.export): 2 a target refused (credentials, no such
# bucket or repository) or the artifact is incomplete: a retry cannot help. 1 and 5 are retried.
EXPORTER_PERMANENT_EXIT_CODES = [2]
RECHECK_SECONDS = 30.0  # while the export Job runs: status follows its pod
STATUS_KEYS = ("target", "result", "url", "revision", "digest", "checksum", "pushedAt", "bytes", "message")


def export_key(artifact_location: str) -> str:
    """The artifact's folder name (format-type-key, e.g. gguf-q4_k_m-1a2b3c4d): the S3 sub-prefix,
    the hub branch and the OCI tag."""
    return PurePosixPath(artifact_location).name


def targets_arg(spec: api.SLMDeploymentSpec) -> list[dict[str, Any]]:
    """The exporter's --targets list: target URL, the credentials folder (a path) and plainHTTP."""
    return [{"target": e.target,
             "credentialsDir": f"{c.EXPORT_CREDENTIALS_DIR}/{i}" if e.credentials_secret else None,
             "plainHTTP": e.plain_http}
            for i, e in enumerate(spec.export)]


def job_name(cr_name: str, artifact_location: str, spec: api.SLMDeploymentSpec,
             secret_versions: Mapping[str, str] | None = None) -> str:
    """``<cr>-export-<8 hex>``: a hash of the artifact, the targets and the credentials Secrets'
    resourceVersions (at most 40 + 8 + 8 = 56 characters: a valid label value)."""
    h = stable_hash({"artifact": export_key(artifact_location),
                     "targets": [e.model_dump(by_alias=True) for e in spec.export],
                     "secrets": dict(sorted((secret_versions or {}).items()))})
    return f"{cr_name}-export-{h[:8]}"


def export_job(t: Target, image: str, artifact_location: str, name: str) -> Obj:
    """The export Job for target t's artifact at artifact_location (inside the model-cache claim).

    Pod Security restricted, read-only root filesystem, no service account token; the claim and
    the credentials Secrets are mounted read-only; secrets only as files (mode 0440)."""
    spec = t.spec
    key = export_key(artifact_location)
    args = ["export", "--artifact", artifact_location, "--key", key,
            "--targets", json.dumps(targets_arg(spec), sort_keys=True, separators=(",", ":")),
            "--termination-log", "/dev/termination-log"]
    mounts = [{"name": "model-cache", "mountPath": c.MODELS_MOUNT, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Obj] = [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": child_names(t.name, t.key)["cache"],
                                                          "readOnly": True}},
        empty_dir("tmp", TMP_BYTES)]
    for i, e in enumerate(spec.export):
        if e.credentials_secret:
            mounts.append({"name": f"export-credentials-{i}", "mountPath": f"{c.EXPORT_CREDENTIALS_DIR}/{i}",
                           "readOnly": True})
            volumes.append({"name": f"export-credentials-{i}", "secret": {
                "secretName": e.credentials_secret.name, "defaultMode": 0o440}})
    res = resources("100m", "512Mi", 0, cpu_limit="1", memory_limit="1Gi")
    res["requests"]["ephemeral-storage"] = "1Gi"
    container = {
        "name": "export",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_quantizer"],
        "args": args,
        "env": [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}, {"name": "HF_HOME", "value": "/tmp/hf"},
                {"name": "HOME", "value": "/tmp"}],
        "resources": res,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: Obj = {"automountServiceAccountToken": False, "enableServiceLinks": False,
                     "securityContext": pod_security_context(), "restartPolicy": "Never",
                     "containers": [container], "volumes": volumes}
    if shares_one_node(t):  # a ReadWriteOnce claim: beside the pods that hold it
        pod_spec.update(claim_placement(t))
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod_spec["tolerations"] = [tol.model_dump(by_alias=True, exclude_none=True) for tol in spec.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(t, name, c.C_EXPORTER, annotations={c.A_ARTIFACT_KEY: t.key}),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 6 * 3600,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "export", "operator": "In",
                                                      "values": EXPORTER_PERMANENT_EXIT_CODES}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
            "template": {"metadata": {"labels": metadata(t, "", c.C_EXPORTER)["labels"]}, "spec": pod_spec},
        },
    }


@dataclass
class ExportView:
    """What status says about the exports: entries for status.artifact.exports, a Degraded
    cause (ExportFailed) or None, whether every target holds the artifact, whether the Job is
    still to be created, and when to look again (seconds)."""

    exports: list[dict[str, Any]] = field(default_factory=list)
    problem: Cond | None = None
    done: bool = False
    create_job: bool = False
    recheck_after: float | None = None
    job: str | None = None  # the export Job's name (status.artifact.exportJob)

    @property
    def message(self) -> str:
        """One sentence for the Available condition."""
        if self.done:
            return f"exported to {len(self.exports)} target(s): " + ", ".join(e["target"] for e in self.exports)
        if self.problem is not None:
            return "the export failed (see the Degraded condition); the artifact stays on the volume"
        return f"exporting to {len(self.exports)} target(s)"


def _entries(summary: Mapping[str, Any], spec: api.SLMDeploymentSpec) -> list[dict[str, Any]]:
    """The termination message's exports[] as status entries, in spec order (secrets redacted)."""
    got = {e.get("target"): e for e in summary.get("exports") or [] if isinstance(e, dict)}
    out = []
    for t in spec.export:
        e = got.get(t.target)
        if e is None:
            out.append({"target": t.target, "result": "Pending"})
            continue
        entry = {k: e[k] for k in STATUS_KEYS if e.get(k) not in (None, "")}
        if "message" in entry:
            entry["message"] = one_line(entry["message"])
        out.append(entry)
    return out


def observe_export(spec: api.SLMDeploymentSpec, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                   previous: Mapping[str, Any], location: str) -> ExportView:
    """The exports' state from the export Job (None: not created yet) and its pods' summaries.

    previous: the previous status (entries are kept from it when the Job completed and its pods
    are gone). location: the artifact's path, named in the failure message."""
    pending = [{"target": e.target, "result": "Pending"} for e in spec.export]
    if job is None:
        return ExportView(exports=pending, create_job=True, recheck_after=RECHECK_SECONDS)
    summary = termination_summary(list(pods))
    if job_condition(job, "Complete"):
        entries = _entries(summary, spec) if summary.get("exports") else _previous(previous, spec)
        if entries is None:  # completed, its pods (and their message) gone, nothing in status yet
            entries = [{"target": e.target, "result": "Pushed",
                        "message": "the export Job completed; its result message was not kept"} for e in spec.export]
        return ExportView(exports=entries, done=True)
    if job_condition(job, "Failed"):
        entries = _entries(summary, spec) if summary.get("exports") else pending
        failed = next((e for e in entries if e.get("result") == "Failed"), None)
        if failed is not None:
            why = f"export to {failed['target']} failed: {failed.get('message', 'no message')}"
        else:
            cond = next((x for x in (job.get("status") or {}).get("conditions") or [] if x.get("type") == "Failed"),
                        {})
            words = summary.get("message") or cond.get("message") or cond.get("reason") or "no message"
            why = f"the export Job {job['metadata']['name']} failed: {one_line(words)}"
        return ExportView(exports=entries, problem=Cond(
            True, c.R_EXPORT_FAILED,
            f"{one_line(why, 600)}. The artifact stays on the volume at {location}; fix the target or its "
            "credentials Secret (an edited Secret or spec runs a new export Job)."))
    return ExportView(exports=pending, recheck_after=RECHECK_SECONDS)


def _previous(previous: Mapping[str, Any], spec: api.SLMDeploymentSpec) -> list[dict[str, Any]] | None:
    """The previous status's export entries when they cover the same targets and all succeeded."""
    prev = ((previous.get("artifact") or {}).get("exports")) or []
    if [e.get("target") for e in prev] == [e.target for e in spec.export] and all(
            e.get("result") in ("Pushed", "AlreadyPresent") for e in prev):
        return [dict(e) for e in prev]
    return None


def is_export_child(component: str | None) -> bool:
    """True for an export Job, by its slm.ai/component label (`cache.Head.component`): pruning
    leaves those to the export stage, which deletes the stale ones."""
    return component == c.C_EXPORTER


def secret_refs(spec: api.SLMDeploymentSpec) -> list[tuple[str, str]]:
    """(field path, Secret name) of every credentials Secret the export targets name."""
    return [(f"spec.export[{i}].credentialsSecret", e.credentials_secret.name)
            for i, e in enumerate(spec.export) if e.credentials_secret]
