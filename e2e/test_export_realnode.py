"""spec.export for real: quantize-only on the real node, then the export Job pushes the gated artifact
to moto's S3 server and to the project's hub server, both listening on the node's bridge address
(the address pods reach the host on; never a wildcard), then a refused credential.

- a tiny Qwen3 (the quantizer tests' cached model) from the local hub -> GGUF Q8_0 quantization Job
  with the gate -> export Job (the quantizer image's `export` subcommand, Pod Security restricted,
  read-only root filesystem, the claim and the credentials Secrets mounted read-only);
- Ready with status.artifact.exports: S3 (the manifest object's version) and the hub (the commit
  on branch <artifact>), each with the artifact's checksum; the pushed objects have the manifest's
  sha256s;
- the S3 credentials Secret edited to a wrong secret key: a new export Job, Degraded ExportFailed
  with the server's words (SignatureDoesNotMatch) in the condition and a Warning Event, the
  artifact still ready on the volume, the secret nowhere in status or Events.

About 3-5 minutes on a loaded 2-core machine (the quantization Job dominates).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import apply, condition_status, kubectl, kubectl_json, run_operator, wait_for_object
from e2e.realnode import REAL_NODE, RealNode, ensure_images

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

SOURCE_REPO = "slm-e2e/tiny-qwen3-export"
EXPORT_REPO = "slm-e2e/exports"
HUB_TOKEN = "hf_e2e_export_token"  # a test token for the upload hub
TIMEOUT = 600
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def images(real_node: RealNode, kubeconfig: str) -> dict[str, str]:
    """The quantizer image on the node, and the CRD of this tree (spec.export) installed."""
    root = Path(__file__).resolve().parents[1]
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(root / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/slmdeployments.slm.ai", "--timeout=60s")
    return ensure_images(["quantizer"])


@pytest.fixture(scope="module")
def servers(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The source hub, the upload hub (token required) and moto's S3 server (IAM auth on), all on
    the node's address."""
    import boto3
    from moto.server import ThreadedMotoServer

    from e2e.hubserver import HubServer
    from slm_runtime.tiny_models import tiny_model

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    model = tiny_model("qwen3", train_steps=int(os.environ.get("SLM_TINY_TRAIN_STEPS", "50")))
    readme = tmp_path_factory.mktemp("exports-repo")
    (readme / "README.md").write_text("# exports\n")
    s3 = ThreadedMotoServer(real_node.address, 0, verbose=False)
    s3.start()
    host, port = s3.get_host_and_port()
    url = f"http://{host}:{port}"

    def client(service: str, key: str = "admin", secret: str = "admin") -> Any:
        return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                     region_name="us-east-1").client(service, endpoint_url=url)

    iam = client("iam")
    iam.create_user(UserName="exporter")
    iam.put_user_policy(UserName="exporter", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="exporter")["AccessKey"]
    client("s3").create_bucket(Bucket="exports")
    import urllib.request

    def auth(on: bool) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                                      method="POST", headers={"Content-Type": "text/plain"}),
                               timeout=10).read()

    auth(True)
    try:
        with HubServer(host=real_node.address, port=0) as source, \
                HubServer(host=real_node.address, port=0, token=HUB_TOKEN) as uploads:
            source.add_repo(SOURCE_REPO, model)
            uploads.add_repo(EXPORT_REPO, readme)
            yield {"source": source, "uploads": uploads, "s3_url": url,
                   "s3": client("s3", key["AccessKeyId"], key["SecretAccessKey"]),
                   "key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        auth(False)
        s3.stop()


def _secret(ns: str, name: str, data: dict[str, str], kubeconfig: str, kind: str = "Opaque") -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": {"name": name, "namespace": ns},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    apply(kubeconfig, body, namespace=ns)


def test_quantize_only_exports_to_s3_and_the_hub_then_a_refused_secret_is_export_failed(
        kubeconfig: str, namespace: str, real_node: RealNode, images: dict[str, str], servers: dict[str, Any]) -> None:
    ns, kc = namespace, kubeconfig
    src, uploads = servers["source"], servers["uploads"]
    s3_creds = {"AWS_ACCESS_KEY_ID": servers["key_id"], "AWS_SECRET_ACCESS_KEY": servers["secret"],
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": servers["s3_url"]}
    _secret(ns, "s3-export", s3_creds, kc)
    _secret(ns, "hub-export", {"HF_TOKEN": HUB_TOKEN, "HF_ENDPOINT": uploads.url}, kc)
    cr = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "tiny-export"},
          "spec": {"model": {"source": f"hf://{SOURCE_REPO}", "revision": src.revision(SOURCE_REPO),
                             "hub": {"endpoint": src.url}},
                   "quantization": {"format": "gguf", "type": "Q8_0"},
                   "serving": {"enabled": False},
                   "export": [{"target": "s3://exports/e2e", "credentialsSecret": {"name": "s3-export"}},
                              {"target": f"hf://{EXPORT_REPO}", "credentialsSecret": {"name": "hub-export"}}],
                   "storage": {"size": "1Gi"}, **REAL_NODE}}
    with run_operator(kc, [ns]) as op:
        apply(kc, cr, namespace=ns)

        def settled(o: dict[str, Any]) -> bool:
            return condition_status(o, "Ready") == "True" or condition_status(o, "Degraded") == "True"

        obj = wait_for_object(kc, "-n", ns, "slmdeployment", "tiny-export", predicate=settled, timeout=TIMEOUT,
                              what="tiny-export Ready")
        st = obj["status"]
        assert condition_status(obj, "Ready") == "True", (json.dumps(st, indent=1), op.output()[-3000:],
                                                          kubectl(kc, "-n", ns, "get", "pods,jobs", "-o", "wide"))
        art = st["artifact"]
        assert art["ready"] is True and art["checksum"].startswith("sha256:")
        s3_entry, hub_entry = art["exports"]
        folder = art["location"].rsplit("/", 1)[-1]
        assert s3_entry["result"] == "Pushed" and s3_entry["url"] == f"s3://exports/e2e/{folder}/", s3_entry
        assert s3_entry["checksum"] == art["checksum"] == hub_entry["checksum"]
        assert hub_entry["result"] == "Pushed" and hub_entry["revision"] == uploads.revision(EXPORT_REPO, folder)
        manifest = servers["s3"].get_object(Bucket="exports", Key=f"e2e/{folder}/manifest.json")["Body"].read()
        assert "sha256:" + hashlib.sha256(manifest).hexdigest() == art["checksum"]
        for f in json.loads(manifest)["files"]:
            body = servers["s3"].get_object(Bucket="exports", Key=f"e2e/{folder}/{f['path']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == f["sha256"], f["path"]
        rev = uploads.repos[EXPORT_REPO].resolve(folder)
        assert {p for p in rev.files} >= {f["path"] for f in json.loads(manifest)["files"]}
        job = kubectl_json(kc, "-n", ns, "get", "job", art["exportJob"])
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert "s3-export" not in json.dumps(pod["containers"][0]["args"])

        # A wrong secret key: the spec now names another Secret, a new export Job, which the server refuses.
        _secret(ns, "s3-wrong", {**s3_creds, "AWS_SECRET_ACCESS_KEY": "wrong-secret-key-e2e-do-not-leak"}, kc)
        cr["spec"]["export"][0]["credentialsSecret"] = {"name": "s3-wrong"}
        apply(kc, cr, namespace=ns)
        obj = wait_for_object(kc, "-n", ns, "slmdeployment", "tiny-export",
                              predicate=lambda o: condition_status(o, "Degraded") == "True", timeout=TIMEOUT,
                              what="tiny-export Degraded ExportFailed")
        deg = next(x for x in obj["status"]["conditions"] if x["type"] == "Degraded")
        assert deg["reason"] == "ExportFailed", deg
        assert "export to s3://exports/e2e failed" in deg["message"] and "SignatureDoesNotMatch" in deg["message"]
        assert obj["status"]["artifact"]["ready"] is True and "stays on the volume" in deg["message"]
        assert obj["status"]["artifact"]["exports"][0]["result"] == "Failed"
        events = kubectl_json(kc, "-n", ns, "get", "events", "--field-selector",
                              "involvedObject.name=tiny-export")["items"]
        warn = [e for e in events if e["type"] == "Warning" and e["reason"] == "ExportFailed"]
        assert warn and "s3://exports/e2e" in warn[-1]["message"], events
        leak = json.dumps(obj["status"]) + json.dumps(events)
        assert "wrong-secret-key-e2e-do-not-leak" not in leak and servers["secret"] not in leak
        assert "Traceback" not in op.output()
