"""The quantization Job and the serving Deployment."""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator import hub
from slm_operator.render.common import (
    GATEWAY_IMAGE,
    JOB_TMP_BYTES,
    Obj,
    Target,
    artifact_path,
    child_names,
    container_security_context,
    empty_dir,
    gi,
    gpu_scheduling,
    metadata,
    pod_security_context,
    resources,
    selector,
    source_claim,
    stable_hash,
)
from slm_operator.render.engines import containers as engine_containers
from slm_operator.render.engines import tmp_volume
from slm_operator.resolve import execution_target, pvc_source, served_from_source


def _cache_volume(t: Target) -> Obj:
    return {"name": "model-cache",
            "persistentVolumeClaim": {"claimName": child_names(t.name, t.key)["cache"]}}


def shares_one_node(t: Target) -> bool:
    """Whether every pod of this deployment must run on one node.

    The design (docs/sizing.md, "Replicas and the model claim"): all pods that mount the
    model claim (the serving replicas, a rollout's surge pod, the quantization Job) read one
    volume. A ReadWriteOnce volume
    attaches to one node at a time, so they are kept on one node by a required pod affinity;
    with storage.accessMode ReadWriteMany they may spread (and are spread, preferably).
    A pvc:// source served as is mounts the user's claim: storage.accessMode then states
    that claim's mode.
    """
    return t.spec.storage.access_mode != "ReadWriteMany"


def claim_placement(t: Target) -> Obj:
    """affinity / topologySpreadConstraints for a pod that mounts the model claim."""
    peers = {"matchLabels": {c.L_DEPLOYMENT: t.name}}
    if shares_one_node(t):
        return {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": peers, "topologyKey": "kubernetes.io/hostname"}]}}}
    return {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": selector(t, c.C_SERVER)}}]}


def _pod_spec_base() -> Obj:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
    }


def quantizer_source(t: Target) -> str:
    """hf:// and s3:// go to the quantizer as is; pvc://CLAIM/PATH becomes the mounted path."""
    pvc = pvc_source(t.spec.model.source)
    if pvc is None:
        return t.spec.model.source
    return f"{c.SOURCE_MOUNT}/{pvc[1]}".rstrip("/")


# The quantizer's exit codes (slm_quantizer.cli EXIT_CODES) a rerun cannot change: bad source
# or arguments 2, quality gate 3, unsupported combination 4, conversion refused 6, the
# model-cache volume full 7 (the operator reruns the Job once the claim has grown). Transient
# ones (1 unknown, 5 source unavailable, OOM 137) count against backoffLimit.
QUANTIZER_PERMANENT_EXIT_CODES = [2, 3, 4, 6, 7]


def pod_failure_policy() -> Obj:
    """Fail the Job at once on a permanent exit code (no re-download); a pod disrupted by the
    cluster (preemption, drain, eviction by the taint manager) is retried without counting."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "quantize", "operator": "In",
                                              "values": QUANTIZER_PERMANENT_EXIT_CODES}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}


def _job_resources(job_gpus: int) -> Obj:
    res = resources("1", "16Gi" if job_gpus else "8Gi", job_gpus, cpu_limit="4")
    res["requests"]["ephemeral-storage"] = gi(JOB_TMP_BYTES)
    return res


def quantize_job(t: Target, image: str, hub_defaults: hub.HubDefaults | None = None) -> Obj:
    """The quantization Job: fetch, convert/quantize, verify, write the artifact.

    hub_defaults: the operator-wide hub settings; spec.model.hub overrides them (hf:// only).
    """
    names = child_names(t.name, t.key)
    spec = t.spec
    q = spec.quantization
    target = execution_target(spec, t.r)
    args = [
        "--source", quantizer_source(t),
        "--format", t.r.format,
        "--type", t.r.qtype,
        "--target", target,
        "--output", artifact_path(t),
        "--max-ppl-increase-pct", str(q.max_perplexity_increase_percent if q else 10),
        "--termination-log", "/dev/termination-log",
    ]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    if q and q.tool and t.r.format == "onnx":
        args += ["--tool", q.tool]
    mounts = [{"name": "model-cache", "mountPath": c.MODELS_MOUNT},
              {"name": "tmp", "mountPath": "/tmp"}]
    # /tmp holds caches only: the download, the scratch work and GGUF's F16 reference are on
    # the PVC, which sizing makes large enough for the peak (docs/sizing.md).
    volumes = [_cache_volume(t), empty_dir("tmp", JOB_TMP_BYTES)]
    if spec.model.token_secret_ref:
        ref = spec.model.token_secret_ref
        args += ["--token-file", c.HF_TOKEN_FILE]
        mounts.append({"name": "hub-token", "mountPath": c.HF_TOKEN_DIR, "readOnly": True})
        volumes.append({"name": "hub-token", "secret": {
            "secretName": ref.name, "defaultMode": 0o440,
            "items": [{"key": ref.key, "path": "token"}]}})
    if spec.model.s3_credentials_secret_ref:
        args += ["--s3-credentials-dir", c.S3_CREDENTIALS_DIR]
        mounts.append({"name": "s3-credentials", "mountPath": c.S3_CREDENTIALS_DIR, "readOnly": True})
        volumes.append({"name": "s3-credentials", "secret": {
            "secretName": spec.model.s3_credentials_secret_ref.name, "defaultMode": 0o440}})
    hub_access = hub.effective(spec.model, hub_defaults or hub.HubDefaults())
    ca = hub.job_volume(hub_access)
    if ca:
        mounts.append(ca[0])
        volumes.append(ca[1])
    claim = source_claim(t)
    if claim:
        mounts.append({"name": "source", "mountPath": c.SOURCE_MOUNT, "readOnly": True})
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    # Only AWQ/GPTQ calibration needs a GPU. GGUF and ONNX quantize on CPU; none and fp8 only
    # fetch and verify (vLLM quantizes fp8 at load).
    job_gpus = 1 if t.r.gpu_count and t.r.format in ("awq", "gptq") else 0
    # The spec's nodeSelector and tolerations apply to the Job too (a node pool, a tainted
    # real node); only a GPU Job adds the GPU product and taint.
    node_selector, tolerations = gpu_scheduling(t) if job_gpus else (
        dict(sorted(spec.node_selector.items())),
        [tol.model_dump(by_alias=True, exclude_none=True) for tol in spec.tolerations])
    container = {
        "name": "quantize",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "slm_quantizer"],
        "args": args,
        "env": sorted([{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": f"{c.MODELS_MOUNT}/hf"},
                       {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}, *hub.job_env(hub_access)],
                      key=lambda e: e["name"]),
        # One core requested so the Job schedules beside serving pods on a small node; it
        # may burst to four (conversion and the perplexity check are CPU-bound).
        "resources": _job_resources(job_gpus),
        "securityContext": container_security_context(),
        # The quantizer's JSON summary file when it wrote one (QualityGateFailed reads it); the
        # last log lines when it was killed before writing it (OOM, a native crash).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: Obj = {**_pod_spec_base(), "restartPolicy": "Never", "containers": [container],
                     "volumes": volumes}
    if shares_one_node(t):  # beside the serving pods that hold the ReadWriteOnce claim
        pod_spec.update(claim_placement(t))
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(t, names["job"], c.C_QUANTIZER,
                             annotations={c.A_ARTIFACT_KEY: t.key, c.A_CLAIM_SIZE: t.r.storage_size}),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 6 * 3600,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": {**metadata(t, "", c.C_QUANTIZER)["labels"]}},
                "spec": pod_spec,
            },
        },
    }


def serving_deployment(t: Target, image: str, replicas: int | None, gateway_image: str = GATEWAY_IMAGE) -> Obj:
    names = child_names(t.name, t.key)
    containers, extra_volumes = engine_containers(t, image, gateway_image)
    for ctr in containers:
        # A crash-looping server writes no termination file: the kubelet then keeps the last
        # log lines as the message, which the Degraded condition quotes.
        ctr["terminationMessagePolicy"] = "FallbackToLogsOnError"
    api_key_name = (t.spec.access.api_key_secret_ref.name if t.spec.access.api_key_secret_ref
                    else names["api_key"])
    api_key_key = (t.spec.access.api_key_secret_ref.key if t.spec.access.api_key_secret_ref
                   else "api-key")
    volumes = [
        tmp_volume(t),
        {"name": "api-key", "secret": {"secretName": api_key_name, "defaultMode": 0o440,
                                       "items": [{"key": api_key_key, "path": "api-key"}]}},
    ]
    if served_from_source(t.spec, t.r):
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": source_claim(t), "readOnly": True}})
    else:
        volumes.append(_cache_volume(t))
    volumes += extra_volumes
    node_selector, tolerations = gpu_scheduling(t)
    pod_labels = {**metadata(t, "", c.C_SERVER)["labels"], c.L_ENGINE: t.r.engine}
    pod_annotations = {**t.spec.pod_annotations,
                       c.A_SPEC_HASH: stable_hash([containers, volumes])}
    pod_spec: Obj = {**_pod_spec_base(), "containers": containers, "volumes": volumes,
                     "terminationGracePeriodSeconds": 60, **claim_placement(t)}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    # GPUs are scarce: replace in place rather than surge onto a GPU that isn't there.
    strategy = ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
                if t.r.gpu_count else
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    spec: Obj = {
        "selector": {"matchLabels": selector(t, c.C_SERVER)},
        "strategy": strategy,
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": dict(sorted(pod_annotations.items()))},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    meta = metadata(t, names["server"], c.C_SERVER)
    meta["labels"][c.L_ENGINE] = t.r.engine
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
