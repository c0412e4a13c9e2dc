"""`python -m slm_quantizer export` against real servers on 127.0.0.1: moto's S3 server (IAM auth on),
the project's hub server (e2e/hubserver.py, token required) and the CNCF distribution registry
(built from its Go module by hack/build-registry.sh, htpasswd auth).

Each target: the first run pushes and verifies (what arrived has the manifest's sha256s), a
second run pushes nothing (S3: one object version per key in a versioned bucket; hub: no POST;
registry: no PUT or POST in its access log), and refused credentials give exit 2, result
ExportFailed with the server's words and no secret anywhere in the output. About 30 s on a loaded
2-core machine once the registry is built (the first build of it takes a few minutes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from quantizer_helpers import require
from s3_server import S3Server, write_credentials

from slm_runtime import artifact

ROOT = Path(__file__).resolve().parents[2]
KEY = "0a1b2c3d"
SECRET_TOKEN = "hf_export_token_do_not_leak"  # a test token
REGISTRY_PASSWORD = "registry-password-do-not-leak"  # a test password


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    """A complete artifact (manifest.json as the quantizer writes it): a 1 MiB weights file, a
    nested ONNX-like file and a config."""
    root = tmp_path_factory.mktemp("pvc") / "artifacts" / KEY
    with artifact.ArtifactWriter(root) as w:
        (w.staging / "model.safetensors").write_bytes(os.urandom(1 << 20))
        (w.staging / "onnx").mkdir()
        (w.staging / "onnx" / "model.onnx").write_bytes(os.urandom(4096))
        (w.staging / "config.json").write_text('{"model_type": "qwen3"}\n')
        w.publish({"format": "gguf", "type": "Q4_K_M", "source": "hf://acme/tiny"})
    return root


def export(art: Path, targets: list[dict], tmp_path: Path) -> tuple[int, dict, str]:
    """Run the export subcommand: (exit code, termination message, stdout + stderr)."""
    term = tmp_path / f"term-{time.monotonic_ns()}"
    proc = subprocess.run([sys.executable, "-m", "slm_quantizer", "export", "--artifact", str(art), "--key", KEY,
                           "--targets", json.dumps(targets), "--termination-log", str(term)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_DISABLE_XET": "1"})
    return proc.returncode, json.loads(term.read_text()), proc.stdout + proc.stderr


def manifest_sha(art: Path) -> str:
    return artifact.sha256_file(art / artifact.MANIFEST)


def expected_files(art: Path) -> dict[str, str]:
    """relative path -> sha256 for every file that must arrive (manifest.json included)."""
    files = {f["path"]: f["sha256"] for f in artifact.read_manifest(art)["files"]}
    return {**files, artifact.MANIFEST: manifest_sha(art)}


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    require("boto3", "moto")
    with S3Server() as server:
        client = server.client("s3")
        client.create_bucket(Bucket="exports")
        client.put_bucket_versioning(Bucket="exports", VersioningConfiguration={"Status": "Enabled"})
        server.enforce_auth()
        yield server


def test_s3_push_is_checksummed_and_idempotent(s3, art, tmp_path):
    key_id, secret = s3.credentials
    creds = write_credentials(tmp_path / "creds", key_id, secret, s3.url)
    target = {"target": "s3://exports/team/models", "credentialsDir": str(creds)}
    rc, term, out = export(art, [target], tmp_path)
    assert rc == 0, out[-3000:]
    assert term["result"] == "Exported" and term["manifestSha256"] == manifest_sha(art)
    (entry,) = term["exports"]
    assert entry["result"] == "Pushed", entry
    assert entry["url"] == f"s3://exports/team/models/{KEY}/"
    assert entry["checksum"] == f"sha256:{manifest_sha(art)}"
    assert entry["files"] == len(expected_files(art)) and entry["pushedAt"].endswith("Z")
    client = s3.client("s3", key_id, secret)
    for rel, sha in expected_files(art).items():
        obj = client.get_object(Bucket="exports", Key=f"team/models/{KEY}/{rel}")
        assert hashlib.sha256(obj["Body"].read()).hexdigest() == sha, rel
        assert obj["Metadata"]["sha256"] == sha

    rc, term, out = export(art, [target], tmp_path)
    assert rc == 0, out[-3000:]
    assert term["exports"][0]["result"] == "AlreadyPresent"
    assert term["exports"][0]["files"] == 0
    versions = client.list_object_versions(Bucket="exports", Prefix=f"team/models/{KEY}/")["Versions"]
    assert sorted(v["Key"] for v in versions) == sorted(f"team/models/{KEY}/{r}" for r in expected_files(art))
    assert term["exports"][0]["revision"] == next(v["VersionId"] for v in versions if v["Key"].endswith(
        artifact.MANIFEST))


def test_s3_refused_credentials(s3, art, tmp_path):
    key_id, _ = s3.credentials
    wrong = "wrongSecretKeyDoNotLeak0123456789abcdef"
    creds = write_credentials(tmp_path / "creds", key_id, wrong, s3.url)
    rc, term, out = export(art, [{"target": "s3://exports/refused", "credentialsDir": str(creds)}], tmp_path)
    assert rc == 2, out[-3000:]
    assert term["result"] == "ExportFailed"
    (entry,) = term["exports"]
    assert entry["result"] == "Failed" and "SignatureDoesNotMatch" in entry["message"]
    assert "s3://exports/refused" in term["message"]
    assert wrong not in out + json.dumps(term)
    listed = s3.client("s3", *s3.credentials).list_objects_v2(Bucket="exports", Prefix="refused/")
    assert listed.get("KeyCount", 0) == 0


# -- Hub -----------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path):
    require("huggingface_hub")
    sys.path.insert(0, str(ROOT))
    from e2e.hubserver import HubServer

    readme = tmp_path / "repo"
    readme.mkdir()
    (readme / "README.md").write_text("# exports\n")
    with HubServer(token=SECRET_TOKEN) as server:
        server.add_repo("acme/exports", readme)
        yield server


def _hub_creds(folder: Path, hub, token: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "HF_TOKEN").write_text(token + "\n")
    (folder / "HF_ENDPOINT").write_text(hub.url)
    return folder


def test_hub_push_new_branch_checksummed_and_idempotent(hub, art, tmp_path):
    creds = _hub_creds(tmp_path / "creds", hub, SECRET_TOKEN)
    main_before = hub.revision("acme/exports", "main")
    rc, term, out = export(art, [{"target": "hf://acme/exports", "credentialsDir": str(creds)}], tmp_path)
    assert rc == 0, out[-3000:]
    (entry,) = term["exports"]
    assert entry["result"] == "Pushed", entry
    assert entry["revision"] == hub.revision("acme/exports", KEY)  # a new revision on branch <key>
    assert hub.revision("acme/exports", "main") == main_before  # the default branch is untouched
    assert entry["url"] == f"{hub.url}/acme/exports/tree/{KEY}"
    rev = hub.repos["acme/exports"].resolve(KEY)
    for rel, sha in expected_files(art).items():
        assert rev.files[rel].true_sha256 == sha, rel
    assert rev.files["model.safetensors"].sha256 == expected_files(art)["model.safetensors"]  # published as LFS
    assert "README.md" in rev.files  # the branch starts from main
    posts = [r for r in hub.requests if r.method == "POST"]
    assert [r.path.split("/")[-2] for r in posts] == ["branch", "preupload", "commit"]

    seen = len(hub.requests)
    rc, term, out = export(art, [{"target": "hf://acme/exports", "credentialsDir": str(creds)}], tmp_path)
    assert rc == 0, out[-3000:]
    assert term["exports"][0]["result"] == "AlreadyPresent"
    assert term["exports"][0]["revision"] == entry["revision"]
    assert not [r for r in hub.requests[seen:] if r.method == "POST"]
    assert SECRET_TOKEN not in out + json.dumps(term)


def test_hub_refused_token(hub, art, tmp_path):
    creds = _hub_creds(tmp_path / "creds", hub, "hf_wrong_token_do_not_leak")
    rc, term, out = export(art, [{"target": "hf://acme/exports", "credentialsDir": str(creds)}], tmp_path)
    assert rc == 2, out[-3000:]
    (entry,) = term["exports"]
    assert entry["result"] == "Failed"
    assert "401" in entry["message"] and "Invalid credentials" in entry["message"]
    assert "hf_wrong_token_do_not_leak" not in out + json.dumps(term)
    assert KEY not in hub.repos["acme/exports"].refs


# -- OCI registry --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The distribution registry on 127.0.0.1 with htpasswd (bcrypt) auth: (host:port, log file)."""
    binary = subprocess.run(["bash", str(ROOT / "hack/build-registry.sh")], capture_output=True, text=True,
                            timeout=1800)
    if binary.returncode != 0:
        pytest.skip(f"the registry could not be built (needs go): {binary.stderr.strip()[-500:]}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libcrypt: the only hash distribution's htpasswd accepts

    work = tmp_path_factory.mktemp("registry")
    (work / "htpasswd").write_text(
        f"slm:{crypt.crypt(REGISTRY_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    port = _free_port()
    (work / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(work / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-only-secret"},
        "auth": {"htpasswd": {"realm": "slm-test", "path": str(work / "htpasswd")}}}))
    log = work / "registry.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([binary.stdout.strip(), "serve", str(work / "config.yml")], stdout=fh, stderr=fh,
                                env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5)
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"registry did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield f"127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _oci_creds(folder: Path, host: str, password: str) -> Path:
    """A kubernetes.io/dockerconfigjson Secret's file, as the volume mount makes it."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"slm:{password}".encode()).decode()
    (folder / ".dockerconfigjson").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


def _get(url: str, accept: str | None = None) -> tuple[bytes, dict]:
    auth = base64.b64encode(f"slm:{REGISTRY_PASSWORD}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}", **({"Accept": accept} if accept
                                                                                    else {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read(), dict(resp.headers)


def _writes(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if '"PUT /v2/' in line or '"POST /v2/' in line
               or '"PATCH /v2/' in line)


def test_oci_push_oras_layout_checksummed_and_idempotent(registry, art, tmp_path):
    host, log = registry
    creds = _oci_creds(tmp_path / "creds", host, REGISTRY_PASSWORD)
    target = {"target": f"oci://{host}/models/qwen3", "credentialsDir": str(creds), "plainHTTP": True}
    rc, term, out = export(art, [target], tmp_path)
    assert rc == 0, out[-3000:] + log.read_text()[-3000:]
    (entry,) = term["exports"]
    assert entry["result"] == "Pushed" and entry["url"] == f"{host}/models/qwen3:{KEY}"
    body, headers = _get(f"http://{host}/v2/models/qwen3/manifests/{KEY}", "application/vnd.oci.image.manifest.v1+json")
    assert "sha256:" + hashlib.sha256(body).hexdigest() == entry["digest"] == headers["Docker-Content-Digest"]
    manifest = json.loads(body)
    assert manifest["artifactType"] == "application/vnd.slm-operator.model.v1"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    titles = {layer["annotations"]["org.opencontainers.image.title"]: layer["digest"] for layer in manifest["layers"]}
    assert titles == {rel: f"sha256:{sha}" for rel, sha in expected_files(art).items()}
    blob, _ = _get(f"http://{host}/v2/models/qwen3/blobs/{titles['onnx/model.onnx']}")
    assert blob == (art / "onnx" / "model.onnx").read_bytes()
    writes = _writes(log)
    assert writes >= len(expected_files(art)) + 1  # each blob (POST + PUT) and the manifest

    rc, term, out = export(art, [target], tmp_path)
    assert rc == 0, out[-3000:]
    assert term["exports"][0]["result"] == "AlreadyPresent"
    assert term["exports"][0]["digest"] == entry["digest"]
    assert _writes(log) == writes  # nothing pushed the second time
    assert REGISTRY_PASSWORD not in out + json.dumps(term)


def test_oci_refused_credentials_and_all_targets_reported(registry, s3, art, tmp_path):
    host, _ = registry
    creds = _oci_creds(tmp_path / "creds", host, "wrong-password-do-not-leak")
    key_id, secret = s3.credentials
    good = write_credentials(tmp_path / "s3", key_id, secret, s3.url)
    rc, term, out = export(art, [{"target": f"oci://{host}/models/refused", "credentialsDir": str(creds),
                                  "plainHTTP": True},
                                 {"target": "s3://exports/second", "credentialsDir": str(good)}], tmp_path)
    assert rc == 2, out[-3000:]
    assert term["result"] == "ExportFailed" and f"oci://{host}/models/refused" in term["message"]
    oci, s3_entry = term["exports"]
    assert oci["result"] == "Failed" and "401" in oci["message"] and "UNAUTHORIZED" in oci["message"]
    assert s3_entry["result"] == "Pushed"  # one refused target does not stop the others
    assert "wrong-password-do-not-leak" not in out + json.dumps(term)


def test_bad_arguments_and_incomplete_artifact(tmp_path):
    rc, term, _ = export(tmp_path / "missing", [{"target": "s3://b/p"}], tmp_path)
    assert rc == 2 and term["result"] == "ExportFailed" and "no complete artifact" in term["message"]
    proc = subprocess.run([sys.executable, "-m", "slm_quantizer", "export", "--artifact", str(tmp_path), "--key",
                           KEY, "--targets", "[]"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--targets must be a non-empty JSON list" in proc.stderr


def test_eight_failed_targets_still_fit_the_termination_message(art, tmp_path):
    """Eight refused targets with long messages: the termination message stays valid JSON under 4096 bytes."""
    creds = tmp_path / "none"
    targets = [{"target": f"s3://no-such-bucket-{i}/{'p' * 80}", "credentialsDir": str(creds)} for i in range(8)]
    rc, term, _ = export(art, targets, tmp_path)
    assert rc == 2 and term["result"] == "ExportFailed"
    assert len(term["exports"]) == 8 and all(e["result"] == "Failed" for e in term["exports"])
    assert len(json.dumps(term, sort_keys=True, separators=(",", ":")).encode()) <= 4096
    from slm_quantizer import export as exporter

    big = {"result": "ExportFailed", "message": "m" * 900, "key": KEY, "artifact": str(art),
           "exports": [{"target": f"s3://b{i}/{'p' * 200}", "result": "Failed", "message": "x" * 600,
                        "checksum": "sha256:" + "a" * 64, "files": 3, "bytes": 10} for i in range(8)]}
    exporter._fit(big)
    assert len(json.dumps(big, sort_keys=True, separators=(",", ":")).encode()) <= 4000
    assert all(e["result"] == "Failed" and e["target"].startswith("s3://b") for e in big["exports"])
