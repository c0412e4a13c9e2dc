"""A local Hugging Face-compatible hub: several repos from local folders, with real revisions.

For tests and the demo: the quantization Jobs download hf:// models from it through
HF_ENDPOINT exactly as they would from the public hub or a private mirror. It speaks what
huggingface_hub 2.x calls on a download (checked against its source):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``model_info``,
  ``repo_info``): the commit ``sha`` and ``siblings``; with ``?blobs=true`` each sibling
  carries ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..`` (``list_repo_tree``, which
  ``snapshot_download`` calls for a commit SHA revision);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` (``hf_hub_download``): headers
  ``X-Repo-Commit``, ``ETag`` (git blob sha1, or the sha256 for LFS files), ``X-Linked-Etag``
  and ``X-Linked-Size`` (LFS files), ``Accept-Ranges``; ``Range: bytes=a-b|a-|-n`` answers
  206 with ``Content-Range`` (416 when unsatisfiable);
- errors as the hub sends them: ``X-Error-Code: RevisionNotFound`` (404, "Invalid rev id"),
  ``EntryNotFound`` (404, with ``X-Repo-Commit``), ``RepoNotFound`` (404; 401 without a token
  when one is required), a wrong token 401 "Invalid credentials in Authorization header".

Uploads, as ``HfApi.create_branch`` and ``HfApi.create_commit`` (``upload_folder`` without
hf_xet) send them: ``POST /api/models/{repo}/branch/{branch}`` (``{"startingPoint"}``, 409 when
it exists), ``POST /api/models/{repo}/preupload/{rev}`` (every file is ``uploadMode: regular``,
with the ``oid`` of the file already at that path), ``POST /api/models/{repo}/commit/{rev}``
(ndjson: a ``header``, then ``file`` lines with base64 ``content``, and ``deletedFile`` lines;
``lfsFile`` lines are refused since no file is sent as LFS): a new commit on top of the branch,
answered ``{"commitOid", "commitUrl"}``. Uploaded files are kept under ``upload_dir`` (default:
a temporary folder removed on ``stop``) and the new revision is built from them exactly like
``add_repo``'s (the LFS patterns decide which files are published as LFS). Uploads need the
token when one is set; ``read_only=True`` refuses them (403).

Revisions are git-like: every file is a git blob (an LFS pointer for LFS files: by default
``*.safetensors``, ``*.gguf``, ``*.onnx``, ... see ``DEFAULT_LFS_PATTERNS``), folders are git
trees, and each ``add_repo`` call makes a commit object (tree, parent, a fixed author and
time) whose sha1 is the revision: the same files give the same SHA on every machine. Branch
``main`` (or the one given) points at the newest commit; earlier commits stay reachable by
SHA; tags can be added. Files are hashed when added and streamed from disk when served.

In-process (a thread)::

    with HubServer(host="0.0.0.0", port=0, token=None) as hub:
        sha = hub.add_repo("acme/tiny-qwen3", Path("/models/tiny-qwen3"))
        env = {"HF_ENDPOINT": hub.url_for("10.88.0.1")}   # the address pods reach

As a process (prints one JSON line ``{"url": ..., "repos": {repo: {"main": sha}}}`` once it
listens, then serves until SIGTERM/SIGINT)::

    python -m e2e.hubserver --repo acme/tiny-qwen3=/models/tiny-qwen3 --host 0.0.0.0 --port 8080

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors", "*.bin", "*.gguf", "*.onnx", "*.onnx.data", "*.onnx_data", "*.pt", "*.pth", "*.model",
    "*.msgpack", "*.h5", "*.ckpt",
)
AUTHOR = "slm-hub <hub@localhost> 0 +0000"  # fixed: the same files always give the same commit
_CHUNK = 1 << 20


def git_object_sha1(kind: str, data: bytes) -> str:
    """The git object id (hex sha1) of ``data`` stored as a ``kind`` (blob, tree, commit)."""
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def _file_hashes(path: Path) -> tuple[int, str, str]:
    """(size in bytes, git blob sha1, sha256) of a file, read in 1 MiB blocks."""
    size = path.stat().st_size
    blob = hashlib.sha1(f"blob {size}\0".encode())
    sha256 = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            blob.update(block)
            sha256.update(block)
    return size, blob.hexdigest(), sha256.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of an LFS file's content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class HubFile:
    """One file of a revision.

    ``blob_id`` is the git blob sha1 the hub publishes (of the LFS pointer for LFS files);
    ``sha256`` (LFS files only) is the content's sha256 as published, which ``corrupt_sha256``
    in ``add_repo`` makes wrong on purpose; ``true_sha256`` is always the real one.
    """

    path: str
    source: Path
    size: int
    blob_id: str
    true_sha256: str
    sha256: str | None = None
    pointer_size: int | None = None

    @property
    def etag(self) -> str:
        """The ETag the hub sends: the sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class Revision:
    """A commit: its SHA, root tree SHA, files by path and folder tree SHAs by path."""

    commit: str
    tree: str
    files: dict[str, HubFile]
    folders: dict[str, str] = field(default_factory=dict)


@dataclass
class Repo:
    """A repository: commits by SHA, branches and tags (name -> commit SHA)."""

    repo_id: str
    commits: dict[str, Revision] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    default_branch: str = "main"

    def resolve(self, revision: str | None) -> Revision | None:
        """A branch, tag, ``refs/heads/X``, ``refs/tags/X`` or full commit SHA -> the Revision."""
        rev = revision or self.default_branch
        for prefix in ("refs/heads/", "refs/tags/"):
            if rev.startswith(prefix):
                rev = rev[len(prefix):]
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        return self.commits.get(rev.lower()) if len(rev) == 40 else None


class HubRequest(NamedTuple):
    """One request as the hub saw it: method, decoded path (no query) and Authorization header."""

    method: str
    path: str
    auth: str | None


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative '/'-path, file) under folder, links followed, hidden parts (.git, .cache) skipped."""
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            yield rel, p


def build_revision(folder: Path, *, parent: str | None = None, message: str = "", commit: str | None = None,
                   lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
                   corrupt_sha256: Iterable[str] = ()) -> Revision:
    """Hash a folder into a git-like commit.

    Args:
        folder: the repo's files (hidden files and folders are left out).
        parent: the previous commit of the branch, if any (part of the commit's hash).
        message: the commit message (part of the hash).
        commit: force this commit SHA instead of the computed one (40 hex; for fixed fixtures).
        lfs_patterns: fnmatch patterns (on the file name) of files stored as LFS.
        corrupt_sha256: paths of LFS files whose published sha256 is made wrong on purpose.
    Returns:
        The Revision. Raises ValueError when the folder holds no files.
    """
    patterns, corrupt = tuple(lfs_patterns), set(corrupt_sha256)
    files: dict[str, HubFile] = {}
    for rel, src in _walk(folder):
        size, blob, sha256 = _file_hashes(src)
        if any(fnmatch(rel.rsplit("/", 1)[-1], pat) for pat in patterns):
            pointer = lfs_pointer(sha256, size)
            published = hashlib.sha256(sha256.encode()).hexdigest() if rel in corrupt else sha256
            files[rel] = HubFile(rel, src, size, git_object_sha1("blob", pointer), sha256, published, len(pointer))
        else:
            files[rel] = HubFile(rel, src, size, blob, sha256)
    if not files:
        raise ValueError(f"{folder} holds no files to serve")
    unknown = corrupt - {p for p, f in files.items() if f.sha256}
    if unknown:
        raise ValueError(f"corrupt_sha256 names files that are not LFS files of {folder}: {sorted(unknown)}")

    folders: dict[str, str] = {}

    def tree(prefix: str) -> str:
        entries: list[tuple[str, bytes]] = []  # (git sort key, entry)
        children = {p[len(prefix):].split("/", 1)[0] for p in files if p.startswith(prefix)}
        for name in children:
            path = prefix + name
            if path in files:
                entries.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(files[path].blob_id)))
            else:
                sub = tree(path + "/")
                folders[path] = sub
                entries.append((name + "/", b"40000 " + name.encode() + b"\0" + bytes.fromhex(sub)))
        return git_object_sha1("tree", b"".join(e for _, e in sorted(entries)))

    root = tree("")
    body = f"tree {root}\n" + (f"parent {parent}\n" if parent else "")
    body += f"author {AUTHOR}\ncommitter {AUTHOR}\n\n{message or 'Upload ' + folder.name}\n"
    sha = commit.lower() if commit else git_object_sha1("commit", body.encode())
    return Revision(sha, root, files, folders)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubServer:
    """A Hugging Face-compatible hub over local folders (see the module docstring).

    Args:
        host: address to bind, e.g. "127.0.0.1", "0.0.0.0" or a node's bridge address; "::"
            and other IPv6 addresses bind IPv6.
        port: TCP port; 0 picks a free one (read it from ``port`` or ``url``).
        token: when set, every request must send ``Authorization: Bearer <token>``.
        tls: (certificate PEM file, key PEM file) to serve https instead of http.
        verbose: log each request to stderr (as http.server does).

    ``requests`` records every request (HubRequest: method, path, auth) for assertions.
    Thread-safe: repos may be added while it serves.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
                 verbose: bool = False, read_only: bool = False,
                 upload_dir: str | os.PathLike[str] | None = None) -> None:
        self.token = token
        self.read_only = read_only
        self._upload_dir = Path(upload_dir) if upload_dir else None
        self._own_upload_dir = upload_dir is None
        self._uploads = 0
        self.repos: dict[str, Repo] = {}
        self.requests: list[HubRequest] = []
        # File bodies: (path in the repo, Range header or None) per GET, and an optional throttle
        # (bytes per second per response, 0: none) so a test can catch a download half-way.
        self.file_gets: list[tuple[str, str | None]] = []
        self.throttle_bps = 0.0
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                if verbose:
                    super().log_message(format, *args)

            def do_HEAD(self) -> None:
                hub._handle(self, body=False)

            def do_GET(self) -> None:
                hub._handle(self, body=True)

            def do_POST(self) -> None:
                hub._handle(self, body=True)

        server_cls = _Server
        if ":" in host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self.server = server_cls((host, port), Handler)
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.port: int = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for clients on this machine (a wildcard bind is reached via loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host, self.host)
        return self.url_for(host)

    def url_for(self, host: str) -> str:
        """Base URL through another address of this machine (e.g. the one pods reach), for HF_ENDPOINT."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> HubServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, name="hubserver", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server.server_close()
        if self._own_upload_dir and self._upload_dir is not None:
            shutil.rmtree(self._upload_dir, ignore_errors=True)
            self._upload_dir = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------

    def add_repo(self, repo_id: str, folder: str | os.PathLike[str], *, branch: str = "main",
                 tags: Iterable[str] = (), message: str = "", commit: str | None = None,
                 lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS, corrupt_sha256: Iterable[str] = ()) -> str:
        """Commit a folder's files to a repo (created on first use); the branch moves to it.

        Args:
            repo_id: "org/name" (or "name").
            folder: the files; read now for the hashes and again whenever a file is served.
            branch: the branch that points at the new commit (the repo's default is the first
                branch used).
            tags: tag names to point at the new commit too.
            message, commit, lfs_patterns, corrupt_sha256: see ``build_revision``.
        Returns:
            The new commit's SHA (40 hex).
        """
        if not repo_id or repo_id.count("/") > 1 or any(not part for part in repo_id.split("/")):
            raise ValueError(f"repo id must be 'org/name' or 'name', got {repo_id!r}")
        with self._lock:
            repo = self.repos.get(repo_id) or Repo(repo_id, default_branch=branch)
            rev = build_revision(Path(folder), parent=repo.refs.get(branch), message=message, commit=commit,
                                 lfs_patterns=lfs_patterns, corrupt_sha256=corrupt_sha256)
            repo.commits[rev.commit] = rev
            repo.refs[branch] = rev.commit
            for tag in tags:
                repo.refs[tag] = rev.commit
            self.repos[repo_id] = repo
        return rev.commit

    def revision(self, repo_id: str, ref: str | None = None) -> str:
        """The commit SHA a ref (default: the default branch) points at. KeyError if unknown."""
        rev = self.repos[repo_id].resolve(ref)
        if rev is None:
            raise KeyError(f"{repo_id} has no revision {ref!r}")
        return rev.commit

    def summary(self) -> dict[str, dict[str, str]]:
        """{repo id: {ref: commit SHA}} for every repo."""
        return {rid: dict(sorted(r.refs.items())) for rid, r in sorted(self.repos.items())}

    # -- HTTP ------------------------------------------------------------------------------

    def _send(self, h: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict[str, str],
              body: bool) -> None:
        h.send_response(code)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        if body and data:
            h.wfile.write(data)

    def _json(self, h: BaseHTTPRequestHandler, code: int, obj: Any, body: bool,
              headers: dict[str, str] | None = None) -> None:
        self._send(h, code, json.dumps(obj).encode(),
                   {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _error(self, h: BaseHTTPRequestHandler, code: int, error_code: str | None, message: str, body: bool,
               headers: dict[str, str] | None = None) -> None:
        header = message.encode("ascii", "backslashreplace").decode()  # headers are latin-1 at most
        extra = {"X-Error-Message": header, **({"X-Error-Code": error_code} if error_code else {})}
        self._json(h, code, {"error": message}, body, {**extra, **(headers or {})})

    def _split_repo(self, rest: str) -> tuple[Repo | None, str]:
        """'org/name/tail...' -> (the known repo or None, '/tail...'); an unknown id is taken as
        its first two path segments."""
        with self._lock:
            for rid in sorted(self.repos, key=len, reverse=True):
                if rest == rid or rest.startswith(rid + "/"):
                    return self.repos[rid], rest[len(rid):]
        guess = "/".join(rest.split("/")[:2])
        return None, rest[len(guess):]

    def _handle(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        raw, _, query = h.path.partition("?")
        auth = h.headers.get("Authorization")
        with self._lock:
            self.requests.append(HubRequest(h.command, unquote(raw), auth))
        try:
            if self.token and auth != f"Bearer {self.token}":
                h.close_connection = True  # a POST body may be left unread
                if auth:
                    return self._error(h, 401, None, "Invalid credentials in Authorization header", body)
                return self._error(h, 401, "RepoNotFound", "Repository not found", body)
            if h.command == "POST":
                return self._post(h, raw)
            if raw.startswith("/api/models/"):
                return self._api(h, raw[len("/api/models/"):], parse_qs(query), body)
            repo, tail = self._split_repo(raw.lstrip("/"))
            if tail.startswith("/resolve/"):
                rev_raw, _, file_raw = tail[len("/resolve/"):].partition("/")
                return self._resolve(h, repo, unquote(rev_raw), unquote(file_raw), body)
            return self._error(h, 404, None, "Not Found", body)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer
            h.close_connection = True

    def _api(self, h: BaseHTTPRequestHandler, rest: str, params: dict[str, list[str]], body: bool) -> None:
        repo, tail = self._split_repo(rest)
        if repo is None:
            return self._error(h, 404, "RepoNotFound", "Repository not found", body)
        if tail in ("", "/"):
            rev_name: str | None = None
        elif tail.startswith("/revision/"):
            rev_name = unquote(tail[len("/revision/"):])
        elif tail.startswith("/tree/"):
            rev_raw, _, sub = tail[len("/tree/"):].partition("/")
            return self._tree(h, repo, unquote(rev_raw), unquote(sub).strip("/"), params, body)
        else:
            return self._error(h, 404, None, "Not Found", body)
        rev = repo.resolve(rev_name)
        if rev is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev_name}", body)
        blobs = params.get("blobs", ["false"])[-1].lower() in ("1", "true")
        siblings = []
        for f in rev.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s.update(size=f.size, blobId=f.blob_id)
                if f.sha256:
                    s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(s)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "modelId": repo.repo_id, "author": author, "sha": rev.commit,
                "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
                "private": bool(self.token), "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "library_name": "transformers", "siblings": siblings,
                "usedStorage": sum(f.size for f in rev.files.values())}
        return self._json(h, 200, info, body)

    # -- uploads ---------------------------------------------------------------------------

    def _read_body(self, h: BaseHTTPRequestHandler) -> bytes:
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            return h.rfile.read(length)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().strip().split(b";")[0], 16)
                if not size:
                    h.rfile.readline()
                    return out
                out += h.rfile.read(size)
                h.rfile.readline()
        return b""

    def _post(self, h: BaseHTTPRequestHandler, raw: str) -> None:
        """POST: branch creation, preupload and commit (see the module docstring)."""
        data = self._read_body(h)
        if not raw.startswith("/api/models/"):
            return self._error(h, 404, None, "Not Found", True)
        if self.read_only:
            return self._error(h, 403, None, "This hub is read-only: uploads are refused", True)
        repo, tail = self._split_repo(unquote(raw[len("/api/models/"):]))
        if repo is None:
            return self._error(h, 404, "RepoNotFound", "Repository not found", True)
        verb, _, rev_name = tail.lstrip("/").partition("/")
        try:
            payload = json.loads(data) if verb in ("branch", "preupload") and data else {}
        except ValueError:
            return self._error(h, 400, None, "Body is not JSON", True)
        if verb == "branch":
            return self._create_branch(h, repo, rev_name, payload.get("startingPoint"))
        if verb == "preupload":
            rev = repo.resolve(rev_name)
            files = rev.files if rev is not None else {}
            out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                    "oid": files[f["path"]].blob_id if f["path"] in files and not files[f["path"]].sha256 else None}
                   for f in payload.get("files", [])]
            return self._json(h, 200, {"files": out, "commitOid": rev.commit if rev else None}, True)
        if verb == "commit":
            return self._commit(h, repo, rev_name, data)
        return self._error(h, 404, None, "Not Found", True)

    def _create_branch(self, h: BaseHTTPRequestHandler, repo: Repo, branch: str, start: str | None) -> None:
        with self._lock:
            if not branch:
                return self._error(h, 400, None, "Branch name is missing", True)
            if branch in repo.refs:
                return self._error(h, 409, None, f"Reference already exists: refs/heads/{branch}", True)
            rev = repo.resolve(start)
            if rev is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {start}", True)
            repo.refs[branch] = rev.commit
        return self._json(h, 200, {}, True)

    def _commit(self, h: BaseHTTPRequestHandler, repo: Repo, rev_name: str, data: bytes) -> None:
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        deleted: set[str] = set()
        try:
            for line in data.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value") or {}
                if key == "header":
                    header = value
                elif key == "file":
                    added[value["path"]] = base64.b64decode(value["content"]) \
                        if value.get("encoding", "base64") == "base64" else value["content"].encode()
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.add(value["path"].rstrip("/"))
                else:
                    return self._error(h, 422, None, f"Unsupported commit operation {key!r} (this hub takes "
                                                     "regular files only)", True)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            return self._error(h, 400, None, f"Malformed commit payload: {exc}", True)
        for path in added:
            if path.startswith("/") or ".." in path.split("/") or any(p.startswith(".") for p in path.split("/")):
                return self._error(h, 422, None, f"Invalid path in commit: {path}", True)
        with self._lock:
            branch = rev_name[len("refs/heads/"):] if rev_name.startswith("refs/heads/") else rev_name
            if branch not in repo.refs:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev_name}", True)
            parent = repo.commits[repo.refs[branch]]
            if header.get("parentCommit") and header["parentCommit"] != parent.commit:
                return self._error(h, 412, None, "A commit has happened since. Please refresh and try again.", True)
            if self._upload_dir is None:
                self._upload_dir = Path(tempfile.mkdtemp(prefix="hubserver-uploads-"))
            self._uploads += 1
            folder = self._upload_dir / f"commit-{self._uploads}"
            blobs = self._upload_dir / "blobs"
            blobs.mkdir(parents=True, exist_ok=True)
            for path, f in parent.files.items():
                if path not in added and path not in deleted and not any(path.startswith(d + "/") for d in deleted):
                    (folder / path).parent.mkdir(parents=True, exist_ok=True)
                    (folder / path).symlink_to(f.source.resolve())
            for path, content in added.items():
                blob = blobs / hashlib.sha256(content).hexdigest()
                if not blob.exists():
                    blob.write_bytes(content)
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                (folder / path).symlink_to(blob)
            summary = str(header.get("summary") or "Upload files")
            rev = build_revision(folder, parent=parent.commit, message=summary)
            repo.commits[rev.commit] = rev
            repo.refs[branch] = rev.commit
        base = self.url_for(h.headers.get("Host", "").rsplit(":", 1)[0] or "127.0.0.1")
        return self._json(h, 200, {"success": True, "commitOid": rev.commit,
                                   "commitUrl": f"{base}/{repo.repo_id}/commit/{rev.commit}", "hookOutput": ""},
                          True)

    def _tree(self, h: BaseHTTPRequestHandler, repo: Repo, rev_name: str, sub: str,
              params: dict[str, list[str]], body: bool) -> None:
        rev = repo.resolve(rev_name)
        if rev is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev_name}", body)
        if sub and sub not in rev.folders:
            return self._error(h, 404, "EntryNotFound", f"{sub} does not exist on {rev_name}", body,
                               {"X-Repo-Commit": rev.commit})
        recursive = params.get("recursive", ["false"])[-1].lower() in ("1", "true")
        prefix = f"{sub}/" if sub else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        entries: list[dict[str, Any]] = [{"type": "directory", "oid": oid, "size": 0, "path": p}
                                         for p, oid in sorted(rev.folders.items()) if wanted(p)]
        for f in rev.files.values():
            if wanted(f.path):
                entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.sha256:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries.append(entry)
        return self._json(h, 200, entries, body)

    def _resolve(self, h: BaseHTTPRequestHandler, repo: Repo | None, rev_name: str, path: str,
                 body: bool) -> None:
        if repo is None:
            return self._error(h, 404, "RepoNotFound", "Repository not found", body)
        rev = repo.resolve(rev_name)
        if rev is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev_name}", body)
        f = rev.files.get(path)
        if f is None:
            return self._error(h, 404, "EntryNotFound", "Entry not found", body, {"X-Repo-Commit": rev.commit})
        headers = {"X-Repo-Commit": rev.commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if f.sha256:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        start, end = 0, f.size - 1
        code = 200
        rng = h.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, f.size)
            if parsed is None:
                return self._send(h, 416, b"", {**headers, "Content-Range": f"bytes */{f.size}"}, body)
            start, end = parsed
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        length = max(end - start + 1, 0)
        h.send_response(code)
        for k, v in {**headers, "Content-Length": str(length)}.items():
            h.send_header(k, v)
        h.end_headers()
        if not body or not length:
            return
        with self._lock:
            self.file_gets.append((path, rng))
        with open(f.source, "rb") as fh:
            fh.seek(start)
            left = length
            while left > 0:
                block = fh.read(min(_CHUNK, left))
                if not block:  # the file shrank since it was added: the client sees a short body
                    h.close_connection = True
                    return
                if self.throttle_bps > 0:  # in slices, so the client sees bytes arrive steadily
                    for i in range(0, len(block), 16384):
                        h.wfile.write(block[i:i + 16384])
                        bps = self.throttle_bps  # a test may lift the throttle meanwhile
                        if bps > 0:
                            time.sleep(min(16384, len(block) - i) / bps)
                else:
                    h.wfile.write(block)
                left -= len(block)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single 'bytes=a-b', 'bytes=a-' or 'bytes=-n' range -> (first, last) byte, or None if
    unsatisfiable or malformed (several ranges are not supported: None)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a >= size or b < a:
        return None
    return a, min(b, size - 1)


def self_signed_tls(folder: str | os.PathLike[str], hosts: Iterable[str] = ("127.0.0.1", "localhost"),
                    days: int = 2) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed, made with the openssl CLI.

    Args:
        folder: where to write ca.crt, server.crt and server.key (created if missing).
        hosts: the certificate's subjectAltNames: IPv4/IPv6 addresses or DNS names.
        days: validity.
    Returns:
        (CA bundle PEM: put it in the Secret named by hub.caBundleSecretName or
        spec.model.hub.caBundleSecretRef, server certificate PEM, server key PEM) for
        ``HubServer(tls=(cert, key))``.
    Raises:
        RuntimeError: openssl is missing or failed (its stderr in the message).
    """
    import ipaddress

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (out / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    sans = []
    for h in hosts:
        try:
            sans.append(f"IP:{ipaddress.ip_address(h)}")
        except ValueError:
            sans.append(f"DNS:{h}")
    ext = out / "server.ext"
    ext.write_text(f"subjectAltName={','.join(sans)}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", str(days),
         "-subj", "/CN=slm-operator test hub CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={next(iter(hosts))}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", str(days), "-extfile", ext],
    ]
    for step in steps:
        try:
            done = subprocess.run(["openssl", *map(str, step)], capture_output=True, text=True, timeout=60,
                                  check=False)
        except FileNotFoundError:
            raise RuntimeError("openssl is not installed") from None
        if done.returncode != 0:
            raise RuntimeError(f"openssl {step[0]} failed: {done.stderr.strip()[-2000:]}")
    return ca, cert, key


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.hubserver``: serve folders as hub repos until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m e2e.hubserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", action="append", default=[], metavar="ID=PATH", required=True,
                   help="Serve folder PATH as repo ID (repeatable); its branch main points at a commit of it.")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=0, help="Port (default: a free one; see the printed url).")
    p.add_argument("--token-file", help="Require this bearer token (read from the file; never pass it in "
                                        "args). SLM_HUB_TOKEN works too.")
    p.add_argument("--tls-cert", help="Serve https with this certificate (PEM); needs --tls-key.")
    p.add_argument("--tls-key", help="Private key (PEM) of --tls-cert.")
    p.add_argument("--verbose", "-v", action="store_true", help="Log each request to stderr.")
    args = p.parse_args(argv)
    token = (Path(args.token_file).read_text().strip() if args.token_file
             else os.environ.get("SLM_HUB_TOKEN") or None)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    hub = HubServer(args.host, args.port, token=token,
                    tls=(args.tls_cert, args.tls_key) if args.tls_cert else None, verbose=args.verbose)
    for item in args.repo:
        repo_id, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            p.error(f"--repo {item!r}: expected ID=PATH with PATH a folder")
        hub.add_repo(repo_id, path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    hub.start()
    print(json.dumps({"url": hub.url, "host": hub.host, "port": hub.port, "repos": hub.summary()}), flush=True)
    while not stop.wait(1.0):
        pass
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
