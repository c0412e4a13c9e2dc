"""Export to hf://org/name: one commit on branch <key> of that model repository.

The repository must exist (the token needs write access to it; creating repositories is left
to their owner). The token is the file HF_TOKEN of the mounted Secret; HF_ENDPOINT (a file of
the same Secret, else the environment, else the public hub) names a private hub. Each artifact
key gets its own branch, created from the default branch: a new revision per artifact, the
branch name saying which artifact it holds.

Idempotent: when the branch already has a manifest.json with the local manifest's sha256 (and
every listed file with its size and hash), nothing is committed (AlreadyPresent). After a
commit, the commit's file list is checked against the manifest: LFS files by their sha256,
regular files by their git blob sha1.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from slm_runtime import artifact, progress

from .export import ExportError, LocalArtifact, http_client_module, now, read_file_secret

TOKEN_FILE, ENDPOINT_FILE = "HF_TOKEN", "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the hub lists as blobId for a regular, non-LFS file)."""
    size = path.stat().st_size
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _repo_id(target: str) -> str:
    repo = target[len("hf://"):].strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ExportError(f"Hub export target must be hf://ORG/NAME, got {target!r}")
    return repo


def _error(exc: Exception, what: str) -> ExportError:
    """The hub's own words (status and message), a hint, and whether a retry may help."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    server = (response.headers.get("X-Error-Message") if response is not None else None) or str(exc).split("\n")[0]
    if isinstance(exc, RepositoryNotFoundError):
        hint = "the repository does not exist or the token may not see it: create it, check the token"
    elif status == 401:
        hint = "the hub refused the token: check the HF_TOKEN key of the credentials Secret"
    elif status == 403:
        hint = "the token may not write to this repository: give it write access"
    else:
        hint = ""
    transient = not isinstance(exc, HfHubHTTPError) or status is None or status == 429 or status >= 500
    if isinstance(exc, RepositoryNotFoundError) or status in (401, 403, 404, 409, 422):
        transient = False
    text = f"Hub {what} failed ({status or type(exc).__name__}): {server}" + (f"; {hint}" if hint else "")
    return ExportError(text, transient=transient)


def _remote_matches(api: Any, repo: str, branch: str, art: LocalArtifact) -> str | None:
    """The branch's commit sha when it already holds this artifact, else None."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        with tempfile.TemporaryDirectory(prefix="slm-export-") as tmp:
            got = api.hf_hub_download(repo, artifact.MANIFEST, revision=branch, local_dir=tmp)
            remote_sha = artifact.sha256_file(Path(got))
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    if remote_sha != art.manifest_sha256:
        return None
    commit, problems = _check_commit(api, repo, branch, art)
    return commit if not problems else None


def _check_commit(api: Any, repo: str, revision: str, art: LocalArtifact) -> tuple[str, list[str]]:
    """(the revision's commit sha, the manifest files it lacks or holds with other content)."""
    info = api.model_info(repo, revision=revision, files_metadata=True)
    remote = {s.rfilename: s for s in info.siblings or []}
    problems = []
    for f in [*art.files, {"path": artifact.MANIFEST, "size": (art.folder / artifact.MANIFEST).stat().st_size,
                           "sha256": art.manifest_sha256}]:
        s = remote.get(f["path"])
        if s is None or (s.size is not None and s.size != f["size"]):
            problems.append(f["path"])
        elif s.lfs is not None:
            if s.lfs.sha256 != f["sha256"]:
                problems.append(f["path"])
        elif s.blob_id != git_blob_sha1(art.folder / f["path"]):
            problems.append(f["path"])
    return info.sha, problems


def push(art: LocalArtifact, target: str, creds_dir: Path | None, plain_http: bool = False) -> dict[str, Any]:
    """Commit the artifact to branch <key> of hf://org/name; the export result entry.

    Raises ExportError (the hub's status and words; permanent for 401/403/404)."""
    httpx = http_client_module()
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    repo = _repo_id(target)
    token = read_file_secret(creds_dir, TOKEN_FILE)
    if token is None:
        raise ExportError(f"the credentials Secret for {target} has no {TOKEN_FILE} key (a hub token with write "
                          "access to the repository)")
    endpoint = (read_file_secret(creds_dir, ENDPOINT_FILE) or os.environ.get("HF_ENDPOINT")
                or DEFAULT_ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    branch = art.key
    url = f"{endpoint}/{repo}/tree/{branch}"
    try:
        present = _remote_matches(api, repo, branch, art)
        if present:
            return {"result": "AlreadyPresent", "url": url, "revision": present, "files": 0, "bytes": 0,
                    "message": f"branch {branch} of {repo} already holds this artifact (manifest sha256 matches)"}
        api.create_branch(repo, branch=branch, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=f["path"], path_or_fileobj=str(art.folder / f["path"]))
               for f in [*art.files, {"path": artifact.MANIFEST}]]
        progress.emit("export", target=target, files=len(ops), branch=branch)
        info = api.create_commit(repo, operations=ops, revision=branch,
                                 commit_message=f"slm-operator artifact {art.key}",
                                 commit_description=f"manifest.json sha256 {art.manifest_sha256}")
        commit, problems = _check_commit(api, repo, info.oid, art)
    except HfHubHTTPError as exc:
        raise _error(exc, f"push to {repo} (branch {branch})") from None
    except (OSError, httpx.TransportError) as exc:  # connection refused, DNS, TLS
        raise ExportError(f"Hub {endpoint} cannot be reached: {type(exc).__name__}: {exc}", transient=True) from None
    if problems:
        raise ExportError(f"Hub verification of {repo}@{commit} failed after the push: {', '.join(problems[:5])} "
                          "does not match the local sha256", transient=True)
    size = sum(f["size"] for f in art.files) + (art.folder / artifact.MANIFEST).stat().st_size
    return {"result": "Pushed", "url": url, "revision": commit, "files": len(ops), "bytes": size,
            "pushedAt": now(), "message": f"committed {len(ops)} file(s) to {repo} branch {branch} ({commit[:12]}); "
                                          "verified"}

