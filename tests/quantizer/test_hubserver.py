"""The local hub (e2e/hubserver.py) against the real huggingface_hub client and the real
quantizer: git-like revisions, pinned SHAs and branches, hub errors, published checksums,
Range requests, tokens, TLS with a private CA through SSL_CERT_FILE (what the operator sets
in the Job for a CA bundle)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_hub import HubServer, build_revision, git_object_sha1, self_signed_tls
from quantizer_helpers import require

REPO = "acme/tiny"
TOKEN = "hf_hubtest_0123456789abcdef"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small repo: config, LFS weights, a tokenizer, a nested file and a hidden one."""
    f = tmp_path / "repo"
    (f / "sub").mkdir(parents=True)
    (f / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (f / "model.safetensors").write_bytes(os.urandom(300_000))
    (f / "tokenizer.json").write_text("{}")
    (f / "sub" / "notes.txt").write_text("nested\n")
    (f / ".cache").mkdir()
    (f / ".cache" / "junk").write_text("not served")
    return f


def _get(url: str, token: str | None = TOKEN, **headers: str) -> tuple[int, dict[str, str], bytes]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_revisions_checksums_and_errors_through_huggingface_hub(folder: Path, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    with HubServer("127.0.0.1", 0, token=TOKEN) as hub:
        sha = hub.add_repo(REPO, folder, tags=["v1"])
        assert sha == build_revision(folder).commit, "the SHA depends on the content only"
        api = HfApi(endpoint=hub.url, token=TOKEN)

        info = api.model_info(REPO, revision=sha, files_metadata=True)
        assert info.sha == sha
        files = {s.rfilename: s for s in info.siblings or []}
        assert sorted(files) == ["config.json", "model.safetensors", "sub/notes.txt", "tokenizer.json"]
        weights = (folder / "model.safetensors").read_bytes()
        assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
        assert files["config.json"].lfs is None
        assert files["config.json"].blob_id == git_object_sha1("blob", (folder / "config.json").read_bytes())
        for rev in ("main", "v1", "refs/heads/main", None):
            assert api.model_info(REPO, revision=rev).sha == sha
        for bad in ("nope", "f" * 40):
            with pytest.raises(RevisionNotFoundError):
                api.model_info(REPO, revision=bad)
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("acme/missing")

        # A pinned SHA: snapshot_download lists the tree at that commit, no repo_info call.
        hub.requests.clear()
        path = Path(snapshot_download(REPO, revision=sha, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c"))
        assert path.name == sha
        assert (path / "model.safetensors").read_bytes() == weights
        assert (path / "sub" / "notes.txt").read_text() == "nested\n"
        assert not (path / ".cache").exists()
        paths = [r.path for r in hub.requests]
        assert f"/api/models/{REPO}/tree/{sha}" in paths
        assert not [p for p in paths if "/revision/" in p]
        assert all(r.auth == f"Bearer {TOKEN}" for r in hub.requests)
        # A branch: resolved through repo_info to the same snapshot.
        assert Path(snapshot_download(REPO, revision="main", endpoint=hub.url, token=TOKEN,
                                      cache_dir=tmp_path / "c")) == path
        with pytest.raises(RevisionNotFoundError):
            snapshot_download(REPO, revision="does-not-exist", endpoint=hub.url, token=TOKEN,
                              cache_dir=tmp_path / "c2")
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(REPO, "missing.json", revision=sha, endpoint=hub.url, token=TOKEN,
                            cache_dir=tmp_path / "c3")

        # Tokens: none is "repository not found" (as the hub says for private repos), a wrong one 401.
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=False).model_info(REPO)
        with pytest.raises(HfHubHTTPError) as denied:
            HfApi(endpoint=hub.url, token="hf_wrong").model_info(REPO)
        assert denied.value.response.status_code == 401

        # Headers and Range requests as hf_hub_download reads them.
        url = f"{hub.url}/{REPO}/resolve/{sha}/model.safetensors"
        code, headers, data = _get(url, Range="bytes=100-199")
        assert (code, headers["Content-Range"], data) == (206, f"bytes 100-199/{len(weights)}", weights[100:200])
        assert headers["X-Repo-Commit"] == sha
        assert headers["X-Linked-Etag"].strip('"') == hashlib.sha256(weights).hexdigest()
        assert headers["X-Linked-Size"] == str(len(weights))
        assert _get(url, Range="bytes=-10")[2] == weights[-10:]
        assert _get(url, Range=f"bytes={len(weights)}-")[0] == 416
        code, headers, _ = _get(f"{hub.url}/{REPO}/resolve/main/config.json")
        assert headers["ETag"].strip('"') == files["config.json"].blob_id

        # A second commit: main moves, the first stays reachable by SHA.
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "v": 2}))
        sha2 = hub.add_repo(REPO, folder)
        assert sha2 != sha and api.model_info(REPO).sha == sha2 and api.model_info(REPO, revision="v1").sha == sha
        assert hub.summary() == {REPO: {"main": sha2, "v1": sha}}


def test_tree_matches_git(folder: Path, tmp_path: Path) -> None:
    """The revision's tree SHA is the one git computes for the same files (LFS pointers included)."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    rev = build_revision(folder)
    work = tmp_path / "git"
    shutil.copytree(folder, work, ignore=shutil.ignore_patterns(".cache"))
    f = rev.files["model.safetensors"]
    (work / "model.safetensors").write_bytes(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\nsize {f.size}\n".encode())
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(work)], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
    tree = subprocess.run(["git", "-C", str(work), "write-tree"], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()
    assert tree == rev.tree


def test_https_with_a_private_ca_through_ssl_cert_file(folder: Path, tmp_path: Path) -> None:
    """The Job's CA bundle mechanism: huggingface_hub (httpx2) trusts SSL_CERT_FILE, and only with it."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    ca, cert, key = self_signed_tls(tmp_path / "tls", hosts=["127.0.0.1"])
    # model_info first: it fails at once on an untrusted certificate (downloads retry for a while).
    script = ("import sys; from huggingface_hub import HfApi, snapshot_download; "
              "assert HfApi().model_info(sys.argv[1], revision=sys.argv[2]).sha == sys.argv[2]; "
              "print(snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3]))")
    with HubServer("127.0.0.1", 0, tls=(cert, key)) as hub:
        sha = hub.add_repo(REPO, folder)
        base = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")}
        base.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1")

        def fetch(cache: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", script, REPO, sha, str(tmp_path / cache)], env={**base, **env},
                                  capture_output=True, text=True, timeout=120, check=False)

        trusted = fetch("ok", SSL_CERT_FILE=str(ca), REQUESTS_CA_BUNDLE=str(ca))
        untrusted = fetch("no")
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert Path(trusted.stdout.strip()).name == sha
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr[-3000:]


def test_quantizer_fetches_pinned_sha_then_main_and_refuses_a_bad_revision(tiny, quantize, folder: Path,
                                                                          tmp_path: Path) -> None:
    """The real quantizer's fetch path (snapshot_download + checksum verification) through
    HF_ENDPOINT, with several repos on one hub."""
    require("huggingface_hub", "safetensors")
    env = {"HF_HUB_DISABLE_TELEMETRY": "1"}
    with HubServer("127.0.0.1", 0) as hub:
        sha = hub.add_repo("acme/tiny-qwen3", tiny("qwen3"))
        other = hub.add_repo("acme/other", folder)
        env["HF_ENDPOINT"] = hub.url
        cache = tmp_path / "download"
        runs = {}
        for name, rev in (("pinned", sha), ("main", "main"), ("bad", "no-such-branch")):
            runs[name] = quantize("hf://acme/tiny-qwen3", tmp_path / "models" / name, "none", "bf16",
                                  "--revision", rev, "--sample-max-params", "0", "--download-dir", str(cache),
                                  env=env)
    assert other != sha
    for name in ("pinned", "main"):
        run = runs[name]
        assert run.rc == 0, run.stderr[-3000:]
        manifest = json.loads((tmp_path / "models" / name / "manifest.json").read_text())
        assert manifest["resolvedRevision"] == sha
        checks = manifest["verification"]["checksums"]
        assert checks["verified"] == len(manifest["files"]) and checks["notPublished"] == 0
    bad = runs["bad"]
    assert bad.rc == 2 and bad.termination["result"] == "SourceError"
    assert "RevisionNotFound" in bad.termination["message"] and "no-such-branch" in bad.termination["message"]
    assert not (tmp_path / "models" / "bad").exists()


def test_command_line_serves_until_terminated(folder: Path, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "e2e.hubserver", "--repo", f"{REPO}={folder}",
                             "--host", "127.0.0.1", "--port", "0", "--token-file", str(token_file)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        sha = ready["repos"][REPO]["main"]
        assert sha == build_revision(folder).commit
        assert _get(f"{ready['url']}/api/models/{REPO}/revision/main")[0] == 200
        assert _get(f"{ready['url']}/api/models/{REPO}", token=None)[0] == 401
        assert TOKEN not in " ".join(proc.args)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
